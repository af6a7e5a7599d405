"""Assistant: the one entry point the CLI, the web page and the evaluation call."""

from __future__ import annotations

import copy
import dataclasses
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import language as lang
from .answer import Answer, Backend
from .answering import ExtractiveAnswerer, load_model, load_model_file
from .chat import REFERENCE, Turn, as_turns, condense, follow_up_cue, invalid_character, is_short
from .config import Settings
from .document import Document, Paragraph
from .embedding import Embedder, load_embedder
from .errors import QuestionError
from .index import Build, Index, open_document
from .prompts import unserved_reply
from .retrieval import Retriever

_ALLOWED_CONTROLS = frozenset("\t\n\r")
#: A question asked while a progressive build still encodes sentences has the sentences of
#: this many units it ranks first (by their paragraphs) encoded before it is searched. On the
#: 1,231 development questions, the answer's text then matched the finished index's for
#: 96.3% at 4 units, 97.2% at 8, 98.3% at 16 and 99.0% at 32 (answered or not: 99.9%).
FILL_UNITS = 32


@dataclasses.dataclass(frozen=True)
class Retrieved:
    """A paragraph pair that retrieval ranked for a question: its ids (paragraph, twin) and fused score."""

    paragraph_ids: tuple[str, ...]
    score: float


class Assistant:
    """Answers English or Chinese questions about one bilingual document.

    Answers are extractive (quoted sentences) unless ``settings.llm_url`` names an
    OpenAI-compatible server: then an LLM writes them, held to the same
    guarantees by :mod:`bilingual_qa.generation`'s guardrails, with the
    extractive answer as the fallback.

    Args:
        document: a UTF-8 .txt/.md file; None for the embedded default document.
        settings: configuration; defaults to :meth:`Settings.from_env`.
        embedder: an already loaded embedder to share (tests, several documents).
        progress: called with the share of passages encoded (0..1) when the document's index
            has to be built; the page shows it for uploads.
        progressive: when the index has to be built, be ready once the paragraphs are encoded
            (about half the work): a question then first has the sentences of the units it
            ranks first encoded, and :meth:`finish_index` encodes the rest and saves the index.

    Raises:
        DocumentError: the document cannot be read.
        ModelError: the embedding model cannot be loaded.
        ConfigError: an LLM is configured but its client cannot be made.
    """

    def __init__(
        self,
        document: str | Path | None = None,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        progress: Callable[[float], None] | None = None,
        progressive: bool = False,
    ) -> None:
        settings = settings or Settings.from_env()
        if document is not None:
            settings = settings.replace(document=document)
        self.settings = settings
        loaded: list[Embedder] = [embedder] if embedder is not None else []

        def load() -> Embedder:
            if not loaded:
                loaded.append(load_embedder(settings))
            return loaded[0]

        # The document is read and parsed before the model loads: a bad file fails fast.
        opened = open_document(settings.document, settings, embedder or load, progress, progressive)
        if isinstance(opened, Build) and opened.index.pending is None:
            opened = opened.finish()  # every sentence was a paragraph or cached: only the save is left
        self._build: Build | None = opened if isinstance(opened, Build) else None
        self.index: Index = opened.index if isinstance(opened, Build) else opened
        self.embedder = load()
        self._retriever = Retriever(self.index)
        self._answerer = ExtractiveAnswerer(
            self._retriever, max_sentences=settings.max_answer_sentences, threshold=settings.answer_threshold
        )
        self._default_script = self.index.document.chinese_script
        self._generator = None
        if settings.llm_url:
            from .generation import GenerativeAnswerer  # imports llama-index's LLM client: only when used

            self._generator = GenerativeAnswerer(self._retriever, self._answerer, settings)

    @property
    def backend(self) -> str:
        """The configured answer backend: "llm" or "extractive" (a fallback answer says so itself)."""
        return Backend.LLM if self._generator is not None else Backend.EXTRACTIVE

    def without_llm(self) -> Assistant:
        """This assistant answering extractively: same document, index and embedder, no LLM calls."""
        twin = copy.copy(self)
        twin.settings = self.settings.replace(llm_url=None)
        twin._generator = None
        return twin

    def cross_validated(self, holdout: str | None = None) -> Assistant:
        """This assistant answering with the answerer model fitted without its document.

        The packaged answerer is fitted on the development documents; for one of them, this
        is the model that never saw it, so its scores on that document are honest. For any
        other document it is the assistant itself.

        Args:
            holdout: the sha256 of the development document to hold out instead of this
                one's (a converted copy of it, say, whose questions the fold never saw).
        """
        holdout = holdout or self.document.sha256
        if holdout not in (load_model_file().get("folds") or {}):
            return self
        twin = copy.copy(self)
        twin._answerer = self._answerer.with_model(load_model(holdout=holdout))
        if self._generator is not None:
            twin._generator = copy.copy(self._generator)
            twin._generator.extractive = twin._answerer
        return twin

    def weigh(self, question: str, history: Iterable[object] | None = None):
        """The evidence the answerer weighs for a question: every candidate sentence and its features.

        For fitting the answerer (:mod:`bilingual_qa.training`); :meth:`ask` uses the same.

        Returns:
            (the :class:`~bilingual_qa.evidence.Weighing`, the :class:`~bilingual_qa.retrieval.Retrieval`).

        Raises:
            QuestionError: the question or history is invalid.
        """
        query = self._prepare(self.validate(question), history)
        text, retrieval = self._evidence(query)
        return self._answerer.evidence.weigh(text, query.language, retrieval), retrieval

    @property
    def default_script(self) -> str:
        """The Chinese script answers use when a question does not show its own (the document's)."""
        return self._default_script

    @property
    def document(self) -> Document:
        """The parsed document, with aligned twins."""
        return self.index.document

    @property
    def paragraphs(self) -> list[Paragraph]:
        """The document's paragraphs P1..Pn, with language and twin ids."""
        return list(self.index.document.paragraphs)

    def ask(self, question: str, history: Iterable[object] | None = None) -> Answer:
        """Answer one question from the document.

        Args:
            question: English or Chinese (Traditional or Simplified), at most
                ``settings.max_question_chars`` characters and ``settings.max_question_tokens``
                tokens of the embedding model.
            history: earlier turns of the conversation, oldest first, as
                :class:`~bilingual_qa.chat.Turn` objects or (question, answer)
                pairs; a follow-up is condensed into a standalone question. Only the
                last ``settings.max_history_turns`` are read, each cut to its last
                ``settings.max_question_chars`` characters.

        Returns:
            An :class:`Answer` in the question's language and script, citing
            the paragraphs it quotes; ``answered`` is False when the document
            does not contain the answer.

        Raises:
            QuestionError: the question is empty, too long or has control characters.
            ModelError: the question could not be embedded.
        """
        started = time.perf_counter()
        question = self.validate(question)
        unserved = self._unserved(question, started)
        if unserved is not None:
            return unserved
        query = self._prepare(question, history)
        if self._generator is not None:
            answer = self._generator.answer(query.standalone, query.language, self._search(query))
        else:
            text, retrieval = self._evidence(query)
            answer = self._answerer.answer(text, query.language, retrieval)
        return self._finish(answer, query, started)

    def ask_stream(self, question: str, history: Iterable[object] | None = None) -> Iterator[str | Answer]:
        """Answer one question as a stream: text chunks, then the complete :class:`Answer`.

        Protocol: the iterator yields zero or more ``str`` chunks, then exactly one
        :class:`Answer`, and stops. The chunks are provisional display text (with the
        LLM backend, the model's raw tokens as they arrive); the Answer is
        authoritative: its ``text`` always replaces what the chunks showed, because
        the guardrails run on the completed text and may edit it (remove invented
        [P#], convert the script) or replace it with the extractive answer
        (``backend == "extractive"`` and ``fallback_reason`` set). With the
        extractive backend the one chunk is the whole answer text.

        Args:
            question: as for :meth:`ask`.
            history: as for :meth:`ask`.

        Returns:
            The iterator described above.

        Raises:
            QuestionError: the question or history is invalid (raised by this call,
                before any chunk).
            ModelError: the question could not be embedded.
        """
        started = time.perf_counter()
        question = self.validate(question)
        unserved = self._unserved(question, started)
        if unserved is not None:
            return iter((unserved.text, unserved))
        query = self._prepare(question, history)
        return self._stream(query, started)

    def _unserved(self, text: str, started: float) -> Answer | None:
        """The reply to a valid question in a script other than Latin or Han (it is not answered)."""
        language = lang.unserved_language(text)
        if language is None:
            return None
        # Not answered, and said so in the asker's language: a Japanese question with kanji
        # must not get a Chinese answer, nor a Russian one a false "the document does not say".
        return Answer(
            question=text,
            text=unserved_reply(language),
            language=language,
            answered=False,
            citations=(),
            seconds=round(time.perf_counter() - started, 4),
        )

    def _stream(self, query: _Query, started: float) -> Iterator[str | Answer]:
        if self._generator is not None:
            answer = None
            for item in self._generator.stream(query.standalone, query.language, self._search(query)):
                if isinstance(item, Answer):
                    answer = item
                else:
                    yield item
        else:
            text, retrieval = self._evidence(query)
            answer = self._answerer.answer(text, query.language, retrieval)
            # Nothing to stream: the answer exists whole. How a page shows text arriving is
            # the page's business (webpage.stream_prefixes), not the engine's.
            yield answer.text
        yield self._finish(answer, query, started)

    def _prepare(self, question: str, history: Iterable[object] | None) -> _Query:
        """Condense and embed a validated question (see :meth:`validate`)."""
        settings = self.settings
        turns = as_turns(history, settings.max_history_turns, settings.max_question_chars)
        language = lang.question_language(question, self._conversation_script(turns))
        return self._standalone(question, turns, language)

    def _conversation_script(self, turns: list[Turn]) -> str:
        """A Chinese question's script when it shows none: the conversation's, else the document's."""
        for turn in reversed(turns):
            language = lang.question_language(turn.question, self._default_script)
            if lang.is_chinese(language):
                return language
        return self._default_script

    def _standalone(self, question: str, turns: list[Turn], language: str) -> _Query:
        """The question to search with: the question itself, or it condensed with the last turns.

        A question that points back (a pronoun, "and…", "那…呢": :data:`~bilingual_qa.chat.REFERENCE`)
        is condensed, unless it is a long question in another language than the previous
        turn. Any other question with history is condensed only when the evidence asks for
        it: the document does not answer it on its own (the answerer's confidence is below
        its threshold) and the condensed question is answered more surely. A question in
        another language that does not point back starts a new topic.
        """

        def alone() -> _Query:
            return _Query(question, question, language, self._embed([question])[0])

        if not turns:
            return alone()
        cue = follow_up_cue(question)
        previous = turns[-1].question
        switched = lang.is_chinese(lang.question_language(previous)) != lang.is_chinese(language)
        if switched and (cue != REFERENCE or not is_short(question)):
            return alone()
        if cue == REFERENCE and self._generator is not None:
            return self._rewritten(question, turns, language)
        merged = self._fit(condense(question, turns, force=True))
        # Searched with the last answer too (who "he" is); shown and answered as ``merged``.
        searched = self._fit(condense(question, turns, force=True, with_answer=True))
        own, together = self._embed([question, searched])
        if cue != REFERENCE:
            single = _Query(question, question, language, own)
            on_its_own = self._answerer.confidence(question, language, self._search(single))
            if on_its_own >= self._answerer.decision_threshold:
                return single
            candidate = _Query(question, merged, language, together, own, searched)
            text, retrieval = self._evidence(candidate)
            if self._answerer.confidence(text, language, retrieval) <= on_its_own:
                return single
        if self._generator is not None:  # the evidence says it needs the last turn
            return self._rewritten(question, turns, language)
        return _Query(question, merged, language, together, own, searched)

    def _rewritten(self, question: str, turns: list[Turn], language: str) -> _Query:
        """The follow-up rewritten by the LLM into a real question: searched and weighed as one."""
        rewritten = self._fit(self._condense(question, turns, force=True))
        return _Query(question, rewritten, language, self._embed([rewritten])[0])

    def _embed(self, texts: list[str]):
        """Query vectors, Chinese written in the document's script first.

        Lexical matching already compares Traditional and Simplified text in one form, but
        the embedder reads characters: 们 and 們 are different tokens to it, and a question
        in the other script than the document ranks its passages lower (Traditional
        questions about a Simplified document were refused 2.5 times as often as the same
        questions in Simplified). The answer is still written in the question's script.
        """
        script = self._default_script

        def in_script(text: str) -> str:
            # Only another script is converted: s2t would also respell a Traditional 里 as 裏.
            if not any(lang.is_cjk(ch) for ch in text) or lang.chinese_script(text, script) == script:
                return text
            return lang.to_script(text, script)

        return self.embedder.embed_queries([in_script(text) for text in texts])

    def _fit(self, standalone: str) -> str:
        """A condensed question cut to the question budget, keeping its end (the follow-up)."""
        standalone = standalone[-self.settings.max_question_chars :]
        clip = getattr(self.embedder, "clip", None)
        return clip(standalone, self.settings.max_question_tokens) if clip else standalone

    def _search(self, query: _Query):
        """The one search a question gets: the top_k units and every sentence's score."""
        self._fill(query.searched, query.vector)
        return self._retriever.search(query.searched, query.vector, self.settings.top_k)

    def _fill(self, text: str, vector: np.ndarray, k: int = 0) -> None:
        """While a progressive build runs: encode the sentences of the units a question ranks first."""
        build = self._build
        if build is None or self.index.pending is None:
            return
        hits = self._retriever.search(text, vector, max(k, FILL_UNITS)).hits
        self._use(build.fill(m for hit in hits for m in hit.members))

    def _use(self, index: Index) -> None:
        """Answer from ``index`` (more of a progressive build's sentences encoded) from now on."""
        self.index = index
        self._retriever.index = index

    @property
    def index_pending(self) -> bool:
        """Whether a progressive build still has sentences to encode (see :meth:`finish_index`)."""
        return self._build is not None and self._build.finished is None

    def finish_index(self) -> Index:
        """Finish a progressive build: encode the sentences still pending and save the index.

        Answers from then on come from the complete index. Without a running build, nothing
        happens.

        Returns:
            The complete index.

        Raises:
            ModelError: the engine failed (the vector cache keeps what was encoded).
            IndexStoreError: the build was stopped (:meth:`close`).
        """
        build = self._build
        if build is not None:
            self._use(build.finish())
            self._build = None
        return self.index

    def close(self) -> None:
        """Stop a progressive build that has not finished (its engine and lock are let go); idempotent.

        What it encoded stays in the vector cache, so the next build of the document starts there.
        """
        build = self._build
        if build is not None:
            build.close()

    def _evidence(self, query: _Query):
        """What the extractive answerer weighs: (the question text, the retrieval).

        A follow-up condensed by rule ("Which sister cities…? 那柬埔寨呢？") finds its units
        with the condensed text, and its sentences are scored by the mean of their similarity
        to the follow-up alone and to the condensed text: the follow-up's own words say what
        to quote, the conversation who "he" or "it" is.
        """
        retrieval = self._search(query)
        if query.own_vector is None:
            return query.standalone, retrieval
        own_scores = self._retriever.sentence_scores(query.own_vector)
        scores = (own_scores + retrieval.sentence_scores) / 2
        return query.question, dataclasses.replace(retrieval, sentence_scores=scores)

    def _condense(self, question: str, turns: list, force: bool = False) -> str:
        """The standalone question: rewritten by the LLM when one is configured, else by rule."""
        if self._generator is not None:
            return self._generator.condense(question, turns, force)
        return condense(question, turns, force)

    @staticmethod
    def _finish(answer: Answer, query: _Query, started: float) -> Answer:
        return dataclasses.replace(
            answer,
            question=query.question,
            standalone_question=query.standalone if query.standalone != query.question else None,
            seconds=round(time.perf_counter() - started, 4),
        )

    def retrieve(
        self, question: str, history: Iterable[object] | None = None, k: int | None = None
    ) -> tuple[Retrieved, ...]:
        """The paragraph pairs retrieval ranks for a question, best first, without composing an answer.

        The same retrieval :meth:`ask` uses (follow-ups condensed the same way); for evaluation.

        Args:
            question: as for :meth:`ask`.
            history: as for :meth:`ask`.
            k: how many pairs to return; defaults to ``settings.top_k``.

        Returns:
            Up to ``k`` :class:`Retrieved` pairs, best first.

        Raises:
            QuestionError: the question is invalid.
            ModelError: the question could not be embedded.
        """
        query = self._prepare(self.validate(question), history)
        k = max(1, k or self.settings.top_k)
        self._fill(query.searched, query.vector, k)
        hits = self._retriever.search(query.searched, query.vector, k).hits
        paragraphs = self.index.document.paragraphs
        return tuple(Retrieved(tuple(paragraphs[m].id for m in h.members), h.score) for h in hits)

    def validate(self, question: object) -> str:
        """The question, stripped, or a :class:`QuestionError` saying what is wrong."""
        if not isinstance(question, str):
            raise QuestionError(f"a question must be text, not {type(question).__name__}")
        text = question.strip()
        if not text:
            raise QuestionError("the question is empty; ask something about the document")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            raise QuestionError(f"the question is too long: {len(text)} characters (limit {limit})")
        invalid = invalid_character(text)
        if invalid:
            raise QuestionError(f"the question contains {invalid}")
        bad = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS]
        if bad:
            raise QuestionError(f"the question contains a control character (U+{ord(bad[0]):04X})")
        text = " ".join(text.split()) if "\n" in text or "\r" in text else text
        # The model reads a bounded window; a question beyond it would be cut, unseen. Counting
        # tokens is ~1000x cheaper than encoding them, so it is checked before any work.
        counts = getattr(self.embedder, "token_counts", None)
        tokens = counts([text], True)[0] if counts else 0
        if tokens > self.settings.max_question_tokens:
            raise QuestionError(
                f"the question is too long: {tokens} tokens (limit {self.settings.max_question_tokens});"
                " ask about one thing at a time"
            )
        return text


@dataclass(frozen=True)
class _Query:
    """A question ready to search: as asked, standalone (condensed), its language and vectors.

    ``own_vector`` is the question's own vector when ``standalone`` was condensed by rule;
    ``search`` is then the text searched (and embedded as ``vector``): the standalone
    question with the last answer in it.
    """

    question: str
    standalone: str
    language: str
    vector: np.ndarray
    own_vector: np.ndarray | None = None
    search: str | None = None

    @property
    def searched(self) -> str:
        """The text lexical search is given."""
        return self.search or self.standalone
