"""Evaluation: score the Assistant on a reference Q&A set, per language cell, against a baseline.

Everything here is deterministic and local: no LLM judge, no hosted service.
Each reference case (see eval/README.md for the JSONL schema) is asked through
the public :class:`~bilingual_qa.Assistant` API, then scored on retrieval
(hit@1, hit@3, MRR over paragraph *pairs*), required facts, citations,
language and script, refusals, chrF against the reference answer and latency.
Scores are grouped into *cells*: question language × evidence language (the
language of the case's ``preferred`` paragraph; ``none`` for unanswerable cases).

A plain llama-index pipeline over the same document and embedder (one node per
paragraph, dense top-k, answer = the top paragraph) is scored the same way, so
every report shows how far ahead of the plain approach the engine is.

>>> from bilingual_qa.evaluation import run_eval, compare_to_baseline
>>> report = run_eval()                          # the default Assistant and reference set
>>> compare_to_baseline(report, "eval/baseline.json")
()
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import language as lang
from .errors import EvaluationError, QuestionError

_CHECKOUT_EVAL = Path(__file__).resolve().parents[2] / "eval"
EVAL_DIR = _CHECKOUT_EVAL if _CHECKOUT_EVAL.is_dir() else Path("eval")
DEFAULT_SET = EVAL_DIR / "reference_qa.jsonl"
DEFAULT_BASELINE = EVAL_DIR / "baseline.json"
DEFAULT_REPORT_DIR = EVAL_DIR / "reports"
BASELINE_FORMAT = 1
RETRIEVAL_DEPTH = 10  # ranked pairs scored for MRR

LANGUAGES = ("en", lang.HANT, lang.HANS)
_KEYS = {
    "id": str,
    "question": str,
    "language": str,
    "gold": list,
    "preferred": (str, type(None)),
    "facts": list,
    "reference": str,
    "category": str,
    "answerable": bool,
    "history": list,
}
# Optional: on a follow-up, the id of the case (same set, no history) asking the same question in full.
_OPTIONAL_KEYS = {"full": str}
_MARKER = re.compile(r"\[(P\d+)\]")
# Where an answer's quotes start and end: markers, ellipses, colons, sentence ends.
_PIECES = re.compile(r"\[P\d+\]|…|[:：。！？；]|(?<=[.!?])\s+")
_PARAGRAPH_ID = re.compile(r"P[1-9]\d*")


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
    Metric("chrf", "chrF", tolerance=2.0),
    # Answer characters over the cited paragraph's, for paragraphs of 3+ sentences (median).
    Metric("answer_length", "len", higher_is_better=False, tolerance=0.1),
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


# --- reference set ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One reference question: expected evidence, required facts and a reference answer."""

    id: str
    question: str
    language: str
    gold: tuple[str, ...]
    preferred: str | None
    facts: tuple[tuple[str, ...], ...]
    reference: str
    category: str
    answerable: bool
    history: tuple[tuple[str, str], ...]
    line: int
    full: str | None = None


@dataclass(frozen=True)
class ReferenceSet:
    """A parsed reference set and the document it was written for (from its sidecar)."""

    path: Path
    sha256: str
    cases: tuple[Case, ...]
    document_name: str | None = None
    document_sha256: str | None = None
    # From the sidecar: the document file (None: the embedded default) and whether the set is
    # development data (used to fit the answerer, so scored cross-validated).
    document_path: Path | None = None
    development: bool = False

    @property
    def name(self) -> str:
        """The set's name: its file name without ``.jsonl``."""
        return self.path.name.removesuffix(".jsonl")


