"""Document: read a text, Markdown, PDF, Word, web page, ODT or EPUB file into paragraphs P1..Pn.

Text and Markdown are split here; the other formats are read into blocks by
:mod:`bilingual_qa.readers`, each block a paragraph. Every paragraph gets a language and sentences.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path, PurePath

from . import language as lang
from . import readers
from .errors import DocumentError
from .files import sha256_bytes

DEFAULT_DOCUMENT = Path(__file__).resolve().parent / "data" / "ilstc-five-year-action-plan.txt"
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
SUFFIXES = TEXT_SUFFIXES + tuple(readers.FORMATS)
_READER_SUFFIXES = ".pdf, .docx, .html, .odt or .epub"
_PARAGRAPH_ID = re.compile(r"P([1-9]\d*)")
_WORD = re.compile(r"\w")


@dataclass(frozen=True)
class Sentence:
    """A sentence of a paragraph, with its character span in the paragraph text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Paragraph:
    """One paragraph: its stable id (P1..Pn), language, text, sentences and aligned translation.

    ``location`` says where a paragraph read from a PDF, DOCX, HTML, ODT or EPUB file came from
    ("page 3", "§ Background"); it is None for text and Markdown files.
    """

    id: str
    language: str
    text: str
    sentences: tuple[Sentence, ...]
    twin_id: str | None = None
    location: str | None = None

    @property
    def position(self) -> int:
        """Zero-based position in the document (ids are P1..Pn in order)."""
        return int(self.id[1:]) - 1

    @property
    def index(self) -> int:
        """Alias of :attr:`position`, kept for callers of the 0.1 API."""
        return self.position


@dataclass(frozen=True)
class Document:
    """A parsed document: its paragraphs in order and the sha256 of its bytes.

    ``layout_pairs`` holds the (paragraph id, paragraph id) pairs the file's layout set side by
    side (the two columns of a parallel-text PDF page, a two-language table row), each once, in
    document order; empty for text files.
    """

    name: str
    sha256: str
    paragraphs: tuple[Paragraph, ...]
    layout_pairs: tuple[tuple[str, str], ...] = ()

    @property
    def chinese_script(self) -> str:
        """The script most of its Chinese paragraphs are written in (zh-Hant when it has none)."""
        scripts = [p.language for p in self.paragraphs if lang.is_chinese(p.language)]
        return max((lang.HANT, lang.HANS), key=scripts.count) if scripts else lang.HANT

    def paragraph(self, paragraph_id: str) -> Paragraph:
        """The paragraph with id ``paragraph_id`` (e.g. "P3")."""
        return self.paragraphs[self.position(paragraph_id)]

    def position(self, paragraph_id: str) -> int:
        """Zero-based position of the paragraph with id ``paragraph_id``.

        Raises:
            KeyError: the document has no such paragraph.
        """
        m = _PARAGRAPH_ID.fullmatch(paragraph_id) if isinstance(paragraph_id, str) else None
        if m is None or not 1 <= int(m.group(1)) <= len(self.paragraphs):
            raise KeyError(paragraph_id)
        return int(m.group(1)) - 1

    def twin_position(self, position: int) -> int | None:
        """Position of the paragraph's translation, if it has one in this document."""
        twin_id = self.paragraphs[position].twin_id
        try:
            return self.position(twin_id) if twin_id else None
        except KeyError:
            return None

    @cached_property
    def units(self) -> tuple[tuple[int, ...], ...]:
        """The document's units in reading order: a paragraph with its translation, or alone.

        A unit is what retrieval ranks and the page shows side by side: (position, twin
        position) for a pair, opened at its first paragraph, or (position,) for a paragraph
        without a translation.
        """
        units: list[tuple[int, ...]] = []
        for i in range(len(self.paragraphs)):
            twin = self.twin_position(i)
            if twin is None:
                units.append((i,))
            elif twin > i:
                units.append((i, twin))
        return tuple(units)

    @cached_property
    def unit_of(self) -> tuple[int, ...]:
        """For every paragraph position, the number of its unit in :attr:`units`."""
        out = [0] * len(self.paragraphs)
        for u, members in enumerate(self.units):
            for position in members:
                out[position] = u
        return tuple(out)

    def with_twins(self, twins: dict[str, str]) -> Document:
        """A copy whose paragraphs carry the given id → twin id pairing (both directions)."""
        paragraphs = tuple(replace(p, twin_id=twins.get(p.id)) for p in self.paragraphs)
        return replace(self, paragraphs=paragraphs)


