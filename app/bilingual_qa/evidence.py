"""Evidence: every candidate sentence for a question, described by the features the answerer weighs.

The candidates are the sentences of the retrieved units, both versions. Each is described the
same way whichever language it is in: its similarity to the question (raw, as a z-score within
the document, and its translation's), how much of the question's key terms it and its
translation hold (IDF-weighted, so a name weighs more than "Chongqing"), whether the question's
numbers occur in it, whether it has the answer type the question asks for, and where its unit
ranked. e5's similarities are compressed (unrelated text scores 0.75–0.85), which is why the
z-scores and lexical evidence matter; what the features are worth is learned from data
(:mod:`bilingual_qa.training`), not set by hand.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass

import numpy as np

from . import language as lang
from .document import Paragraph
from .retrieval import Retrieval, Retriever

# The feature vector of a candidate sentence, in this order (the fitted weights name them).
FEATURES = (
    "sim",  # cosine similarity of the question to the sentence
    "z",  # that similarity in standard deviations above the document's sentences
    "twin_z",  # the same for the sentence's translation (its own z when it has none)
    "gap",  # similarity minus the best candidate's
    "unit_rank",  # rank of the sentence's unit (0 = best)
    "unit_fused",  # the unit's fused retrieval score over the best unit's
    "unit_bm25",  # the unit's BM25 score over the document's best
    "cover_sentence",  # IDF-weighted share of the question's terms in the sentence or its translation
    "cover_own",  # the same in the sentence alone
    "cover_unit",  # the same in the paragraph or its translation
    "checkable",  # share of the question's term weight that the evidence's scripts can hold
    "unknown",  # share of the question's term weight the document never uses (question level)
    "numbers_missing_sentence",  # share of the question's numbers absent from sentence and translation
    "numbers_missing_unit",  # … from the paragraph and its translation
    "numbers_missing_document",  # … from the whole document (question level)
    "asks_type",  # the question asks for a quantity or a date
    "type_found",  # … and the sentence or its translation has one
    "asks_year",  # the question asks when, or which year
    "year_found",  # … and the sentence or its translation names a year, decade or century
    "asks_name",  # the question asks who or where
    "name_found",  # … and the English side of the sentence has a name the question lacks
    "novel",  # share of the sentence's tokens (and its translation's) that the question does not use
    "same_side",  # the sentence is in the question's language
    "has_twin",  # the paragraph has a translation
    "first_sentence",  # the sentence opens its paragraph
    "length",  # log of the sentence's length in characters
    "terms",  # log of the number of the question's key terms
    "best_z",  # the best z-score in the whole document (question level)
)

# Translating a sentence into the twin paragraph: how much less similar (cosine) than the best
# match a neighbouring sentence may be and still belong to the translation, and how long the
# grown span may get relative to the expected length.
TRANSLATION_SPREAD = 0.05
TRANSLATION_LENGTH = 0.7

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

# Expected answer types: a "how many" question is answered by a sentence with a quantity, a
# "what date" question by one with a calendar date.
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


_ASKS_YEAR = re.compile(
    r"\bwhen\b|\bwhat (?:year|decade|century)\b|\bin which (?:year|decade|century)\b|\bhow long ago\b"
    r"|哪一?年|何时|什么时候|几几年|哪个年代|哪个世纪|多少年"
)
_YEAR = re.compile(r"(?<!\d)(?:1\d{3}|20\d{2})(?!\d)|\d+\s*(?:s\b|世纪|年代)|\bcentury\b|世纪")
_ASKS_NAME = re.compile(r"\b(?:who|whom|whose|where)\b|谁|哪里|哪儿|何处|在哪|哪位|什么人|哪个人")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")


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


def numbers(text: str) -> set[str]:
    """The numbers written in digits in ``text``, thousands separators removed."""
    return {m.group().replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}


@dataclass(frozen=True)
class TwinSpan:
    """The sentences of a twin paragraph that translate one sentence: rows first..last inclusive."""

    position: int
    first: int
    last: int


@dataclass(frozen=True)
class Candidate:
    """One candidate sentence: its paragraph position, sentence index, unit rank and translation."""

    position: int
    sentence: int
    rank: int
    same_side: bool
    twin: TwinSpan | None


@dataclass(frozen=True)
class Weighing:
    """A question's evidence: its key terms and every candidate sentence with its features."""

    language: str
    version: str | None  # the other version the question asks about ("What is the Chinese name…")
    terms: dict[str, float]
    candidates: tuple[Candidate, ...]
    features: np.ndarray  # (candidates, FEATURES)


