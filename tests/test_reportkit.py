"""The report kit: page, tables, lists and SVG, escaped."""

from __future__ import annotations

from bilingual_qa.reportkit import esc, items, page, png_img, row, svg, svg_text, table


def test_a_page_is_self_contained_and_escapes_its_title():
    html = page("a <b>", "<style>p{}</style>", "<p>x</p>\n")
    assert html.startswith('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>a &lt;b&gt;')
    assert html.endswith("<style>p{}</style></head><body>\n<p>x</p>\n</body></html>\n")


def test_tables_rows_and_items_escape_every_cell():
    assert row(["<x>", 3, "a&b"], css_class='"q"', header_cells=1) == (
        '<tr class="&quot;q&quot;"><th>&lt;x&gt;</th><td>3</td><td>a&amp;b</td></tr>'
    )
    assert (
        table(["n", "<v>"], ["<tr></tr>"]) == "<table><tr><th>n</th><th>&lt;v&gt;</th></tr><tr></tr></table>"
    )
    assert items(["a", "<b>"]) == "<li>a</li><li>&lt;b&gt;</li>"
    assert esc("'") == "&#x27;"


def test_svg_and_png_figures():
    figure = svg(10, 20, [svg_text(1, "2.5", "<t>", {"fill": "red"})], {"font-size": 11})
    assert figure.splitlines() == [
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="20" font-size="11">',
        '<text x="1" y="2.5" fill="red">&lt;t&gt;</text>',
        "</svg>",
    ]
    assert png_img(b"\x89PNG", "a plot") == '<img alt="a plot" src="data:image/png;base64,iVBORw==">'
