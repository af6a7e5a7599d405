"""Evaluation: score the Assistant on reference Q&A sets, per language cell, against baselines.

Everything is deterministic and local: no LLM judge, no hosted service. Each
reference case (see eval/README.md for the JSONL schema) is asked through the
public :class:`~bilingual_qa.Assistant` API and scored; the scores are grouped into
cells (question language × evidence language) and compared with the set's baseline.

Modules: :mod:`.reference` (the case schema, loading, sidecars, discovery),
:mod:`.metrics` (the Metric table, scoring a case, aggregating cells), :mod:`.naive`
(the plain llama-index pipeline compared with), :mod:`.run` (:func:`run_eval`, the
rule baselines, pooling), :mod:`.baseline` (the gate), :mod:`.report` (table, JSON,
HTML) and :mod:`.cli` (``bilingual-qa eval``). Their public names are all here:

>>> from bilingual_qa.evaluation import run_eval, compare_to_baseline
>>> report = run_eval()                          # the default Assistant and reference set
>>> compare_to_baseline(report, "eval/baseline.json")
()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .baseline import (
    BASELINE_FORMAT,
    Regression,
    compare_to_baseline,
    default_tolerances,
    load_baseline,
    write_baseline,
)
from .cli import run_cli
from .metrics import (
    ALL,
    METRIC_BY_KEY,
    METRICS,
    RETRIEVAL_DEPTH,
    CaseResult,
    CitedParagraph,
    Metric,
    SystemReport,
    aggregate,
    cell_of,
    conversation_summary,
    language_matches,
    normalize_for_facts,
    score_case,
    system_report,
    unit_keys,
)
from .mirror import mirrored, script_summary
from .reference import (
    DEFAULT_BASELINE,
    DEFAULT_SET,
    EVAL_DIR,
    LANGUAGES,
    Case,
    ReferenceSet,
    baseline_path,
    check_reference_set,
    discover_sets,
    load_reference_set,
    meta_path,
)
from .report import (
    DEFAULT_REPORT_DIR,
    conversation_lines,
    format_table,
    render_html,
    render_suite_html,
    render_svg_chart,
    script_lines,
    tally_lines,
    write_reports,
    write_suite,
)
from .run import EvalReport, TopUnitQuote, evaluate_system, pool_reports, run_eval

if TYPE_CHECKING:
    from .naive import NaivePipeline, llama_embedding

# Loaded on first use, not here: `python -m bilingual_qa.evaluation.naive` imports this package
# first, and the module must not be in sys.modules already when it then runs as __main__.
_LAZY = {"NaivePipeline": "naive", "llama_embedding": "naive"}


def __getattr__(name: str) -> object:
    """The lazily loaded names of :mod:`.naive`."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL",
    "BASELINE_FORMAT",
    "DEFAULT_BASELINE",
    "DEFAULT_REPORT_DIR",
    "DEFAULT_SET",
    "EVAL_DIR",
    "LANGUAGES",
    "METRICS",
    "METRIC_BY_KEY",
    "RETRIEVAL_DEPTH",
    "Case",
    "CaseResult",
    "CitedParagraph",
    "EvalReport",
    "Metric",
    "NaivePipeline",
    "ReferenceSet",
    "Regression",
    "SystemReport",
    "TopUnitQuote",
    "aggregate",
    "baseline_path",
    "cell_of",
    "check_reference_set",
    "compare_to_baseline",
    "conversation_lines",
    "conversation_summary",
    "default_tolerances",
    "discover_sets",
    "evaluate_system",
    "format_table",
    "language_matches",
    "llama_embedding",
    "load_baseline",
    "load_reference_set",
    "meta_path",
    "mirrored",
    "normalize_for_facts",
    "pool_reports",
    "render_html",
    "render_suite_html",
    "render_svg_chart",
    "run_cli",
    "run_eval",
    "score_case",
    "script_lines",
    "script_summary",
    "system_report",
    "tally_lines",
    "unit_keys",
    "write_baseline",
    "write_reports",
    "write_suite",
]
