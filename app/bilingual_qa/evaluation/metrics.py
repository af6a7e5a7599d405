"""Metrics: the Metric table, scoring one answer to one case, and aggregating cases into cells.

Everything here is deterministic and local: no LLM judge, no hosted service. A case
is scored on retrieval (hit@1, hit@3, MRR over paragraph *pairs*), required facts,
citations, language and script, refusals, chrF against the reference answer and
latency. Scores are grouped into *cells*: question language × evidence language (the
language of the case's ``preferred`` paragraph; ``none`` for unanswerable cases).
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .. import language as lang
from .reference import LANGUAGES, Case

RETRIEVAL_DEPTH = 10  # ranked pairs scored for MRR
_MARKER = re.compile(r"\[(P\d+)\]")
# Where an answer's quotes start and end: markers, ellipses, colons, sentence ends.
_PIECES = re.compile(r"\[P\d+\]|…|[:：。！？；]|(?<=[.!?])\s+")


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key, short table label, direction and default gate tolerance."""

    key: str
    label: str
    higher_is_better: bool = True
    tolerance: float | None = 0.03  # absolute; None: reported, not gated
    # Defined only when something happened (a precision over the times a thing was said):
    # its absence from a run is not a regression.
    conditional: bool = False
    # How far one case can move a cell's mean of n cases: scale / n (chrF runs 0-100); None
    # for a median, which one case moves by any amount.
    scale: float | None = 1.0


METRICS = (
    Metric("hit@1", "hit@1"),
    Metric("hit@3", "hit@3"),
    Metric("mrr", "MRR"),
    Metric("cite_hit@1", "cite@1"),
    Metric("cite_mrr", "c.MRR"),
    Metric("fact_recall", "facts"),
    Metric("cite_precision", "c.prec"),
    Metric("cite_validity", "c.valid", tolerance=0.02),
    Metric("lang_match", "lang", tolerance=0.02),
    Metric("script_match", "script", tolerance=0.02),
    Metric("refusal_acc", "refuse", tolerance=0.05),
    Metric("false_refusal", "f.refuse", higher_is_better=False, tolerance=0.05),
    Metric("chrf", "chrF", tolerance=2.0, scale=100.0),
    # Answer characters over the cited paragraph's, for paragraphs of 3+ sentences (median).
    Metric("answer_length", "len", higher_is_better=False, tolerance=0.1, scale=None),
    # How often "this is stated only in the other version" is said, and how often rightly.
    Metric("other_said", "o.said", tolerance=None),
    Metric("other_right", "o.right", tolerance=0.05, conditional=True),
    # Timing is noisy on shared machines: reported, never gated by default.
    Metric("latency_p50", "p50 ms", higher_is_better=False, tolerance=None),
    Metric("latency_p95", "p95 ms", higher_is_better=False, tolerance=None),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}
# Same-language cells first, then cross-lingual, then unanswerable; "all" closes every table.
_CELL_ORDER = ("en→en", "en→zh", "zh-Hant→zh", "zh-Hant→en", "zh-Hans→zh", "zh-Hans→en",
               "en→none", "zh-Hant→none", "zh-Hans→none")  # fmt: skip
ALL = "all"


@dataclass(frozen=True)
class CitedParagraph:
    """A paragraph an answer cited: id, language and the start of its text."""

    id: str
    language: str
    excerpt: str


@dataclass(frozen=True)
class CaseResult:
    """How one system did on one case: its answer, per-case metrics and what went wrong."""

    id: str
    line: int
    cell: str
    category: str
    question: str
    language: str
    answerable: bool
    gold: tuple[str, ...]
    reference: str
    answer: str
    answered: bool
    answer_language: str
    citations: tuple[CitedParagraph, ...]
    ranking: tuple[str, ...]
    metrics: dict[str, float | None]
    problems: tuple[str, ...]
    seconds: float
    backend: str = "extractive"
    fallback_reason: str | None = None
    guardrails: tuple[str, ...] = ()
    # Conversations: whether the case had history, the id of the same question asked in full,
    # and whether the system condensed it with the earlier turns (None: it does not say).
    has_history: bool = False
    full: str | None = None
    condensed: bool | None = None


