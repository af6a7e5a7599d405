"""Benchmark suite (``bilingual-qa bench``): start-up, warm answers, index build, scale, memory, web.

Modules: :mod:`.measure` (the stages and :func:`run_benchmark`), :mod:`.scenarios`
(questions, synthetic documents and vectors), :mod:`.processes` (timing the CLI, the
web server and the naive pipeline in fresh processes), :mod:`.results` (what a run
measured), :mod:`.report` (tables, JSON, plot, HTML) and :mod:`.cli`. Their public
names are all here.
"""

from __future__ import annotations

from ..errors import BenchmarkError
from .cli import run_cli
from .measure import (
    QUICK_SCALE_COPIES,
    QUICK_SEARCH_VECTORS,
    RSS_BOUND_MB,
    SCALE_COPIES,
    SEARCH_SHARE_BOUND,
    SEARCH_VECTORS,
    WEB_CALLERS,
    run_benchmark,
)
from .report import DEFAULT_REPORT_DIR, format_table, render_html, write_report
from .results import BenchReport, Measurement, ScalePoint, Target
from .scenarios import ReplayEmbedder, clustered_vectors, question_stream, synthetic_document, synthetic_text

__all__ = [
    "DEFAULT_REPORT_DIR",
    "QUICK_SCALE_COPIES",
    "QUICK_SEARCH_VECTORS",
    "RSS_BOUND_MB",
    "SCALE_COPIES",
    "SEARCH_SHARE_BOUND",
    "SEARCH_VECTORS",
    "WEB_CALLERS",
    "BenchReport",
    "BenchmarkError",
    "Measurement",
    "ReplayEmbedder",
    "ScalePoint",
    "Target",
    "clustered_vectors",
    "format_table",
    "question_stream",
    "render_html",
    "run_benchmark",
    "run_cli",
    "synthetic_document",
    "synthetic_text",
    "write_report",
]
