"""Reports: the plain-text table, and report.json and a self-contained report.html per run and suite."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from .. import language as lang
from ..errors import EvaluationError
from ..files import atomic_write
from ..reportkit import esc, items, page, row, svg, svg_text, table
from .baseline import Regression
from .metrics import METRICS, SystemReport, conversation_summary
from .mirror import script_summary, split
from .reference import EVAL_DIR
from .run import EvalReport

DEFAULT_REPORT_DIR = EVAL_DIR / "reports"
_CHART_METRICS = ("hit@1", "mrr", "fact_recall", "cite_precision", "lang_match", "script_match",
                  "refusal_acc", "chrf")  # fmt: skip
_COLORS = {"engine": "#2563eb", "extractive": "#16a34a", "naive": "#9ca3af", "top1": "#f59e0b",
           "top2": "#fcd34d"}  # fmt: skip
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


def format_table(report: EvalReport) -> str:
    """The per-cell table, every system's row side by side, as plain text.

    Args:
        report: a finished run (or a pooled one).

    Returns:
        A heading line, the table, and the tally lines (see :func:`tally_lines`).
    """
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
    for n, cells in enumerate(rows):
        padded = [
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    fitted = ", answerer fitted without this document" if report.cross_validated else ""
    head = (
        f"{report.reference_set}: {report.cases} cases on {report.document} "
        f"(model {report.model}, backend {report.engine.backend}{fitted}, {report.seconds:.0f} s)"
    )
    extra = [*conversation_lines(report), *script_lines(report), *tally_lines(report)]
    return head + "\n" + "\n".join(lines) + "".join(f"\n{line}" for line in extra)


def conversation_lines(report: EvalReport) -> list[str]:
    """The engine's handling of conversations, in one line (none when the set has none).

    Args:
        report: a finished run (or a pooled one).

    Returns:
        Follow-ups condensed, topic switches merged, follow-up fact recall beside the same
        questions asked in full.
    """
    s = conversation_summary(report.engine.cases)
    if not s["follow_ups"] and not s["topic_switches"]:
        return []

    def share(key: str) -> str:
        return "—" if s[key] is None else f"{s[key]:.3f}"

    return [
        f"conversations: follow-ups condensed {share('follow_ups_condensed')} (n {s['follow_ups']}), "
        f"topic switches merged {share('topic_switches_merged')} (n {s['topic_switches']}), "
        f"fact recall of follow-ups {share('follow_up_facts')} vs asked in full "
        f"{share('full_question_facts')} (n {s['paired']})"
    ]


def script_lines(report: EvalReport) -> list[str]:
    """The same Chinese questions in Traditional and in Simplified: one line per document version.

    Args:
        report: a finished run (or a pooled one) with its mirrored (and reversed) cases.

    Returns:
        Fact recall and false refusals of the answerable Chinese questions asked in each
        script (as written, and converted by the mirror); a second line for the document
        with its Chinese in the other script, when the run asked there too.
    """
    lines = []
    if report.mirror is not None:
        lines.append(_script_line("scripts", script_summary(report.engine.cases, report.mirror.cases)))
    if report.reverse is not None:
        name = {lang.HANS: "Simplified", lang.HANT: "Traditional"}.get(report.reverse_script or "", "other")
        summary = script_summary(*split(report.reverse.cases))
        lines.append(_script_line(f"scripts, the document in {name}", summary))
    return [line for line in lines if line]


def _script_line(head: str, s: dict) -> str:
    """One script-pair line ("" when no question was asked in both scripts)."""
    if not s:
        return ""
    parts = [
        f"{name} facts {s[script]['facts']:.3f}, false refusals {s[script]['false_refusal']:.3f}"
        for script, name in ((lang.HANT, "Traditional"), (lang.HANS, "Simplified"))
        if script in s
    ]
    n = s.get(lang.HANT, s.get(lang.HANS, {})).get("n", 0)
    return f"{head}: the same {n} Chinese questions in both scripts: " + "; ".join(parts)


def tally_lines(report: EvalReport) -> list[str]:
    """For systems that did not answer with one backend only: who answered, fallbacks, guardrails fired.

    Args:
        report: a finished run.

    Returns:
        Three lines per such system; none when every system answered with one backend, plainly.
    """
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

    Args:
        report: a finished run.
        folder: created when missing.
        regressions: what the gate found, shown on the page and kept in the JSON.

    Returns:
        The JSON and HTML paths.

    Raises:
        EvaluationError: the folder cannot be written.
    """
    folder = Path(folder)
    found = [dataclasses.asdict(r) | {"text": str(r)} for r in regressions]
    data = {**report.to_dict(), "regressions": found}
    json_path, html_path = folder / "report.json", folder / "report.html"
    _write(json_path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    _write(html_path, render_html(report, regressions))
    return json_path, html_path


def write_suite(
    reports: Sequence[EvalReport],
    pooled: EvalReport,
    regressions: Sequence[tuple[EvalReport, Sequence[Regression]]],
    folder: str | Path = DEFAULT_REPORT_DIR,
) -> tuple[Path, Path]:
    """Write the whole run's report.json (every set's summary, and the pooled one) and report.html.

    Args:
        reports: every set's run.
        pooled: :func:`~bilingual_qa.evaluation.pool_reports` of them.
        regressions: each run with what its gate found.
        folder: created when missing.

    Returns:
        The JSON and HTML paths.

    Raises:
        EvaluationError: the folder cannot be written.
    """
    folder = Path(folder)
    data = {
        "sets": [r.summary() | {"regressions": [str(x) for x in found]} for r, found in regressions],
        "pooled": pooled.summary(),
    }
    json_path, html_path = folder / "report.json", folder / "report.html"
    _write(json_path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    _write(html_path, render_suite_html(reports, pooled, regressions))
    return json_path, html_path


def render_html(report: EvalReport, regressions: Sequence[Regression] = ()) -> str:
    """A self-contained HTML report: summary, regressions, per-cell table, chart, failing cases.

    Args:
        report: a finished run.
        regressions: what the gate found.

    Returns:
        The page.
    """
    systems = report.systems
    gate = _gate(regressions, "<p>No regression against the baseline (or no baseline compared).</p>")
    failing = [
        f"<h2>Failing cases: {system.name} ({len(system.failures)})</h2>{_failures_html(system)}"
        for system in systems
    ]
    for n in range(1, len(failing)):  # the comparison systems' failures start folded
        name = esc(systems[n].name)
        failing[n] = f"<details><summary>{name} failures</summary>{failing[n]}</details>"
    tallies = items(tally_lines(report))
    tallies = f"<h2>Backends and guardrails</h2><ul>{tallies}</ul>" if tallies else ""
    body = f"""<h1>bilingual-qa evaluation</h1>
<p>{esc(report.reference_set)}: {report.cases} cases · document {esc(report.document)}
(<code>{report.document_sha256[:12]}</code>) · model {esc(report.model)} · backend
{esc(report.engine.backend)} · {esc(report.created)} · {report.seconds:.0f} s</p>
<h2>Gate</h2>{gate}
<h2>Per cell (question language → evidence language)</h2>
{_table_html(report)}
{_LEGEND}
{tallies}<h2>Chart</h2>{render_svg_chart(report)}
{"".join(failing)}
"""
    return page("bilingual-qa evaluation", _STYLE, body)


def render_suite_html(
    reports: Sequence[EvalReport],
    pooled: EvalReport,
    regressions: Sequence[tuple[EvalReport, Sequence[Regression]]],
) -> str:
    """The whole run as one self-contained page: the pooled table, then every set's table and gate.

    Args:
        reports: every set's run.
        pooled: their pooled report.
        regressions: each run with what its gate found.

    Returns:
        The page.
    """
    sections = []
    for report, found in regressions:
        name = Path(report.reference_set).name.removesuffix(".jsonl")
        kind = "development data" if report.development else "reference set"
        if report.cross_validated:
            kind += " · answerer fitted without this document (cross-validated)"
        gate = _gate(found, "<p>Gate: no regression against the baseline (or none compared).</p>")
        sections.append(
            f"<h2 id='{esc(name)}'>{esc(name)}</h2><p>{esc(kind)} · {report.cases} cases · document "
            f"{esc(report.document)} · {report.seconds:.0f} s · <a href='{esc(name)}/report.html'>"
            f"details and failing cases</a></p>{gate}{_table_html(report)}"
        )
    toc = " · ".join(
        f"<a href='#{esc(n)}'>{esc(n)}</a>"
        for n in (Path(r.reference_set).name.removesuffix(".jsonl") for r in reports)
    )
    body = f"""<h1>bilingual-qa evaluation: {len(reports)} sets</h1>
<p>{toc} · model {esc(pooled.model)} · {esc(pooled.created)} · {pooled.seconds:.0f} s</p>
<h2>All sets pooled ({pooled.cases} cases)</h2>
{_table_html(pooled)}
{_LEGEND}
{"".join(sections)}
"""
    return page("bilingual-qa evaluation", _STYLE, body)


def render_svg_chart(report: EvalReport) -> str:
    """An inline SVG: one small bar chart per headline metric, a bar per system in each cell.

    Args:
        report: a finished run.

    Returns:
        The ``<svg>`` element.
    """
    cells = list(report.engine.cells)
    systems = report.systems
    bar, gap, plot_h, top, bottom, left = 7, 6, 100, 22, 78, 28
    panel_w = left + len(cells) * (bar * len(systems) + gap) + 8
    panel_h = top + plot_h + bottom
    columns = 4
    rows = (len(_CHART_METRICS) + columns - 1) // columns
    width, height = panel_w * columns, panel_h * rows + 24
    out = []
    for i, system in enumerate(systems):
        x = 10 + i * 90
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{_COLORS.get(system.name, "#555")}"/>')
        out.append(svg_text(x + 14, 15, system.name))
    for n, key in enumerate(_CHART_METRICS):
        ox, oy = (n % columns) * panel_w, 24 + (n // columns) * panel_h
        scale = 100.0 if key == "chrf" else 1.0
        out.append(svg_text(ox + left, oy + 14, key, {"font-weight": "bold"}))
        for tick in (0.0, 0.5, 1.0):
            y = oy + top + plot_h * (1 - tick)
            out.append(
                f'<line x1="{ox + left}" x2="{ox + panel_w - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                + svg_text(ox + left - 4, f"{y + 3:.1f}", f"{tick * scale:g}", {"text-anchor": "end"})
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
                    f"{esc(f'{system.name} {cell} {key}: {_fmt(key, value)}')}</title></rect>"
                )
            lx, ly = x0 + bar * len(systems) / 2, oy + top + plot_h + 6
            out.append(
                svg_text(f"{lx:.1f}", f"{ly:.1f}", cell, {"transform": f"rotate(60 {lx:.1f} {ly:.1f})"})
            )
    attrs = {"font-family": "sans-serif", "font-size": 10, "role": "img", "aria-label": "metrics per cell"}
    return svg(width, height, out, attrs)


def _fmt(key: str, value: float | None) -> str:
    """A metric value for tables: rates with 3 decimals, chrF with 1, latency in ms."""
    if value is None:
        return "—"
    if key == "chrf":
        return f"{value:.1f}"
    if key.startswith("latency_"):
        return f"{value * 1000:.0f}"
    return f"{value:.3f}"


def _gate(regressions: Sequence[Regression], passed: str) -> str:
    """The regressions as a red list, or the ``passed`` paragraph when there are none."""
    return f"<ul class='bad'>{items(regressions)}</ul>" if regressions else passed


def _table_html(report: EvalReport) -> str:
    """The per-cell table of every system, as HTML."""
    body = []
    for cell in report.engine.cells:
        for system in report.systems:
            values = system.cells.get(cell, {})
            first = cell if system is report.engine else ""
            numbers = [_fmt(m.key, values.get(m.key)) for m in METRICS]
            cells = [first, system.name, system.counts.get(cell, 0), *numbers]
            body.append(row(cells, css_class=system.name, header_cells=1))
    return table(["cell", "system", "n", *(m.label for m in METRICS)], body)


def _failures_html(system: SystemReport) -> str:
    """Every failing case of one system: question, answer, citations and what went wrong."""
    parts = []
    for c in system.failures:
        cites = items(f"[{p.id}] ({p.language}) {p.excerpt}" for p in c.citations)
        parts.append(
            f'<div class="case"><b>{esc(c.id)}</b> ({esc(c.cell)}, {esc(c.category)}, line {c.line}, '
            f"gold {esc(', '.join(c.gold) or '—')})<br>Q: {esc(c.question)}"
            f'<div class="a">{esc(c.answer)}</div><ul>{cites}</ul>'
            f'<ul class="bad">{items(c.problems)}</ul>Reference: {esc(c.reference)}</div>'
        )
    return "".join(parts)


def _write(path: Path, text: str) -> None:
    """files.atomic_write, its OSError as a one-line EvaluationError naming the file."""
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise EvaluationError(f"cannot write {path}: {exc.strerror or exc}") from None