def cell_of(case: Case, document: Any) -> str:
    """A case's cell: "<question language>→<evidence language>" (en, zh or none).

    Args:
        case: the reference case.
        document: the document its ``preferred`` paragraph is in.

    Returns:
        For example "zh-Hant→en"; "en→none" for an unanswerable English question.
    """
    if not case.answerable or case.preferred is None:
        return f"{case.language}→none"
    evidence = document.paragraph(case.preferred).language
    return f"{case.language}→{'zh' if lang.is_chinese(evidence) else 'en'}"


def unit_keys(document: Any) -> dict[str, str]:
    """Paragraph id → its pair's key ("P1+P4"): a hit on either twin is a hit on the pair.

    Args:
        document: a document with twins.

    Returns:
        Every paragraph id mapped to its pair's key (its own id when it has no twin).
    """
    paragraphs = document.paragraphs
    keys = {}
    for members in document.units:
        key = "+".join(paragraphs[i].id for i in sorted(members))
        keys.update(dict.fromkeys((paragraphs[i].id for i in members), key))
    return keys


def normalize_for_facts(text: str) -> str:
    """NFKC, OpenCC t2s and casefold: the form facts are matched in.

    Args:
        text: an answer, a paragraph or a fact.

    Returns:
        The normalized text.
    """
    return lang.to_simplified(unicodedata.normalize("NFKC", text)).casefold()


