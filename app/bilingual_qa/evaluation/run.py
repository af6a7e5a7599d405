"""Running an evaluation: ask every case through each system, score it, pool several sets.

Beside the engine, every run scores comparison systems over the same document: the
plain llama-index pipeline (:mod:`.naive`) and two trivial rules over the engine's own
retrieval (:class:`TopUnitQuote`, ``top1`` and ``top2``), so every report shows how far
ahead of them the engine is.

>>> from bilingual_qa.evaluation import run_eval, compare_to_baseline
>>> report = run_eval()                          # the default Assistant and reference set
>>> compare_to_baseline(report, "eval/baseline.json")
()
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import language as lang
from ..errors import QuestionError
from ..files import sha256_bytes
from .metrics import RETRIEVAL_DEPTH, CaseResult, SystemReport, score_case, system_report
from .mirror import both_scripts, mirrored, mirrored_document, other_script, script_summary, split
from .reference import DEFAULT_SET, Case, ReferenceSet, check_reference_set, load_reference_set

_SYSTEM_FIELDS = ("engine", "naive", "extractive", "rules", "mirror", "reverse")


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
    # The engine asked the set's Chinese questions again in the other script (.mirror).
    mirror: SystemReport | None = None
    # The same questions in both scripts about the document with its Chinese in the other script.
    reverse: SystemReport | None = None
    reverse_script: str | None = None

    @property
    def systems(self) -> list[SystemReport]:
        """The scored systems, in table order: engine, extractive (LLM runs only), naive, rules."""
        return [s for s in (self.engine, self.extractive, self.naive, *self.rules) if s is not None]

    def to_dict(self) -> dict[str, object]:
        """The full report, JSON-ready (every case of every system, and their tallies)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SYSTEM_FIELDS}
        for system in self.systems:
            out[system.name] = dataclasses.asdict(system) | {"tallies": system.tallies()}
        for name in ("mirror", "reverse"):
            if getattr(self, name) is not None:
                out[name] = dataclasses.asdict(getattr(self, name))
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
        if self.mirror is not None:
            out["scripts"] = script_summary(self.engine.cases, self.mirror.cases)
        if self.reverse is not None:
            out["scripts_reversed"] = script_summary(*split(self.reverse.cases))
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
    mirror: bool = True,
    reverse: bool = False,
) -> EvalReport:
    """Evaluate an Assistant (whatever it is configured with) on a reference set.

    Args:
        assistant: the :class:`~bilingual_qa.Assistant` to evaluate; None builds the default.
        reference_set: a .jsonl path or an already loaded :class:`ReferenceSet`; it must be
            written for the assistant's document (sidecar sha256).
        naive: also score the plain llama-index pipeline over the same document and embedder.
            (An assistant with an LLM backend is also scored answering extractively.)
        rules: also score :class:`TopUnitQuote` quoting one and two sentences.
        mirror: also ask the set's Chinese questions in the other script (:mod:`.mirror`).
        reverse: also ask them in both scripts about the document with its Chinese in the other
            script (indexed beside the assistant's own indexes, answered by the same fold).
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
        from ..assistant import Assistant

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
    mirrored_report = None
    if mirror:
        others = mirrored(reference_set)
        if others.cases:
            mirrored_report = evaluate_system(
                assistant, others, document, name="mirror", k=k, progress=progress
            )
    reversed_report = None
    if reverse:
        reversed_report = _reversed(assistant, reference_set, document, k, progress)
    extractive = None
    if getattr(assistant, "backend", None) == "llm":
        extractive = evaluate_system(
            assistant.without_llm(), reference_set, document, name="extractive", k=k, progress=progress
        )
    baseline = None
    if naive:
        # Imported on use: importing the package must not load .naive, which also runs as a script.
        from .naive import NaivePipeline

        index = getattr(assistant, "index", None)
        vectors = getattr(index, "paragraph_vectors", None)
        if vectors is not None and len(vectors) != len(document.paragraphs):
            vectors = None  # a shared store (Milvus) keeps them: the pipeline encodes its own
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
        mirror=mirrored_report,
        reverse=reversed_report,
        reverse_script=None if reversed_report is None else other_script(document),
    )


def pool_reports(reports: Sequence[EvalReport]) -> EvalReport:
    """One report over every case of every set: each system's cases pooled, cells recomputed.

    Args:
        reports: one finished run per set (at least one).

    Returns:
        An :class:`EvalReport` named "<n> sets pooled", whose reference sha256 hashes the sets'
        own and whose document sha256 is empty (it spans several documents).
    """
    first = reports[0]

    def pooled(name: str) -> SystemReport | None:
        return _pool(name, [s for r in reports for s in r.systems if s.name == name])

    rule_names = dict.fromkeys(s.name for r in reports for s in r.rules)
    return EvalReport(
        reference_set=f"{len(reports)} sets pooled",
        reference_sha256=sha256_bytes("".join(r.reference_sha256 for r in reports).encode()),
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
        mirror=_pool("mirror", [r.mirror for r in reports if r.mirror is not None]),
        reverse=_pool("reverse", [r.reverse for r in reports if r.reverse is not None]),
        reverse_script=next((r.reverse_script for r in reports if r.reverse_script), None),
    )


def _pool(name: str, parts: Sequence[SystemReport]) -> SystemReport | None:
    """One system's cases of every set in one report (None when no set had it)."""
    if not parts:
        return None
    backend = "+".join(sorted({b for s in parts for b in s.backend.split("+")}))
    return system_report(name, backend, [c for s in parts for c in s.cases])


def _reversed(assistant: Any, reference: ReferenceSet, document: Any, k: int, progress: bool):
    """The set's Chinese questions in both scripts, about the document in the other script."""
    from ..assistant import Assistant

    cases = both_scripts(reference)
    if not cases.cases:
        return None
    folder = Path(assistant.settings.index_dir) / "mirrored"
    other = Assistant(
        document=mirrored_document(document, folder), settings=assistant.settings, embedder=assistant.embedder
    ).cross_validated(holdout=document.sha256)
    return evaluate_system(other, cases, other.document, name="reverse", k=k, progress=progress)


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


def _failed_answer(case: Case, exc: Exception) -> Any:
    """A stand-in Answer for a question the system rejected."""
    from ..answer import Answer

    return Answer(question=case.question, text=f"error: {exc}", language="", answered=False, citations=())


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

    def retrieve(self, question: str, history: object = None, k: int = RETRIEVAL_DEPTH) -> Any:
        """The engine's ranking."""
        return self.assistant.retrieve(question, history=history, k=k)

    def ask(self, question: str, history: object = None) -> Any:
        """Quote the top unit's best sentences in the question's language, converted to its script."""
        from ..answer import Answer, Citation
        from ..chat import as_turns, condense

        assistant = self.assistant
        question = assistant.validate(question)
        standalone = condense(question, as_turns(history))
        language = lang.question_language(question, assistant.default_script)
        top = assistant.retrieve(question, history=history, k=1)
        members = [assistant.document.paragraph(i) for i in top[0].paragraph_ids] if top else []
        same = [p for p in members if lang.is_chinese(p.language) == lang.is_chinese(language)]
        paragraph = (same or members)[0]
        index = assistant.index
        rows = index.sentence_range(paragraph.position)
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
