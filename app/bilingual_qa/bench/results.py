"""Benchmark results: measurements, targets and scale points, and the report that holds them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Measurement:
    """One measured quantity: median (and p95) of its samples, in ``unit``."""

    name: str
    label: str
    unit: str
    samples: tuple[float, ...]
    note: str = ""

    @property
    def median(self) -> float:
        """Median of the samples."""
        return float(np.median(self.samples))

    @property
    def p95(self) -> float:
        """95th percentile of the samples (linear interpolation)."""
        return float(np.percentile(self.samples, 95))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary with the raw samples."""
        return {
            "name": self.name,
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "p95": self.p95,
            "n": len(self.samples),
            "samples": list(self.samples),
            "note": self.note,
        }


@dataclass(frozen=True)
class Target:
    """A target of issue #6: a measured value (usually a ratio) against its bound.

    ``met`` is None when the target was skipped; ``note`` says why.
    """

    name: str
    description: str
    value: float | None
    bound: float
    met: bool | None
    note: str = ""


@dataclass(frozen=True)
class ScalePoint:
    """Answer latency and index build time at one corpus size.

    ``build_seconds`` is the build's own work (alignment, BM25-ready store, FAISS),
    measured with replayed vectors; ``encode_seconds`` is what encoding its passages
    costs at the passage rate measured in the same run.
    """

    paragraphs: int
    passages: int
    answer_p50_ms: float
    answer_p95_ms: float
    build_seconds: float
    encode_seconds: float


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured."""

    quick: bool
    started: str
    seconds: float
    machine: dict[str, object]
    measurements: tuple[Measurement, ...]
    targets: tuple[Target, ...]
    scale: tuple[ScalePoint, ...]
    notes: tuple[str, ...] = ()

    def measurement(self, name: str) -> Measurement | None:
        """The measurement called ``name``, if it ran."""
        return next((m for m in self.measurements if m.name == name), None)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form of the whole report."""
        return {
            "quick": self.quick,
            "started": self.started,
            "seconds": self.seconds,
            "machine": self.machine,
            "measurements": [m.to_dict() for m in self.measurements],
            "targets": [dataclasses.asdict(t) for t in self.targets],
            "scale": [dataclasses.asdict(p) for p in self.scale],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)