def score_case(
    case: Case,
    answer: Any,
    document: Any,
    ranking: Sequence[Sequence[str]] | None = None,
    seconds: float = 0.0,
) -> CaseResult:
    """Score one answer to one reference case.

    Args:
        case: the reference case.
        answer: an :class:`~bilingual_qa.answering.Answer` (or anything with its fields).
        document: the document, with twins, that the ids refer to.
        ranking: retrieved paragraph pairs (tuples of ids), best first; None when the
            system exposes no ranking (hit@k/MRR are then None).
        seconds: wall time the answer took.

    Returns:
        The :class:`CaseResult`; metrics that do not apply to the case are None.
    """
    units = unit_keys(document)
    cited = [c.paragraph_id for c in answer.citations]
    metrics: dict[str, float | None] = dict.fromkeys(m.key for m in METRICS)
    problems: list[str] = []
    ranked_units = _dedupe(units.get(i, i) for ids in (ranking or ()) for i in ids)
    if case.answerable:
        gold_units = _dedupe(units.get(g, g) for g in case.gold)
        if ranking is not None:
            metrics["hit@1"], metrics["hit@3"], metrics["mrr"] = _rank_scores(gold_units, ranked_units)
            if not metrics["hit@3"]:
                problems.append(f"gold pair not in the top 3 retrieved ({', '.join(ranked_units[:3])})")
        cited_units = _dedupe(units.get(i, i) for i in cited)
        metrics["cite_hit@1"], _, metrics["cite_mrr"] = _rank_scores(gold_units, cited_units)
        normalized = normalize_for_facts(answer.text)
        missing = [f for f in case.facts if not any(normalize_for_facts(a) in normalized for a in f)]
        metrics["fact_recall"] = 1 - len(missing) / len(case.facts)
        problems.extend("missing fact: " + " | ".join(f) for f in missing)
        metrics["false_refusal"] = float(not answer.answered)
        if not answer.answered:
            problems.insert(0, "refused an answerable question")
        elif cited:
            allowed = set(case.gold) | {document.paragraph(g).twin_id for g in case.gold} - {None}
            wrong = [i for i in cited if i not in allowed]
            metrics["cite_precision"] = 1 - len(wrong) / len(cited)
            if wrong:
                problems.append(f"cited {', '.join(wrong)}, not gold ({', '.join(case.gold)}) or a twin")
        else:
            metrics["cite_precision"] = 0.0
    else:
        metrics["refusal_acc"] = float(not answer.answered)
        if answer.answered:
            problems.insert(0, "answered an unanswerable question")
    if answer.answered:
        markers = set(_MARKER.findall(answer.text))
        metrics["cite_validity"] = float(bool(markers) and markers <= set(cited))
        if not markers:
            problems.append("the answer has no [P#] marker")
        elif not markers <= set(cited):
            problems.append(f"markers {sorted(markers - set(cited))} are not among the citations")
    if answer.answered:
        said = _says_only_in_other_version(answer.text)
        metrics["other_said"] = float(said)
        if said:
            # Right only when no gold paragraph is written in the question's language family.
            own_side = [g for g in case.gold if lang.is_chinese(document.paragraph(g).language)
                        == lang.is_chinese(case.language)]  # fmt: skip
            metrics["other_right"] = float(case.answerable and not own_side)
            if not metrics["other_right"]:
                problems.append("said the fact is only in the other version, but it is not")
        if case.answerable and cited:
            paragraph = document.paragraph(cited[0])
            if len(paragraph.sentences) >= 3:
                metrics["answer_length"] = round(len(_plain(answer.text)) / max(1, len(paragraph.text)), 4)
    lang_ok, script_ok = language_matches(answer, case.language)
    metrics["lang_match"], metrics["script_match"] = float(lang_ok), float(script_ok)
    if not lang_ok:
        problems.append(f"answer is not in the question's language ({case.language})")
    elif not script_ok:
        problems.append(f"answer is not in the question's script ({case.language})")
    metrics["chrf"] = round(_chrf().sentence_score(_plain(answer.text), [case.reference]).score, 2)
    return CaseResult(
        id=case.id,
        line=case.line,
        cell=cell_of(case, document),
        category=case.category,
        question=case.question,
        language=case.language,
        answerable=case.answerable,
        gold=case.gold,
        reference=case.reference,
        answer=answer.text,
        answered=bool(answer.answered),
        answer_language=answer.language,
        citations=tuple(CitedParagraph(c.paragraph_id, c.language, c.text[:160]) for c in answer.citations),
        ranking=tuple(ranked_units),
        metrics=metrics,
        problems=tuple(problems),
        seconds=round(seconds, 4),
        backend=getattr(answer, "backend", "") or "unknown",
        fallback_reason=getattr(answer, "fallback_reason", None),
        guardrails=tuple(getattr(answer, "guardrails", ())),
        has_history=bool(case.history),
        full=case.full,
        condensed=(getattr(answer, "standalone_question", None) is not None) if case.history else None,
    )


def conversation_summary(cases: Sequence[CaseResult]) -> dict[str, float | int | None]:
    """How a system handled conversations: follow-ups condensed, new topics kept on their own,
    and follow-ups' fact recall beside the same questions asked in full.

    Args:
        cases: one system's scored cases (of one set, or pooled: ids are matched per set).

    Returns:
        Counts and shares; a share is None when no case of its kind was asked.
    """
    follow = [c for c in cases if c.has_history and c.category == "follow-up" and c.condensed is not None]
    switch = [c for c in cases if c.has_history and c.category == "topic-switch" and c.condensed is not None]
    by_name = {c.id: c for c in cases}  # ids are unique across the committed sets
    paired = [(c, by_name.get(c.full)) for c in follow if c.full and c.answerable]
    paired = [(c, f) for c, f in paired if f is not None and f.metrics.get("fact_recall") is not None]

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    return {
        "follow_ups": len(follow),
        "follow_ups_condensed": mean([float(bool(c.condensed)) for c in follow]),
        "topic_switches": len(switch),
        "topic_switches_merged": mean([float(bool(c.condensed)) for c in switch]),
        "paired": len(paired),
        "follow_up_facts": mean([c.metrics.get("fact_recall") or 0.0 for c, _ in paired]),
        "full_question_facts": mean([f.metrics["fact_recall"] for _, f in paired]),
    }


