"""Baselines: record a run's engine scores, and gate later runs on them metric by metric, cell by cell."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvaluationError
from ..files import atomic_write, read_json
from .metrics import METRIC_BY_KEY, METRICS, Metric
from .reference import DEFAULT_BASELINE
from .run import EvalReport

BASELINE_FORMAT = 1
# Cell means are kept to 4 decimals, so a baseline and a run differ by up to 1e-4 from rounding.
_ROUNDING = 1e-4


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
    """Each metric's default absolute tolerance.

    Returns:
        Metric key → tolerance (None: reported, not gated).
    """
    return {m.key: m.tolerance for m in METRICS}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file.

    Args:
        path: the baseline's JSON file.

    Returns:
        Its content: ``format``, ``cells`` (cell → metric → value), optional ``tolerances``,
        and the sha256s of the reference set and document it was recorded on.

    Raises:
        EvaluationError: unreadable or malformed.
    """
    path = Path(path)
    data = read_json(path, EvaluationError, "baseline")
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
        n = report.engine.counts.get(cell, 0)
        for key, base in expected.items():
            tolerance = tolerances.get(key)
            if base is None or tolerance is None or key not in METRIC_BY_KEY:
                continue
            metric = METRIC_BY_KEY[key]
            value = current.get(key)
            if value is None:
                if not metric.conditional:
                    found.append(Regression(key, cell, base, None, tolerance))
                continue
            worse = base - value if metric.higher_is_better else value - base
            if worse > max(tolerance, one_case(metric, n)) + _ROUNDING:
                found.append(Regression(key, cell, base, value, tolerance))
    return tuple(found)


def one_case(metric: Metric, n: int) -> float:
    """How far one of a cell's ``n`` cases can move a mean metric (0 for a median or an empty cell).

    The gate lets a cell move by one case: the pipeline is deterministic on one machine, but
    FAISS, OpenBLAS and numpy dispatch kernels by CPU (AVX-512 or AVX2), so scores differ in their
    last bits between machines and flip a case that sat on a boundary. Two cases, or the
    tolerance on the larger cells and on ``all``, still fail.
    """
    if metric.scale is None or n <= 0:
        return 0.0
    return metric.scale / n


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
    try:
        return atomic_write(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    except OSError as exc:
        raise EvaluationError(f"cannot write {path}: {exc.strerror or exc}") from None
