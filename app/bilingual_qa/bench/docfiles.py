"""Generators of PDF, DOCX, HTML, ODT and EPUB documents, for the tests and the bench (nothing
binary is committed): bilingual layouts drawn from (English, Chinese) pairs.

PDFs are drawn with reportlab: Latin text in Helvetica, Chinese in reportlab's built-in CID
fonts (``MSung-Light`` for Traditional, ``STSong-Light`` for Simplified), which need no font
file. DOCX files are written with python-docx; ODT and EPUB are zipped by hand.
"""

from __future__ import annotations

import html
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import language as lang

Pair = tuple[str | None, str | None]

PAGE_WIDTH, PAGE_HEIGHT = 595.0, 842.0  # A4 in points
MARGIN = 56.0
GUTTER = 24.0
FONT_SIZE = 10.0
LEADING = 14.0
PARAGRAPH_GAP = 10.0
LATIN_FONT = "Helvetica"
_WIDE = re.compile(f"[{lang.WIDE}]")  # Han, CJK punctuation, full-width forms: drawn in a CID font


def _cjk_font(text: str) -> str:
    """The reportlab CID font for Chinese ``text`` (registered on first use)."""
    from reportlab.pdfbase import _cidfontdata, pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    name = "STSong-Light" if lang.chinese_script(text) == lang.HANS else "MSung-Light"
    if name not in pdfmetrics.getRegisteredFontNames():
        # reportlab pairs MSung-Light (Adobe-CNS1) with the GB1 cmap UniGB-UCS2-H, which text
        # extractors decode into the wrong characters; give it the CNS1 cmap.
        _cidfontdata.defaultUnicodeEncodings["MSung-Light"] = ("cht", "UniCNS-UCS2-H")
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    return name


def _is_chinese(text: str) -> bool:
    """Whether ``text`` is mostly Chinese (drawn in a CID font, wrapped per character)."""
    return lang.cjk_ratio(text) >= lang.CHINESE_SHARE


def _font(text: str) -> str:
    """The font ``text`` is drawn in: a CID font (which has Latin glyphs too) if it has any Han."""
    return _cjk_font(text) if _WIDE.search(text) else LATIN_FONT


def wrap(text: str, width: float, size: float = FONT_SIZE) -> list[str]:
    """Lines of ``text`` fitting ``width`` points: words for Latin, characters for Chinese.

    A newline in ``text`` forces a line break (to test hyphenated breaks, e.g. "corri-\\ndor").
    """
    from reportlab.pdfbase.pdfmetrics import stringWidth

    font = _font(text)
    lines: list[str] = []
    for part in text.split("\n"):
        # Chinese breaks between any two characters, but not inside a number or a Latin word.
        tokens = re.findall(r"[A-Za-z0-9][\w.,%/-]*|.", part) if _is_chinese(part) else part.split(" ")
        glue = "" if _is_chinese(part) else " "
        line = ""
        for token in tokens:
            candidate = f"{line}{glue}{token}" if line else token
            if line and stringWidth(candidate, font, size) > width:
                lines.append(line)
                line = token
            else:
                line = candidate
        if line:
            lines.append(line)
    return lines


class _Pages:
    """A reportlab canvas with optional running header and page-number footer."""

    def __init__(
        self, path: str | Path, header: str | None, page_numbers: bool, password: str | None = None
    ) -> None:
        from reportlab.pdfgen import canvas

        self.canvas = canvas.Canvas(
            str(path), pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1, pageCompression=1, encrypt=password
        )
        self.header = header
        self.page_numbers = page_numbers
        self.number = 0
        self.y = 0.0
        self.new_page(first=True)

    def new_page(self, first: bool = False) -> None:
        """Start a page (finishing the current one) and draw its header and footer."""
        if not first:
            self.canvas.showPage()
        self.number += 1
        if self.header:
            self.canvas.setFont(_font(self.header), 8)
            self.canvas.drawString(MARGIN, PAGE_HEIGHT - 30, self.header)
        if self.page_numbers:
            self.canvas.setFont(LATIN_FONT, 8)
            self.canvas.drawCentredString(PAGE_WIDTH / 2, 24, str(self.number))
        self.y = PAGE_HEIGHT - MARGIN

    def room(self) -> float:
        """Points left above the bottom margin."""
        return self.y - MARGIN

    def draw_lines(self, lines: Sequence[str], x: float, y: float, size: float = FONT_SIZE) -> None:
        """Draw ``lines`` from baseline ``y`` down, each in its own font."""
        for line in lines:
            self.canvas.setFont(_font(line), size)
            self.canvas.drawString(x, y, line)
            y -= LEADING * size / FONT_SIZE

    def save(self) -> None:
        """Finish the last page and write the file."""
        self.canvas.showPage()
        self.canvas.save()