def language_matches(answer: Any, expected: str) -> tuple[bool, bool]:
    """Whether an answer is in the ``expected`` language (en/zh family) and script.

    Quoted document text is set aside first, so "only in the Chinese version:
    <quote>" answers an English question in English. A quote is any piece of the
    answer (between markers, ellipses, colons and sentence ends) found in a cited
    paragraph after normalization. Verbatim quotes of paragraphs written in the
    expected script count as that script (the document is the authority); any
    other Chinese must survive OpenCC conversion to the expected script unchanged
    (Traditional: or be what its Simplified form converts to, since s2t may change a
    character both scripts share when it sees it outside its phrase).
    For English, script match is language match.

    Args:
        answer: an :class:`~bilingual_qa.answer.Answer` (text and citations are used).
        expected: the question's language: "en", "zh-Hant" or "zh-Hans".

    Returns:
        (language matches, script matches).
    """
    cited = [(c.language, c.text, _squash(c.text)) for c in answer.citations]
    own, checked = [], []
    for piece in _PIECES.split(answer.text):
        if not piece.strip():
            continue
        if not any(_squash(piece) in squashed for _, _, squashed in cited):
            own.append(piece)
        if not any(piece.strip() in text for language, text, _ in cited if language == expected):
            checked.append(piece)
    own_text = " ".join(own)
    quoted: set[str] = set()
    has_own = any(ch.isalpha() for ch in own_text)
    if not has_own:
        # Nothing but quotes: they are in their paragraphs' language, however many Latin names
        # a Chinese sentence lists ("x 視窗系統的終端機模擬器，支援…ISO-8859…Big5").
        pieces = [_squash(p) for p in _PIECES.split(answer.text) if p.strip()]
        quoted = {language for language, _, squashed in cited if any(p and p in squashed for p in pieces)}
    judged = quoted or {lang.question_language(own_text if has_own else _plain(answer.text))}
    language_ok = all(lang.is_chinese(language) == lang.is_chinese(expected) for language in judged)
    if not lang.is_chinese(expected):
        return language_ok, language_ok
    han = "".join(ch for ch in "".join(checked) if lang.is_cjk(ch))
    script_ok = lang.to_script(han, expected) == han
    if not script_ok and expected == lang.HANT:
        # OpenCC's s2t is not idempotent on Traditional text: a character both scripts share
        # changes unless its phrase is matched (亞里士多德 → 亞裏士多德), and phrases are matched in
        # Simplified. Traditional text is also what its own Simplified form converts back to.
        script_ok = lang.to_script(lang.to_script(han, lang.HANS), expected) == han
    return language_ok, language_ok and script_ok


@lru_cache(maxsize=1)
def _other_version_prefixes() -> tuple[str, ...]:
    """The openings of every "stated only in the other version" message, in every language."""
    from ..prompts import messages

    return tuple(
        messages(language)[key].split("{quote}")[0].strip()
        for language in LANGUAGES
        for key in ("only_in_chinese", "only_in_english")
    )


def _says_only_in_other_version(text: str) -> bool:
    """Whether an answer says its fact is stated only in the other version."""
    return any(prefix and prefix in text for prefix in _other_version_prefixes())


def _squash(text: str) -> str:
    """NFKC, Simplified character by character, lower case, no whitespace: for finding quotes.

    Character by character, as answers convert quotes: the phrase-level conversion lexical
    matching uses would turn a Taiwan paragraph's 支援 into 支持 and miss its own quote.
    """
    return re.sub(r"\s+", "", lang.to_simplified(unicodedata.normalize("NFKC", text)).lower())


def _plain(text: str) -> str:
    """Answer text without [P#] markers, whitespace collapsed."""
    return " ".join(_MARKER.sub(" ", text).split())


