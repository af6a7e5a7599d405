"""Training: fit the extractive answerer's model on the committed reference sets.

    bilingual-qa train [--out app/bilingual_qa/data/answerer.json]

Every case of every committed set in eval/ (development data and the default document's set)
is asked through the :class:`~bilingual_qa.Assistant`; each candidate sentence it weighs
(:mod:`bilingual_qa.evidence`) is labelled positive when it, or its translation, holds one of
the case's required facts and lies in a gold paragraph or its twin. A logistic regression
(L2, Newton's method: deterministic, numpy only) learns P(sentence answers); its L2 strength is
chosen by leave-one-document-out cross-validation on the documents it is fitted on.

Everything is cross-validated by document (each XQuAD article is in exactly one document, and
the default document's set counts as one): the model that scores a document never saw its
questions. The refusal threshold is the one that keeps false refusals at 2% on held-out
predictions of the *training* documents (nested: each one's gate confidences from a gate fitted
without it), and the file keeps one model per held-out
document, so that ``bilingual-qa eval`` reports cross-validated scores for development data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answering import (
    GATE_FEATURES,
    MODEL_FORMAT,
    MODEL_PATH,
    AnswererModel,
    Logistic,
    _footprint,
    _own,
    question_features,
)
from .errors import EvaluationError
from .evidence import FEATURES

FALSE_REFUSALS = 0.02  # the constraint that sets the threshold
# The answer-length bound that limits second sentences: the median answer quotes at most this
# share of the paragraph it cites, over paragraphs of LONG_PARAGRAPH sentences or more.
LENGTH_SHARE = 0.5
LONG_PARAGRAPH = 3
L2 = 1.0  # the gate's
# The sentence model's L2 strength is chosen from these by leave-one-document-out
# cross-validation on the documents it is fitted on (so, nested, for each fold): strong shrinkage
# ranks answering sentences first more often on documents the model never saw.
SENTENCE_L2_GRID = (1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
# Ratios of probabilities: finer near zero, where a small step already changes which second
# sentences pass (most of them are far less likely than the best one).
SECOND_GRID = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)
ELSEWHERE_GRID = SECOND_GRID[5:]
# What a second sentence costs when the ratio for other paragraphs is fitted: it must raise "the
# quote holds the answer" by this share of the answers it is added to.
SECOND_COST = 0.1


@dataclass(frozen=True)
class Question:
    """One reference case, weighed: its candidates' features and labels."""

    group: str  # the document's sha256: the cross-validation fold
    set_name: str
    case_id: str
    category: str
    answerable: bool
    features: np.ndarray
    labels: np.ndarray
    twins: tuple[frozenset, ...]  # per candidate: the cells it and its translation occupy
    # Per candidate: the share of its paragraph the quote would take, in the version it would be
    # quoted in (its translation's, when the question is in the other language), and whether
    # that paragraph is long enough for the length bound (LONG_PARAGRAPH sentences); None when
    # not collected.
    shares: np.ndarray | None = None
    long: np.ndarray | None = None
    language: str = ""  # the answer's language: the length bound holds for each script
    # Per candidate: its own (paragraph, sentence) cell; None: any shared cell makes two
    # candidates the same sentence.
    own: tuple[tuple[int, int], ...] | None = None
    # Per candidate: what its quote is, (paragraph, first sentence, last sentence): two
    # sentences quoted through the same translation are one quote.
    quotes: tuple[tuple[int, int, int], ...] | None = None