def two_column_pdf(
    pairs: Sequence[Pair],
    path: str | Path,
    *,
    title: str | None = None,
    header: str | None = None,
    page_numbers: bool = True,
    pairs_per_page: int | None = None,
) -> Path:
    """Write a parallel-text PDF: English (or the first item) left, Chinese right, row by row.

    Each pair starts on the same line in both columns; a side that is None is left blank.
    A pair that does not fit the rest of a page starts the next one (one taller than a whole
    page flows over pages line by line in both columns).

    Args:
        pairs: (left, right) paragraph texts; either may be None.
        path: where to write the PDF.
        title: an optional full-width title over the first page's columns.
        header: an optional running header drawn at the top of every page.
        page_numbers: draw a bare page number at the bottom of every page.
        pairs_per_page: start a new page after this many pairs (None: only when full).

    Returns:
        ``path`` as a Path.
    """
    pages = _Pages(path, header, page_numbers)
    column = (PAGE_WIDTH - 2 * MARGIN - GUTTER) / 2
    xs = (MARGIN, MARGIN + column + GUTTER)
    if title:
        pages.canvas.setFont(_font(title), 14)
        pages.canvas.drawCentredString(PAGE_WIDTH / 2, pages.y, title)
        pages.y -= 14 * 1.4 + PARAGRAPH_GAP
    on_page = 0
    for left, right in pairs:
        if pairs_per_page is not None and on_page == pairs_per_page:
            pages.new_page()
            on_page = 0
        sides = [wrap(text, column) if text else [] for text in (left, right)]
        height = max(len(s) for s in sides) * LEADING
        if height > pages.room() and on_page:
            pages.new_page()
            on_page = 0
        while sides[0] or sides[1]:
            fit = max(1, int(pages.room() // LEADING) + 1)
            for x, lines in zip(xs, sides, strict=True):
                pages.draw_lines(lines[:fit], x, pages.y)
            used = max(len(s[:fit]) for s in sides)
            sides = [s[fit:] for s in sides]
            if sides[0] or sides[1]:
                pages.new_page()
            else:
                pages.y -= used * LEADING + PARAGRAPH_GAP
        on_page += 1
    pages.save()
    return Path(path)


def per_page_pdf(
    pages: Sequence[Sequence[str]],
    path: str | Path,
    *,
    header: str | None = None,
    page_numbers: bool = True,
    password: str | None = None,
) -> Path:
    """Write a one-column PDF with the given paragraphs on each page (e.g. one language a page).

    Args:
        pages: for each page, its paragraph texts (wrapped to the text width).
        path: where to write the PDF.
        header: an optional running header drawn at the top of every page.
        page_numbers: draw a bare page number at the bottom of every page.
        password: encrypt the PDF with this user password.

    Returns:
        ``path`` as a Path.
    """
    out = _Pages(path, header, page_numbers, password)
    width = PAGE_WIDTH - 2 * MARGIN
    for number, paragraphs in enumerate(pages):
        if number:
            out.new_page()
        for text in paragraphs:
            lines = wrap(text, width)
            out.draw_lines(lines, MARGIN, out.y)
            out.y -= len(lines) * LEADING + PARAGRAPH_GAP
    out.save()
    return Path(path)


def scanned_pdf(path: str | Path, pages: int = 2) -> Path:
    """Write a PDF whose pages hold only an image (like a scan without OCR) and no text.

    Args:
        path: where to write the PDF.
        pages: how many pages.

    Returns:
        ``path`` as a Path.
    """
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    image = Image.new("L", (200, 280), 255)
    draw = ImageDraw.Draw(image)
    for y in range(20, 260, 12):
        draw.line((20, y, 180, y), fill=0, width=3)  # lines that look like text to a person only
    c = canvas.Canvas(str(path), pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1)
    for _ in range(pages):
        c.drawImage(ImageReader(image), MARGIN, MARGIN, PAGE_WIDTH - 2 * MARGIN, PAGE_HEIGHT - 2 * MARGIN)
        c.showPage()
    c.save()
    return Path(path)


def bilingual_docx(
    pairs: Sequence[Pair],
    path: str | Path,
    *,
    headings: Mapping[int, str] | None = None,
    title: str | None = None,
    as_table: bool = True,
    intro: Sequence[str] = (),
) -> Path:
    """Write a DOCX with the pairs in two-column tables (or as alternating paragraphs).

    Args:
        pairs: (English, Chinese) paragraph texts; either may be None (an empty cell).
        path: where to write the DOCX.
        headings: pair index → a "Heading 1" paragraph written before that pair (starting a
            new table when ``as_table``).
        title: an optional "Title" paragraph first.
        as_table: put each pair in a table row; otherwise each text is a paragraph of its own.
        intro: plain paragraphs after the title, before the pairs.

    Returns:
        ``path`` as a Path.
    """
    import docx

    document = docx.Document()
    if title:
        document.add_heading(title, level=0)
    for text in intro:
        document.add_paragraph(text)
    headings = dict(headings or {})
    table = None
    for i, (left, right) in enumerate(pairs):
        if i in headings:
            document.add_heading(headings[i], level=1)
            table = None
        if as_table:
            if table is None:
                table = document.add_table(rows=0, cols=2)
            cells = table.add_row().cells
            cells[0].text = left or ""
            cells[1].text = right or ""
        else:
            for text in (left, right):
                if text:
                    document.add_paragraph(text)
    document.save(str(path))
    return Path(path)


def bilingual_html(
    pairs: Sequence[Pair],
    *,
    title: str = "Bilingual page",
    headings: Mapping[int, str] | None = None,
    layout: str = "rows",
    noise: bool = True,
    charset: str | None = "utf-8",
) -> str:
    """An HTML page showing the pairs side by side.

    Args:
        pairs: (English, Chinese) paragraph texts; either may be None (left out).
        title: the page's <title> and <h1>.
        headings: pair index → an <h2> written before that pair.
        layout: "rows" (a ``div.row`` holding a ``<p lang=en>`` and a ``<p lang=zh-Hant>``) or
            "table" (one two-cell table row per pair).
        noise: add a nav bar, a script, a style sheet, a header, a footer and an aside.
        charset: the ``<meta charset>`` to declare (None: none).

    Returns:
        The page's source.
    """
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head>']
    if charset:
        out.append(f'<meta charset="{charset}">')
    out.append(f"<title>{esc(title)}</title>")
    if noise:
        out.append("<style>.row{display:flex} body{font-family:sans-serif}</style>")
        out.append("<script>var tracking = 'NOISE script text';</script>")
    out.append("</head><body>")
    if noise:
        out.append('<header><div class="logo">NOISE site header</div></header>')
        out.append(
            '<nav><ul><li><a href="/">NOISE Home</a></li><li><a href="/news">NOISE News</a></li></ul></nav>'
        )
    out.append(f"<main><h1>{esc(title)}</h1>")
    headings = dict(headings or {})
    in_table = False
    for i, (en, zh) in enumerate(pairs):
        if i in headings:
            if in_table:
                out.append("</table>")
                in_table = False
            out.append(f"<h2>{esc(headings[i])}</h2>")
        zh_lang = lang.chinese_script(zh) if zh else lang.HANT
        if layout == "table":
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append(f"<tr><td>{esc(en or '')}</td><td>{esc(zh or '')}</td></tr>")
        else:
            cells = ([f'<p lang="en">{esc(en)}</p>'] if en else []) + (
                [f'<p lang="{zh_lang}">{esc(zh)}</p>'] if zh else []
            )
            out.append(f'<div class="row">{"".join(cells)}</div>')
    if in_table:
        out.append("</table>")
    out.append("</main>")
    if noise:
        out.append("<aside>NOISE related links</aside>")
        out.append("<footer>NOISE © footer</footer>")
        out.append("<noscript>NOISE enable scripts</noscript>")
    out.append("</body></html>")
    return "\n".join(out)


_ODT_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
)


def bilingual_odt(
    pairs: Sequence[Pair], path: str | Path, *, headings: Mapping[int, str] | None = None
) -> Path:
    """Write an ODT with the pairs as two-column table rows, under optional headings.

    Args:
        pairs: (English, Chinese) paragraph texts; either may be None (an empty cell).
        path: where to write the ODT.
        headings: pair index → a level-1 heading written before that pair.

    Returns:
        ``path`` as a Path.
    """
    esc = html.escape
    body: list[str] = []
    headings = dict(headings or {})
    in_table = False
    for i, (en, zh) in enumerate(pairs):
        if i in headings:
            if in_table:
                body.append("</table:table>")
                in_table = False
            body.append(f'<text:h text:outline-level="1">{esc(headings[i])}</text:h>')
        if not in_table:
            body.append('<table:table><table:table-column table:number-columns-repeated="2"/>')
            in_table = True
        cells = "".join(
            f"<table:table-cell><text:p>{esc(t or '')}</text:p></table:table-cell>" for t in (en, zh)
        )
        body.append(f"<table:table-row>{cells}</table:table-row>")
    if in_table:
        body.append("</table:table>")
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODT_NS} office:version="1.2">'
        f"<office:body><office:text>{''.join(body)}</office:text></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<manifest:file-entry manifest:full-path="/"'
        ' manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        z.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def bilingual_epub(
    chapters: Sequence[tuple[str, Sequence[Pair]]], path: str | Path, *, layout: str = "rows"
) -> Path:
    """Write an EPUB whose spine has one XHTML chapter per (title, pairs), via :func:`bilingual_html`.

    The chapters are listed in the manifest in reverse order, so a reader that follows the
    manifest instead of the spine reads them backwards.

    Args:
        chapters: (chapter title, pairs) in reading order.
        path: where to write the EPUB.
        layout: as for :func:`bilingual_html`.

    Returns:
        ``path`` as a Path.
    """
    container = (
        '<?xml version="1.0"?>'
        '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    items = "".join(
        f'<item id="c{i}" href="text/chapter{i}.xhtml" media-type="application/xhtml+xml"/>'
        for i in reversed(range(len(chapters)))
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Book</dc:title></metadata>'
        f"<manifest>{items}</manifest><spine>{spine}</spine></package>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml", container, zipfile.ZIP_DEFLATED)
        z.writestr("OEBPS/content.opf", opf, zipfile.ZIP_DEFLATED)
        for i, (title, pairs) in enumerate(chapters):
            page = bilingual_html(pairs, title=title, layout=layout, noise=False)
            page = page.replace("<!DOCTYPE html>", '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>')
            page = page.replace('<html lang="en">', '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">')
            page = page.replace('<meta charset="utf-8">', '<meta charset="utf-8"/>')
            z.writestr(f"OEBPS/text/chapter{i}.xhtml", page, zipfile.ZIP_DEFLATED)
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def zip_bomb(path: str | Path, kind: str = "docx", megabytes: int = 200) -> Path:
    """Write a small zip whose document part inflates to ``megabytes`` MiB of spaces.

    Args:
        path: where to write it.
        kind: "docx" (word/document.xml), "odt" (content.xml) or "epub".
        megabytes: the inflated size of the bomb part.

    Returns:
        ``path`` as a Path.
    """
    part = {"docx": "word/document.xml", "odt": "content.xml", "epub": "OEBPS/bomb.xhtml"}[kind]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open(part, "w", force_zip64=True) as f:
            chunk = b" " * (1 << 20)
            for _ in range(megabytes):
                f.write(chunk)
        if kind == "docx":
            z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def default_document_pairs() -> list[Pair]:
    """The project's default document as (English, Chinese) pairs, in order.

    Its paragraphs (one per line) alternate in runs of English and Traditional Chinese; each
    English run is matched to the Chinese run after it paragraph by paragraph, and an unmatched
    paragraph gets None on the other side.
    """
    from ..document import DEFAULT_DOCUMENT

    lines = [x.strip() for x in DEFAULT_DOCUMENT.read_text(encoding="utf-8").splitlines() if x.strip()]
    runs: list[tuple[bool, list[str]]] = []
    for line in lines:
        chinese = _is_chinese(line)
        if runs and runs[-1][0] == chinese:
            runs[-1][1].append(line)
        else:
            runs.append((chinese, [line]))
    pairs: list[Pair] = []
    i = 0
    while i < len(runs):
        chinese, texts = runs[i]
        if not chinese and i + 1 < len(runs):
            zh = runs[i + 1][1]
            for k in range(max(len(texts), len(zh))):
                pairs.append((texts[k] if k < len(texts) else None, zh[k] if k < len(zh) else None))
            i += 2
        else:
            pairs.extend((None, t) if chinese else (t, None) for t in texts)
            i += 1
    return pairs