def meta_path(path: str | Path) -> Path:
    """The sidecar naming a reference set's document: ``<set>.meta.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")


def load_reference_set(path: str | Path = DEFAULT_SET, document: object | None = None) -> ReferenceSet:
    """Read and schema-check a reference set (JSON Lines, one case per line).

    Args:
        path: the .jsonl file; blank lines are skipped.
        document: a :class:`~bilingual_qa.document.Document`; when given, the set's
            sidecar must name its sha256 and every gold/preferred id must exist in it.

    Returns:
        The :class:`ReferenceSet`.

    Raises:
        EvaluationError: unreadable file, a malformed case (message starts with
            ``path:line:``), duplicate ids, an empty set, or a set for another document.
    """
    import hashlib

    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise EvaluationError(f"cannot read reference set {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not UTF-8 text") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        case = _parse_case(line, number, f"{path}:{number}")
        if case.id in seen:
            raise EvaluationError(
                f"{path}:{number}: duplicate id {case.id!r} (first on line {seen[case.id]})"
            )
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise EvaluationError(f"{path}: the reference set is empty")
    by_id = {c.id: c for c in cases}
    for case in cases:
        if case.full is not None and (case.full not in by_id or by_id[case.full].history):
            raise EvaluationError(
                f"{path}:{case.line}: full {case.full!r} is not a case without history in this set"
            )
    meta = _read_meta(path)
    reference = ReferenceSet(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        cases=tuple(cases),
        document_name=meta.get("document"),
        document_sha256=meta.get("sha256"),
        document_path=(path.parent / meta["path"]) if meta.get("path") else None,
        development=bool(meta.get("development", False)),
    )
    if document is not None:
        check_reference_set(reference, document)
    return reference


def check_reference_set(reference: ReferenceSet, document: Any) -> None:
    """Check a reference set against the document it will be run on.

    Raises:
        EvaluationError: no sidecar, a sidecar for another document, or ids the document lacks.
    """
    sidecar = meta_path(reference.path)
    if reference.document_sha256 is None:
        hint = json.dumps({"document": document.name, "sha256": document.sha256})
        raise EvaluationError(f"{sidecar} is missing: write {hint} there if the set is for this document")
    if reference.document_sha256 != document.sha256:
        raise EvaluationError(
            f"{reference.path} was written for another document ({reference.document_name}, sha256 "
            f"{reference.document_sha256[:12]}…), not {document.name} (sha256 {document.sha256[:12]}…)"
        )
    ids = {p.id for p in document.paragraphs}
    for case in reference.cases:
        unknown = [g for g in case.gold if g not in ids]
        if unknown:
            raise EvaluationError(
                f"{reference.path}:{case.line}: case {case.id}: paragraph {unknown[0]} is not in "
                f"{document.name} (P1..P{len(ids)})"
            )


def _parse_case(line: str, number: int, where: str) -> Case:
    """One JSONL line as a :class:`Case`, or an EvaluationError naming ``where`` (path:line)."""
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise EvaluationError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise EvaluationError(f"{where}: a case must be a JSON object, not {type(row).__name__}")
    missing = [k for k in _KEYS if k not in row]
    extra = sorted(set(row) - set(_KEYS) - set(_OPTIONAL_KEYS))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise EvaluationError(f"{where}: keys: {'; '.join(parts)}")
    for key, kind in [*_KEYS.items(), *((k, v) for k, v in _OPTIONAL_KEYS.items() if k in row)]:
        if not isinstance(row[key], kind) or (kind is not bool and isinstance(row[key], bool)):
            raise EvaluationError(f"{where}: {key} has the wrong type ({type(row[key]).__name__})")

    def fail(message: str) -> EvaluationError:
        return EvaluationError(f"{where}: {message}")

    for key in ("id", "question", "reference", "category"):
        if not row[key].strip():
            raise fail(f"{key} is empty")
    if row["language"] not in LANGUAGES:
        raise fail(f"unknown language {row['language']!r} (expected one of {', '.join(LANGUAGES)})")
    gold = row["gold"]
    if not all(isinstance(g, str) and _PARAGRAPH_ID.fullmatch(g) for g in gold):
        raise fail('gold must list paragraph ids like "P3"')
    if len(set(gold)) != len(gold):
        raise fail("gold lists a paragraph twice")
    facts = row["facts"]
    if not all(isinstance(f, list) and f and all(isinstance(a, str) and a.strip() for a in f) for f in facts):
        raise fail("facts must be a list of non-empty lists of non-empty strings")
    history = row["history"]
    if not all(
        isinstance(h, dict)
        and set(h) == {"question", "answer"}
        and all(isinstance(v, str) for v in h.values())
        and h["question"].strip()
        for h in history
    ):
        raise fail('history items must be {"question": str, "answer": str}')
    preferred = row["preferred"]
    if row["answerable"]:
        if not gold:
            raise fail("an answerable case needs gold paragraphs")
        if preferred not in gold:
            raise fail(f"preferred {preferred!r} is not in gold {gold}")
        if not facts:
            raise fail("an answerable case needs at least one required fact")
    elif gold or preferred is not None or facts:
        raise fail("an unanswerable case has empty gold and facts and a null preferred")
    if "full" in row and not history:
        raise fail("full names the same question asked in full: only a case with history has one")
    return Case(
        id=row["id"],
        question=row["question"],
        language=row["language"],
        gold=tuple(gold),
        preferred=preferred,
        facts=tuple(tuple(f) for f in facts),
        reference=row["reference"],
        category=row["category"],
        answerable=row["answerable"],
        history=tuple((h["question"], h["answer"]) for h in history),
        line=number,
        full=row.get("full"),
    )


def _read_meta(path: Path) -> dict[str, Any]:
    """The sidecar's {"document", "sha256"} (and optional "path", "development"); empty when there is none."""
    sidecar = meta_path(path)
    if not sidecar.exists():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read {sidecar}: {exc}") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("document", "sha256")):
        raise EvaluationError(f'{sidecar}: expected {{"document": NAME, "sha256": HEX}}')
    if not isinstance(meta.get("path", ""), str) or not isinstance(meta.get("development", False), bool):
        raise EvaluationError(f'{sidecar}: "path" must be a file name and "development" true or false')
    return meta


# --- scoring one case ------------------------------------------------------------------------


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


def cell_of(case: Case, document: Any) -> str:
    """A case's cell: "<question language>→<evidence language>" (en, zh or none)."""
    if not case.answerable or case.preferred is None:
        return f"{case.language}→none"
    evidence = document.paragraph(case.preferred).language
    return f"{case.language}→{'zh' if lang.is_chinese(evidence) else 'en'}"


def unit_keys(document: Any) -> dict[str, str]:
    """Paragraph id → its pair's key ("P1+P4"): a hit on either twin is a hit on the pair."""
    keys = {}
    for p in document.paragraphs:
        members = sorted({p.id, p.twin_id} - {None}, key=lambda i: int(i[1:]))
        keys[p.id] = "+".join(members)
    return keys


def normalize_for_facts(text: str) -> str:
    """NFKC, OpenCC t2s and casefold: the form facts are matched in."""
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
    )