# English: a sentence ends at . ! ? (plus closing quotes/brackets), followed by
# whitespace or, as in much copy-pasted press text, directly by a capital letter.
_EN_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+|(?=[A-Z“\"]))")
_ZH_END = re.compile(rf"[。！？]+[”」』)）\"]*|(?<=[{lang.HAN}])[!?;]+|[；]")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "no",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "gov",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "fig",
        "est",
        "approx",
    ]
)
_MARKDOWN_PREFIX = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+|\d{1,3}[.)]\s+)")


def read_bytes(path: str | Path | None = None) -> tuple[str, bytes]:
    """The file name and bytes of a document; ``None`` is the embedded default document.

    Only a regular file with a suffix of :data:`SUFFIXES` is read, and never more than
    :data:`MAX_DOCUMENT_BYTES` + 1 bytes whatever its size claims (``/dev/zero`` claims 0).
    It is opened without blocking, so a FIFO is refused rather than waited on forever.

    Raises:
        DocumentError: the path is not a readable regular file with a supported suffix, or
            the file is too large; the message says which, in one line.
    """
    if path is None:
        file = DEFAULT_DOCUMENT
    elif isinstance(path, str | os.PathLike):
        file = Path(path).expanduser()
    else:
        raise DocumentError(f"a document path must be text, not {type(path).__name__}")
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DocumentError(_os_error(exc, file)) from None
    except ValueError:  # a NUL in the path
        raise DocumentError("the document path contains a NUL character") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise DocumentError(f"document is a directory, not a file: {file}")
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(f"document is not a regular file (a {_file_kind(info.st_mode)}): {file}")
        if file.suffix.lower() not in SUFFIXES:
            kind = f"a {file.suffix} file" if file.suffix else "a file without a suffix"
            raise DocumentError(
                f"{file.name} is {kind}; give a UTF-8 .txt or .md, or a {_READER_SUFFIXES} document"
            )
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_DOCUMENT_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_DOCUMENT_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise DocumentError(_os_error(exc, file)) from None
    finally:
        os.close(fd)
    if total > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"document is too large: over {MAX_DOCUMENT_BYTES // 2**20} MiB: {file}")
    return file.name, b"".join(chunks)


def _os_error(exc: OSError, file: Path) -> str:
    """One line saying why ``file`` could not be opened or read."""
    reasons = {
        errno.ENOENT: "document not found",
        errno.ELOOP: "the document path is a symbolic link loop",
        errno.EACCES: "permission denied reading the document (or a folder on its path)",
        errno.EPERM: "permission denied reading the document",
        errno.ENAMETOOLONG: "the document's file name is too long (over 255 bytes)",
        errno.ENOTDIR: "a part of the document path is not a folder",
        errno.EISDIR: "document is a directory, not a file",
    }
    reason = reasons.get(exc.errno or 0)
    if reason is None:
        return f"cannot read document {file}: {exc.strerror or exc}"
    return f"{reason}: {file}"


def _file_kind(mode: int) -> str:
    """What a non-regular file is, for a message."""
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):  # fmt: skip
        if test(mode):
            return kind
    return "special file"


def read_document(path: str | Path | None = None, seed: int = 0) -> Document:
    """Read and split a document; ``None`` reads the embedded default document.

    To get a searchable :class:`~bilingual_qa.index.Index` (languages recorded by an earlier
    index reused, twins aligned), use :func:`bilingual_qa.index.open_document`.

    Args:
        path: a UTF-8 ``.txt`` or ``.md`` file, a ``.pdf``, ``.docx``, ``.html``, ``.odt`` or
            ``.epub`` file, or None for the default document.
        seed: langdetect seed, for deterministic language labels.

    Returns:
        The parsed :class:`Document` (twins not yet aligned).

    Raises:
        DocumentError: the file is missing, a directory, too large, binary,
            not UTF-8, damaged, or has no text.
    """
    name, data = read_bytes(path)
    return parse_document(data, name=name, seed=seed)


