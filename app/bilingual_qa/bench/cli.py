"""``bilingual-qa bench``: run the benchmark, print its tables (or JSON), write its report."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import Settings
from .measure import run_benchmark
from .report import DEFAULT_REPORT_DIR, format_table, write_report


def run_cli(args: object, settings: Settings) -> int:
    """``bilingual-qa bench``: run, print the table (or JSON), write the report.

    Args:
        args: parsed CLI arguments (``quick``, ``json``, ``report``).
        settings: from the common CLI flags.

    Returns:
        0 (missed targets are reported, not an error).

    Raises:
        BenchmarkError: a stage every other depends on failed, or the report cannot be written.
        ModelError: the embedding model cannot be loaded.
    """

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    report = run_benchmark(settings, quick=args.quick, progress=progress)  # type: ignore[attr-defined]
    paths = write_report(report, Path(args.report) if args.report else DEFAULT_REPORT_DIR)  # type: ignore[attr-defined]
    print(report.to_json() if args.json else format_table(report))  # type: ignore[attr-defined]
    print(f"bench: report {paths['html']}, plot {paths['plot']}", file=sys.stderr)
    return 0
