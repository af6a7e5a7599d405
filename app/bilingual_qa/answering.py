"""Answering (extractive): quote the sentences that answer the question, cited as [P#].

No LLM is involved. The answerer picks sentences from the retrieved units,
preferring the paragraph written in the question's language, converts Chinese
to the question's script, and refuses in the question's language when the
document does not contain the answer.

Whether the document answers is decided from two calibrated signals, because
e5's raw similarities are compressed (unrelated text scores 0.75–0.85):
- *salience*: how many standard deviations the best sentence's similarity to
  the question stands above the document's other sentences;
- *coverage*: the IDF-weighted share of the question's key terms that the
  evidence contains (rare terms such as names weigh more than "Chongqing").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import language as lang
from .document import Paragraph, Sentence
from .prompts import messages
from .retrieval import Hit, Retriever

# Decision thresholds, in the calibrated units above (see module docstring).
COVERAGE_SURE = 0.6
COVERAGE_WITH_SALIENCE = 0.3
SALIENCE_WITH_COVERAGE = 1.5
SALIENCE_SURE = 3.5
# Sentence choice: salience + this × coverage; hits further down pay a rank penalty.
COVERAGE_WEIGHT = 2.0
RANK_PENALTY = 0.5
SECOND_SENTENCE_GAP = 1.0
OTHER_LANGUAGE_MARGIN = 0.3
UNITS_CONSIDERED = 3
# Chinese sentences longer than this (characters) are cut to their answering clauses.
LONG_SENTENCE = 80
# Translating a quote into the other version: how much less similar (cosine) than the best
# match a neighbouring sentence may be and still belong to the translation.
TRANSLATION_SPREAD = 0.05

# Expected answer types: a "how many" question is answered by a sentence with a
# quantity, a "what date" question by one with a calendar date.
_ASKS_QUANTITY = re.compile(
    r"\bhow (?:many|much)\b|\bwhat (?:number|amount|percentage)\b|多少|几[个家场位次项条名座所年天]"
)
_ASKS_DATE = re.compile(
    r"\b(?:what|which)(?: exact| specific)? (?:date|day)\b|\bon what day\b"
    r"|哪一?天|几月几[日号]|什么日子|具体日期|哪个日期"
)
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_QUANTITY = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
    r"fifty|hundred|thousand|million|billion|dozens?|several|multiple)\b|"
    r"[一二两三四五六七八九十百千万亿]+[个家场位次项条名座所年月日天倍人]"
)
_DATE = re.compile(rf"\b(?:{_MONTHS})\.? \d{{1,2}}\b|\b\d{{1,2}} (?:{_MONTHS})\b|\d{{1,2}}月\d{{1,2}}[日号]")


@dataclass(frozen=True)
class Citation:
    """A paragraph an answer quotes: its id, language, full text, twin and quoted spans."""

    paragraph_id: str
    language: str
    text: str
    twin_id: str | None
    score: float
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Answer:
    """An answer in the question's language and script, with [P#] markers and its citations.

    ``backend`` is "extractive" (quoted sentences) or "llm" (generated, and passed
    every guardrail of :mod:`bilingual_qa.generation`).
    """

    question: str
    text: str
    language: str
    answered: bool
    citations: tuple[Citation, ...]
    backend: str = "extractive"
    standalone_question: str | None = None
    evidence_language: str | None = None
    signals: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # Generative backend only: why its answer was replaced by this extractive one
    # (None when it was not), and the guardrail checks that fired on its text.
    fallback_reason: str | None = None
    guardrails: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the answer."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The answer as JSON with readable Chinese (no \\u escapes)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class _Candidate:
    paragraph: Paragraph
    sentence: Sentence
    score: float
    coverage: float
    rank: int


class ExtractiveAnswerer:
    """Answers by quoting document sentences; see the module docstring for the rules."""

    def __init__(self, retriever: Retriever, top_k: int = 4, max_sentences: int = 2) -> None:
        self.retriever = retriever
        self.top_k = top_k
        self.max_sentences = max_sentences
        self._paragraphs = retriever.index.document.paragraphs
        self._position = {p.id: i for i, p in enumerate(self._paragraphs)}
        self._idf = _idf(retriever.tokens)
        self._max_idf = math.log(1 + (len(self._paragraphs) + 0.5) / 0.5)
        self._token_sets = [set(t) for t in retriever.tokens]

    def answer(self, question: str, language: str, query_vector: np.ndarray) -> Answer:
        """Answer ``question`` (already validated) asked in ``language``.

        Args:
            question: the question text.
            language: "en", "zh-Hant" or "zh-Hans".
            query_vector: the question's normalized query embedding.

        Returns:
            The :class:`Answer`; ``answered`` is False when the document is silent.
        """
        hits = self.retriever.search(question, query_vector, self.top_k)
        sims = self.retriever.sentence_scores(query_vector)
        spread = float(sims.std()) or 1.0
        salience = (sims - float(sims.mean())) / spread
        version, plain_question = lang.version_request(question, language)
        terms = self._weighted_terms(plain_question)
        coverages = [
            self._coverage(
                terms,
                set().union(*(self._token_sets[m] for m in h.members)),
                any(lang.is_chinese(self._paragraphs[m].language) for m in h.members),
                any(not lang.is_chinese(self._paragraphs[m].language) for m in h.members),
            )
            for h in hits[:UNITS_CONSIDERED]
        ]
        checked = [c for c in coverages if c is not None]
        best_salience = float(salience.max()) if len(salience) else 0.0
        best_coverage = max(checked) if checked else None
        signals = {"salience": round(best_salience, 3)}
        if best_coverage is not None:
            signals["coverage"] = round(best_coverage, 3)
        if not hits or not _answerable(best_salience, best_coverage):
            return self._refusal(question, language, signals)
        chosen = self._choose(question, hits[:UNITS_CONSIDERED], language, salience, terms)
        if not chosen:
            return self._refusal(question, language, signals)
        if version is not None:
            chosen = self._in_version(chosen, version)
        return self._compose(question, language, chosen, signals, terms, version is not None)

    def _in_version(self, chosen: list[_Candidate], version: str) -> list[_Candidate]:
        """Each chosen sentence replaced by its translation in the asked-for version, when there is one.

        The translation is the twin paragraph's sentence most similar to the chosen one:
        e5 places a sentence and its translation close together whatever their languages.
        """
        index = self.retriever.index
        out: list[_Candidate] = []
        for c in chosen:
            twin_position = self._position.get(c.paragraph.twin_id or "")
            in_version = lang.is_chinese(c.paragraph.language) == (version != lang.EN)
            if in_version or twin_position is None:
                out.append(c)
                continue
            twin = self._paragraphs[twin_position]
            own = index.sentence_range(self._position[c.paragraph.id])
            vector = index.sentence_vectors[own[c.paragraph.sentences.index(c.sentence)]]
            rows = index.sentence_range(twin_position)
            similarity = index.sentence_vectors[rows.start : rows.stop] @ vector
            # A long Chinese sentence is often several English ones (and the reverse): grow the
            # best match into its neighbours while they also match and the length falls short.
            expected = len(c.sentence.text) * len(twin.text) / max(1, len(c.paragraph.text))
            first = last = int(np.argmax(similarity))
            floor = float(similarity[first]) - TRANSLATION_SPREAD
            while twin.sentences[last].end - twin.sentences[first].start < 0.7 * expected:
                sides = [i for i in (first - 1, last + 1) if 0 <= i < len(twin.sentences)]
                if not sides or max(similarity[i] for i in sides) < floor:
                    break
                step = max(sides, key=lambda i: similarity[i])
                first, last = min(first, step), max(last, step)
            start, end = twin.sentences[first].start, twin.sentences[last].end
            sentence = Sentence(twin.text[start:end], start, end)
            if all((m.paragraph.id, m.sentence.start) != (twin.id, start) for m in out):
                out.append(_Candidate(twin, sentence, c.score, c.coverage, c.rank))
        return out

    def _weighted_terms(self, question: str) -> dict[str, float]:
        """Key terms of the question with their IDF weights (unknown terms weigh most)."""
        weights: dict[str, float] = {}
        for term in lang.key_terms(question):
            weights[term] = self._idf.get(term, self._max_idf)
        return weights

    @staticmethod
    def _coverage(
        terms: dict[str, float], tokens: set[str], chinese_text: bool, english_text: bool
    ) -> float | None:
        """IDF-weighted share of the checkable ``terms`` present in ``tokens``; None if none is checkable.

        Chinese terms cannot be checked against English-only text, nor English
        words against Chinese-only text (unless they occur in it, like "RCEP").
        """
        checkable = {
            t: w
            for t, w in terms.items()
            if (chinese_text if lang.is_cjk(t[0]) else (english_text or t.isdigit() or t in tokens))
        }
        total = sum(checkable.values())
        if total <= 0:
            return None
        return sum(w for t, w in checkable.items() if t in tokens) / total

    def _choose(
        self,
        question: str,
        hits: Sequence[Hit],
        language: str,
        salience: np.ndarray,
        terms: dict[str, float],
    ) -> list[_Candidate]:
        """The sentences to quote, best first, from the question-language side of each unit."""
        same_family = lang.is_chinese(language)
        candidates: list[_Candidate] = []
        for rank, hit in enumerate(hits):
            members = [self._paragraphs[m] for m in hit.members]
            same = [p for p in members if lang.is_chinese(p.language) == same_family]
            other = [p for p in members if lang.is_chinese(p.language) != same_family]
            side = same or other
            if same and other:
                # The versions differ in places: quote the other one when it alone has the terms.
                cov_same = max(self._paragraph_coverage(terms, p) for p in same)
                cov_other = max(self._paragraph_coverage(terms, p) for p in other)
                if cov_other > cov_same + OTHER_LANGUAGE_MARGIN:
                    side = other
            for paragraph in side:
                rows = self.retriever.index.sentence_range(self._position[paragraph.id])
                for row, sentence in zip(rows, paragraph.sentences, strict=True):
                    coverage = self._sentence_coverage(terms, sentence, paragraph)
                    score = float(salience[row]) + COVERAGE_WEIGHT * coverage - RANK_PENALTY * rank
                    candidates.append(_Candidate(paragraph, sentence, score, coverage, rank))
        candidates.sort(key=lambda c: -c.score)
        needed = expected_type(question)
        if needed is not None and candidates:
            # Only sentences of the expected type can answer; a weak one is no answer.
            typed = [c for c in candidates if has_type(c.sentence.text, needed)]
            candidates = [c for c in typed if c.score >= candidates[0].score - SECOND_SENTENCE_GAP]
        if not candidates:
            return []
        chosen = [candidates[0]]
        covered = self._covered_terms(terms, chosen[0])
        for candidate in candidates[1:]:
            if len(chosen) >= self.max_sentences:
                break
            if candidate.score < chosen[0].score - SECOND_SENTENCE_GAP:
                break
            new_terms = self._covered_terms(terms, candidate) - covered
            if new_terms:
                chosen.append(candidate)
                covered |= new_terms
        return chosen

    def _paragraph_coverage(self, terms: dict[str, float], paragraph: Paragraph) -> float:
        """Coverage of ``terms`` by one paragraph (0 when none is checkable)."""
        tokens = self._token_sets[self._position[paragraph.id]]
        chinese = lang.is_chinese(paragraph.language)
        return self._coverage(terms, tokens, chinese, not chinese) or 0.0

    def _sentence_coverage(self, terms: dict[str, float], sentence: Sentence, paragraph: Paragraph) -> float:
        """Coverage of ``terms`` by one sentence (0 when none is checkable)."""
        chinese = lang.is_chinese(paragraph.language)
        return self._coverage(terms, set(lang.lexical_tokens(sentence.text)), chinese, not chinese) or 0.0

    @staticmethod
    def _covered_terms(terms: dict[str, float], candidate: _Candidate) -> set[str]:
        tokens = set(lang.lexical_tokens(candidate.sentence.text))
        return {t for t in terms if t in tokens}

    def _compose(
        self,
        question: str,
        language: str,
        chosen: list[_Candidate],
        signals: dict[str, float],
        terms: dict[str, float],
        version_asked: bool = False,
    ) -> Answer:
        """Quote the chosen sentences in document order per paragraph, with markers and note.

        ``terms`` (the question's weighted key terms) pick the clauses to quote;
        ``version_asked`` frames a quote from the other-language version as what that
        version says (asked for), rather than as something only it states.
        """
        ordered = sorted(chosen, key=lambda c: (c.rank, c.paragraph.index, c.sentence.start))
        chinese_answer = lang.is_chinese(language)
        spans = {id(c): _quote_span(c.paragraph, c.sentence, terms) for c in chosen}
        pieces = []
        for c in ordered:
            start, end = spans[id(c)]
            text = c.paragraph.text[start:end]
            if end < c.sentence.end:
                text += "…"  # the quote stops mid-sentence: say so
            if lang.is_chinese(c.paragraph.language):
                text = lang.to_script(text, language)
            pieces.append(f"{text} [{c.paragraph.id}]")
        quote = ("" if chinese_answer else " ").join(pieces)
        evidence = ordered[0].paragraph.language
        text = quote
        if lang.is_chinese(evidence) != chinese_answer:
            version = "english" if evidence == lang.EN else "chinese"
            key = f"{version}_version_says" if version_asked else f"only_in_{version}"
            text = messages(language)[key].format(quote=quote)
        citations: dict[str, Citation] = {}
        for c in sorted(chosen, key=lambda c: -c.score):
            old = citations.get(c.paragraph.id)
            quoted = (old.spans if old else ()) + (spans[id(c)],)
            citations[c.paragraph.id] = Citation(
                paragraph_id=c.paragraph.id,
                language=c.paragraph.language,
                text=c.paragraph.text,
                twin_id=c.paragraph.twin_id,
                score=round(old.score if old else c.score, 4),
                spans=tuple(sorted(quoted)),
            )
        return Answer(
            question=question,
            text=text,
            language=language,
            answered=True,
            citations=tuple(citations.values()),
            evidence_language=evidence,
            signals=signals,
        )

    @staticmethod
    def _refusal(question: str, language: str, signals: dict[str, float]) -> Answer:
        return Answer(
            question=question,
            text=messages(language)["refusal"],
            language=language,
            answered=False,
            citations=(),
            signals=signals,
        )


def _quote_span(paragraph: Paragraph, sentence: Sentence, terms: dict[str, float]) -> tuple[int, int]:
    """The part of a sentence to quote: a long Chinese sentence is cut to its answering clauses.

    Chinese press sentences often chain a whole paragraph with commas; the
    shortest run of clauses holding every question term the sentence holds,
    plus the clause after it, answers as well and reads far better. English
    sentences are quoted whole.
    """
    whole = (sentence.start, sentence.end)
    if len(sentence.text) <= LONG_SENTENCE or not lang.is_chinese(paragraph.language):
        return whole
    clauses = _clauses(sentence.text)
    found = [{t for t in terms if t in set(lang.lexical_tokens(sentence.text[a:b]))} for a, b in clauses]
    target = set().union(*found)
    if not target or len(clauses) < 2:
        return whole
    best = (0, len(clauses) - 1)
    for i in range(len(clauses)):
        covered: set[str] = set()
        for j in range(i, len(clauses)):
            covered |= found[j]
            if covered == target:
                length = clauses[j][1] - clauses[i][0]
                if length < clauses[best[1]][1] - clauses[best[0]][0]:
                    best = (i, j)
                break
    # What a Chinese sentence says about its topic usually follows it: keep one more clause.
    last = min(best[1] + 1, len(clauses) - 1)
    start, end = clauses[best[0]][0], clauses[last][1]
    quoted = sentence.text[start:end].rstrip(",，;；:： ")
    return sentence.start + start, sentence.start + start + len(quoted)


def _clauses(text: str) -> list[tuple[int, int]]:
    """Spans of the comma/semicolon clauses of a Chinese sentence (quotes kept whole)."""
    spans: list[tuple[int, int]] = []
    start, depth = 0, 0
    for i, ch in enumerate(text):
        if ch in "“「『《（(":
            depth += 1
        elif ch in "”」』》）)":
            depth = max(0, depth - 1)
        elif ch in ",，;；:：" and depth == 0 and i + 1 < len(text):
            spans.append((start, i + 1))
            start = i + 1
    spans.append((start, len(text)))
    return spans


def _answerable(salience: float, coverage: float | None) -> bool:
    """The calibrated decision: does the document contain an answer?

    ``coverage`` is None when none of the question's terms can be checked
    against the evidence (a Chinese question about English-only text): then
    only a very salient sentence counts. A salient sentence sharing none of
    the checkable terms is not an answer.
    """
    if coverage is None:
        return salience >= SALIENCE_SURE
    return (
        coverage >= COVERAGE_SURE
        or (coverage >= COVERAGE_WITH_SALIENCE and salience >= SALIENCE_WITH_COVERAGE)
        or (salience >= SALIENCE_SURE and coverage > 0)
    )


def _idf(token_lists: Sequence[Sequence[str]]) -> dict[str, float]:
    """BM25-style inverse document frequency of every token, over paragraphs."""
    n = len(token_lists)
    df: dict[str, int] = {}
    for tokens in token_lists:
        for t in set(tokens):
            df[t] = df.get(t, 0) + 1
    return {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}


def expected_type(question: str) -> str | None:
    """The answer type a question asks for: "quantity", "date" or None."""
    text = lang.normalize(question)
    if _ASKS_DATE.search(text):
        return "date"
    if _ASKS_QUANTITY.search(text):
        return "quantity"
    return None


def has_type(text: str, answer_type: str) -> bool:
    """Whether ``text`` contains an answer of ``answer_type``."""
    text = lang.normalize(text)
    pattern = _DATE if answer_type == "date" else _QUANTITY
    return bool(pattern.search(text))
