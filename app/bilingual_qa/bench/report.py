"""Benchmark reports: plain-text tables, and report.json, the scale plot and report.html."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import BenchmarkError
from ..files import atomic_write
from ..reportkit import esc, items, page, png_bytes, png_img, pyplot, row, svg, svg_text, table
from .results import BenchReport

#: Where ``bilingual-qa bench`` writes report.json, report.html and bench.png.
DEFAULT_REPORT_DIR = Path("eval") / "reports" / "bench"
_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
img,svg{max-width:100%}</style>"""
_FIGURE_ALT = "latency and build time against corpus size"


def format_table(report: BenchReport) -> str:
    """The report as two plain-text tables: measurements, then targets.

    Args:
        report: a finished run.

    Returns:
        Text ready to print.
    """
    lines = [
        f"bilingual-qa bench{' --quick' if report.quick else ''}: {report.started}, {report.seconds:.0f} s, "
        f"{report.machine['cores']} cores, load {report.machine['load_average_before']} → "
        f"{report.machine['load_average_after']}",
        "",
        f"{'measurement':<72} {'median':>10} {'p95':>10} {'n':>4}  unit",
    ]
    for m in report.measurements:
        lines.append(
            f"{m.label[:72]:<72} {_num(m.median):>10} {_num(m.p95):>10} {len(m.samples):>4}  {m.unit}"
        )
        if m.note:
            lines.append(f"    {m.note}")
    lines += ["", f"{'target':<88} {'measured':>9} {'bound':>7}  result"]
    for t in report.targets:
        value = "—" if t.value is None else _num(t.value)
        lines.append(f"{t.description[:88]:<88} {value:>9} {_num(t.bound):>7}  {_result(t.met)}")
        if t.met is None and t.note:
            lines.append(f"    {t.note}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def write_report(report: BenchReport, directory: Path) -> dict[str, Path]:
    """Write report.json, bench.png (or bench.svg) and report.html into ``directory``.

    Args:
        report: a finished run.
        directory: created when missing.

    Returns:
        The written files by kind ("json", "plot", "html").

    Raises:
        BenchmarkError: the directory cannot be written.
    """
    paths = {"json": directory / "report.json"}
    png = _plot_png(report)
    plot: str | bytes
    if png is not None:
        paths["plot"], plot, figure = directory / "bench.png", png, png_img(png, _FIGURE_ALT)
    else:
        paths["plot"], figure = directory / "bench.svg", _plot_svg(report)
        plot = figure
    paths["html"] = directory / "report.html"
    try:
        atomic_write(paths["json"], report.to_json() + "\n")
        atomic_write(paths["plot"], plot)
        atomic_write(paths["html"], render_html(report, figure))
    except OSError as exc:
        raise BenchmarkError(f"cannot write the benchmark report to {directory}: {exc}") from None
    return paths


def render_html(report: BenchReport, figure: str) -> str:
    """A self-contained HTML page: targets, the plot, measurements and notes.

    Args:
        report: a finished run.
        figure: the plot, as an ``<img>`` or ``<svg>`` element.

    Returns:
        The page.
    """
    measurements = [
        row([m.label, _num(m.median), _num(m.p95), len(m.samples), m.unit, m.note])
        for m in report.measurements
    ]
    targets = [
        row([t.description, "—" if t.value is None else _num(t.value), _num(t.bound), _result(t.met), t.note])
        for t in report.targets
    ]
    machine = esc(json.dumps(report.machine, ensure_ascii=False))
    body = f"""<h1>bilingual-qa benchmark{" (quick)" if report.quick else ""}</h1>
<p>{esc(report.started)}, {report.seconds:.0f} s. Machine: <code>{machine}</code></p>
<p>Targets are ratios of quantities measured side by side in this run (medians of repeats);
absolute times are for orientation on this machine.</p>
<h2>Targets</h2>
{table(["target", "measured", "bound", "result", "note"], targets)}
<h2>Cost against corpus size</h2>
{figure}
<h2>Measurements</h2>
{table(["measurement", "median", "p95", "n", "unit", "note"], measurements)}
<ul>{items(report.notes)}</ul>
"""
    return page("bilingual-qa benchmark", _STYLE, body)


def _result(met: bool | None) -> str:
    """A target's outcome in words."""
    return "skipped" if met is None else ("met" if met else "MISSED")


def _num(x: float) -> str:
    """A number with three significant digits, without exponent for everyday sizes."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _series(report: BenchReport) -> dict[str, list[tuple[float, float]]]:
    """The plotted lines: (paragraphs, value) per series."""
    return {
        "answer p50 (ms)": [(p.paragraphs, p.answer_p50_ms) for p in report.scale],
        "answer p95 (ms)": [(p.paragraphs, p.answer_p95_ms) for p in report.scale],
        "build excl. encoding (s)": [(p.paragraphs, p.build_seconds) for p in report.scale],
        "encoding, projected from measured rate (s)": [
            (p.paragraphs, p.encode_seconds) for p in report.scale
        ],
    }


def _plot_png(report: BenchReport) -> bytes | None:
    """The scale plot as PNG bytes via matplotlib, or None when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    series = _series(report)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, ax in (("answer p50 (ms)", left), ("answer p95 (ms)", left)):
        xs, ys = zip(*series[name], strict=True) if series[name] else ((), ())
        ax.plot(xs, ys, marker="o", label=name)
    for name in ("build excl. encoding (s)", "encoding, projected from measured rate (s)"):
        xs, ys = zip(*series[name], strict=True) if series[name] else ((), ())
        right.plot(xs, ys, marker="o", label=name)
    left.set_title("warm answer latency")
    left.set_ylabel("ms")
    left.set_ylim(bottom=0)
    right.set_title("index build time")
    right.set_ylabel("s")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("paragraphs in the document")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("bilingual-qa: cost against corpus size" + (" (quick)" if report.quick else ""))
    fig.tight_layout()
    return png_bytes(fig, dpi=110)


def _plot_svg(report: BenchReport) -> str:
    """A small dependency-free SVG of the same plot (log x, linear y per panel)."""
    series = _series(report)
    panels = (
        ("warm answer latency (ms)", ("answer p50 (ms)", "answer p95 (ms)")),
        ("index build time (s)", ("build excl. encoding (s)", "encoding, projected from measured rate (s)")),
    )
    colors = ("#1f77b4", "#ff7f0e")
    width, height, pad = 420, 280, 40
    parts = []
    for k, (title, names) in enumerate(panels):
        points = [pt for name in names for pt in series[name]]
        if not points:
            continue
        x0 = k * width
        lx = [math.log10(max(x, 1)) for x, _ in points]
        ymax = max(y for _, y in points) or 1.0
        xlo, xhi = min(lx), max(max(lx), min(lx) + 1)

        def sx(x: float, x0: int = x0, xlo: float = xlo, xhi: float = xhi) -> float:
            return x0 + pad + (math.log10(max(x, 1)) - xlo) / (xhi - xlo) * (width - 2 * pad)

        def sy(y: float, ymax: float = ymax) -> float:
            return height - pad - y / ymax * (height - 2 * pad)

        parts.append(svg_text(x0 + pad, 20, f"{title}, max {_num(ymax)}"))
        parts.append(
            f'<rect x="{x0 + pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
            'fill="none" stroke="#ccc"/>'
        )
        for color, name in zip(colors, names, strict=True):
            pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series[name])
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            parts.append(svg_text(x0 + pad + 4, pad + 14 + 14 * names.index(name), name, {"fill": color}))
        parts.append(svg_text(x0 + pad, height - 10, "paragraphs (log scale)"))
    return svg(2 * width, height, parts, {"font-size": 11})