class Evidence:
    """Describes candidate sentences of one document's retrieved units (see the module docstring)."""

    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever
        self.document = retriever.index.document
        self.paragraphs = self.document.paragraphs
        n = len(self.paragraphs)
        df: dict[str, int] = {}
        for tokens in retriever.tokens:
            for t in set(tokens):
                df[t] = df.get(t, 0) + 1
        self.idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self.max_idf = math.log(1 + (n + 0.5) / 0.5)
        self._paragraph_tokens = [set(t) for t in retriever.tokens]
        self._numbers = set().union(*(numbers(p.text) for p in self.paragraphs)) if n else set()
        self._starts = [self.index.sentence_range(i).start for i in range(n)]
        self._sentence_tokens: dict[tuple[int, int], frozenset[str]] = {}
        self._twins: dict[tuple[int, int], TwinSpan | None] = {}
        self._lock = threading.Lock()

    @property
    def index(self):
        """The retriever's index (a progressive build swaps in more sentence vectors as it goes)."""
        return self.retriever.index

    def twin_position(self, position: int) -> int | None:
        """Position of a paragraph's twin, if it has one."""
        return self.document.twin_position(position)

    def row(self, position: int, sentence: int) -> int:
        """The row of a sentence in the index's sentence vectors."""
        return self._starts[position] + sentence

    def sentence_tokens(self, position: int, sentence: int) -> frozenset[str]:
        """Lexical tokens of one sentence (cached)."""
        key = (position, sentence)
        found = self._sentence_tokens.get(key)
        if found is None:
            found = frozenset(lang.lexical_tokens(self.paragraphs[position].sentences[sentence].text))
            with self._lock:
                self._sentence_tokens[key] = found
        return found

    def twin_span(self, position: int, sentence: int) -> TwinSpan | None:
        """The twin paragraph's sentences that translate one sentence; None without a twin.

        e5 places a sentence and its translation close together whatever their languages, so
        the best match is found by similarity; a long Chinese sentence is often several
        English ones (and the reverse), so the match grows into its neighbours while they also
        match and the span falls short of the expected length.
        """
        key = (position, sentence)
        if key in self._twins:
            return self._twins[key]
        twin = self.twin_position(position)
        span = None
        if twin is not None and self.paragraphs[twin].sentences:
            own, other = self.paragraphs[position], self.paragraphs[twin]
            vector = self.index.sentence_vectors[self.row(position, sentence)]
            rows = self.index.sentence_range(twin)
            similarity = self.index.sentence_vectors[rows.start : rows.stop] @ vector
            expected = len(own.sentences[sentence].text) * len(other.text) / max(1, len(own.text))
            first = last = int(np.argmax(similarity))
            floor = float(similarity[first]) - TRANSLATION_SPREAD
            while other.sentences[last].end - other.sentences[first].start < TRANSLATION_LENGTH * expected:
                sides = [i for i in (first - 1, last + 1) if 0 <= i < len(other.sentences)]
                if not sides or max(similarity[i] for i in sides) < floor:
                    break
                step = max(sides, key=lambda i: similarity[i])
                first, last = min(first, step), max(last, step)
            span = TwinSpan(twin, first, last)
        with self._lock:
            self._twins[key] = span
        return span

    def span_text(self, span: TwinSpan) -> str:
        """The text a twin span covers."""
        paragraph = self.paragraphs[span.position]
        return paragraph.text[paragraph.sentences[span.first].start : paragraph.sentences[span.last].end]

    def span_tokens(self, span: TwinSpan) -> frozenset[str]:
        """Lexical tokens of a twin span."""
        return frozenset().union(
            *(self.sentence_tokens(span.position, i) for i in range(span.first, span.last + 1))
        )

    def weigh(self, question: str, language: str, retrieval: Retrieval) -> Weighing:
        """Describe every sentence of the retrieved units (both versions) for ``question``.

        Args:
            question: the (standalone) question.
            language: the answer language: "en", "zh-Hant" or "zh-Hans".
            retrieval: the search result for the question.

        Returns:
            The :class:`Weighing`; its features are rows in :data:`FEATURES` order.
        """
        version, plain = lang.version_request(question, language)
        terms = {t: self.idf.get(t, self.max_idf) for t in lang.key_terms(plain)}
        total = sum(terms.values())
        unknown = sum(w for t, w in terms.items() if t not in self.idf) / total if total else 0.0
        asked_numbers = numbers(plain)
        missing_in_document = _missing(asked_numbers, self._numbers)
        needed = expected_type(plain)
        normalized = lang.normalize(plain)
        asks_year = bool(_ASKS_YEAR.search(normalized))
        asks_name = bool(_ASKS_NAME.search(normalized))
        question_tokens = set(lang.lexical_tokens(plain))
        question_words = {w.lower() for w in re.findall(r"[A-Za-z]+", plain)}
        scores = retrieval.sentence_scores
        mean, spread = (float(scores.mean()), float(scores.std()) or 1.0) if len(scores) else (0.0, 1.0)
        best_z = (float(scores.max()) - mean) / spread if len(scores) else 0.0
        hits = retrieval.hits
        top_fused = hits[0].score if hits else 1.0
        top_bm25 = float(retrieval.lexical.max()) if len(retrieval.lexical) else 0.0
        chinese = lang.is_chinese(language)
        candidates: list[Candidate] = []
        rows: list[list[float]] = []
        for rank, hit in enumerate(hits):
            for position in hit.members:
                paragraph = self.paragraphs[position]
                twin = self.twin_position(position)
                unit_tokens = self._paragraph_tokens[position] | (
                    self._paragraph_tokens[twin] if twin is not None else set()
                )
                unit_numbers = numbers(paragraph.text) | (
                    numbers(self.paragraphs[twin].text) if twin is not None else set()
                )
                same = lang.is_chinese(paragraph.language) == chinese
                for s, sentence in enumerate(paragraph.sentences):
                    span = self.twin_span(position, s)
                    own = self.sentence_tokens(position, s)
                    both = own | self.span_tokens(span) if span else own
                    text = sentence.text + (" " + self.span_text(span) if span else "")
                    z = (float(scores[self.row(position, s)]) - mean) / spread
                    twin_z = z
                    if span is not None:
                        twin_rows = [self.row(span.position, i) for i in range(span.first, span.last + 1)]
                        twin_z = (float(scores[twin_rows].max()) - mean) / spread
                    english = sentence.text if not lang.is_chinese(paragraph.language) else (
                        self.span_text(span) if span else "")  # fmt: skip
                    names = [n for n in _NAME.findall(english) if n.split()[0].lower() not in question_words]
                    novel = sum(1 for t in both if t not in question_tokens) / max(1, len(both))
                    cover, checkable = _coverage(terms, both)
                    cover_own, _ = _coverage(terms, own)
                    cover_unit, _ = _coverage(terms, unit_tokens)
                    candidates.append(Candidate(position, s, rank, same, span))
                    rows.append(
                        [
                            float(scores[self.row(position, s)]),
                            z,
                            twin_z,
                            0.0,  # gap: filled below, once the best similarity is known
                            float(rank),
                            hit.score / top_fused if top_fused else 0.0,
                            hit.lexical / top_bm25 if top_bm25 > 0 else 0.0,
                            cover,
                            cover_own,
                            cover_unit,
                            checkable,
                            unknown,
                            _missing(asked_numbers, numbers(text)),
                            _missing(asked_numbers, unit_numbers),
                            missing_in_document,
                            float(needed is not None),
                            float(needed is not None and has_type(text, needed)),
                            float(asks_year),
                            float(asks_year and bool(_YEAR.search(lang.normalize(text)))),
                            float(asks_name),
                            float(asks_name and bool(names)),
                            novel,
                            float(same),
                            float(twin is not None),
                            float(s == 0),
                            math.log1p(len(sentence.text)),
                            math.log1p(len(terms)),
                            best_z,
                        ]
                    )
        features = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
        if len(rows):
            features[:, 3] = features[:, 0] - features[:, 0].max()
        return Weighing(language, version, terms, tuple(candidates), features)

    def paragraph(self, position: int) -> Paragraph:
        """The paragraph at ``position``."""
        return self.paragraphs[position]


def _coverage(terms: dict[str, float], tokens: frozenset[str] | set[str]) -> tuple[float, float]:
    """(IDF-weighted share of the checkable terms found in ``tokens``, share of weight checkable).

    A Chinese term cannot be checked against English-only text, nor an English word against
    Chinese-only text (unless it occurs there, like "RCEP"); numbers can be checked anywhere.
    """
    total = sum(terms.values())
    if total <= 0:
        return 0.0, 0.0
    has_han = any(lang.is_cjk(t[0]) for t in tokens)
    has_latin = any(not lang.is_cjk(t[0]) and not t.isdigit() for t in tokens)
    checkable = {
        t: w
        for t, w in terms.items()
        if (has_han if lang.is_cjk(t[0]) else (has_latin or t.isdigit() or t in tokens))
    }
    weight = sum(checkable.values())
    if weight <= 0:
        return 0.0, 0.0
    return sum(w for t, w in checkable.items() if t in tokens) / weight, weight / total


def _missing(wanted: set[str], present: set[str]) -> float:
    """Share of ``wanted`` numbers not in ``present`` (0 when nothing is wanted)."""
    return sum(1 for n in wanted if n not in present) / len(wanted) if wanted else 0.0