def parse_document(
    data: bytes, name: str = "document", seed: int = 0, languages: Sequence[str] | None = None
) -> Document:
    """Parse document bytes into a :class:`Document`, by the suffix of ``name``.

    Text and Markdown (any other suffix) are split by :func:`split_paragraphs`; the formats of
    :data:`bilingual_qa.readers.FORMATS` are read by :func:`bilingual_qa.readers.read_blocks`,
    one paragraph per block, with its location, and the blocks the layout set side by side
    become :attr:`Document.layout_pairs`.

    Args:
        data: the file's bytes (:attr:`Document.sha256` is their hash).
        name: the file name; its suffix picks the reader.
        seed: langdetect seed, for deterministic language labels.
        languages: recorded labels; when there is one per paragraph and each fits its
            paragraph (see :func:`~bilingual_qa.language.language_fits`), they are used
            instead of detection.

    Returns:
        The parsed :class:`Document` (twins not yet aligned).

    Raises:
        DocumentError: the bytes are binary, not UTF-8, damaged, or contain no text.
    """
    locations: list[str | None] | None = None
    layout_pairs: tuple[tuple[str, str], ...] = ()
    if PurePath(name).suffix.lower() in readers.FORMATS:
        blocks, locations, layout_pairs = _read_blocks(data, name)
    else:
        blocks = split_paragraphs(_decode(data, name))
    if not blocks:
        raise DocumentError(f"{name} contains no text")
    default_script = _document_script(blocks)
    if languages is not None and (
        len(languages) != len(blocks)
        or not all(lang.language_fits(b, x, default_script) for b, x in zip(blocks, languages, strict=False))
    ):
        languages = None  # recorded for another text, or tampered with: detect them again
    if languages is None:
        languages = [lang.detect_language(b, seed=seed, default_script=default_script) for b in blocks]
    paragraphs = tuple(
        Paragraph(
            id=f"P{i}",
            language=language,
            text=block,
            sentences=tuple(split_sentences(block)),
            location=locations[i - 1] if locations is not None else None,
        )
        for i, (block, language) in enumerate(zip(blocks, languages, strict=True), start=1)
    )
    return Document(name=name, sha256=sha256_bytes(data), paragraphs=paragraphs, layout_pairs=layout_pairs)


def _read_blocks(data: bytes, name: str) -> tuple[list[str], list[str | None], tuple[tuple[str, str], ...]]:
    """Paragraph texts, their locations and the layout's side-by-side id pairs of a PDF, DOCX… file.

    A block is one paragraph, cleaned as a line of a text file is (a block left empty is
    dropped); pairs are numbered after the drop, so they name the paragraphs they joined.
    """
    texts: list[str] = []
    locations: list[str | None] = []
    paragraph_of: dict[int, int] = {}
    blocks = readers.read_blocks(data, name)
    for b, block in enumerate(blocks):
        text = _clean(block.text)
        if text:
            paragraph_of[b] = len(texts)
            texts.append(text)
            locations.append(block.location)
    pairs = tuple(
        (f"P{paragraph_of[b] + 1}", f"P{paragraph_of[block.pair] + 1}")
        for b, block in enumerate(blocks)
        if block.pair is not None and b < block.pair and b in paragraph_of and block.pair in paragraph_of
    )
    return texts, locations, pairs


# Byte order marks that say how a text is encoded (UTF-32's before UTF-16's: FF FE 00 00 begins both).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip


def _decode(data: bytes, name: str) -> str:
    """The text of a document: UTF-8 (BOM or not), or UTF-16/32 when a BOM says so.

    Raises:
        DocumentError: the bytes are not valid in that encoding or hold a NUL character.
    """
    encoding = next((codec for bom, codec in _BOMS if data.startswith(bom)), "utf-8-sig")
    if encoding == "utf-8-sig" and _looks_utf16(data[:4096]):
        raise DocumentError(
            f"{name} looks like UTF-16 text without a byte order mark (every other byte is NUL);"
            " save it as UTF-8"
        )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        label = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        if b"\x00" in data[:8192]:
            message = f"{name} looks binary (NUL bytes, not valid {label}); give a text file"
            raise DocumentError(message) from None
        legacy = _legacy_chinese_encoding(data) if encoding == "utf-8-sig" else None
        if legacy is not None:
            message = f"{name} is not UTF-8: it looks like {legacy} text; save it as UTF-8"
            raise DocumentError(message) from None
        raise DocumentError(
            f"{name} is not valid {label} (byte {exc.start}); save it as UTF-8 and try again"
        ) from None
    nul = text.find("\x00")
    if nul != -1:
        line = text.count("\n", 0, nul) + 1
        raise DocumentError(f"{name} contains a NUL character (line {line}): it looks binary, not text")
    return text


# Characters frequent in any Chinese prose: text decoded with its own legacy encoding is full of
# them, the same bytes decoded with the other encoding are not.
_COMMON_HAN = frozenset("的是在和有一不了人中國国為为這这個个大上年會会與与將将以及等對对發发展")
_LEGACY_ENCODINGS = (("gbk", "GBK (Simplified Chinese)"), ("big5", "Big5 (Traditional Chinese)"))


def _legacy_chinese_encoding(data: bytes) -> str | None:
    """The legacy Chinese encoding (GBK or Big5) non-UTF-8 bytes read as, if either fits clearly."""
    head = data[:65536]
    best, best_share = None, 0.0
    for codec, label in _LEGACY_ENCODINGS:
        try:
            text = head.decode(codec)
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
                continue
            text = head[: exc.start].decode(codec)
        han = [ch for ch in text if lang.is_cjk(ch)]
        share = sum(ch in _COMMON_HAN for ch in han) / len(han) if len(han) >= 4 else 0.0
        if share > best_share:
            best, best_share = label, share
    return best if best_share >= 0.05 else None


