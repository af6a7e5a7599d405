"""Reading documents that are not text (``bilingual-qa bench``): a 50-page bilingual PDF and DOCX.

The files are drawn by :mod:`.docfiles` from XQuAD paragraphs and their Traditional Chinese
translations (the development data's first document), as parallel columns: English left,
Chinese right, a pair starting on the same line. What is timed is
:func:`~bilingual_qa.document.read_document` — the file read, its layout found, paragraphs,
languages and sentences — everything before encoding.

Target: a 50-page bilingual PDF read in ≤ 2 s (absolute, this machine).
"""

from __future__ import annotations

import time

from .processes import not_installed

PAGES = 50
PDF_BOUND_SECONDS = 2.0


def formats(ctx) -> None:
    """Time reading the PDF and the DOCX (skipped, with a note, without reportlab/python-docx)."""
    if not_installed(ctx, "document formats", ("reportlab", "docx"), "bench"):
        return
    from ..document import read_document
    from .docfiles import bilingual_docx, two_column_pdf

    pairs = _pairs()
    folder = ctx.work / "formats"
    folder.mkdir(parents=True, exist_ok=True)
    pdf = two_column_pdf(pairs, folder / "parallel.pdf")
    docx = bilingual_docx(pairs, folder / "parallel.docx")
    repeats = 1 if ctx.quick else 3
    timings: dict[str, list[float]] = {"pdf": [], "docx": []}
    shapes = {}
    for _ in range(repeats):
        for kind, path in (("pdf", pdf), ("docx", docx)):
            t = time.perf_counter()
            document = read_document(path)
            timings[kind].append(time.perf_counter() - t)
            shapes[kind] = (len(document.paragraphs), len(document.layout_pairs))
    pages = _pages(pdf)
    paragraphs, paired = shapes["pdf"]
    read = ctx.add(
        "read_pdf",
        f"read a {pages}-page parallel bilingual PDF ({paragraphs} paragraphs, {paired} side-by-side pairs)",
        "s",
        timings["pdf"],
    )
    ctx.add(
        "read_docx",
        f"read the same text as a DOCX table ({shapes['docx'][1]} row pairs)",
        "s",
        timings["docx"],
    )
    ctx.target(
        "read_pdf",
        f"a {pages}-page bilingual PDF read before encoding ≤ {PDF_BOUND_SECONDS:g} s",
        read.median,
        PDF_BOUND_SECONDS,
    )


def _pairs() -> list[tuple[str, str]]:
    """(English, Chinese) paragraph pairs of the development data, enough for 50 pages."""
    from ..document import read_document
    from .engines import XQUAD_DOCUMENT

    document = read_document(XQUAD_DOCUMENT)
    english = [p.text for p in document.paragraphs if p.language == "en"]
    chinese = [p.text for p in document.paragraphs if p.language.startswith("zh")]
    pairs = list(zip(english, chinese, strict=False))
    # About 2.5 pairs a page: the paragraphs are Wikipedia's, several lines long.
    wanted = 5 * PAGES // 2
    return (pairs * (wanted // max(1, len(pairs)) + 1))[:wanted]


def _pages(path) -> int:
    """How many pages a PDF has (counted by pdfminer, as the reader sees them)."""
    from pdfminer.pdfpage import PDFPage

    with open(path, "rb") as fh:
        return sum(1 for _ in PDFPage.get_pages(fh))
