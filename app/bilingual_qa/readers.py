"""Readers: PDF, Word (.docx), web pages, OpenDocument text and EPUB as blocks of text.

Each reader turns a file into :class:`Block` s, one paragraph each, in reading order, with where
it came from ("page 3", "§ Background") and, when the layout sets two blocks side by side (the
columns of a parallel-text page, the cells of a two-column table row, two elements in different
languages under one parent), the index of the other one. :mod:`bilingual_qa.document` makes
paragraphs of them as it does of the lines of a text file.

The libraries (pdfminer.six for PDF, lxml for the rest) are imported only when a file is read.
Every failure is a one-line :class:`~bilingual_qa.errors.DocumentError`; the work done on a file
is bounded (pages, unpacked bytes, zip entries, inflated PDF streams, seconds).
"""

from __future__ import annotations

import codecs
import io
import itertools
import logging
import posixpath
import re
import time
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote

from . import language as lang
from .errors import DocumentError

FORMATS: dict[str, str] = {
    ".pdf": "PDF",
    ".docx": "Word",
    ".html": "web page",
    ".htm": "web page",
    ".xhtml": "web page",
    ".odt": "OpenDocument text",
    ".epub": "EPUB",
}
MAX_PAGES = 2000
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000
MAX_STREAM_BYTES = 64 * 1024 * 1024
MAX_SECONDS = 180.0
MAX_LOCATION_CHARS = 80


@dataclass(frozen=True)
class Block:
    """A paragraph of a document, where it came from, and the block the layout set beside it.

    Attributes:
        text: the paragraph, on one line.
        location: "page 3" for PDF; "§ " and the nearest heading before it for the other
            formats (None before the first heading); at most 80 characters.
        pair: the index (in the same list) of the block side by side with this one, or None;
            always symmetric.
    """

    text: str
    location: str | None = None
    pair: int | None = None


def read_blocks(data: bytes, name: str) -> list[Block]:
    """The paragraphs of a PDF, DOCX, HTML, ODT or EPUB file, by the suffix of ``name``.

    Args:
        data: the file's bytes.
        name: its file name; the suffix (case-insensitive) picks the reader (:data:`FORMATS`).

    Returns:
        The non-empty blocks in reading order; ``pair`` indices refer to this list.

    Raises:
        DocumentError: an unsupported suffix, a damaged or encrypted file, a PDF without a text
            layer, a file with no text, or one over a bound (pages, unpacked size, zip entries,
            time); the message is one line.
    """
    suffix = PurePosixPath(name).suffix.lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise DocumentError(f"{name}: cannot read {suffix or 'a file without a suffix'} files (only {known})")
    reader = _READERS[suffix]
    try:
        blocks = reader(data, name)
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentError(f"{name} is nested too deeply to read as a {kind} file") from None
    except MemoryError:
        raise DocumentError(f"{name} needs too much memory to read as a {kind} file") from None
    except Exception as exc:  # a damaged file makes the parsers fail in a hundred ways
        raise DocumentError(f"{name} is damaged or not a {kind} file ({_reason(exc)})") from None
    blocks = _finish(blocks)
    if not blocks:
        raise DocumentError(f"{name} contains no text")
    return blocks


def _reason(exc: BaseException) -> str:
    """A short one-line reason from a parser's exception."""
    text = " ".join(str(exc).split())[:100] or type(exc).__name__
    return text


def _finish(blocks: list[Block]) -> list[Block]:
    """Blocks with tidy one-line text, the empty ones dropped and pair indices renumbered."""
    kept: list[Block] = []
    new_index: dict[int, int] = {}
    for i, block in enumerate(blocks):
        text = _tidy(block.text)
        if text:
            new_index[i] = len(kept)
            kept.append(Block(text, _short(block.location), block.pair))
    out: list[Block] = []
    for block in kept:
        pair = new_index.get(block.pair) if block.pair is not None else None
        out.append(Block(block.text, block.location, pair))
    # A pair survives only whole and both ways (a dropped or one-sided partner unpairs it).
    return [
        Block(b.text, b.location, b.pair if b.pair is not None and out[b.pair].pair == i else None)
        for i, b in enumerate(out)
    ]


_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))
# PDF fonts (Noto CJK as a browser or an office suite embeds it, for one) often map ideographs
# to the look-alike Kangxi and CJK radicals (⽉ U+2F49 for 月 U+6708, ⻄ U+2EC4 for 西) or to
# compatibility ideographs, and Latin text to ligatures (ﬀ, ﬁ): text that looks right and
# matches nothing. Compatibility decompositions give most of them back; the CJK radicals
# supplement has none, so its pairs below are the ones Noto Sans/Serif CJK draw with one glyph
# (read from the fonts' cmaps: the glyph a PDF extractor turns into the radical).
_RADICALS = (
    "⺂乛⺃乚⺅亻⺉刂⺋㔾⺎兀⺏尣⺐尢⺒巳⺓幺⺔彑⺕彐⺖忄⺘扌⺙攵⺛旡⺞歺⺠民⺡氵⺣灬⺤爫⺦丬⺨犭⺫罒⺭礻"
    "⺯糹⺰纟⺱罓⺲罒⺳㓁⺹耂⺺肀⺾艹⺿艹⻁虎⻂衤⻃覀⻄西⻅见⻆角⻈讠⻉贝⻋车⻌辶⻍辶⻎辶⻐钅⻑長⻒镸"
    "⻓长⻔门⻖阝⻘青⻙韦⻚页⻛风⻜飞⻝食⻟飠⻠饣⻢马⻣骨⻤鬼⻥鱼⻦鸟⻧卤⻨麦⻩黄⻪黾⻫斉⻬齐⻭歯⻮齿"
    "⻯竜⻰龙⻱龜⻲亀"
)
_LOOKALIKES = {
    cp: unicodedata.normalize("NFKC", chr(cp))
    for cp in (*range(0x2E80, 0x2FE0), *range(0xF900, 0xFB07))
    if unicodedata.category(chr(cp)) != "Cn" and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
} | {ord(a): b for a, b in zip(_RADICALS[::2], _RADICALS[1::2], strict=True)}
_WIDE_CHAR = re.compile(f"[{lang.WIDE}]")


def _tidy(text: str) -> str:
    """One line: lines joined (no space between Chinese), spaces collapsed, control characters out."""
    text = text.translate(_INVISIBLE).translate(_LOOKALIKES)
    lines = [" ".join("".join(ch if ch >= " " else " " for ch in line).split()) for line in text.splitlines()]
    return _join_lines([line for line in lines if line])


