"""Answering (extractive): quote the sentences that answer the question, cited as [P#].

No LLM is involved. Every sentence of the retrieved units, in both versions, is described by
:mod:`bilingual_qa.evidence`; a small logistic model fitted on development data
(:mod:`bilingual_qa.training`, weights in ``data/answerer.json``) gives the probability that it
answers the question. The document is judged silent when the best probability is below the
fitted threshold; otherwise the answer quotes the best sentence and a second one when it is
likely enough (by fitted ratios: a sentence of the same paragraph or its translation more
readily than one of another paragraph), in the question's language: a sentence found in the
other version is quoted through its translation (or the translated paragraph's own likeliest
sentence), and "only in the other version" is said only when the paragraph has no translation.
Chinese is converted to the question's script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import language as lang
from .answer import Answer, Citation, Signals
from .document import Paragraph, Sentence
from .errors import ConfigError
from .evidence import FEATURES, Evidence, Weighing, expected_type, has_type
from .files import read_json
from .prompts import messages
from .retrieval import Retrieval, Retriever

__all__ = ["Answer", "AnswererModel", "Citation", "ExtractiveAnswerer", "expected_type", "has_type"]

MODEL_PATH = Path(__file__).resolve().parent / "data" / "answerer.json"
MODEL_FORMAT = 1


@dataclass(frozen=True)
class AnswererModel:
    """The fitted answerer: two logistic models.

    ``sentence`` gives P(a sentence answers) from its :data:`~bilingual_qa.evidence.FEATURES`;
    ``gate`` gives P(the document answers) from the question-level view of the best candidates
    (:func:`question_features`). ``threshold``: below this gate probability the document is
    judged silent. ``second``: a
    second sentence of the best one's paragraph (or its twin) is quoted when its probability is
    at least this share of the best one's, and so is the twin's own wording in place of a
    sentence it does not translate; ``elsewhere``: the share a sentence of another paragraph
    needs.
    ``translation``: a sentence's best match in the twin paragraph must be at least this
    similar (cosine) to count as its translation.
    """

    sentence: Logistic
    gate: Logistic
    threshold: float
    second: float
    translation: float
    elsewhere: float = 0.5

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """P(the sentence answers the question) for each row of ``features``."""
        return self.sentence.predict(features)

    def confidence(self, features: np.ndarray, probabilities: np.ndarray) -> float:
        """P(the document answers the question), from the question-level view of its evidence."""
        if not len(probabilities):
            return 0.0
        return float(self.gate.predict(question_features(features, probabilities)[None, :])[0])

    @classmethod
    def from_dict(cls, data: dict) -> AnswererModel:
        """A model from its JSON form."""
        return cls(
            sentence=Logistic.from_dict(data["sentence"]),
            gate=Logistic.from_dict(data["gate"]),
            threshold=float(data["threshold"]),
            second=float(data["second"]),
            translation=float(data["translation"]),
            # Weights fitted before the two ratios were told apart used one for both.
            elsewhere=float(data.get("elsewhere", data["second"])),
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "sentence": self.sentence.to_dict(),
            "gate": self.gate.to_dict(),
            "threshold": round(self.threshold, 6),
            "second": round(self.second, 6),
            "translation": round(self.translation, 6),
            "elsewhere": round(self.elsewhere, 6),
        }


@dataclass(frozen=True)
class Logistic:
    """A logistic regression over standardized features: answering needs only this dot product."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The probability for each row of ``features``."""
        if not len(features):
            return np.zeros(0)
        logits = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))

    @classmethod
    def from_dict(cls, data: dict) -> Logistic:
        """From the JSON form."""
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=float(data["intercept"]),
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON form (rounded: small and diffable)."""
        return {
            "mean": [round(float(x), 6) for x in self.mean],
            "scale": [round(float(x), 6) for x in self.scale],
            "coef": [round(float(x), 6) for x in self.coef],
            "intercept": round(self.intercept, 6),
        }


# The question-level view the gate reads, in this order: how sure the best sentences are, and
# what the best sentence's evidence lacks.
GATE_FEATURES = (
    "best_logit", "second_logit", "unknown", "numbers_missing_document", "numbers_missing_unit",
    "cover_sentence", "cover_unit", "top_unit_cover", "best_z", "z", "terms", "type_missing", "sim",
    "checkable",
)  # fmt: skip
_F = {name: i for i, name in enumerate(FEATURES)}


def question_features(features: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The gate's features (:data:`GATE_FEATURES`) from a question's candidates and their probabilities."""
    order = np.argsort(-probabilities, kind="stable")
    best = features[order[0]]
    logit = lambda p: math.log(max(p, 1e-6) / max(1 - p, 1e-6))  # noqa: E731
    top = features[:, _F["unit_rank"]] == 0
    return np.array(
        [
            logit(float(probabilities[order[0]])),
            logit(float(probabilities[order[1]])) if len(order) > 1 else logit(0.0),
            best[_F["unknown"]],
            best[_F["numbers_missing_document"]],
            best[_F["numbers_missing_unit"]],
            best[_F["cover_sentence"]],
            best[_F["cover_unit"]],
            float(features[top, _F["cover_unit"]].max()) if top.any() else 0.0,
            best[_F["best_z"]],
            best[_F["z"]],
            best[_F["terms"]],
            best[_F["asks_type"]] * (1 - best[_F["type_found"]]),
            best[_F["sim"]],
            best[_F["checkable"]],
        ]
    )