def collect(sets: Sequence[Path] | None = None, settings=None, progress: bool = True) -> tuple[list, list]:
    """Weigh every case of every set; also gather translation-similarity pairs.

    Returns:
        (the :class:`Question` list, [(similarity, is_translation)] pairs).
    """
    from tqdm import tqdm

    from .assistant import Assistant
    from .config import Settings
    from .embedding import load_embedder
    from .evaluation.metrics import normalize_for_facts
    from .evaluation.reference import discover_sets, load_reference_set
    from .evidence import Evidence

    settings = settings or Settings.from_env()
    embedder = load_embedder(settings)
    questions: list[Question] = []
    pairs: list[tuple[float, bool]] = []
    for path in sets or discover_sets():
        reference = load_reference_set(path)
        document = str(reference.document_path) if reference.document_path else None
        bot = Assistant(document=document, settings=settings, embedder=embedder)
        evidence: Evidence = bot._answerer.evidence
        pairs.extend(_translation_pairs(evidence))
        twins = {p.id: p.twin_id for p in bot.paragraphs}
        quiet = not progress or not sys.stderr.isatty()
        for case in tqdm(reference.cases, desc=reference.name, unit="q", file=sys.stderr, disable=quiet):
            history = [{"question": q, "answer": a} for q, a in case.history] or None
            weighing, _ = bot.weigh(case.question, history)
            allowed = set(case.gold) | {twins[g] for g in case.gold if twins.get(g)}
            facts = [[normalize_for_facts(a) for a in fact] for fact in case.facts]
            labels = []
            cells = []
            shares, long, quotes = [], [], []
            for c in weighing.candidates:
                paragraph = evidence.paragraph(c.position)
                text = paragraph.sentences[c.sentence].text
                share, whole, quote = _quoted_share(evidence, weighing, c)
                shares.append(share)
                long.append(whole)
                quotes.append(quote)
                if c.twin is not None:
                    text += " " + evidence.span_text(c.twin)
                text = normalize_for_facts(text)
                hit = paragraph.id in allowed and any(any(a in text for a in fact) for fact in facts)
                labels.append(hit)
                cells.append(frozenset(_footprint(c)))
            questions.append(
                Question(
                    group=bot.document.sha256,
                    set_name=reference.name,
                    case_id=case.id,
                    category=case.category,
                    answerable=case.answerable,
                    features=weighing.features,
                    labels=np.asarray(labels, dtype=bool),
                    twins=tuple(cells),
                    shares=np.asarray(shares, dtype=np.float64),
                    long=np.asarray(long, dtype=bool),
                    language=weighing.language,
                    own=tuple(_own(c) for c in weighing.candidates),
                    quotes=tuple(quotes),
                )
            )
    return questions, pairs


def _quoted_share(evidence, weighing, candidate) -> tuple[float, bool, tuple[int, int, int]]:
    """(the share of its paragraph a candidate's quote takes, whether that paragraph is long,
    the quoted sentences as (paragraph, first, last)).

    Measured where the answer would quote it: a sentence in the other language than the
    answer's is quoted through its translation, whose share of the twin paragraph is what the
    reader sees (and what ``bilingual-qa eval`` measures).
    """
    from . import language as lang

    paragraph = evidence.paragraph(candidate.position)
    wanted = lang.is_chinese(weighing.language if weighing.version is None else weighing.version)
    span = candidate.twin
    if lang.is_chinese(paragraph.language) != wanted and span is not None:
        paragraph = evidence.paragraph(span.position)
        length = len(evidence.span_text(span))
        quoted = (span.position, span.first, span.last)
    else:
        length = len(paragraph.sentences[candidate.sentence].text)
        quoted = (candidate.position, candidate.sentence, candidate.sentence)
    return length / max(1, len(paragraph.text)), len(paragraph.sentences) >= LONG_PARAGRAPH, quoted


def _translation_pairs(evidence) -> list[tuple[float, bool]]:
    """(best similarity to a paragraph's sentences, whether that paragraph is the twin) per sentence."""
    out = []
    vectors = evidence.index.sentence_vectors
    paragraphs = evidence.paragraphs
    twinned = [i for i in range(len(paragraphs)) if evidence.twin_position(i) is not None]
    for n, position in enumerate(twinned):
        twin = evidence.twin_position(position)
        # A paragraph in the twin's language that is not the twin: the next twinned one's twin.
        other = evidence.twin_position(twinned[(n + 1) % len(twinned)]) if len(twinned) > 2 else None
        for s in range(len(paragraphs[position].sentences)):
            vector = vectors[evidence.row(position, s)]
            for target, truth in ((twin, True), (other, False)):
                if target is None or target == position:
                    continue
                rows = evidence.index.sentence_range(target)
                if rows.stop > rows.start:
                    out.append((float((vectors[rows.start : rows.stop] @ vector).max()), truth))
    return out


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = L2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularized logistic regression by Newton's method on standardized features.

    Returns:
        (mean, scale, coefficients, intercept).
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])