def _join_lines(lines: list[str]) -> str:
    """Join the lines of one paragraph: no space where Chinese meets Chinese, a hyphenated break mended.

    A line ending in a hyphen after a letter joins the next line without a space, and the
    hyphen goes when the next line starts in lower case ("corri-" + "dor" → "corridor") unless
    its first word is itself hyphenated ("people-" + "to-people" is a compound). In a
    paragraph that is mostly Chinese, lines join without a space unless Latin letters meet on
    both sides (digits do join: a number wrapped inside).
    """
    if not lines:
        return ""
    chinese = lang.cjk_ratio("".join(lines)) >= lang.CHINESE_SHARE
    out = lines[0]
    for line in lines[1:]:
        a, b = out[-1], line[0]
        if a == "-" and len(out) >= 2 and out[-2].isalpha() and not _WIDE_CHAR.match(out[-2]):
            compound = "-" in line.split(" ", 1)[0]
            out = (out[:-1] if b.islower() and not compound else out) + line
        elif (_WIDE_CHAR.match(a) and _WIDE_CHAR.match(b)) or (
            chinese and (_WIDE_CHAR.match(a) or _WIDE_CHAR.match(b) or (a.isdigit() and b.isdigit()))
        ):
            # Chinese is wrapped anywhere, inside a number too ("1" + "0場"); it has no spaces.
            out += line
        else:
            out += " " + line
    return out


def _short(location: str | None) -> str | None:
    """A location of at most :data:`MAX_LOCATION_CHARS` characters."""
    if location is None:
        return None
    location = " ".join(location.split())
    if len(location) > MAX_LOCATION_CHARS:
        location = location[: MAX_LOCATION_CHARS - 1].rstrip() + "…"
    return location


def _section(heading: str) -> str | None:
    """The location a heading gives the blocks after it."""
    heading = _tidy(heading)
    return _short(f"§ {heading}") if heading else None


def _is_chinese(text: str) -> bool:
    """Mostly Chinese: the document's own rule (:data:`~bilingual_qa.language.CHINESE_SHARE`)."""
    return lang.cjk_ratio(text) >= lang.CHINESE_SHARE


def _is_latin(text: str) -> bool:
    """Mostly letters other than Chinese."""
    return any(ch.isalpha() for ch in text) and lang.cjk_ratio(text) < 0.1


def _translation_pair(a: str, b: str) -> bool:
    """Whether two texts side by side look like a paragraph and its translation (one Chinese, one not)."""
    return (_is_chinese(a) and _is_latin(b)) or (_is_latin(a) and _is_chinese(b))


class _Flow:
    """Blocks being collected in reading order, with the current heading location."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.location: str | None = None

    def add(self, text: str, heading: bool = False) -> None:
        """Add a paragraph; a heading also becomes the location of what follows (and its own)."""
        text = _tidy(text)
        if not text:
            return
        if heading:
            self.location = _section(text)
        self.blocks.append(Block(text, self.location))

    def side_by_side(self, start: int, middle: int) -> None:
        """Pair the blocks added since ``start``: those before ``middle`` (left) with those after.

        With as many blocks on each side and at least one (Chinese, non-Chinese) couple, they
        are interleaved (left[i], right[i]) and each such couple is paired; otherwise they stay
        left then right, unpaired (as do sides already holding pairs, e.g. a nested table's).
        """
        left, right = self.blocks[start:middle], self.blocks[middle:]
        if not left or len(left) != len(right) or any(b.pair is not None for b in left + right):
            return
        if not any(_translation_pair(a.text, b.text) for a, b in zip(left, right, strict=True)):
            return
        merged: list[Block] = []
        for a, b in zip(left, right, strict=True):
            i = start + len(merged)
            if _translation_pair(a.text, b.text):
                merged += [Block(a.text, a.location, i + 1), Block(b.text, b.location, i)]
            else:
                merged += [a, b]
        self.blocks[start:] = merged


# ------------------------------------------------------------------------------------------ PDF


@dataclass
class _Line:
    """A line of text on a PDF page (top-down coordinates: ``base`` grows down the page)."""

    x0: float
    x1: float
    base: float
    size: float
    text: str


@dataclass
class _Row:
    """One row of a page: a line across it, or the lines of its two columns (None: blank)."""

    whole: _Line | None = None
    left: _Line | None = None
    right: _Line | None = None

    @property
    def text(self) -> str:
        """The row's text, columns joined."""
        parts = [x.text for x in (self.whole, self.left, self.right) if x is not None]
        return " ".join(parts)


@dataclass
class _Para:
    """A paragraph being assembled from PDF lines."""

    lines: list[str]
    page: int
    top: float = 0.0  # the baseline of its first line
    size: float = 0.0
    full: bool = False  # its last line runs to the column's right edge (it may go on overleaf)

    @property
    def text(self) -> str:
        """The paragraph's lines joined."""
        return _join_lines(self.lines)


@dataclass
class _Section:
    """A run of rows of one page: one column (``left`` only) or two."""

    two: bool
    left: list[_Para] = field(default_factory=list)
    right: list[_Para] = field(default_factory=list)


# A char as read from the page: (x0, x1, top, bottom, size, text).
_Char = tuple[float, float, float, float, float, str]


class _BoundedZlib:
    """zlib as pdfminer sees it, but one stream may not inflate past :data:`MAX_STREAM_BYTES`."""

    error = zlib.error

    class TooLarge(Exception):
        """A stream inflates past the bound: a PDF zip bomb."""

    def decompress(self, data: bytes, *args: object) -> bytes:
        """Inflate ``data`` like :func:`zlib.decompress`, within the bound."""
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, MAX_STREAM_BYTES + 1)
        if len(out) > MAX_STREAM_BYTES or inflater.unconsumed_tail:
            raise self.TooLarge
        return out

    def decompressobj(self, *args: object) -> _BoundedInflater:
        """A streaming inflater within the bound."""
        return _BoundedInflater()