@lru_cache(maxsize=4)
def load_model_file(path: Path = MODEL_PATH) -> dict:
    """The fitted weights file, checked against this version's features.

    Raises:
        ConfigError: missing, unreadable, or fitted for other features.
    """
    data = read_json(path, ConfigError, "the answerer's weights")
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ConfigError(f"the answerer's weights {path} are not format {MODEL_FORMAT}")
    if data.get("features") != list(FEATURES):
        raise ConfigError(f"the answerer's weights {path} were fitted for other features; refit them")
    return data


def load_model(holdout: str | None = None, path: Path = MODEL_PATH) -> AnswererModel:
    """The answerer model; with ``holdout`` (a document's sha256), the one fitted without it.

    Development documents have a model fitted without them, so evaluation on them is
    cross-validated; any other document gets the model fitted on everything.

    Raises:
        ConfigError: the weights file is missing or malformed.
    """
    data = load_model_file(path)
    fold = (data.get("folds") or {}).get(holdout) if holdout else None
    try:
        return AnswererModel.from_dict(fold or data["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the answerer's weights {path} are malformed ({exc})") from None


@dataclass(frozen=True)
class _Quote:
    """A sentence (or run of sentences) to quote, with the twin run that says the same."""

    paragraph: Paragraph
    sentence: Sentence
    score: float
    rank: int
    twin: tuple[int, int] | None  # span in the twin paragraph


class ExtractiveAnswerer:
    """Answers by quoting document sentences; see the module docstring.

    Args:
        retriever: the document's retriever.
        max_sentences: how many sentences an answer may quote.
        model: the fitted model; None loads the packaged one at the first answer.
        threshold: refuse below this confidence instead of the model's fitted threshold.
    """

    def __init__(
        self,
        retriever: Retriever,
        max_sentences: int = 2,
        model: AnswererModel | None = None,
        threshold: float | None = None,
    ):
        self.retriever = retriever
        self.evidence = Evidence(retriever)
        self.max_sentences = max_sentences
        self.threshold = threshold
        self._model = model

    @property
    def model(self) -> AnswererModel:
        """The fitted model (loaded at first use)."""
        if self._model is None:
            self._model = load_model()
        return self._model

    def with_model(self, model: AnswererModel) -> ExtractiveAnswerer:
        """The same answerer (sharing its evidence caches) deciding with another model."""
        twin = ExtractiveAnswerer.__new__(ExtractiveAnswerer)
        twin.__dict__.update(self.__dict__)
        twin._model = model
        return twin

    def answer(self, question: str, language: str, retrieval: Retrieval) -> Answer:
        """Answer ``question`` (already validated and condensed) asked in ``language``.

        Args:
            question: the question text.
            language: "en", "zh-Hant" or "zh-Hans".
            retrieval: the search result for the question.

        Returns:
            The :class:`Answer`; ``answered`` is False when the document is silent.
        """
        weighing = self.evidence.weigh(question, language, retrieval)
        model = self.model
        probabilities = model.probabilities(weighing.features)
        confidence = model.confidence(weighing.features, probabilities)
        threshold = self.decision_threshold
        signals = Signals(confidence=round(confidence, 4), threshold=round(threshold, 4))
        if not len(probabilities) or confidence < threshold:
            return self._refusal(question, language, signals)
        quotes, only_other = self._choose(weighing, probabilities)
        return self._compose(question, language, quotes, signals, weighing, only_other)

    @property
    def decision_threshold(self) -> float:
        """The confidence below which the document counts as silent (set, or the fitted one)."""
        return self.model.threshold if self.threshold is None else self.threshold

    def confidence(self, question: str, language: str, retrieval: Retrieval) -> float:
        """P(the document answers ``question``), as :meth:`answer` judges it (0 without evidence)."""
        weighing = self.evidence.weigh(question, language, retrieval)
        if not len(weighing.features):
            return 0.0
        probabilities = self.model.probabilities(weighing.features)
        return float(self.model.confidence(weighing.features, probabilities))

    def _choose(self, weighing: Weighing, probabilities: np.ndarray) -> tuple[list[_Quote], bool]:
        """The quotes, best first, moved to the wanted version where a translation says the same.

        Returns the quotes and whether the best one had to stay in the other version.
        """
        model = self.model
        evidence = self.evidence
        order = [int(i) for i in np.argsort(-probabilities, kind="stable")]
        best = order[0]
        picked = [best]
        taken = set(_footprint(weighing.candidates[best]))
        owns = {_own(weighing.candidates[best])}
        unit = {p for p, _ in taken}
        wanted_chinese = lang.is_chinese(weighing.language)
        if weighing.version is not None:
            wanted_chinese = weighing.version != lang.EN
        # Asked how the other version words something: that sentence's translation, nothing more.
        most = 1 if weighing.version is not None else self.max_sentences
        for i in order[1:]:
            if len(picked) >= most:
                break
            footprint = _footprint(weighing.candidates[i])
            if _own(weighing.candidates[i]) in taken or owns & footprint:
                # The same sentence again, or its translation. Two sentences that one long
                # sentence of the twin translates together are not the same sentence.
                continue
            near = any(p in unit for p, _ in footprint)
            if probabilities[i] < (model.second if near else model.elsewhere) * probabilities[best]:
                continue
            if not self._in_version(weighing, i, wanted_chinese):
                continue  # only the best sentence may stand in the other language
            picked.append(i)
            taken |= footprint
            owns.add(_own(weighing.candidates[i]))
        quotes: list[_Quote] = []
        only_other = False
        for n, i in enumerate(picked):
            c = weighing.candidates[i]
            paragraph = evidence.paragraph(c.position)
            sentence = paragraph.sentences[c.sentence]
            score = float(probabilities[i])
            span = c.twin
            in_wanted = lang.is_chinese(paragraph.language) == wanted_chinese
            alternative = None if in_wanted or span is None else self._alternative(weighing, probabilities, i)
            if not in_wanted and self._in_version(weighing, i, wanted_chinese):
                twin = evidence.paragraph(span.position)
                start, end = twin.sentences[span.first].start, twin.sentences[span.last].end
                quote = _Quote(twin, Sentence(twin.text[start:end], start, end), score, c.rank,
                               (sentence.start, sentence.end))  # fmt: skip
            elif alternative is not None:
                # No sentence-for-sentence translation, but the twin says it in its own words.
                a = weighing.candidates[alternative]
                twin = evidence.paragraph(a.position)
                quote = _Quote(twin, twin.sentences[a.sentence], float(probabilities[alternative]), a.rank,
                               (sentence.start, sentence.end))  # fmt: skip
            else:
                only_other = only_other or (n == 0 and not in_wanted)
                twin_span = None
                if span is not None:
                    twin = evidence.paragraph(span.position)
                    twin_span = (twin.sentences[span.first].start, twin.sentences[span.last].end)
                quote = _Quote(paragraph, sentence, score, c.rank, twin_span)
            if all(
                (q.paragraph.id, q.sentence.start) != (quote.paragraph.id, quote.sentence.start)
                for q in quotes
            ):
                quotes.append(quote)
        if only_other:
            # The best sentence stands in the other version alone: a second one in the asker's
            # language would make the answer mixed, and hide that the fact is only over there.
            quotes = quotes[:1]
        return quotes, only_other

    def _alternative(self, weighing: Weighing, probabilities: np.ndarray, chosen: int) -> int | None:
        """The twin paragraph's most likely sentence, when likely enough beside ``chosen`` (``second``)."""
        twin = self.evidence.twin_position(weighing.candidates[chosen].position)
        rows = [i for i, c in enumerate(weighing.candidates) if c.position == twin]
        if not rows:
            return None
        best = max(rows, key=lambda i: probabilities[i])
        # The twin is the same unit: its sentence stands in under the same-paragraph ratio.
        return best if probabilities[best] >= self.model.second * probabilities[chosen] else None

    def _in_version(self, weighing: Weighing, i: int, wanted_chinese: bool) -> bool:
        """Whether candidate ``i`` can be quoted in the wanted version: it is in it, or translated there.

        Asked what the other version says, its corresponding sentences count however loosely
        they match.
        """
        c = weighing.candidates[i]
        if lang.is_chinese(self.evidence.paragraph(c.position).language) == wanted_chinese:
            return True
        return c.twin is not None and (
            weighing.version is not None or self._translates(c.position, c.sentence, c.twin)
        )

    def _translates(self, position: int, sentence: int, span) -> bool:
        """Whether the twin span really is the sentence's translation (similar enough)."""
        index = self.evidence.index
        vector = index.sentence_vectors[self.evidence.row(position, sentence)]
        rows = [self.evidence.row(span.position, i) for i in range(span.first, span.last + 1)]
        return float((index.sentence_vectors[rows] @ vector).max()) >= self.model.translation

    def _compose(
        self,
        question: str,
        language: str,
        quotes: list[_Quote],
        signals: Signals,
        weighing: Weighing,
        only_other: bool,
    ) -> Answer:
        """Quote the chosen sentences whole, in document order per unit, with markers and a note."""
        ordered = sorted(quotes, key=lambda q: (q.rank, q.paragraph.position, q.sentence.start))
        chinese_answer = lang.is_chinese(language)
        # Whole sentences: cutting long Chinese sentences to the clauses holding the question's
        # terms lost the answer more often than it shortened answers usefully (eval, all sets).
        spans = {id(q): (q.sentence.start, q.sentence.end) for q in quotes}
        pieces: list[tuple[str, list[str]]] = []  # (paragraph id, its consecutive quotes)
        elision = messages(language)["elision"]
        last_end = 0
        for q in ordered:
            start, end = spans[id(q)]
            text = q.paragraph.text[start:end]
            if lang.is_chinese(q.paragraph.language):
                text = lang.to_script(text, language)
            if pieces and pieces[-1][0] == q.paragraph.id:
                if q.paragraph.text[last_end:start].strip():
                    pieces[-1][1].append(elision)  # a sentence between them is left out
                pieces[-1][1].append(text)  # one marker after a paragraph's sentences
            else:
                pieces.append((q.paragraph.id, [text]))
            last_end = end
        gap = "" if chinese_answer else " "
        quote = gap.join(f"{gap.join(texts)} [{pid}]" for pid, texts in pieces)
        evidence_language = ordered[0].paragraph.language
        text = quote
        if lang.is_chinese(evidence_language) != chinese_answer:
            version = "english" if evidence_language == lang.EN else "chinese"
            if weighing.version is not None:
                text = messages(language)[f"{version}_version_says"].format(quote=quote)
            elif only_other:
                text = messages(language)[f"only_in_{version}"].format(quote=quote)
        citations: dict[str, Citation] = {}
        for q in sorted(quotes, key=lambda q: -q.score):
            old = citations.get(q.paragraph.id)
            quoted = (old.spans if old else ()) + (spans[id(q)],)
            twin_quoted = (old.twin_spans if old else ()) + ((q.twin,) if q.twin else ())
            citations[q.paragraph.id] = Citation(
                paragraph_id=q.paragraph.id,
                language=q.paragraph.language,
                text=q.paragraph.text,
                twin_id=q.paragraph.twin_id,
                score=round(old.score if old else q.score, 4),
                spans=tuple(sorted(set(quoted))),
                twin_spans=tuple(sorted(set(twin_quoted))),
                location=q.paragraph.location,
            )
        return Answer(
            question=question,
            text=text,
            language=language,
            answered=True,
            citations=tuple(citations.values()),
            evidence_language=evidence_language,
            signals=signals,
        )

    @staticmethod
    def _refusal(question: str, language: str, signals: Signals) -> Answer:
        return Answer(
            question=question,
            text=messages(language)["refusal"],
            language=language,
            answered=False,
            citations=(),
            signals=signals,
        )


def _own(candidate) -> tuple[int, int]:
    """The (paragraph, sentence) cell of the candidate itself."""
    return (candidate.position, candidate.sentence)


def _footprint(candidate) -> set[tuple[int, int]]:
    """The (paragraph, sentence) cells a candidate and its translation occupy."""
    cells = {(candidate.position, candidate.sentence)}
    if candidate.twin is not None:
        cells.update(
            (candidate.twin.position, i) for i in range(candidate.twin.first, candidate.twin.last + 1)
        )
    return cells