def _looks_utf16(head: bytes) -> bool:
    """Whether NUL is most of the even or of the odd bytes: UTF-16 of mostly ASCII text."""
    half = len(head) // 2
    return half >= 4 and max(head[0::2].count(0), head[1::2].count(0)) > half * 0.6


def _document_script(blocks: list[str]) -> str:
    """The Chinese script the document mostly uses (for paragraphs too short to tell)."""
    han = "".join(b for b in blocks if lang.cjk_ratio(b) >= lang.CHINESE_SHARE)
    return lang.chinese_script(han, default=lang.HANT)


def split_paragraphs(text: str) -> list[str]:
    """Split text into paragraphs.

    Without blank lines, every line is a paragraph (one paragraph per line);
    with them, blank lines separate paragraphs and wrapped lines are joined,
    except that Markdown headings and list items start paragraphs of their own.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n")]
    if not any(line == "" for line in lines[: len(lines) - 1]) or sum(bool(x) for x in lines) <= 1:
        return [_clean(line) for line in lines if _clean(line)]
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        starts_block = bool(_MARKDOWN_PREFIX.match(line))
        if (not line or starts_block) and current:
            paragraphs.append(_join(current))
            current = []
        if line:
            current.append(line)
    if current:
        paragraphs.append(_join(current))
    return [p for p in (_clean(p) for p in paragraphs) if p]


def _join(lines: list[str]) -> str:
    """Join wrapped lines: no space between Chinese characters, one space otherwise."""
    out = lines[0]
    for line in lines[1:]:
        glue = "" if out and lang.is_cjk(out[-1]) and lang.is_cjk(line[0]) else " "
        out += glue + line
    return out


def _clean(text: str) -> str:
    """Strip Markdown block markers, emphasis and control characters."""
    text = _MARKDOWN_PREFIX.sub("", text)
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    text = "".join(ch for ch in text if ch == "\t" or ch >= " ")
    return re.sub(r"[ \t]+", " ", text).strip()


def split_sentences(text: str) -> list[Sentence]:
    """Split a paragraph into sentences with their spans.

    Copes with English sentences that run together with no space after the
    period ("Corridor.These"), abbreviations, decimals, and Chinese 。！？.
    """
    cuts: list[int] = []
    for match in _EN_END.finditer(text):
        if _is_sentence_end(text, match.start(), match.end()):
            cuts.append(match.end())
    cuts.extend(m.end() for m in _ZH_END.finditer(text))
    sentences: list[Sentence] = []
    start = 0
    pending: int | None = None  # where leading punctuation waits for the sentence it opens
    for cut in [*sorted(set(cuts)), len(text)]:
        if cut <= start:
            continue
        piece = text[start:cut]
        lead = len(piece) - len(piece.lstrip())
        stripped = piece.strip()
        begin, end = start + lead, start + lead + len(stripped)
        start = cut
        if not stripped:
            continue
        if not _WORD.search(stripped):
            # Punctuation alone ("。" after "。 ", a closing quote) is no sentence to quote: it
            # ends the sentence before it, or opens the next one.
            if sentences:
                last = sentences[-1]
                sentences[-1] = Sentence(text[last.start : end], last.start, end)
            elif pending is None:
                pending = begin
            continue
        if pending is not None:
            begin, pending = pending, None
        sentences.append(Sentence(text[begin:end], begin, end))
    if pending is not None:  # nothing but punctuation: keep it whole
        sentences.append(Sentence(text[pending:].strip(), pending, pending + len(text[pending:].strip())))
    return sentences


# Longer runs of letters and periods are no abbreviation or initialism.
_LONGEST_WORD = 32


def _is_sentence_end(text: str, start: int, end: int) -> bool:
    """Reject periods of abbreviations, initials and decimals."""
    if text[start] != ".":
        return True
    # The word before the period, read backwards and only so far: searching the whole prefix
    # at every period made splitting quadratic (7 s for a 50 KB line of "a. a. …").
    lo = start
    while (
        lo > 0
        and start - lo < _LONGEST_WORD
        and (text[lo - 1] == "." or (text[lo - 1].isascii() and text[lo - 1].isalpha()))
    ):
        lo -= 1
    if lo < start:
        token = text[lo:start].lower().strip(".")
        if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
            return False
        if "." in token and all(len(part) == 1 for part in token.split(".")):
            return False  # initialisms such as U.S.
    return not (start > 0 and text[start - 1].isdigit() and end < len(text) and text[end : end + 1].isdigit())