class _BoundedInflater:
    """A zlib decompress object that stops at :data:`MAX_STREAM_BYTES` in all."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj()
        self._total = 0

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        """Inflate more of the stream."""
        out = self._inflater.decompress(data, MAX_STREAM_BYTES + 1 - self._total)
        self._total += len(out)
        if self._total > MAX_STREAM_BYTES or self._inflater.unconsumed_tail:
            raise _BoundedZlib.TooLarge
        return out

    def flush(self) -> bytes:
        """The rest of the stream."""
        return self._inflater.flush()


_PAGE_NUMBER = re.compile(
    r"^[\s\-–—~•·|\[(]*(?:(?:page|p\.|頁|页)\s*)?(?:\d{1,4}|[ivxlc]{1,7})(?:\s*(?:/|of|／)\s*\d{1,4})?"
    r"[\s\-–—~•·|\])]*$|^第\s*\d{1,4}\s*[頁页]\s*(?:[，,/／]?\s*共\s*\d{1,4}\s*[頁页])?$",
    re.IGNORECASE,
)
_TERMINAL = re.compile(r"[.!?。！？:：;；…][\"'”’」』)）\]]*$")


def _read_pdf(data: bytes, name: str) -> list[Block]:
    """Blocks of a PDF: columns detected per page, side-by-side paragraphs paired."""
    from pdfminer import pdftypes
    from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser, PDFSyntaxError
    from pdfminer.pdftypes import resolve1

    if b"%PDF" not in data[:1024]:
        raise DocumentError(f"{name} is not a PDF file (it has no %PDF header)")
    # pdfminer logs every oddity of a damaged file as a warning; what matters reaches the user
    # as a DocumentError.
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    pdftypes.zlib = _BoundedZlib()  # type: ignore[assignment]  # pdfminer inflates streams whole
    try:
        document = PDFDocument(PDFParser(io.BytesIO(data)), password="")
    except (PDFPasswordIncorrect, PDFEncryptionError):
        raise DocumentError(f"{name} is an encrypted PDF; remove its password and try again") from None
    except PDFSyntaxError as exc:
        raise DocumentError(f"{name} is damaged or not a PDF file ({_reason(exc)})") from None
    try:
        claimed = int(resolve1(resolve1(document.catalog["Pages"])["Count"]))
    except Exception:
        claimed = 0
    if claimed > MAX_PAGES:
        raise DocumentError(f"{name} has {claimed:,} pages; at most {MAX_PAGES:,} are read")
    deadline = time.monotonic() + MAX_SECONDS
    reader = _PageReader()
    gutter: tuple[float, float] | None = None
    pages: list[list[_Row]] = []
    undecoded = decoded = 0
    try:
        for number, page in enumerate(PDFPage.create_pages(document), start=1):
            if number > MAX_PAGES:
                raise DocumentError(f"{name} has over {MAX_PAGES:,} pages; at most {MAX_PAGES:,} are read")
            if time.monotonic() > deadline:
                raise DocumentError(
                    f"{name} takes too long to read (over {MAX_SECONDS:.0f} s, page {number})"
                )
            chars, missing = _page_chars(reader, page)
            undecoded += missing
            decoded += len(chars)
            rows, gutter = _page_rows(chars, gutter)
            pages.append(rows)
    except _BoundedZlib.TooLarge:
        raise DocumentError(f"{name} has a stream that inflates past {MAX_STREAM_BYTES >> 20} MiB") from None
    except (PDFPasswordIncorrect, PDFEncryptionError):
        raise DocumentError(f"{name} is an encrypted PDF; remove its password and try again") from None
    if not pages:
        raise DocumentError(f"{name} is damaged or not a PDF file (no pages found)")
    if decoded == 0 and undecoded == 0:
        raise DocumentError(
            f"{name} has no text layer (a scanned PDF?); OCR is not supported — "
            "run OCR on it first (e.g. ocrmypdf) or give a text export of it"
        )
    if undecoded > decoded:
        raise DocumentError(
            f"{name}'s text cannot be decoded (its fonts have no Unicode map); give a text export"
        )
    _drop_running_lines(pages)
    return _pdf_blocks(pages, _base_pitch(pages))


class _PageReader:
    """pdfminer's interpreter with a device that keeps the characters and skips drawings and images."""

    def __init__(self) -> None:
        from pdfminer.converter import PDFPageAggregator
        from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager

        class TextOnly(PDFPageAggregator):
            """An aggregator without vector graphics or images (text is all that is read)."""

            def paint_path(self, *args: object, **kwargs: object) -> None:
                """Ignore vector graphics."""

            def render_image(self, *args: object, **kwargs: object) -> None:
                """Ignore images."""

        class Fonts(PDFResourceManager):
            """Fonts as pdfminer makes them, with an embedded encoding CMap read (see below)."""

            def get_font(self, objid: object, spec: dict) -> object:  # type: ignore[override]
                """The font, its codes decoded through its own encoding CMap where it has one."""
                font = super().get_font(objid, spec)
                _embedded_encoding(font, spec)
                return font

        manager = Fonts(caching=True)  # fonts are parsed once for all pages
        self.device = TextOnly(manager, laparams=None)
        self.interpreter = PDFPageInterpreter(manager, self.device)


_CID_CHAR = re.compile(rb"<([0-9A-Fa-f]+)>\s*(\d+)")
_CID_RANGE = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*(\d+)")
_CID_BLOCK = re.compile(rb"begincid(char|range)(.*?)endcid\1", re.S)


def _embedded_encoding(font: object, spec: dict) -> None:
    """Read a CID font's encoding CMap embedded in the PDF, which pdfminer looks up by name only.

    fpdf2, for one, writes its own ``begincidchar`` CMap (code → CID) named like a ToUnicode
    map: pdfminer finds no CMap of that name and decodes nothing, so the page reads as if it had
    no text. The codes are decoded here through that CMap, and the font's ToUnicode map (keyed
    by code, as the PDF standard has it) is re-keyed by CID, which is what pdfminer looks up.
    """
    from pdfminer.cmapdb import CMap, FileUnicodeMap
    from pdfminer.pdffont import PDFCIDFont
    from pdfminer.pdftypes import PDFStream, resolve1

    if not isinstance(font, PDFCIDFont) or not isinstance(font.cmap, CMap) or font.cmap.code2cid:
        return
    encoding = resolve1(spec.get("Encoding"))
    if not isinstance(encoding, PDFStream):
        return
    try:
        data = encoding.get_data()
    except Exception:  # a damaged stream: the font stays as pdfminer made it
        return
    codes: dict[bytes, int] = {}
    for kind, body in _CID_BLOCK.findall(data[:MAX_STREAM_BYTES]):
        if kind == b"char":
            codes.update((bytes.fromhex(c.decode()), int(cid)) for c, cid in _CID_CHAR.findall(body))
            continue
        for lo, hi, cid in _CID_RANGE.findall(body):
            start, end, width = int(lo, 16), int(hi, 16), len(lo) // 2
            for i in range(min(end - start + 1, 65_536)):
                codes[(start + i).to_bytes(width, "big")] = int(cid) + i
    if not codes:
        return
    cmap = CMap()
    for code, cid in codes.items():
        node = cmap.code2cid
        for byte in code[:-1]:
            node = node.setdefault(byte, {})  # type: ignore[assignment]
        node[code[-1]] = cid
    font.cmap = cmap
    old = getattr(font, "unicode_map", None)
    if isinstance(old, FileUnicodeMap):
        by_cid = FileUnicodeMap()
        for code, cid in codes.items():
            text = old.cid2unichr.get(int.from_bytes(code, "big"))
            if text is not None:
                by_cid.cid2unichr[cid] = text
        font.unicode_map = by_cid


def _page_chars(reader: _PageReader, page: object) -> tuple[list[_Char], int]:
    """The upright characters of a page (top-down), and how many had no Unicode value."""
    from pdfminer.layout import LTChar, LTContainer

    reader.interpreter.process_page(page)  # type: ignore[arg-type]
    layout = reader.device.get_result()
    height = layout.y1
    chars: list[_Char] = []
    missing = 0
    stack = [layout]
    while stack:
        for item in stack.pop():
            if isinstance(item, LTChar):
                text = item.get_text()
                if text.startswith("(cid:"):
                    missing += 1
                elif item.upright and text and item.size > 0:
                    chars.append((item.x0, item.x1, height - item.y1, height - item.y0, item.size, text))
            elif isinstance(item, LTContainer):
                stack.append(item)
    return chars, missing


def _clusters(chars: list[_Char]) -> list[list[_Char]]:
    """Characters grouped into lines by their vertical centres, top to bottom, each left to right."""
    ordered = sorted(chars, key=lambda c: (c[2] + c[3]) / 2)
    groups: list[list[_Char]] = []
    centre = size = 0.0
    for c in ordered:
        mid = (c[2] + c[3]) / 2
        if groups and abs(mid - centre) <= 0.45 * max(size, c[4]):
            groups[-1].append(c)
            size = max(size, c[4])
        else:
            groups.append([c])
            centre, size = mid, c[4]
    return [sorted(g, key=lambda c: c[0]) for g in groups]


