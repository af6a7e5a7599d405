"""Report kit: the HTML page, tables, lists and SVG/PNG figures the eval and bench reports are drawn with.

Everything returns text (or PNG bytes); the callers write it with
:func:`bilingual_qa.files.atomic_write`. Pages are self-contained: styles inline,
figures inline SVG or PNG data URIs.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SVG_NS = "http://www.w3.org/2000/svg"


def esc(text: object) -> str:
    """Escape for HTML.

    Args:
        text: anything; its ``str()`` is escaped.

    Returns:
        The text with ``&``, ``<``, ``>`` and quotes escaped, safe as element text or attribute value.
    """
    return html.escape(str(text))


def page(title: str, style: str, body: str) -> str:
    """A self-contained HTML page.

    Args:
        title: the page title (escaped here).
        style: a ``<style>`` element, inserted as given.
        body: the page's HTML content, ending with a newline.

    Returns:
        The whole document, ending with a newline.
    """
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>\n'
        f"{style}</head><body>\n{body}</body></html>\n"
    )


def table(header: Sequence[str], rows: Iterable[str]) -> str:
    """An HTML table.

    Args:
        header: the column titles (escaped here), as one row of ``<th>``.
        rows: the rows, from :func:`row`.

    Returns:
        The ``<table>`` element.
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def row(cells: Sequence[object], *, css_class: str | None = None, header_cells: int = 0) -> str:
    """One table row.

    Args:
        cells: the cells' contents (each ``str()`` escaped here).
        css_class: the row's class attribute, if any.
        header_cells: how many leading cells are ``<th>`` rather than ``<td>``.

    Returns:
        The ``<tr>`` element.
    """
    opening = "<tr>" if css_class is None else f'<tr class="{esc(css_class)}">'
    tags = ["th" if i < header_cells else "td" for i in range(len(cells))]
    return opening + "".join(f"<{t}>{esc(c)}</{t}>" for t, c in zip(tags, cells, strict=True)) + "</tr>"


def items(texts: Iterable[object]) -> str:
    """List items, for the caller's ``<ul>`` or ``<ol>``.

    Args:
        texts: one item each (each ``str()`` escaped here).

    Returns:
        The ``<li>`` elements, concatenated.
    """
    return "".join(f"<li>{esc(t)}</li>" for t in texts)


def svg(
    width: float, height: float, elements: Iterable[str], attrs: Mapping[str, object] | None = None
) -> str:
    """An inline SVG figure of ``elements``, one per line.

    Args:
        width: its width in pixels.
        height: its height in pixels.
        elements: SVG element markup (see :func:`svg_text`).
        attrs: further attributes of the ``<svg>`` element, in order (values escaped).

    Returns:
        The ``<svg>`` element.
    """
    extra = "".join(f' {name}="{esc(value)}"' for name, value in (attrs or {}).items())
    opening = f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}"{extra}>'
    return "\n".join([opening, *elements, "</svg>"])


def svg_text(x: object, y: object, text: object, attrs: Mapping[str, object] | None = None) -> str:
    """An SVG text element.

    Args:
        x: its x, a number or an already formatted string.
        y: its y, likewise.
        text: its content (escaped here).
        attrs: further attributes, in order (values escaped).

    Returns:
        The ``<text>`` element.
    """
    extra = "".join(f' {name}="{esc(value)}"' for name, value in (attrs or {}).items())
    return f'<text x="{x}" y="{y}"{extra}>{esc(text)}</text>'


def pyplot() -> Any | None:
    """matplotlib's pyplot, switched to the file-only Agg backend (no display needed).

    Returns:
        ``matplotlib.pyplot``, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png_bytes(figure: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure as PNG, then close it.

    Args:
        figure: a figure from :func:`pyplot`.
        dpi: its resolution.

    Returns:
        The PNG file's bytes.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi)
    plt.close(figure)
    return buf.getvalue()


def png_img(png: bytes, alt: str) -> str:
    """An image carrying its PNG as a data URI, so the page needs no other file.

    Args:
        png: the PNG file's bytes.
        alt: the image's text alternative (escaped here).

    Returns:
        The ``<img>`` element.
    """
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
