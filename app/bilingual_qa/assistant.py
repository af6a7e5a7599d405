"""Assistant: the one entry point the CLI, the web page and the evaluation call."""

from __future__ import annotations

import copy
import dataclasses
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import language as lang
from .answer import Answer, Backend
from .answering import ExtractiveAnswerer, load_model, load_model_file
from .chat import as_turns, condense
from .config import Settings
from .document import Document, Paragraph
from .embedding import Embedder, load_embedder
from .errors import QuestionError
from .index import Index, open_document
from .retrieval import Retriever

_ALLOWED_CONTROLS = frozenset("\t\n\r")


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
        self.index: Index = open_document(settings.document, settings, embedder or load, progress)
        self.embedder = load()
        self._retriever = Retriever(self.index)
        self._answerer = ExtractiveAnswerer(
            self._retriever, max_sentences=settings.max_answer_sentences, threshold=settings.answer_threshold
        )
        self._default_script = _dominant_script(self.index.document)
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

    def cross_validated(self) -> Assistant:
        """This assistant answering with the answerer model fitted without its document.

        The packaged answerer is fitted on the development documents; for one of them, this
        is the model that never saw it, so its scores on that document are honest. For any
        other document it is the assistant itself.
        """
        if self.document.sha256 not in (load_model_file().get("folds") or {}):
            return self
        twin = copy.copy(self)
        twin._answerer = self._answerer.with_model(load_model(holdout=self.document.sha256))
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
        _, standalone, language, vector = self._prepare(question, history)
        retrieval = self._retriever.search(standalone, vector, self.settings.top_k)
        return self._answerer.evidence.weigh(standalone, language, retrieval), retrieval

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
                ``settings.max_question_chars`` characters.
            history: earlier turns of the conversation, oldest first, as
                :class:`~bilingual_qa.chat.Turn` objects or (question, answer)
                pairs; a follow-up is condensed into a standalone question.

        Returns:
            An :class:`Answer` in the question's language and script, citing
            the paragraphs it quotes; ``answered`` is False when the document
            does not contain the answer.

        Raises:
            QuestionError: the question is empty, too long or has control characters.
            ModelError: the question could not be embedded.
        """
        started = time.perf_counter()
        question, standalone, language, vector = self._prepare(question, history)
        engine = self._generator or self._answerer
        answer = engine.answer(standalone, language, self._search(standalone, vector))
        return self._finish(answer, question, standalone, started)

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
        question, standalone, language, vector = self._prepare(question, history)
        return self._stream(question, standalone, language, vector, started)

    def _stream(
        self, question: str, standalone: str, language: str, vector, started: float
    ) -> Iterator[str | Answer]:
        if self._generator is not None:
            answer = None
            for item in self._generator.stream(standalone, language, self._search(standalone, vector)):
                if isinstance(item, Answer):
                    answer = item
                else:
                    yield item
        else:
            answer = self._answerer.answer(standalone, language, self._search(standalone, vector))
            # Nothing to stream: the answer exists whole. How a page shows text arriving is
            # the page's business (webpage.stream_prefixes), not the engine's.
            yield answer.text
        yield self._finish(answer, question, standalone, started)

    def _prepare(self, question: object, history: Iterable[object] | None):
        """Validate, condense and embed: (question, standalone question, answer language, vector)."""
        question = self.validate(question)
        standalone = self._condense(question, as_turns(history))
        language = lang.question_language(question, self._default_script)
        vector = self.embedder.embed_queries([standalone])[0]
        return question, standalone, language, vector

    def _search(self, standalone: str, vector):
        """The one search a question gets: the top_k units and every sentence's score."""
        return self._retriever.search(standalone, vector, self.settings.top_k)

    def _condense(self, question: str, turns: list) -> str:
        """The standalone question: rewritten by the LLM when one is configured, else by rule."""
        if self._generator is not None:
            return self._generator.condense(question, turns)
        return condense(question, turns)

    @staticmethod
    def _finish(answer: Answer, question: str, standalone: str, started: float) -> Answer:
        return dataclasses.replace(
            answer,
            question=question,
            standalone_question=standalone if standalone != question else None,
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
        standalone = self._condense(self.validate(question), as_turns(history))
        vector = self.embedder.embed_queries([standalone])[0]
        hits = self._retriever.search(standalone, vector, max(1, k or self.settings.top_k)).hits
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
        bad = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS]
        if bad:
            raise QuestionError(f"the question contains a control character (U+{ord(bad[0]):04X})")
        return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _dominant_script(document: Document) -> str:
    """The document's Chinese script: the default for questions that do not show theirs."""
    scripts = [p.language for p in document.paragraphs if lang.is_chinese(p.language)]
    return max(set(scripts), key=scripts.count) if scripts else lang.HANT
