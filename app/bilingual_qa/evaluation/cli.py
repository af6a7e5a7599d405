"""``bilingual-qa eval``: run every reference set (or the ones named), report, gate on or update baselines."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from .baseline import Regression, compare_to_baseline, load_baseline, write_baseline
from .reference import EVAL_DIR, baseline_path, discover_sets, load_reference_set
from .report import DEFAULT_REPORT_DIR, format_table, write_reports, write_suite
from .run import EvalReport, pool_reports, run_eval


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
            from ..assistant import Assistant

            assistant = Assistant(document=document, settings=first.settings, embedder=first.embedder)
        reverse = bool(getattr(args, "reverse_scripts", False))
        reports.append(run_eval(assistant, reference, progress=True, reverse=reverse))
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