def _dedupe(items: Iterable[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def _rank_scores(expected: list[str], retrieved: list[str]) -> tuple[float, float, float]:
    """hit@1, hit@3 and MRR of ``retrieved`` against ``expected`` (llama-index's metrics)."""
    if not retrieved or not expected:
        return 0.0, 0.0, 0.0
    from llama_index.core.evaluation.retrieval.metrics import MRR, HitRate

    hit = HitRate()
    return (
        hit.compute(expected_ids=expected, retrieved_ids=retrieved[:1]).score,
        hit.compute(expected_ids=expected, retrieved_ids=retrieved[:3]).score,
        MRR().compute(expected_ids=expected, retrieved_ids=retrieved).score,
    )


@lru_cache(maxsize=1)
def _chrf() -> Any:
    """sacrebleu's chrF scorer, made once (sacrebleu is imported on first use)."""
    from sacrebleu.metrics import CHRF

    return CHRF()


@dataclass(frozen=True)
class SystemReport:
    """One system's scores: per cell (and "all"), per category, and every case."""

    name: str
    backend: str
    cells: dict[str, dict[str, float | None]]
    counts: dict[str, int]
    categories: dict[str, dict[str, float | None]]
    cases: tuple[CaseResult, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        """Cases with at least one problem."""
        return tuple(c for c in self.cases if c.problems)

    def tallies(self) -> dict[str, dict[str, int]]:
        """How many answers each backend produced, why fallbacks happened, which guardrails fired."""
        out: dict[str, dict[str, int]] = {"backend": {}, "fallback": {}, "guardrail": {}}
        for case in self.cases:
            out["backend"][case.backend] = out["backend"].get(case.backend, 0) + 1
            if case.fallback_reason:
                out["fallback"][case.fallback_reason] = out["fallback"].get(case.fallback_reason, 0) + 1
            for name in case.guardrails:
                out["guardrail"][name] = out["guardrail"].get(name, 0) + 1
        return {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in out.items()}


def system_report(name: str, backend: str, results: Sequence[CaseResult]) -> SystemReport:
    """Aggregate scored cases into a :class:`SystemReport` (per cell, "all" and per category).

    Args:
        name: the system's name in reports.
        backend: what answered ("+"-joined when several backends did).
        results: every scored case.

    Returns:
        The :class:`SystemReport`, cells in table order, "all" last.
    """
    cells: dict[str, dict[str, float | None]] = {}
    counts: dict[str, int] = {}
    present = {r.cell for r in results}
    ordered = [c for c in _CELL_ORDER if c in present] + sorted(present - set(_CELL_ORDER))
    for cell in [*ordered, ALL]:
        group = [r for r in results if cell in (ALL, r.cell)]
        cells[cell], counts[cell] = aggregate(group), len(group)
    categories = {
        cat: aggregate([r for r in results if r.category == cat])
        for cat in sorted({r.category for r in results})
    }
    return SystemReport(
        name=name,
        backend=backend,
        cells=cells,
        counts=counts,
        categories=categories,
        cases=tuple(results),
    )


def aggregate(results: Sequence[CaseResult]) -> dict[str, float | None]:
    """Cell metrics: means of per-case rates, corpus chrF, latency percentiles.

    Args:
        results: the scored cases of one cell (or category).

    Returns:
        Every metric's key → its value, None when no case of the group applies.
    """
    out: dict[str, float | None] = {}
    for metric in METRICS:
        if metric.key == "chrf":
            hyps = [_plain(r.answer) for r in results]
            score = _chrf().corpus_score(hyps, [[r.reference for r in results]]).score if hyps else None
            out["chrf"] = None if score is None else round(score, 2)
        elif metric.key == "answer_length":
            values = [r.metrics[metric.key] for r in results if r.metrics.get(metric.key) is not None]
            out[metric.key] = round(statistics.median(values), 4) if values else None
        elif metric.key.startswith("latency_"):
            times = sorted(r.seconds for r in results)
            q = 0.5 if metric.key == "latency_p50" else 0.95
            out[metric.key] = round(_percentile(times, q), 4) if times else None
        else:
            values = [r.metrics[metric.key] for r in results if r.metrics.get(metric.key) is not None]
            out[metric.key] = round(statistics.fmean(values), 4) if values else None
    return out


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