def language_matches(answer: Any, expected: str) -> tuple[bool, bool]:
    """Whether an answer is in the ``expected`` language (en/zh family) and script.

    Quoted document text is set aside first, so "only in the Chinese version:
    <quote>" answers an English question in English. A quote is any piece of the
    answer (between markers, ellipses, colons and sentence ends) found in a cited
    paragraph after normalization. Verbatim quotes of paragraphs written in the
    expected script count as that script (the document is the authority); any
    other Chinese must survive OpenCC conversion to the expected script unchanged.
    For English, script match is language match.
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
    judged = own_text if any(ch.isalpha() for ch in own_text) else _plain(answer.text)
    language_ok = lang.is_chinese(lang.question_language(judged)) == lang.is_chinese(expected)
    if not lang.is_chinese(expected):
        return language_ok, language_ok
    han = "".join(ch for ch in "".join(checked) if lang.is_cjk(ch))
    return language_ok, language_ok and lang.to_script(han, expected) == han


@lru_cache(maxsize=1)
def _other_version_prefixes() -> tuple[str, ...]:
    """The openings of every "stated only in the other version" message, in every language."""
    from .prompts import messages

    return tuple(
        messages(language)[key].split("{quote}")[0].strip()
        for language in LANGUAGES
        for key in ("only_in_chinese", "only_in_english")
    )


def _says_only_in_other_version(text: str) -> bool:
    """Whether an answer says its fact is stated only in the other version."""
    return any(prefix and prefix in text for prefix in _other_version_prefixes())


def _squash(text: str) -> str:
    """Normalized (NFKC, Simplified, lower case) and without whitespace: for finding quotes."""
    return re.sub(r"\s+", "", lang.normalize(text))


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
    from sacrebleu.metrics import CHRF

    return CHRF()


# --- scoring a system ------------------------------------------------------------------------


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


def evaluate_system(
    system: Any,
    reference: ReferenceSet,
    document: Any,
    *,
    name: str = "engine",
    k: int = RETRIEVAL_DEPTH,
    progress: bool = False,
) -> SystemReport:
    """Ask every reference case through ``system`` and score the answers.

    Args:
        system: anything with ``ask(question, history=None) -> Answer``; an optional
            ``retrieve(question, history=None, k=...)`` returning objects with
            ``paragraph_ids`` (best first) enables hit@k/MRR on the retriever ranking.
        reference: the reference set.
        document: the document (with twins) that the system answers from.
        name: the system's name in reports.
        k: how many ranked pairs to ask ``retrieve`` for.
        progress: show a progress bar on stderr.

    Returns:
        The :class:`SystemReport`.

    Raises:
        BilingualQAError: the system failed on a case (a rejected question is
            scored as a failed case instead).
    """
    from tqdm import tqdm

    results: list[CaseResult] = []
    backends: set[str] = set()
    retrieve = getattr(system, "retrieve", None)
    quiet = not progress or not sys.stderr.isatty()  # a log file gets no progress bar
    for case in tqdm(reference.cases, desc=name, unit="q", file=sys.stderr, disable=quiet):
        history = [{"question": q, "answer": a} for q, a in case.history] or None
        started = time.perf_counter()
        try:
            answer = system.ask(case.question, history=history)
        except QuestionError as exc:
            answer = _failed_answer(case, exc)
        seconds = time.perf_counter() - started
        backends.add(getattr(answer, "backend", "") or "unknown")
        ranking = None
        if callable(retrieve):
            try:
                ranking = [tuple(r.paragraph_ids) for r in retrieve(case.question, history=history, k=k)]
            except QuestionError:
                ranking = []
        results.append(score_case(case, answer, document, ranking, seconds))
    return system_report(name, "+".join(sorted(backends)), results)


def system_report(name: str, backend: str, results: Sequence[CaseResult]) -> SystemReport:
    """Aggregate scored cases into a :class:`SystemReport` (per cell, "all" and per category)."""
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
    """Cell metrics: means of per-case rates, corpus chrF, latency percentiles (None: no case applies)."""
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


def _failed_answer(case: Case, exc: Exception) -> Any:
    """A stand-in Answer for a question the system rejected."""
    from .answering import Answer

    return Answer(question=case.question, text=f"error: {exc}", language="", answered=False, citations=())


# --- the naive llama-index pipeline ----------------------------------------------------------


@lru_cache(maxsize=1)
def _embedding_class() -> type:
    """A llama-index BaseEmbedding over our Embedder (defined lazily: llama-index is heavy)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr

    class EmbedderAdapter(BaseEmbedding):
        """Serves llama-index from an already loaded :class:`~bilingual_qa.embedding.Embedder`."""

        _embedder: Any = PrivateAttr()

        def __init__(self, embedder: Any, **kwargs: Any) -> None:
            super().__init__(model_name=str(embedder.model_id), **kwargs)
            self._embedder = embedder

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._embedder.embed_queries([query])[0].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._embedder.embed_passages([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._embedder.embed_passages(texts).tolist()

    return EmbedderAdapter


def llama_embedding(embedder: Any) -> Any:
    """A llama-index ``BaseEmbedding`` that embeds with ``embedder`` (downloads nothing).

    Args:
        embedder: a :class:`~bilingual_qa.embedding.Embedder`.

    Returns:
        The adapter, to pass as ``embed_model=`` (llama-index's global Settings stay untouched).
    """
    return _embedding_class()(embedder)


class NaivePipeline:
    """The plain llama-index approach, for comparison: one TextNode per paragraph,
    a VectorStoreIndex, dense top-k only, and the top paragraph quoted as the answer.

    No pairing, no BM25, no script conversion, no refusal, no follow-up condensing.

    Args:
        document: the document (its twins are used only for scoring, not here).
        embedder: the same embedder the engine uses.
        vectors: the paragraphs' passage vectors, if already computed by that embedder.
    """

    backend = "naive-llama-index"

    def __init__(self, document: Any, embedder: Any, vectors: Any = None) -> None:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        self._paragraphs = {p.id: p for p in document.paragraphs}
        # The paragraph vectors the engine's index already holds are the ones the adapter would
        # compute (the same embedder, "passage: " + text): reusing them saves a minute per eval.
        given = [None] * len(document.paragraphs) if vectors is None else [v.tolist() for v in vectors]
        nodes = [
            TextNode(id_=p.id, text=p.text, embedding=v)
            for p, v in zip(document.paragraphs, given, strict=True)
        ]
        self._index = VectorStoreIndex(nodes, embed_model=llama_embedding(embedder), show_progress=False)

    def retrieve(self, question: str, history: object = None, k: int = RETRIEVAL_DEPTH) -> list[Any]:
        """Paragraphs by dense similarity, best first (``history`` is ignored: no condensing)."""
        from .assistant import Retrieved

        hits = self._index.as_retriever(similarity_top_k=k).retrieve(question)
        return [Retrieved((h.node.node_id,), float(h.score or 0.0)) for h in hits]

    def ask(self, question: str, history: object = None) -> Any:
        """The top paragraph, verbatim, cited as [P#]."""
        from .answering import Answer, Citation

        started = time.perf_counter()
        top = self.retrieve(question, k=1)[0]
        p = self._paragraphs[top.paragraph_ids[0]]
        return Answer(
            question=question,
            text=f"{p.text} [{p.id}]",
            language=p.language,
            answered=True,
            citations=(Citation(p.id, p.language, p.text, p.twin_id, top.score, ((0, len(p.text)),)),),
            backend=self.backend,
            evidence_language=p.language,
            seconds=round(time.perf_counter() - started, 4),
        )


class TopUnitQuote:
    """A trivial rule, for comparison: the top-ranked unit's paragraph in the question's language,
    quoting its ``sentences`` sentences most similar to the question (never refuses).

    It uses the engine's own retrieval and sentence vectors, so the difference from the engine
    is the answering step alone.

    Args:
        assistant: the :class:`~bilingual_qa.Assistant` whose retrieval and index it uses.
        sentences: how many sentences to quote.
    """

    def __init__(self, assistant: Any, sentences: int) -> None:
        self.assistant = assistant
        self.sentences = sentences
        self.backend = f"top-unit-{sentences}"
        self._position = {p.id: i for i, p in enumerate(assistant.document.paragraphs)}

    def retrieve(self, question: str, history: object = None, k: int = RETRIEVAL_DEPTH) -> Any:
        """The engine's ranking."""
        return self.assistant.retrieve(question, history=history, k=k)

    def ask(self, question: str, history: object = None) -> Any:
        """Quote the top unit's best sentences in the question's language, converted to its script."""
        from .answering import Answer, Citation
        from .chat import as_turns, condense

        assistant = self.assistant
        question = assistant.validate(question)
        standalone = condense(question, as_turns(history))
        language = lang.question_language(question, assistant.default_script)
        top = assistant.retrieve(question, history=history, k=1)
        members = [assistant.document.paragraph(i) for i in top[0].paragraph_ids] if top else []
        same = [p for p in members if lang.is_chinese(p.language) == lang.is_chinese(language)]
        paragraph = (same or members)[0]
        index = assistant.index
        rows = index.sentence_range(self._position[paragraph.id])
        vector = assistant.embedder.embed_queries([standalone])[0]
        similarity = index.sentence_vectors[rows.start : rows.stop] @ vector
        best = sorted(int(i) for i in (-similarity).argsort(kind="stable")[: self.sentences])
        quoted = [paragraph.sentences[i] for i in best]
        text = ("" if lang.is_chinese(language) else " ").join(s.text for s in quoted)
        if lang.is_chinese(paragraph.language):
            text = lang.to_script(text, language)
        return Answer(
            question=question,
            text=f"{text} [{paragraph.id}]",
            language=language,
            answered=True,
            citations=(
                Citation(
                    paragraph.id,
                    paragraph.language,
                    paragraph.text,
                    paragraph.twin_id,
                    float(similarity.max()),
                    tuple((q.start, q.end) for q in quoted),
                ),
            ),
            backend=self.backend,
            evidence_language=paragraph.language,
        )


# --- the whole run ---------------------------------------------------------------------------

_SYSTEM_FIELDS = ("engine", "naive", "extractive", "rules")


@dataclass(frozen=True)
class EvalReport:
    """A complete evaluation run: what was evaluated, and the engine's and naive scores."""

    reference_set: str
    reference_sha256: str
    cases: int
    document: str
    document_sha256: str
    model: str
    settings: dict[str, object]
    created: str
    seconds: float
    engine: SystemReport
    naive: SystemReport | None = None
    # With an LLM configured: the same assistant answering extractively, side by side.
    extractive: SystemReport | None = None
    # Trivial answering rules over the engine's retrieval (TopUnitQuote), for comparison.
    rules: tuple[SystemReport, ...] = ()
    development: bool = False
    # Answered by the answerer model fitted without this document (leave one document out).
    cross_validated: bool = False

    @property
    def systems(self) -> list[SystemReport]:
        """The scored systems, in table order: engine, extractive (LLM runs only), naive, rules."""
        return [s for s in (self.engine, self.extractive, self.naive, *self.rules) if s is not None]

    def to_dict(self) -> dict[str, object]:
        """The full report, JSON-ready (every case of every system, and their tallies)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SYSTEM_FIELDS}
        for system in self.systems:
            out[system.name] = dataclasses.asdict(system) | {"tallies": system.tallies()}
        return out

    def summary(self) -> dict[str, object]:
        """The report without per-case details."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SYSTEM_FIELDS}
        for system in self.systems:
            out[system.name] = {
                "backend": system.backend,
                "cells": system.cells,
                "counts": system.counts,
                "failures": len(system.failures),
                "tallies": system.tallies(),
            }
        return out


def run_eval(
    assistant: Any | None = None,
    reference_set: str | Path | ReferenceSet = DEFAULT_SET,
    *,
    naive: bool = True,
    k: int = RETRIEVAL_DEPTH,
    progress: bool = False,
    rules: bool = True,
    cross_validate: bool = True,
) -> EvalReport:
    """Evaluate an Assistant (whatever it is configured with) on a reference set.

    Args:
        assistant: the :class:`~bilingual_qa.Assistant` to evaluate; None builds the default.
        reference_set: a .jsonl path or an already loaded :class:`ReferenceSet`; it must be
            written for the assistant's document (sidecar sha256).
        naive: also score the plain llama-index pipeline over the same document and embedder.
            (An assistant with an LLM backend is also scored answering extractively.)
        rules: also score :class:`TopUnitQuote` quoting one and two sentences.
        cross_validate: on a document the answerer was fitted on, answer with the model fitted
            without it (:meth:`~bilingual_qa.Assistant.cross_validated`), so scores are honest.
        k: ranked pairs scored for MRR.
        progress: show progress bars on stderr.

    Returns:
        The :class:`EvalReport`.

    Raises:
        EvaluationError: malformed or empty set, unknown ids, or a set for another document.
        BilingualQAError: the assistant could not be built or failed on a case.
    """
    started = time.perf_counter()
    if not isinstance(reference_set, ReferenceSet):
        reference_set = load_reference_set(reference_set)
    if assistant is None:
        from .assistant import Assistant

        assistant = Assistant()
    document = assistant.document
    check_reference_set(reference_set, document)
    cross_validated = False
    if cross_validate and hasattr(assistant, "cross_validated"):
        held_out = assistant.cross_validated()
        cross_validated, assistant = held_out is not assistant, held_out
    # Load lazily-initialized model state before timing the first question.
    assistant.embedder.embed_queries(["warm-up"])
    engine = evaluate_system(assistant, reference_set, document, name="engine", k=k, progress=progress)
    extractive = None
    if getattr(assistant, "backend", None) == "llm":
        extractive = evaluate_system(
            assistant.without_llm(), reference_set, document, name="extractive", k=k, progress=progress
        )
    baseline = None
    if naive:
        index = getattr(assistant, "index", None)
        vectors = getattr(index, "paragraph_vectors", None)
        pipeline = NaivePipeline(document, assistant.embedder, vectors)
        baseline = evaluate_system(pipeline, reference_set, document, name="naive", k=k, progress=progress)
    scored_rules = tuple(
        evaluate_system(TopUnitQuote(assistant, n), reference_set, document, name=f"top{n}", k=k)
        for n in ((1, 2) if rules else ())
    )
    settings = assistant.settings
    return EvalReport(
        reference_set=str(reference_set.path),
        reference_sha256=reference_set.sha256,
        cases=len(reference_set.cases),
        document=document.name,
        document_sha256=document.sha256,
        model=str(getattr(assistant.embedder, "model_id", settings.model)),
        settings={"top_k": settings.top_k, "max_answer_sentences": settings.max_answer_sentences, "k": k},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seconds=round(time.perf_counter() - started, 2),
        engine=engine,
        naive=baseline,
        extractive=extractive,
        rules=scored_rules,
        development=reference_set.development,
        cross_validated=cross_validated,
    )


# --- baseline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regression:
    """A metric that fell more than its tolerance below the baseline in one cell."""

    metric: str
    cell: str
    baseline: float
    current: float | None
    tolerance: float

    def __str__(self) -> str:
        if self.current is None:
            return f"{self.metric} in {self.cell}: missing from this run (baseline {self.baseline})"
        verb = "fell" if METRIC_BY_KEY[self.metric].higher_is_better else "rose"
        return (
            f"{self.metric} in {self.cell} {verb} from {self.baseline:g} to {self.current:g} "
            f"(tolerance {self.tolerance:g})"
        )


def default_tolerances() -> dict[str, float | None]:
    """Each metric's default absolute tolerance (None: not gated)."""
    return {m.key: m.tolerance for m in METRICS}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file.

    Raises:
        EvaluationError: unreadable or malformed.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EvaluationError(f"baseline {path} is not valid JSON: {exc}") from None
    ok = (
        isinstance(data, dict)
        and data.get("format") == BASELINE_FORMAT
        and isinstance(data.get("cells"), dict)
        and all(isinstance(v, dict) for v in data["cells"].values())
        and isinstance(data.get("tolerances", {}), dict)
    )
    if not ok:
        raise EvaluationError(f"baseline {path} is malformed (format {BASELINE_FORMAT} with cells expected)")
    return data


def compare_to_baseline(
    report: EvalReport, baseline: str | Path | Mapping[str, Any]
) -> tuple[Regression, ...]:
    """The engine metrics that fell more than their tolerance short of the baseline.

    Args:
        report: a finished :class:`EvalReport`.
        baseline: a baseline file path or its parsed content.

    Returns:
        One :class:`Regression` per (metric, cell) beyond tolerance; empty when the gate passes.

    Raises:
        EvaluationError: the baseline is malformed or was recorded for another
            reference set or document.
    """
    data = load_baseline(baseline) if isinstance(baseline, (str, Path)) else baseline
    for key, label in (("reference_sha256", "reference set"), ("document_sha256", "document")):
        if data.get(key) != getattr(report, key):
            raise EvaluationError(
                f"the baseline was recorded for another {label} (sha256 {str(data.get(key))[:12]}…); "
                "re-run with --update-baseline to record a new one"
            )
    tolerances = {**default_tolerances(), **data.get("tolerances", {})}
    found = []
    for cell, expected in data["cells"].items():
        current = report.engine.cells.get(cell, {})
        for key, base in expected.items():
            tolerance = tolerances.get(key)
            if base is None or tolerance is None or key not in METRIC_BY_KEY:
                continue
            value = current.get(key)
            if value is None:
                if not METRIC_BY_KEY[key].conditional:
                    found.append(Regression(key, cell, base, None, tolerance))
                continue
            worse = base - value if METRIC_BY_KEY[key].higher_is_better else value - base
            if worse > tolerance + 1e-9:
                found.append(Regression(key, cell, base, value, tolerance))
    return tuple(found)


def write_baseline(
    report: EvalReport,
    path: str | Path = DEFAULT_BASELINE,
    tolerances: Mapping[str, float | None] | None = None,
) -> Path:
    """Record the engine's cell metrics as the new baseline, atomically.

    Args:
        report: a finished run.
        path: where to write.
        tolerances: per-metric tolerances; default: those of the existing file, else the defaults.

    Returns:
        The path written.

    Raises:
        EvaluationError: the file cannot be written.
    """
    path = Path(path)
    if tolerances is None:
        tolerances = default_tolerances()
        if path.exists():
            # A broken old baseline is replaced, its tolerances with it.
            with contextlib.suppress(EvaluationError):
                tolerances = {**tolerances, **load_baseline(path).get("tolerances", {})}
    data = {
        "format": BASELINE_FORMAT,
        "reference_set": Path(report.reference_set).name,
        "reference_sha256": report.reference_sha256,
        "document": report.document,
        "document_sha256": report.document_sha256,
        "model": report.model,
        "backend": report.engine.backend,
        "created": report.created,
        "tolerances": dict(tolerances),
        "cells": report.engine.cells,
    }
    _atomic_write(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    return path


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; reports and baselines are for sharing
        os.replace(tmp, path)
    except OSError as exc:
        if "tmp" in locals():
            Path(tmp).unlink(missing_ok=True)
        raise EvaluationError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- output ----------------------------------------------------------------------------------


def _fmt(key: str, value: float | None) -> str:
    """A metric value for tables: rates with 3 decimals, chrF with 1, latency in ms."""
    if value is None:
        return "—"
    if key == "chrf":
        return f"{value:.1f}"
    if key.startswith("latency_"):
        return f"{value * 1000:.0f}"
    return f"{value:.3f}"


def format_table(report: EvalReport) -> str:
    """The per-cell table, engine and naive rows side by side, as plain text."""
    systems = report.systems
    rows = [["cell", "system", "n", *(m.label for m in METRICS)]]
    for cell in report.engine.cells:
        for system in systems:
            values = system.cells.get(cell, {})
            first = cell if system is report.engine else ""
            count = str(system.counts.get(cell, 0))
            rows.append([first, system.name, count, *(_fmt(m.key, values.get(m.key)) for m in METRICS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        padded = [
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    fitted = ", answerer fitted without this document" if report.cross_validated else ""
    head = (
        f"{report.reference_set}: {report.cases} cases on {report.document} "
        f"(model {report.model}, backend {report.engine.backend}{fitted}, {report.seconds:.0f} s)"
    )
    return head + "\n" + "\n".join(lines) + "".join(f"\n{line}" for line in tally_lines(report))


def tally_lines(report: EvalReport) -> list[str]:
    """For systems that did not answer with one backend only: who answered, fallbacks, guardrails fired."""
    lines = []
    for system in report.systems:
        tallies = system.tallies()
        if len(tallies["backend"]) < 2 and not tallies["fallback"] and not tallies["guardrail"]:
            continue
        labels = (("backend", "answers by"), ("fallback", "fallbacks"), ("guardrail", "guardrails fired"))
        for kind, label in labels:
            counts = ", ".join(f"{k} {v}" for k, v in tallies[kind].items()) or "none"
            lines.append(f"{system.name} {label}: {counts}")
    return lines


def write_reports(
    report: EvalReport, folder: str | Path = DEFAULT_REPORT_DIR, regressions: Sequence[Regression] = ()
) -> tuple[Path, Path]:
    """Write report.json (everything) and report.html (self-contained) into ``folder``.

    Returns:
        The JSON and HTML paths.

    Raises:
        EvaluationError: the folder cannot be written.
    """
    folder = Path(folder)
    found = [dataclasses.asdict(r) | {"text": str(r)} for r in regressions]
    data = {**report.to_dict(), "regressions": found}
    json_path, html_path = folder / "report.json", folder / "report.html"
    _atomic_write(json_path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    _atomic_write(html_path, render_html(report, regressions))
    return json_path, html_path


_CHART_METRICS = ("hit@1", "mrr", "fact_recall", "cite_precision", "lang_match", "script_match",
                  "refusal_acc", "chrf")  # fmt: skip
_COLORS = {"engine": "#2563eb", "extractive": "#16a34a", "naive": "#9ca3af", "top1": "#f59e0b",
           "top2": "#fcd34d"}  # fmt: skip


def render_svg_chart(report: EvalReport) -> str:
    """An inline SVG: one small bar chart per headline metric, a bar pair (engine, naive) per cell."""
    cells = list(report.engine.cells)
    systems = report.systems
    bar, gap, plot_h, top, bottom, left = 7, 6, 100, 22, 78, 28
    panel_w = left + len(cells) * (bar * len(systems) + gap) + 8
    panel_h = top + plot_h + bottom
    columns = 4
    rows = (len(_CHART_METRICS) + columns - 1) // columns
    width, height = panel_w * columns, panel_h * rows + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="10" role="img" aria-label="metrics per cell">'
    ]
    for i, system in enumerate(systems):
        x = 10 + i * 90
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{_COLORS.get(system.name, "#555")}"/>')
        out.append(f'<text x="{x + 14}" y="15">{html.escape(system.name)}</text>')
    for n, key in enumerate(_CHART_METRICS):
        ox, oy = (n % columns) * panel_w, 24 + (n // columns) * panel_h
        scale = 100.0 if key == "chrf" else 1.0
        out.append(f'<text x="{ox + left}" y="{oy + 14}" font-weight="bold">{html.escape(key)}</text>')
        for tick in (0.0, 0.5, 1.0):
            y = oy + top + plot_h * (1 - tick)
            out.append(
                f'<line x1="{ox + left}" x2="{ox + panel_w - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#e5e7eb"/><text x="{ox + left - 4}" y="{y + 3:.1f}" text-anchor="end">'
                f"{tick * scale:g}</text>"
            )
        for j, cell in enumerate(cells):
            x0 = ox + left + j * (bar * len(systems) + gap) + gap / 2
            for s, system in enumerate(systems):
                value = system.cells.get(cell, {}).get(key)
                if value is None:
                    continue
                h = plot_h * max(0.0, min(1.0, value / scale))
                out.append(
                    f'<rect x="{x0 + s * bar:.1f}" y="{oy + top + plot_h - h:.1f}" width="{bar - 1}" '
                    f'height="{h:.1f}" fill="{_COLORS.get(system.name, "#555")}"><title>'
                    f"{html.escape(system.name)} {html.escape(cell)} {key}: {_fmt(key, value)}</title></rect>"
                )
            lx, ly = x0 + bar * len(systems) / 2, oy + top + plot_h + 6
            out.append(
                f'<text x="{lx:.1f}" y="{ly:.1f}" transform="rotate(60 {lx:.1f} {ly:.1f})">'
                f"{html.escape(cell)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


def render_html(report: EvalReport, regressions: Sequence[Regression] = ()) -> str:
    """A self-contained HTML report: summary, regressions, per-cell table, chart, failing cases."""
    esc = html.escape
    systems = report.systems
    gate = (
        "<ul class='bad'>" + "".join(f"<li>{esc(str(r))}</li>" for r in regressions) + "</ul>"
        if regressions
        else "<p>No regression against the baseline (or no baseline compared).</p>"
    )
    failing = [
        f"<h2>Failing cases: {system.name} ({len(system.failures)})</h2>{_failures_html(system)}"
        for system in systems
    ]
    for n in range(1, len(failing)):  # the comparison systems' failures start folded
        name = esc(systems[n].name)
        failing[n] = f"<details><summary>{name} failures</summary>{failing[n]}</details>"
    tallies = "".join(f"<li>{esc(line)}</li>" for line in tally_lines(report))
    tallies = f"<h2>Backends and guardrails</h2><ul>{tallies}</ul>" if tallies else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bilingual-qa evaluation</title>
{_STYLE}</head><body>
<h1>bilingual-qa evaluation</h1>
<p>{esc(report.reference_set)}: {report.cases} cases · document {esc(report.document)}
(<code>{report.document_sha256[:12]}</code>) · model {esc(report.model)} · backend
{esc(report.engine.backend)} · {esc(report.created)} · {report.seconds:.0f} s</p>
<h2>Gate</h2>{gate}
<h2>Per cell (question language → evidence language)</h2>
{_table_html(report)}
{_LEGEND}
{tallies}<h2>Chart</h2>{render_svg_chart(report)}
{"".join(failing)}
</body></html>
"""


_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
tr.naive td, tr.extractive td, tr.top1 td, tr.top2 td { color: #6b7280; }
th { text-align: left; background: #f9fafb; }
.bad { color: #b91c1c; } .case { border-top: 1px solid #ddd; padding: .5em 0; }
.case .a { background: #f3f4f6; padding: .3em; white-space: pre-wrap; } code { font-size: 12px; }
</style>"""
_LEGEND = """<p>Rates in 0–1 (f.refuse and len: lower is better); chrF 0–100; latency in ms
(the comparison systems' query embeddings come from the engine's cache). <i>naive</i>: plain
llama-index, top paragraph; <i>top1</i>/<i>top2</i>: the engine's top unit, its paragraph in the
question's language, quoting its one or two sentences most similar to the question. <i>len</i>:
median answer length over the cited paragraph's (paragraphs of 3+ sentences); <i>o.said</i>: share of
answers saying "only in the other version"; <i>o.right</i>: share of those where no gold paragraph is in
the question's language.</p>"""


def _table_html(report: EvalReport) -> str:
    """The per-cell table of every system, as HTML."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["cell", "system", "n", *(m.label for m in METRICS)])
    body = []
    for cell in report.engine.cells:
        for system in report.systems:
            values = system.cells.get(cell, {})
            first = esc(cell) if system is report.engine else ""
            tds = "".join(f"<td>{_fmt(m.key, values.get(m.key))}</td>" for m in METRICS)
            body.append(
                f'<tr class="{esc(system.name)}"><th>{first}</th><td>{esc(system.name)}</td>'
                f"<td>{system.counts.get(cell, 0)}</td>{tds}</tr>"
            )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_suite_html(
    reports: Sequence[EvalReport],
    pooled: EvalReport,
    regressions: Sequence[tuple[EvalReport, Sequence[Regression]]],
) -> str:
    """The whole run as one self-contained page: the pooled table, then every set's table and gate."""
    esc = html.escape
    sections = []
    for report, found in regressions:
        name = Path(report.reference_set).name.removesuffix(".jsonl")
        kind = "development data" if report.development else "reference set"
        if report.cross_validated:
            kind += " · answerer fitted without this document (cross-validated)"
        gate = (
            "<ul class='bad'>" + "".join(f"<li>{esc(str(r))}</li>" for r in found) + "</ul>"
            if found
            else "<p>Gate: no regression against the baseline (or none compared).</p>"
        )
        sections.append(
            f"<h2 id='{esc(name)}'>{esc(name)}</h2><p>{esc(kind)} · {report.cases} cases · document "
            f"{esc(report.document)} · {report.seconds:.0f} s · <a href='{esc(name)}/report.html'>"
            f"details and failing cases</a></p>{gate}{_table_html(report)}"
        )
    toc = " · ".join(
        f"<a href='#{esc(n)}'>{esc(n)}</a>"
        for n in (Path(r.reference_set).name.removesuffix(".jsonl") for r in reports)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bilingual-qa evaluation</title>
{_STYLE}</head><body>
<h1>bilingual-qa evaluation: {len(reports)} sets</h1>
<p>{toc} · model {esc(pooled.model)} · {esc(pooled.created)} · {pooled.seconds:.0f} s</p>
<h2>All sets pooled ({pooled.cases} cases)</h2>
{_table_html(pooled)}
{_LEGEND}
{"".join(sections)}
</body></html>
"""


def _failures_html(system: SystemReport) -> str:
    """Every failing case of one system: question, answer, citations and what went wrong."""
    esc = html.escape
    parts = []
    for c in system.failures:
        cites = "".join(f"<li>[{esc(p.id)}] ({esc(p.language)}) {esc(p.excerpt)}</li>" for p in c.citations)
        problems = "".join(f"<li>{esc(p)}</li>" for p in c.problems)
        parts.append(
            f'<div class="case"><b>{esc(c.id)}</b> ({esc(c.cell)}, {esc(c.category)}, line {c.line}, '
            f"gold {esc(', '.join(c.gold) or '—')})<br>Q: {esc(c.question)}"
            f'<div class="a">{esc(c.answer)}</div><ul>{cites}</ul>'
            f'<ul class="bad">{problems}</ul>Reference: {esc(c.reference)}</div>'
        )
    return "".join(parts)


# --- command line ----------------------------------------------------------------------------


def discover_sets(folder: str | Path = EVAL_DIR) -> list[Path]:
    """Every reference set under ``folder``: a ``.jsonl`` with its ``.meta.json`` sidecar, default first."""
    folder = Path(folder)
    found = sorted(
        p for p in folder.rglob("*.jsonl") if meta_path(p).exists() and "reports" not in p.parts[-3:-1]
    )
    return sorted(found, key=lambda p: not _same_file(p, DEFAULT_SET))


def baseline_path(set_path: str | Path) -> Path:
    """Where a set's baseline lives: eval/baseline.json for the default set, else ``<set>.baseline.json``."""
    set_path = Path(set_path)
    if _same_file(set_path, DEFAULT_SET):
        return DEFAULT_BASELINE
    return set_path.with_name(set_path.name.removesuffix(".jsonl") + ".baseline.json")


def pool_reports(reports: Sequence[EvalReport]) -> EvalReport:
    """One report over every case of every set: each system's cases pooled, cells recomputed."""
    import hashlib

    first = reports[0]

    def pooled(name: str) -> SystemReport | None:
        parts = [s for r in reports for s in r.systems if s.name == name]
        if not parts:
            return None
        backend = "+".join(sorted({b for s in parts for b in s.backend.split("+")}))
        return system_report(name, backend, [c for s in parts for c in s.cases])

    rule_names = dict.fromkeys(s.name for r in reports for s in r.rules)
    return EvalReport(
        reference_set=f"{len(reports)} sets pooled",
        reference_sha256=hashlib.sha256("".join(r.reference_sha256 for r in reports).encode()).hexdigest(),
        cases=sum(r.cases for r in reports),
        document=f"{len({r.document_sha256 for r in reports})} documents",
        document_sha256="",
        model=first.model,
        settings=first.settings,
        created=first.created,
        seconds=round(sum(r.seconds for r in reports), 2),
        engine=pooled("engine"),
        naive=pooled("naive"),
        extractive=pooled("extractive"),
        rules=tuple(p for p in map(pooled, rule_names) if p is not None),
    )


def run_cli(args: Any, make_assistant: Callable[..., Any]) -> int:
    """``bilingual-qa eval``: run every set (or the ones named), report, then gate on (or update) baselines.

    Args:
        args: parsed CLI arguments (reference_set: a list of paths or None, report, baseline,
            update_baseline, json).
        make_assistant: builds the Assistant from ``args`` (the CLI's common flags) and an
            optional document path.

    Returns:
        0 when every gate passes (or the baselines were updated), 1 on a regression.

    Raises:
        BilingualQAError: bad reference set or baseline, or the run failed; nothing is written then.
    """
    chosen = args.reference_set or discover_sets()
    set_paths = [Path(p) for p in ([chosen] if isinstance(chosen, (str, Path)) else chosen)]
    if not set_paths:
        raise EvaluationError(f"no reference sets (a .jsonl with a .meta.json sidecar) under {EVAL_DIR}")
    if args.baseline is not None and len(set_paths) > 1:
        raise EvaluationError("--baseline names one baseline: give one --set with it")
    # Fail on a bad set or baseline before the model is loaded.
    references = [load_reference_set(p) for p in set_paths]
    baselines: list[tuple[Path, dict[str, Any] | None]] = []
    for reference in references:
        path = Path(args.baseline) if args.baseline is not None else baseline_path(reference.path)
        if path.exists():
            data = load_baseline(path)
            if not args.update_baseline and data.get("reference_sha256") != reference.sha256:
                raise EvaluationError(
                    f"{path} was recorded for another version of {reference.path.name}; "
                    "re-run with --update-baseline to record a new one"
                )
            baselines.append((path, data))
        elif args.baseline is not None and not args.update_baseline:
            raise EvaluationError(f"no baseline at {path}")
        else:
            baselines.append((path, None))
    reports = []
    first = None
    for reference in references:
        document = str(reference.document_path) if reference.document_path else None
        if first is None:
            first = assistant = make_assistant(args, document)
        else:
            from .assistant import Assistant

            assistant = Assistant(document=document, settings=first.settings, embedder=first.embedder)
        reports.append(run_eval(assistant, reference, progress=True))
    folder = Path(args.report or DEFAULT_REPORT_DIR)
    single = len(reports) == 1
    regressions: list[tuple[EvalReport, tuple[Regression, ...]]] = []
    written = []
    for report, (_, baseline) in zip(reports, baselines, strict=True):
        found = compare_to_baseline(report, baseline) if baseline and not args.update_baseline else ()
        regressions.append((report, found))
        name = Path(report.reference_set).name.removesuffix(".jsonl")
        written.extend(write_reports(report, folder if single else folder / name, found))
    pooled = None if single else pool_reports(reports)
    if pooled is not None:
        written.extend(write_suite(reports, pooled, regressions, folder))
    if args.json:
        summary = {
            "sets": [r.summary() | {"regressions": [str(x) for x in found]} for r, found in regressions],
            "pooled": pooled.summary() if pooled else None,
            "reports": [str(p) for p in written],
        }
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        for report in [*reports, *([pooled] if pooled else [])]:
            print(format_table(report) + "\n")
        print(f"reports: {' '.join(str(p) for p in written if p.suffix == '.html')}")
    status = 0
    for (report, found), (path, baseline) in zip(regressions, baselines, strict=True):
        if args.update_baseline:
            print(f"baseline written: {write_baseline(report, path)}", file=sys.stderr)
        elif baseline is None:
            note = f"note: no baseline at {path}; gate skipped (--update-baseline records one)"
            print(note, file=sys.stderr)
        for regression in found:
            print(f"regression: {Path(report.reference_set).name}: {regression}", file=sys.stderr)
            status = 1
    return status


def write_suite(
    reports: Sequence[EvalReport],
    pooled: EvalReport,
    regressions: Sequence[tuple[EvalReport, Sequence[Regression]]],
    folder: str | Path = DEFAULT_REPORT_DIR,
) -> tuple[Path, Path]:
    """Write the whole run's report.json (every set's summary, and the pooled one) and report.html.

    Returns:
        The JSON and HTML paths.
    """
    folder = Path(folder)
    data = {
        "sets": [r.summary() | {"regressions": [str(x) for x in found]} for r, found in regressions],
        "pooled": pooled.summary(),
    }
    json_path, html_path = folder / "report.json", folder / "report.html"
    _atomic_write(json_path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    _atomic_write(html_path, render_suite_html(reports, pooled, regressions))
    return json_path, html_path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (either may not exist)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_SET",
    "METRICS",
    "Case",
    "CaseResult",
    "EvalReport",
    "NaivePipeline",
    "ReferenceSet",
    "Regression",
    "SystemReport",
    "aggregate",
    "compare_to_baseline",
    "evaluate_system",
    "llama_embedding",
    "load_baseline",
    "load_reference_set",
    "run_eval",
    "score_case",
    "write_baseline",
    "write_reports",
]