def _fit(questions: Sequence[Question], l2: float = L2) -> Logistic:
    """The sentence model fitted on ``questions``' candidates."""
    x = np.vstack([q.features for q in questions if len(q.features)])
    y = np.concatenate([q.labels for q in questions if len(q.features)]).astype(np.float64)
    return Logistic(*fit_logistic(x, y, l2))


def _sentence_l2(questions: Sequence[Question]) -> float:
    """The sentence model's L2 strength that, left out one document at a time, most often ranks
    an answering sentence first on the document left out (ties: the stronger)."""
    groups = sorted({q.group for q in questions})
    if len(groups) < 2:
        return L2

    def first_right(l2: float) -> float:
        hits = []
        for g in groups:
            model = _fit([q for q in questions if q.group != g], l2)
            hits += [bool(q.labels[int(np.argmax(model.predict(q.features)))])
                     for q in questions if q.group == g and q.answerable and len(q.features)]  # fmt: skip
        return round(float(np.mean(hits)), 6) if hits else 0.0

    scores = {l2: first_right(l2) for l2 in SENTENCE_L2_GRID}
    return max(SENTENCE_L2_GRID, key=lambda l2: (scores[l2], l2))


def _gate_data(questions: Sequence[Question], scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rows = [(question_features(q.features, s), q.answerable) for q, s in zip(questions, scores, strict=True)
            if len(s)]  # fmt: skip
    return np.array([r for r, _ in rows]), np.array([a for _, a in rows], dtype=np.float64)


def _confidences(
    model: AnswererModel, questions: Sequence[Question], scores: Sequence[np.ndarray]
) -> np.ndarray:
    return np.array([model.confidence(q.features, s) for q, s in zip(questions, scores, strict=True)])


def _threshold(questions: Sequence[Question], confidences: np.ndarray) -> float:
    """The highest threshold that refuses at most FALSE_REFUSALS of the answerable questions."""
    best = np.sort(confidences[[q.answerable for q in questions]])
    if not len(best):
        return 0.5
    return float(best[min(len(best) - 1, int(np.floor(FALSE_REFUSALS * len(best))))])


def _picked(q: Question, s: np.ndarray, second: float, elsewhere: float) -> list[int]:
    """The candidates quoted, as the answerer picks them (:meth:`ExtractiveAnswerer._choose`).

    The best, and the next one (not its translation) likely enough: a sentence of the best
    one's paragraph or its twin needs ``second`` times the best probability, a sentence of
    another paragraph ``elsewhere`` times it.
    """
    order = np.argsort(-s, kind="stable")
    best = int(order[0])
    unit = {position for position, _ in q.twins[best]}
    for i in (int(i) for i in order[1:]):
        if _same(q, i, best):
            continue  # the same sentence again, or its translation
        near = any(position in unit for position, _ in q.twins[i])
        if s[i] >= (second if near else elsewhere) * s[best]:
            return [best, i]
    return [best]


def _same(q: Question, i: int, j: int) -> bool:
    """Whether candidates ``i`` and ``j`` are one sentence (or one's translation is the other)."""
    if q.own is None:
        return bool(q.twins[i] & q.twins[j])
    return q.own[i] in q.twins[j] or q.own[j] in q.twins[i]


def _quoted(q: Question, s: np.ndarray, second: float, elsewhere: float | None = None) -> tuple[bool, bool]:
    """(whether the quoted sentences hold the answer, whether a second one was quoted)."""
    picked = _picked(q, s, second, second if elsewhere is None else elsewhere)
    return bool(q.labels[picked].any()), len(picked) > 1


def _share(q: Question, s: np.ndarray, second: float, elsewhere: float) -> float | None:
    """The quote's share of its first paragraph; None when not collected or a short paragraph."""
    if q.shares is None or q.long is None:
        return None
    picked = _picked(q, s, second, elsewhere)
    if q.quotes is not None:
        picked = [i for n, i in enumerate(picked) if q.quotes[i] not in {q.quotes[j] for j in picked[:n]}]
    return float(q.shares[picked].sum()) if q.long[picked[0]] else None


def _elsewhere(questions: Sequence[Question], scores: Sequence[np.ndarray]) -> float:
    """The ratio a sentence of another paragraph needs, fitted as the one shared ratio was.

    That is, with one ratio for every second sentence: the one that best trades answers found
    against second sentences quoted (SECOND_COST each). The same-paragraph ratio is fitted
    after it, under the length bound (:func:`_second`).
    """
    answerable = [(q, s) for q, s in zip(questions, scores, strict=True) if q.answerable and len(s)]

    def value(ratio: float) -> float:
        found = [_quoted(q, s, ratio) for q, s in answerable]
        return float(np.mean([f for f, _ in found]) - SECOND_COST * np.mean([t for _, t in found]))

    return max(ELSEWHERE_GRID, key=lambda r: (value(r), r)) if answerable else 1.01


def _second(questions: Sequence[Question], scores: Sequence[np.ndarray], elsewhere: float = 1.01) -> float:
    """The ratio a second sentence of the same paragraph (or its twin) needs to be quoted.

    The one that finds the most answers while the median answer, in each answer language and
    script, stays within the product's length bound: at most LENGTH_SHARE of the cited
    paragraph, over paragraphs of LONG_PARAGRAPH sentences or more. Among equally good ratios,
    the highest.
    """
    answerable = [(q, s) for q, s in zip(questions, scores, strict=True) if q.answerable and len(s)]

    def value(ratio: float) -> tuple[bool, float, float]:
        found = [_quoted(q, s, ratio, elsewhere)[0] for q, s in answerable]
        shares: dict[str, list[float]] = {}
        for q, s in answerable:
            if (v := _share(q, s, ratio, elsewhere)) is not None:
                shares.setdefault(q.language, []).append(v)
        short = all(float(np.median(v)) <= LENGTH_SHARE for v in shares.values())
        return short, round(float(np.mean(found)) if found else 0.0, 6), ratio

    return max(SECOND_GRID, key=value)


def _translation_floor(pairs: Sequence[tuple[float, bool]]) -> float:
    """The similarity that best separates a sentence's translation from another paragraph's best match."""
    values = np.array([v for v, _ in pairs])
    truth = np.array([t for _, t in pairs])
    if not truth.any() or truth.all():
        return 0.85
    candidates = np.unique(np.round(values, 3))

    def balanced(t: float) -> float:
        return float(np.mean(values[truth] >= t) + np.mean(values[~truth] < t)) / 2

    return float(max(candidates, key=lambda t: (balanced(t), -t)))


def _model(
    questions: Sequence[Question], inner: Sequence[np.ndarray], translation: float, l2: float = L2
) -> AnswererModel:
    """Fit the sentence model on ``questions`` (with ``l2``), the gate on their held-out scores ``inner``."""
    x, y = _gate_data(questions, inner)
    gate = Logistic(*fit_logistic(x, y))
    elsewhere = _elsewhere(questions, inner)
    model = AnswererModel(
        sentence=_fit(questions, l2), gate=gate, threshold=0.0, second=_second(questions, inner, elsewhere),
        translation=translation, elsewhere=elsewhere,
    )  # fmt: skip
    threshold = _threshold(questions, _held_out_confidences(model, questions, inner))
    return dataclasses.replace(model, threshold=threshold)


def _held_out_confidences(
    model: AnswererModel, questions: Sequence[Question], inner: Sequence[np.ndarray]
) -> np.ndarray:
    """Each question's confidence from a gate fitted without its document.

    The threshold is set on these: a gate's confidences on the questions it was fitted on are
    higher than on a new document's, and a threshold set on them refused more than
    FALSE_REFUSALS of the answerable questions of the document held out (2.9% against 2%).
    """
    groups = sorted({q.group for q in questions})
    if len(groups) < 2:
        return _confidences(model, questions, inner)
    out = np.zeros(len(questions))
    for g in groups:
        rest = [(q, s) for q, s in zip(questions, inner, strict=True) if q.group != g]
        x, y = _gate_data([q for q, _ in rest], [s for _, s in rest])
        gate = model.gate if not len(x) or y.all() or not y.any() else Logistic(*fit_logistic(x, y))
        held = [i for i, q in enumerate(questions) if q.group == g]
        out[held] = _confidences(dataclasses.replace(model, gate=gate), [questions[i] for i in held],
                                 [inner[i] for i in held])  # fmt: skip
    return out


def _out_of_fold(
    questions: Sequence[Question], groups: Sequence[str], l2: dict[str, float] | float = L2
) -> list[np.ndarray]:
    """Sentence scores of each question from the sentence model fitted without its group.

    ``l2``: the strength, or each group's (chosen without it).
    """
    scores: list[np.ndarray | None] = [None] * len(questions)
    for g in groups:
        model = _fit([q for q in questions if q.group != g], l2[g] if isinstance(l2, dict) else l2)
        for i, q in enumerate(questions):
            if q.group == g:
                scores[i] = model.predict(q.features)
    return scores  # type: ignore[return-value]


def evaluate(questions: Sequence[Question], scores: Sequence[np.ndarray], model: AnswererModel) -> dict:
    """Decision quality at the model's threshold: quotes holding the answer and refusals."""
    out: dict[str, float | int | None] = {}
    confident = _confidences(model, questions, scores) >= model.threshold
    answerable = [i for i, q in enumerate(questions) if q.answerable]
    answered = [i for i in answerable if confident[i]]
    out["answerable"] = len(answerable)
    out["false_refusal"] = round(1 - len(answered) / max(1, len(answerable)), 4)
    found = [_quoted(questions[i], scores[i], model.second, model.elsewhere)[0] for i in answered]
    out["quote_holds_answer"] = round(float(np.mean(found)) if found else 0.0, 4)
    for kind in ("unanswerable", "near-miss"):
        cases = [i for i, q in enumerate(questions) if not q.answerable and q.category == kind]
        out[f"{kind}_n"] = len(cases)
        out[f"{kind}_refused"] = (
            round(float(np.mean([not confident[i] for i in cases])), 4) if cases else None
        )
    return out


def tradeoff(confidences: np.ndarray, questions: Sequence[Question]) -> list[dict]:
    """False refusals against refusals of unanswerable and near-miss questions, over thresholds."""
    answerable = np.array([q.answerable for q in questions])
    ood = np.array([not q.answerable and q.category == "unanswerable" for q in questions])
    near = np.array([not q.answerable and q.category == "near-miss" for q in questions])
    rows = []
    for t in np.unique(np.round(np.quantile(confidences[answerable], np.linspace(0, 0.3, 16)), 4)):
        rows.append(
            {
                "threshold": float(t),
                "false_refusal": round(float(np.mean(confidences[answerable] < t)), 4),
                "out_of_document_refused": round(float(np.mean(confidences[ood] < t)), 4)
                if ood.any()
                else None,
                "near_miss_refused": round(float(np.mean(confidences[near] < t)), 4) if near.any() else None,
            }
        )
    return rows


def train(sets: Sequence[Path] | None = None, settings=None, progress: bool = True, collected=None) -> dict:
    """Fit the answerer: one model per held-out document, and one on everything.

    Args:
        sets: the reference sets (default: every committed set).
        settings: where models and indexes are.
        progress: progress bars on a terminal.
        collected: already collected (questions, translation pairs), to skip :func:`collect`.

    Returns:
        The weights file's content (see :func:`bilingual_qa.answering.load_model`).
    """
    questions, pairs = collected or collect(sets, settings, progress)
    if not questions:
        raise EvaluationError("no reference case to fit on")
    names: dict[str, str] = {}
    for q in questions:
        names.setdefault(q.group, q.set_name)
    groups = sorted(names, key=names.get)
    translation = _translation_floor(pairs)
    strengths = {g: _sentence_l2([q for q in questions if q.group != g]) for g in groups}
    outer = _out_of_fold(questions, groups, strengths)
    folds, per_fold = {}, {}
    held_confidences = np.zeros(len(questions))
    for g in groups:
        train_qs = [q for q in questions if q.group != g]
        inner = _out_of_fold(train_qs, [h for h in groups if h != g], strengths[g])
        model = _model(train_qs, inner, translation, strengths[g])
        folds[g] = model.to_dict()
        held = [i for i, q in enumerate(questions) if q.group == g]
        per_fold[names[g]] = evaluate([questions[i] for i in held], [outer[i] for i in held], model)
        held_confidences[held] = _confidences(model, [questions[i] for i in held], [outer[i] for i in held])
    l2 = _sentence_l2(questions)
    final = _model(questions, outer, translation, l2)
    # Pooled over documents, each scored by the fold that never saw it, at that fold's threshold.
    answerable = [q.answerable for q in questions]
    pooled = _pool(per_fold)
    return {
        "format": MODEL_FORMAT,
        "features": list(FEATURES),
        "gate_features": list(GATE_FEATURES),
        "model": final.to_dict(),
        "folds": folds,
        "cross_validation": {
            "scheme": "leave one document out (every XQuAD article is in exactly one document; "
            "the default document counts as one); each fold's sentence-model L2, gate and threshold "
            "chosen on its training documents only, the threshold on their held-out confidences",
            "pooled": pooled,
            "per_document": per_fold,
            "tradeoff": tradeoff(held_confidences, questions) if any(answerable) else [],
        },
        "provenance": {
            "command": "bilingual-qa train",
            "sets": {names[g]: g for g in groups},
            "questions": len(questions),
            "candidates": int(sum(len(q.labels) for q in questions)),
            "positives": int(sum(int(q.labels.sum()) for q in questions)),
            "translation_pairs": len(pairs),
            "sentence_l2": l2,
            "sentence_l2_per_fold": {names[g]: strengths[g] for g in groups},
            "license": "fitted on eval/ reference sets; those derived from XQuAD are CC BY-SA 4.0 "
            "(Artetxe, Ruder and Yogatama 2020), so these weights are too: see data/answerer.md",
        },
    }


def _pool(per_fold: dict[str, dict]) -> dict:
    """Per-document figures pooled, weighted by their counts."""
    out: dict[str, float | int | None] = {}
    n = sum(r["answerable"] for r in per_fold.values())
    out["answerable"] = n
    out["false_refusal"] = round(sum(r["false_refusal"] * r["answerable"] for r in per_fold.values()) / n, 4)
    answered = {k: r["answerable"] * (1 - r["false_refusal"]) for k, r in per_fold.items()}
    out["quote_holds_answer"] = round(
        sum(r["quote_holds_answer"] * answered[k] for k, r in per_fold.items())
        / max(1, sum(answered.values())),
        4,
    )
    for kind in ("unanswerable", "near-miss"):
        total = sum(r[f"{kind}_n"] for r in per_fold.values())
        out[f"{kind}_n"] = total
        refused = sum((r[f"{kind}_refused"] or 0) * r[f"{kind}_n"] for r in per_fold.values())
        out[f"{kind}_refused"] = round(refused / total, 4) if total else None
    return out


def run_cli(args) -> int:
    """``bilingual-qa train``: fit, write the weights file, print the cross-validated figures."""
    from .config import Settings
    from .files import atomic_write

    settings = Settings.from_env(
        model=args.model, engine=args.engine, index_dir=args.index_dir, cache_dir=args.cache_dir,
        threads=args.threads,
    )  # fmt: skip
    data = train(settings=settings, progress=not args.json)
    out = Path(args.out or MODEL_PATH)
    text = json.dumps(data, ensure_ascii=False, indent=1)
    # One line per list of numbers, so a refit shows as a readable diff.
    text = re.sub(r"\[\s*([-+\d.eE,\s]+?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    try:
        atomic_write(out, text + "\n")
    except OSError as exc:
        raise EvaluationError(f"cannot write {out}: {exc.strerror or exc}") from None
    cv = data["cross_validation"]
    if args.json:
        print(json.dumps(cv, ensure_ascii=False, indent=2))
    else:
        print(f"weights written: {out}")
        print(f"cross-validated ({cv['scheme']}):")
        for name, row in [*cv["per_document"].items(), ("pooled", cv["pooled"])]:
            print(f"  {name:<14} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    return 0