def _line(chars: list[_Char]) -> _Line:
    """A line from its characters (left to right): words spaced, Chinese left unspaced."""
    ink = [c for c in chars if not c[5].isspace()]
    sizes = sorted(c[4] for c in ink) or [chars[0][4]]
    size = sizes[len(sizes) // 2]
    bottoms = Counter(round(c[3], 1) for c in ink)
    base = bottoms.most_common(1)[0][0] if bottoms else chars[0][3]
    text: list[str] = []
    last: _Char | None = None
    for c in chars:
        if c[5].isspace():
            if text and text[-1] != " ":
                text.append(" ")
            last = None
            continue
        if (
            last is not None
            and c[0] - last[1] > 0.2 * size
            and text
            and text[-1] != " "
            and not (_WIDE_CHAR.match(last[5][-1]) and _WIDE_CHAR.match(c[5][0]))
        ):
            text.append(" ")
        text.append(c[5])
        last = c
    x0 = min((c[0] for c in ink), default=chars[0][0])
    x1 = max((c[1] for c in ink), default=chars[-1][1])
    return _Line(x0, x1, base, size, "".join(text).strip())


def _ink(chars: list[_Char]) -> list[tuple[float, float]]:
    """The horizontal extents of a line's words (characters closer than 0.6 of their size merged)."""
    spans: list[list[float]] = []
    for c in chars:
        if c[5].isspace():
            continue
        if spans and c[0] - spans[-1][1] <= 0.6 * c[4]:
            spans[-1][1] = max(spans[-1][1], c[1])
        else:
            spans.append([c[0], c[1]])
    return [(a, b) for a, b in spans]


def _gutter(rows: list[list[_Char]]) -> tuple[float, float] | None:
    """The empty vertical band between two columns of text on a page, if it has one.

    A band at least a character wide, in the middle 60% of the text's width, that at most a
    quarter of the lines cross (titles, a centred page number), with text on both sides on at
    least three lines and a fifth of them.
    """
    # Rows of a few characters (a centred page number, "* * *") do not hide a gutter.
    inks = [i for i, r in ((_ink(r), r) for r in rows) if i and sum(b - a for a, b in i) >= 3 * r[0][4]]
    # Three lines can show a gutter (a short parallel list); the check below then wants text
    # on both sides of it on each of them.
    if len(inks) < 3:
        return None
    left = min(i[0][0] for i in inks)
    right = max(i[-1][1] for i in inks)
    if right - left < 100:
        return None
    unit = max(1.0, (right - left) / 2000)  # bins of a point, at most 2,000 of them
    bins = int((right - left) / unit) + 1
    depth = [0] * (bins + 1)
    for ink in inks:
        for a, b in ink:
            depth[int((a - left) / unit)] += 1
            depth[min(bins, int((b - left) / unit) + 1)] -= 1
    levels = list(itertools.accumulate(depth))
    allowed = len(inks) // 4
    sizes = sorted(c[4] for r in rows for c in r)
    min_bins = max(6.0, 0.8 * sizes[len(sizes) // 2]) / unit
    best: tuple[int, int, tuple[float, float]] | None = None  # (lines crossing, -width, band)
    x = 0
    while x <= bins:
        if levels[x] > allowed:
            x += 1
            continue
        end = x
        while end <= bins and levels[end] <= allowed:
            end += 1
        if end - x >= min_bins and 0.2 * bins <= (x + end) / 2 <= 0.8 * bins:
            # Within the band, the gutter is where the fewest lines cross: a ragged right edge
            # of the left column reaches into the band, the gutter proper is past it.
            low = min(levels[x:end])
            run_start, widest = x, (x, x)
            for k in range(x, end + 1):
                if k == end or levels[k] != low:
                    if k - run_start > widest[1] - widest[0]:
                        widest = (run_start, k)
                    run_start = k + 1
            width = widest[1] - widest[0]
            band = (left + widest[0] * unit, left + widest[1] * unit)
            if width >= min_bins and (best is None or (low, -width) < best[:2]):
                best = (low, -width, band)
        x = end + 1
    if best is None:
        return None
    a, b = best[2]
    lefts = sum(any(s[1] <= a for s in ink) for ink in inks)
    rights = sum(any(s[0] >= b for s in ink) for ink in inks)
    if min(lefts, rights) < max(3, len(inks) // 5):
        return None
    return a, b


def _page_rows(
    chars: list[_Char], last: tuple[float, float] | None
) -> tuple[list[_Row], tuple[float, float] | None]:
    """A page's rows top to bottom, split into two columns where it has a gutter, and the gutter.

    A page too sparse to show a gutter of its own (one column holds only the end of a long
    paragraph) keeps the last page's gutter when its text fits that one.
    """
    rows = _clusters(chars)
    gutter = _gutter(rows) or _edge(rows)
    if gutter is None and last is not None and _fits(rows, last):
        gutter = last
    out: list[_Row] = []
    for row in rows:
        if gutter is None or _crosses(row, gutter):
            out.append(_Row(whole=_line(row)))
            continue
        middle = (gutter[0] + gutter[1]) / 2
        left = [c for c in row if (c[0] + c[1]) / 2 < middle]
        right = [c for c in row if (c[0] + c[1]) / 2 >= middle]
        lines = [_line(side) if any(not c[5].isspace() for c in side) else None for side in (left, right)]
        out.append(_Row(left=lines[0], right=lines[1]))
    return [r for r in out if r.text.strip()], gutter if gutter is not None else last


def _fits(rows: list[list[_Char]], gutter: tuple[float, float]) -> bool:
    """Whether a page's text lies either side of ``gutter`` (a quarter of its lines may cross it)."""
    inked = [(r, i) for r, i in ((r, _ink(r)) for r in rows) if i]
    inks = [i for _, i in inked]
    crossing = sum(_crosses(r, gutter) for r, _ in inked)
    lefts = any(b <= gutter[0] for i in inks for _, b in i)
    rights = any(a >= gutter[1] for i in inks for a, _ in i)
    return bool(inks) and lefts and rights and crossing <= len(inks) // 4


def _crosses(row: list[_Char], gutter: tuple[float, float]) -> bool:
    """Whether a character of the line lies in the gutter (the line spans both columns)."""
    a, b = gutter
    return any(c[0] < b and c[1] > a for c in row if not c[5].isspace())


def _edge(rows: list[list[_Char]]) -> tuple[float, float] | None:
    """Where the second column of a parallel text starts when no empty band shows it.

    A tight two-column table (fpdf2's, with no padding) leaves a gap narrower than a character
    between its columns, which :func:`_gutter` cannot tell from a space between words. Its right
    column still starts at one x on many lines, after a gap, and in a parallel text the two
    sides are in different scripts: three lines or more start a word at that x, in the middle
    60% of the text's width, at least twice as many as run across it (most lines of a single
    column would), and 60% of them read Chinese on one side and Latin on the other. The band is
    then from the left text's furthest end to that x.
    """
    lines = [[c for c in r if not c[5].isspace()] for r in rows]
    lines = [line for line in lines if len(line) >= 2]
    if len(lines) < 3:
        return None
    left = min(line[0][0] for line in lines)
    right = max(line[-1][1] for line in lines)
    starts: Counter[int] = Counter()
    for line in lines:
        starts.update({round(c[0]) for p, c in itertools.pairwise(line) if c[0] - p[1] >= 0.5})
    middle = [x for x in starts if left + 0.2 * (right - left) <= x <= left + 0.8 * (right - left)]
    if not middle:
        return None
    x = max(middle, key=lambda x: (starts[x - 1] + starts[x] + starts[x + 1], -abs(2 * x - left - right)))
    sides = []
    for line in lines:
        for k, (p, c) in enumerate(itertools.pairwise(line), start=1):
            if abs(c[0] - x) <= 1.5 and c[0] - p[1] >= 0.5:
                sides.append((line[:k], line[k:]))
                break
    crossing = sum(any(c[0] < x - 0.5 and c[1] > x + 0.5 for c in line) for line in lines)
    if len(sides) < 3 or len(sides) < 2 * crossing:
        return None
    edge = min(b[0][0] for _, b in sides)
    end = max(a[-1][1] for a, _ in sides)
    if end >= edge - 0.2:
        return None
    text = ["".join(c[5] for c in side) for pair in sides for side in pair]
    differ = sum(_is_chinese(a) != _is_chinese(b) for a, b in zip(text[::2], text[1::2], strict=True))
    if differ < 0.6 * len(sides):
        return None
    return end, edge


def _running_key(text: str) -> str:
    """A header or footer line with its numbers blanked, to spot it repeating from page to page."""
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _drop_running_lines(pages: list[list[_Row]]) -> None:
    """Drop running headers and footers (the same line atop or under most pages) and page numbers."""

    def edges(rows: list[_Row]) -> list[int]:
        return sorted({i for i in (0, 1, len(rows) - 2, len(rows) - 1) if 0 <= i < len(rows)})

    seen: Counter[str] = Counter()
    for rows in pages:
        seen.update({_running_key(rows[i].text) for i in edges(rows)})
    repeated = {key for key, n in seen.items() if len(pages) >= 2 and n >= max(2, 0.6 * len(pages))}
    for rows in pages:
        drop = {i for i in edges(rows) if _running_key(rows[i].text) in repeated}
        for i in (0, len(rows) - 1):
            if 0 <= i < len(rows) and _PAGE_NUMBER.match(rows[i].text.strip()):
                drop.add(i)
        rows[:] = [r for i, r in enumerate(rows) if i not in drop]


def _column_lines(pages: list[list[_Row]]) -> Iterator[list[_Line]]:
    """Every run of lines of one column on one page (for the document's line spacing)."""
    for rows in pages:
        for attr in ("whole", "left", "right"):
            run = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
            if len(run) > 1:
                yield run


def _base_pitch(pages: list[list[_Row]]) -> float:
    """The document's usual line spacing, as a multiple of the font size."""
    ratios: Counter[float] = Counter()
    for run in _column_lines(pages):
        for a, b in itertools.pairwise(run):
            if abs(a.size - b.size) <= 0.1 * max(a.size, b.size):
                ratio = round((b.base - a.base) / max(a.size, 1.0) * 20) / 20
                if 0.9 <= ratio <= 3.0:
                    ratios[ratio] += 1
    if not ratios:
        return 1.2
    pitch, count = ratios.most_common(1)[0]
    if pitch <= 1.7:
        return pitch
    # Wider spacing is usually between paragraphs (lines are closer), unless most pairs of lines
    # are that far apart: double-spaced text (fpdf2's tables, for one).
    return pitch if count >= 5 and count >= 0.6 * sum(ratios.values()) else 1.2


def _paragraphs(lines: list[_Line], page: int, pitch: float) -> list[_Para]:
    """Lines of one column into paragraphs: a new one after a wider gap, a change of size, or a
    short line that ends a sentence or precedes an indented one."""
    paragraphs: list[_Para] = []
    if not lines:
        return paragraphs
    right = max(line.x1 for line in lines)
    left = min(line.x0 for line in lines)
    prev: _Line | None = None
    for line in lines:
        if prev is None or _breaks(prev, line, left, right, pitch):
            paragraphs.append(_Para([line.text], page, line.base, line.size))
        else:
            paragraphs[-1].lines.append(line.text)
        prev = line
        # A wrapped line falls short of the edge by up to a long word; a last line by more.
        paragraphs[-1].full = line.x1 >= right - max(6 * line.size, 0.25 * (right - left))
    return paragraphs


def _short_line(line: _Line, left: float, right: float) -> bool:
    """Whether a line stops well before the right edge of its column (a paragraph's last line)."""
    return line.x1 < right - max(3 * line.size, 0.15 * (right - left))


def _breaks(prev: _Line, line: _Line, left: float, right: float, pitch: float) -> bool:
    """Whether ``line`` starts a paragraph after ``prev`` in a column spanning ``left``..``right``."""
    size = max(prev.size, line.size)
    if abs(prev.size - line.size) > 0.2 * size:
        return True
    if line.base - prev.base > pitch * size * 1.3 + 1.0 or line.base < prev.base:
        return True
    return _short_line(prev, left, right) and (
        line.x0 > prev.x0 + 0.8 * size or bool(_TERMINAL.search(prev.text))
    )


def _sections(rows: list[_Row], page: int, pitch: float) -> list[_Section]:
    """A page's runs of one-column and two-column rows, as paragraphs."""
    sections: list[_Section] = []
    run: list[_Row] = []

    def close() -> None:
        if not run:
            return
        if run[0].whole is not None:
            lines = [r.whole for r in run if r.whole is not None]
            sections.append(_Section(False, _paragraphs(lines, page, pitch)))
        else:
            lefts = [r.left for r in run if r.left is not None]
            rights = [r.right for r in run if r.right is not None]
            sections.append(_Section(True, _paragraphs(lefts, page, pitch), _paragraphs(rights, page, pitch)))
        run.clear()

    for row in rows:
        if run and (row.whole is None) != (run[0].whole is None):
            close()
        run.append(row)
    close()
    return sections


def _continues(prev: _Para, nxt: _Para) -> bool:
    """Whether a paragraph that ends a page goes on at the top of the next one.

    It does when its last line runs to the column's edge without ending a sentence, and the
    next page goes on in the same language (a document with one language per page turns from
    one to the other at a page break).
    """
    a, b = prev.lines[-1], nxt.lines[0]
    return bool(a and b and prev.full and not _TERMINAL.search(a) and _is_chinese(a) == _is_chinese(b))


def _pdf_blocks(pages: list[list[_Row]], pitch: float) -> list[Block]:
    """Blocks of the pages' paragraphs: continued paragraphs joined over page breaks, columns paired."""
    sections: list[_Section] = []
    for number, rows in enumerate(pages, start=1):
        page_sections = _sections(rows, number, pitch)
        if sections and page_sections and sections[-1].two == page_sections[0].two:
            prev, nxt = sections[-1], page_sections[0]
            for side in ("left", "right") if prev.two else ("left",):
                a, b = getattr(prev, side), getattr(nxt, side)
                if a and b and _continues(a[-1], b[0]):
                    a[-1].lines.extend(b.pop(0).lines)
        sections.extend(page_sections)
    flow = _Flow()
    for section in sections:
        if not section.two:
            flow.blocks.extend(Block(p.text, f"page {p.page}") for p in section.left)
            continue
        left_text = "".join(p.text for p in section.left)
        right_text = "".join(p.text for p in section.right)
        # Only a parallel text (one column Chinese, the other not) is read across: two columns
        # of one language are read down the left column, then the right.
        rows = _rows_of(section.left, section.right) if _translation_pair(left_text, right_text) else None
        if rows is None:
            flow.blocks.extend(Block(p.text, f"page {p.page}") for p in section.left + section.right)
            continue
        for a, b in rows:
            i = len(flow.blocks)
            if a is not None and b is not None and _translation_pair(a.text, b.text):
                flow.blocks += [Block(a.text, f"page {a.page}", i + 1), Block(b.text, f"page {b.page}", i)]
            else:
                flow.blocks.extend(Block(p.text, f"page {p.page}") for p in (a, b) if p is not None)
    return flow.blocks


def _rows_of(left: list[_Para], right: list[_Para]) -> list[tuple[_Para | None, _Para | None]] | None:
    """The two columns' paragraphs side by side, or None when they cannot be matched up.

    As many on each side: matched in order. Otherwise matched when every paragraph of the
    column with fewer starts on the same line as one of the other's (a row-by-row parallel
    text with some rows one-sided); the others stand alone, in order down the page.
    """
    if len(left) == len(right):
        return list(zip(left, right, strict=True))
    fewer, more = (left, right) if len(left) < len(right) else (right, left)
    matched: dict[int, int] = {}
    k = 0
    for i, p in enumerate(fewer):
        while k < len(more) and not _same_line(more[k], p) and (more[k].page, more[k].top) < (p.page, p.top):
            k += 1
        if k == len(more) or not _same_line(more[k], p):
            return None
        matched[k] = i
        k += 1
    rows: list[tuple[_Para | None, _Para | None]] = []
    for k, p in enumerate(more):
        other = fewer[matched[k]] if k in matched else None
        rows.append((p, other) if more is left else (other, p))
    return rows


def _same_line(a: _Para, b: _Para) -> bool:
    """Whether two paragraphs start on the same line of the same page."""
    return a.page == b.page and abs(a.top - b.top) <= 0.6 * max(a.size, b.size, 1.0)


# --------------------------------------------------------------------------------- zip formats


class _Zip:
    """A zip archive read within bounds: entries, and bytes unpacked in all."""

    def __init__(self, data: bytes, name: str, kind: str) -> None:
        import zipfile

        self.name, self.kind = name, kind
        if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":  # OLE2: an encrypted or pre-2007 Office file
            raise DocumentError(
                f"{name} is an encrypted or old binary Office file, not a {kind} file; save it as {kind}"
            )
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            entries = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise DocumentError(
                f"{name} is damaged or not a {kind} file (not a zip archive: {_reason(exc)})"
            ) from None
        if len(entries) > MAX_ZIP_ENTRIES:
            raise DocumentError(f"{name} has {len(entries):,} entries (at most {MAX_ZIP_ENTRIES:,}); refused")
        self.names = {e.filename for e in entries}
        self.left = MAX_UNZIPPED_BYTES

    def read(self, member: str) -> bytes | None:
        """A member's bytes (None when absent), counted against :data:`MAX_UNZIPPED_BYTES`."""
        if member not in self.names:
            return None
        info = self.zip.getinfo(member)
        if info.file_size > self.left:
            self._bomb()
        with self.zip.open(info) as f:
            data = f.read(self.left + 1)
        if len(data) > self.left:
            self._bomb()
        self.left -= len(data)
        return data

    def _bomb(self) -> None:
        """Refuse an archive that unpacks to more than the bound."""
        raise DocumentError(
            f"{self.name} unpacks to over {MAX_UNZIPPED_BYTES >> 20} MiB; refused (a zip bomb?)"
        )

    def xml(self, member: str) -> object | None:
        """A member parsed as XML (no entities, no network), or None when absent."""
        data = self.read(member)
        return None if data is None else _parse_xml(data)


def _parse_xml(data: bytes) -> object:
    """XML parsed safely: entities are not expanded, nothing is fetched."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False)
    return etree.fromstring(data, parser)


def _local(element: object) -> str:
    """An element's tag without its namespace ("" for comments and processing instructions)."""
    tag = getattr(element, "tag", None)
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _attr(element: object, local: str) -> str | None:
    """The value of the attribute named ``local`` in any namespace."""
    for key, value in element.attrib.items():  # type: ignore[attr-defined]
        if key.rsplit("}", 1)[-1].rsplit(":", 1)[-1] == local:  # "{ns}lang", "xml:lang", "lang"
            return value
    return None


def _cell_pairs(flow: _Flow, cells: list[Callable[[], None]]) -> None:
    """Read a table row's cells into ``flow``; two non-empty cells in two languages become pairs."""
    start = len(flow.blocks)
    bounds = []
    for read in cells:
        read()
        bounds.append(len(flow.blocks))
    filled = [i for i, end in enumerate(bounds) if end > (bounds[i - 1] if i else start)]
    if len(filled) == 2:
        a = filled[0]
        flow.side_by_side(bounds[a - 1] if a else start, bounds[a])


# ----------------------------------------------------------------------------------------- DOCX

_HEADING_STYLE = re.compile(r"^(?:heading\s*\d|title)$", re.IGNORECASE)
_DOCX_SKIP = frozenset(
    ["pPr", "rPr", "del", "moveFrom", "txbxContent", "instrText", "delText", "rt", "footnoteReference",
     "endnoteReference", "commentReference", "fldChar", "drawing", "pict", "object"]
)  # fmt: skip


def _read_docx(data: bytes, name: str) -> list[Block]:
    """Blocks of a Word document's body: paragraphs and tables in order, headings as locations."""
    archive = _Zip(data, name, "Word .docx")
    part = _docx_main_part(archive)
    root = archive.xml(part)
    if root is None:
        raise DocumentError(f"{name} is damaged or not a Word .docx file (it has no {part})")
    styles = _docx_styles(archive.xml(posixpath.join(posixpath.dirname(part), "styles.xml")))
    body = next((el for el in root.iter() if _local(el) == "body"), None)  # type: ignore[attr-defined]
    if body is None:
        raise DocumentError(f"{name} is damaged or not a Word .docx file (its document has no body)")
    flow = _Flow()
    _docx_container(body, flow, styles)
    return flow.blocks


def _docx_main_part(archive: _Zip) -> str:
    """The path of the main document part (from the package relationships)."""
    rels = archive.xml("_rels/.rels")
    if rels is not None:
        for rel in rels:  # type: ignore[attr-defined]
            if (_attr(rel, "Type") or "").endswith("/officeDocument"):
                return (_attr(rel, "Target") or "word/document.xml").lstrip("/")
    return "word/document.xml"


def _docx_styles(root: object | None) -> dict[str, tuple[bool, int | None]]:
    """Paragraph style id → (is a heading, outline level), following ``basedOn`` for the level."""
    raw: dict[str, tuple[str, str | None, int | None]] = {}
    if root is None:
        return {}
    for style in root:  # type: ignore[attr-defined]
        if _local(style) != "style":
            continue
        style_id = _attr(style, "styleId") or ""
        name, based, level = "", None, None
        for child in style.iter():
            local = _local(child)
            if local == "name":
                name = _attr(child, "val") or ""
            elif local == "basedOn":
                based = _attr(child, "val")
            elif local == "outlineLvl":
                level = _int(_attr(child, "val"))
        raw[style_id] = (name, based, level)
    styles: dict[str, tuple[bool, int | None]] = {}
    for style_id, (name, _, level) in raw.items():
        seen = {style_id}
        based = raw[style_id][1]
        while level is None and based in raw and based not in seen:
            seen.add(based)
            level = raw[based][2]
            based = raw[based][1]
        styles[style_id] = (bool(_HEADING_STYLE.match(name.strip())), level)
    return styles


def _int(value: str | None) -> int | None:
    """An integer attribute, or None."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _docx_container(container: object, flow: _Flow, styles: dict[str, tuple[bool, int | None]]) -> None:
    """Read the paragraphs and tables of a body, cell or content control, in order."""
    for child in container:  # type: ignore[attr-defined]
        local = _local(child)
        if local == "p":
            _docx_paragraph(child, flow, styles)
        elif local == "tbl":
            _docx_table(child, flow, styles)
        elif local in ("sdt", "sdtContent", "customXml", "ins", "moveTo", "smartTag"):
            _docx_container(child, flow, styles)


def _docx_paragraph(p: object, flow: _Flow, styles: dict[str, tuple[bool, int | None]]) -> None:
    """Add a paragraph; a Heading N or Title style (or an outline level) makes it a heading."""
    heading = False
    level: int | None = None
    for prop in p:  # type: ignore[attr-defined]
        if _local(prop) != "pPr":
            continue
        for child in prop:
            if _local(child) == "pStyle":
                heading, level = styles.get(_attr(child, "val") or "", (False, None))
            elif _local(child) == "outlineLvl":
                level = _int(_attr(child, "val"))
    heading = heading or (level is not None and 0 <= level < 9)
    parts: list[str] = []
    _docx_text(p, parts)
    flow.add("".join(parts), heading=heading)


def _docx_text(element: object, out: list[str]) -> None:
    """Collect a paragraph's visible text: runs, tabs and breaks; no deleted text, no field codes."""
    for child in element:  # type: ignore[attr-defined]
        local = _local(child)
        if local in _DOCX_SKIP:
            continue
        if local == "t":
            out.append(child.text or "")
        elif local == "tab":
            out.append(" ")
        elif local in ("br", "cr"):
            out.append("\n")
        elif local == "noBreakHyphen":
            out.append("-")
        else:
            _docx_text(child, out)


def _docx_table(table: object, flow: _Flow, styles: dict[str, tuple[bool, int | None]]) -> None:
    """Read a table row by row; a row of two non-empty cells in two languages becomes pairs."""
    for row in table:  # type: ignore[attr-defined]
        if _local(row) != "tr":
            continue
        cells = [c for c in row if _local(c) == "tc"]
        _cell_pairs(flow, [lambda c=c: _docx_container(c, flow, styles) for c in cells])


# ------------------------------------------------------------------------------------------ ODT

_ODT_HEADING_STYLE = re.compile(r"^(?:Title|Heading(?:_20_)?\d*)$")
_ODT_SKIP = frozenset(["note", "annotation", "tracked-changes", "bookmark", "soft-page-break", "frame"])


def _read_odt(data: bytes, name: str) -> list[Block]:
    """Blocks of an OpenDocument text: paragraphs, headings, lists and tables in order."""
    archive = _Zip(data, name, "OpenDocument .odt")
    root = archive.xml("content.xml")
    if root is None:
        raise DocumentError(f"{name} is damaged or not an OpenDocument .odt file (it has no content.xml)")
    body = next((el for el in root.iter() if _local(el) == "text" and _local(el.getparent()) == "body"), None)  # type: ignore[attr-defined]
    flow = _Flow()
    if body is not None:
        _odt_container(body, flow)
    return flow.blocks


def _odt_container(container: object, flow: _Flow) -> None:
    """Read the paragraphs, headings, lists, sections and tables of an ODT container in order."""
    for child in container:  # type: ignore[attr-defined]
        local = _local(child)
        if local in ("p", "h"):
            parts: list[str] = []
            _odt_text(child, parts)
            heading = local == "h" or bool(_ODT_HEADING_STYLE.match(_attr(child, "style-name") or ""))
            flow.add("".join(parts), heading=heading)
        elif local == "table":
            _odt_table(child, flow)
        elif local not in _ODT_SKIP and local not in ("table-column", "sequence-decls"):
            _odt_container(child, flow)


def _odt_text(element: object, out: list[str]) -> None:
    """Collect the text of an ODT paragraph: spans, links, spaces, tabs, line breaks; no notes."""
    if element.text:  # type: ignore[attr-defined]
        out.append(element.text)  # type: ignore[attr-defined]
    for child in element:  # type: ignore[attr-defined]
        local = _local(child)
        if local == "s":
            out.append(" " * max(1, _int(_attr(child, "c")) or 1))
        elif local == "tab":
            out.append(" ")
        elif local == "line-break":
            out.append("\n")
        elif local not in _ODT_SKIP:
            _odt_text(child, out)
        if child.tail:
            out.append(child.tail)


def _odt_table(table: object, flow: _Flow) -> None:
    """Read an ODT table row by row, pairing two-language rows."""
    for row in table:  # type: ignore[attr-defined]
        local = _local(row)
        if local in ("table-header-rows", "table-rows", "table-row-group"):
            _odt_table(row, flow)
        elif local == "table-row":
            cells = [c for c in row if _local(c) == "table-cell"]
            _cell_pairs(flow, [lambda c=c: _odt_container(c, flow) for c in cells])


# ----------------------------------------------------------------------------------------- HTML

_BLOCK_TAGS = frozenset(
    "address article blockquote body caption center dd details dialog dir div dl dt fieldset figcaption "
    "figure h1 h2 h3 h4 h5 h6 hgroup hr html legend li listing main menu ol p pre section summary table "
    "tbody td tfoot th thead tr ul".split()
)
_DROP_TAGS = frozenset(
    "script style nav aside form noscript template svg math iframe object embed button select textarea "
    "head title canvas audio video map dialog".split()
)
_DROP_ROLES = frozenset(["navigation", "banner", "contentinfo", "search", "complementary"])
_HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.\-]+)""",
    re.IGNORECASE,
)
# What browsers decode for these labels (the WHATWG Encoding Standard), where Python differs.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "cp950",
    "big5-hkscs": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
}


def _read_html(data: bytes, name: str) -> list[Block]:
    """Blocks of a web page's visible text."""
    flow = _Flow()
    _html_into(flow, _decode_html(data, name))
    return flow.blocks


def _decode_html(data: bytes, name: str) -> str:
    """A page's text: by its byte order mark, else its declared charset, else UTF-8."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    match = _CHARSET.search(data[:4096])
    if match:
        label = (match.group(1) or match.group(2)).decode("ascii").lower()
        label = _CHARSET_ALIASES.get(label, label)
        try:
            codecs.lookup(label)
        except LookupError:
            label = "utf-8"
        if label.replace("_", "-") not in (
            "utf-16",
            "utf-16le",
            "utf-16be",
        ):  # a declaration in ASCII bytes cannot be UTF-16
            return data.decode(label, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name} is not UTF-8 (byte {exc.start}) and declares no charset;"
            " add a <meta charset> or save it as UTF-8"
        ) from None


def _html_into(flow: _Flow, text: str) -> None:
    """Add a page's blocks to ``flow``."""
    import lxml.html
    from lxml import etree

    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)  # lxml refuses a str that declares an encoding
    if not text.strip():
        return
    try:
        root = lxml.html.document_fromstring(
            text, parser=lxml.html.HTMLParser(remove_comments=True, no_network=True)
        )
    except etree.ParserError:  # "Document is empty"
        return
    walker = _HtmlWalker(flow)
    walker.element(root)
    walker.flush()


class _HtmlWalker:
    """Walks a page in document order: inline text gathers into the block that holds it."""

    def __init__(self, flow: _Flow) -> None:
        self.flow = flow
        self.buffer: list[str] = []
        self.heading = False
        self.breaks = 0

    def flush(self) -> None:
        """End the current block."""
        if self.buffer:
            self.flow.add("".join(self.buffer), heading=self.heading)
        self.buffer = []
        self.breaks = 0

    def inline(self, text: str | None) -> None:
        """Add inline text to the current block."""
        if text:
            if text.strip():
                self.breaks = 0
            self.buffer.append(text)

    def element(self, el: object, main: bool = False) -> None:
        """Read an element and its children (not its tail)."""
        tag = _local(el).lower()
        if not tag or _hidden(el, tag, main):
            return
        main = main or tag in ("main", "article")
        if tag == "br":
            self.breaks += 1
            if self.breaks >= 2:  # <br><br>: a paragraph break on old pages
                self.flush()
            else:
                self.buffer.append("\n")
            return
        if tag not in _BLOCK_TAGS:
            self.inline(el.text)  # type: ignore[attr-defined]
            for child in el:  # type: ignore[attr-defined]
                self.element(child, main)
                self.inline(child.tail)
            return
        self.flush()
        self.heading = tag in _HEADINGS
        if tag == "tr":
            cells = [c for c in el if _local(c).lower() in ("td", "th")]  # type: ignore[attr-defined]
            _cell_pairs(self.flow, [lambda c=c: self.block(c, main) for c in cells])
        elif (two := _two_languages(el)) is not None:
            start = len(self.flow.blocks)
            self.block(two[0], main)
            middle = len(self.flow.blocks)
            self.block(two[1], main)
            self.flow.side_by_side(start, middle)
        else:
            self.inline(el.text)  # type: ignore[attr-defined]
            for child in el:  # type: ignore[attr-defined]
                self.element(child, main)
                self.inline(child.tail)
        self.flush()
        self.heading = False

    def block(self, el: object, main: bool) -> None:
        """Read ``el`` as a block of its own (a table cell, one side of a pair)."""
        self.flush()
        self.element(el, main)
        self.flush()
        self.heading = False


def _hidden(el: object, tag: str, main: bool) -> bool:
    """Whether an element is page furniture or hidden: menus, scripts, a site header or footer."""
    if tag in _DROP_TAGS:
        return True
    if tag in ("header", "footer") and not main:  # an article's own header holds its title
        return True
    attrib = el.attrib  # type: ignore[attr-defined]
    if "hidden" in attrib or attrib.get("aria-hidden") == "true" or attrib.get("role") in _DROP_ROLES:
        return True
    style = attrib.get("style", "").replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def _two_languages(el: object) -> tuple[object, object] | None:
    """The two block children of ``el`` when it has just those, in two languages (``lang``), and no text."""
    if (el.text or "").strip():  # type: ignore[attr-defined]
        return None
    children = [c for c in el if _local(c)]  # type: ignore[attr-defined]
    if len(children) != 2 or any((c.tail or "").strip() for c in children):
        return None
    if not all(
        _local(c).lower() in _BLOCK_TAGS and not _hidden(c, _local(c).lower(), True) for c in children
    ):
        return None
    langs = [_lang_of(c) for c in children]
    if None in langs or langs[0] == langs[1]:
        return None
    return children[0], children[1]


def _lang_of(el: object) -> str | None:
    """The primary language subtag of an element: its own, its first descendant's, or inherited."""
    nodes = itertools.chain(el.iter(), el.iterancestors())  # type: ignore[attr-defined]
    for node in nodes:
        value = _attr(node, "lang") if _local(node) else None
        if value:
            return value.split("-")[0].split("_")[0].lower()
    return None


# ----------------------------------------------------------------------------------------- EPUB


def _read_epub(data: bytes, name: str) -> list[Block]:
    """Blocks of an EPUB: its spine's XHTML documents in order, through the web page reader."""
    archive = _Zip(data, name, "EPUB")
    flow = _Flow()
    for member in _epub_spine(archive):
        content = archive.read(member)
        if content is not None:
            _html_into(flow, _decode_html(content, f"{name}:{member}"))
    return flow.blocks


def _epub_spine(archive: _Zip) -> list[str]:
    """The archive paths of the spine's documents in reading order (all XHTML files by name if none)."""
    container = archive.xml("META-INF/container.xml")
    opf_path = None
    if container is not None:
        opf_path = next(
            (_attr(el, "full-path") for el in container.iter() if _local(el) == "rootfile"),  # type: ignore[attr-defined]
            None,
        )
    opf = archive.xml(opf_path) if opf_path else None
    if opf is None:
        if not any(n.lower().endswith((".xhtml", ".html", ".htm")) for n in archive.names):
            raise DocumentError(f"{archive.name} is damaged or not an EPUB file (no package document)")
        return sorted(n for n in archive.names if n.lower().endswith((".xhtml", ".html", ".htm")))
    folder = posixpath.dirname(opf_path or "")
    hrefs: dict[str, str] = {}
    order: list[str] = []
    for el in opf.iter():  # type: ignore[attr-defined]
        local = _local(el)
        if local == "item" and "html" in (_attr(el, "media-type") or ""):
            href = unquote((_attr(el, "href") or "").split("#")[0])
            hrefs[_attr(el, "id") or ""] = posixpath.normpath(posixpath.join(folder, href))
        elif local == "itemref" and (_attr(el, "linear") or "yes") != "no":
            order.append(_attr(el, "idref") or "")
    return [hrefs[i] for i in order if i in hrefs]


_READERS: dict[str, Callable[[bytes, str], list[Block]]] = {
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".html": _read_html,
    ".htm": _read_html,
    ".xhtml": _read_html,
    ".odt": _read_odt,
    ".epub": _read_epub,
}
