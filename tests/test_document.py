import os
from pathlib import Path

import pytest

from bilingual_qa.document import (
    MAX_DOCUMENT_BYTES,
    parse_document,
    read_document,
    split_paragraphs,
    split_sentences,
)
from bilingual_qa.errors import DocumentError


def test_default_document_paragraph_ids_and_languages():
    doc = read_document()
    assert [p.id for p in doc.paragraphs] == [f"P{i}" for i in range(1, 18)]
    languages = {p.id: p.language for p in doc.paragraphs}
    english = {"P1", "P2", "P3", "P7", "P9", "P11", "P13", "P14", "P15"}
    assert {k for k, v in languages.items() if v == "en"} == english
    assert {v for k, v in languages.items() if k not in english} == {"zh-Hant"}


def test_sentence_spans_slice_the_paragraph_exactly():
    for p in read_document().paragraphs:
        assert p.sentences
        for s in p.sentences:
            assert p.text[s.start : s.end] == s.text
        assert [s.start for s in p.sentences] == sorted(s.start for s in p.sentences)


def test_sentences_that_run_together_are_split():
    text = "It is the Trade Corridor.These events helped.As a result,the ILSTC grew."
    assert [s.text for s in split_sentences(text)] == [
        "It is the Trade Corridor.",
        "These events helped.",
        "As a result,the ILSTC grew.",
    ]


def test_abbreviations_initials_and_decimals_do_not_split():
    text = "Mr. Zhang met the U.S. envoy. Growth was 3.5 percent this year."
    assert [s.text for s in split_sentences(text)] == [
        "Mr. Zhang met the U.S. envoy.",
        "Growth was 3.5 percent this year.",
    ]


def test_chinese_sentences_split_on_full_stop_and_keep_ascii_commas():
    text = "用好新加坡、緬甸等資源,搭建溝通協調機制。用好越南胡志明市,泰國曼谷市等資源。"
    assert [s.text for s in split_sentences(text)] == [
        "用好新加坡、緬甸等資源,搭建溝通協調機制。",
        "用好越南胡志明市,泰國曼谷市等資源。",
    ]


def test_blank_line_paragraphs_join_wrapped_lines_and_markdown_blocks():
    text = "# Title\n\nFirst line\nwrapped here.\n\n第一行\n接著寫。\n- item one\n- item two\n"
    assert split_paragraphs(text) == [
        "Title",
        "First line wrapped here.",
        "第一行接著寫。",
        "item one",
        "item two",
    ]


def test_one_paragraph_per_line_without_blank_lines():
    assert split_paragraphs("one\ntwo\r\nthree") == ["one", "two", "three"]


def test_language_detection_is_deterministic():
    data = (
        "Ceci est un paragraphe écrit en français pour vérifier la détection.\nHello there, world.".encode()
    )
    first = [p.language for p in parse_document(data).paragraphs]
    assert first == [p.language for p in parse_document(data).paragraphs]
    assert first == ["fr", "en"]


def test_simplified_document_is_labelled_simplified():
    doc = parse_document("重庆将与东盟国家加强合作。\nChongqing will cooperate with ASEAN.".encode())
    assert [p.language for p in doc.paragraphs] == ["zh-Hans", "en"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "contains no text"),
        (b"   \n\n \t\n", "contains no text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        ("重慶".encode("big5"), "not valid UTF-8"),
    ],
)
def test_bad_documents_raise_document_error(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "doc.txt"
    path.write_bytes(content)
    with pytest.raises(DocumentError, match=message):
        read_document(path)


def test_missing_document_and_directory(tmp_path: Path):
    with pytest.raises(DocumentError, match="not found"):
        read_document(tmp_path / "nope.txt")
    with pytest.raises(DocumentError, match="directory"):
        read_document(tmp_path)


def test_sha256_identifies_the_bytes(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Hello.\n你好。", encoding="utf-8")
    b.write_text("Hello!\n你好。", encoding="utf-8")
    assert read_document(a).sha256 != read_document(b).sha256
    assert read_document(a).sha256 == parse_document(a.read_bytes()).sha256


def test_units_cover_every_paragraph_once_and_pair_twins():
    from dataclasses import replace

    doc = read_document()
    doc = doc.with_twins({"P1": "P4", "P4": "P1", "P2": "P3", "P3": "P2"})
    assert doc.units[:3] == ((0, 3), (1, 2), (4,))
    flat = sorted(i for unit in doc.units for i in unit)
    assert flat == list(range(len(doc.paragraphs)))
    for u, unit in enumerate(doc.units):
        assert all(doc.unit_of[i] == u for i in unit)
    for p in doc.paragraphs:
        assert doc.position(p.id) == p.position == p.index
        twin = doc.twin_position(p.position)
        assert (twin is None) == (p.twin_id is None)
    with pytest.raises(KeyError):
        doc.position("P0")
    with pytest.raises(KeyError):
        doc.position(f"P{len(doc.paragraphs) + 1}")
    assert replace(doc, paragraphs=doc.paragraphs[:1]).units == ((0,),)  # a twin outside: alone


class _CountingText(str):
    """A str that adds up how many characters indexing and slicing hand out."""

    touched = 0

    def __getitem__(self, key):  # type: ignore[override]
        item = str.__getitem__(self, key)
        _CountingText.touched += len(item)
        return item


@pytest.mark.parametrize("unit", ["a. ", "word. ", "U.S.A. ", "No. 3.5 "])
def test_split_sentences_reads_each_character_a_bounded_number_of_times(unit):
    # Linear, not quadratic: a period's abbreviation check may not re-read the text before it.
    text = _CountingText((unit * 4000)[:12000])
    _CountingText.touched = 0
    sentences = split_sentences(text)
    assert sentences and _CountingText.touched <= 40 * len(text)
    assert all(str.__getitem__(text, slice(s.start, s.end)) == s.text for s in sentences)


def _bad_documents(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Each bad document, and the one-line message it must get."""
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, path: Path, message: str) -> None:
        cases[name] = (path, message)

    case("missing", tmp / "missing.txt", "document not found")
    (tmp / "folder.txt").mkdir()
    case("directory", tmp / "folder.txt", "is a directory")
    os.mkfifo(tmp / "pipe.txt")
    case("fifo", tmp / "pipe.txt", "not a regular file (a named pipe)")
    case("dev-zero", Path("/dev/zero"), "not a regular file (a character device)")
    case("dev-urandom", Path("/dev/urandom"), "not a regular file (a character device)")
    (tmp / "loop-a.txt").symlink_to(tmp / "loop-b.txt")
    (tmp / "loop-b.txt").symlink_to(tmp / "loop-a.txt")
    case("symlink-loop", tmp / "loop-a.txt", "symbolic link loop")
    case("long-name", tmp / ("重" * 90 + ".txt"), "file name is too long")
    (tmp / "report.rtf").write_bytes(b"{\\rtf1 ...}")
    case("rtf", tmp / "report.rtf", "is a .rtf file; give a UTF-8 .txt or .md, or a .pdf, .docx")
    (tmp / "report.pdf").write_bytes(b"%PDF-1.7 ...")
    case("pdf", tmp / "report.pdf", "report.pdf is damaged or not a PDF file")
    (tmp / "README").write_text("text")
    case("no-suffix", tmp / "README", "is a file without a suffix")
    (tmp / "utf16.txt").write_bytes("Chongqing will hold events.\n重慶。\n".encode("utf-16-le"))
    case("utf16-no-bom", tmp / "utf16.txt", "looks like UTF-16 text without a byte order mark")
    (tmp / "late-nul.txt").write_bytes(b"Chongqing.\n" * 1000 + b"a\x00b\n")
    case("late-nul", tmp / "late-nul.txt", "contains a NUL character (line 1001)")
    (tmp / "latin1.txt").write_bytes("Café crème.".encode("latin-1"))
    case("latin1", tmp / "latin1.txt", "is not valid UTF-8 (byte 3)")
    zh = "重庆将积极举办各类双边和多边外事活动，并将陆海新通道纳入顶层规划。这是一个重要的发展。"
    (tmp / "gbk.txt").write_bytes(zh.encode("gbk"))
    case("gbk", tmp / "gbk.txt", "is not UTF-8: it looks like GBK (Simplified Chinese) text; save it as")
    zh_hant = "重慶將積極舉辦各類雙邊和多邊外事活動，並將陸海新通道納入頂層規劃。這是一個重要的發展。"
    (tmp / "big5.txt").write_bytes(zh_hant.encode("big5"))
    case("big5", tmp / "big5.txt", "it looks like Big5 (Traditional Chinese) text")
    (tmp / "empty.txt").write_bytes(b"\n \n")
    case("empty", tmp / "empty.txt", "contains no text")
    with open(tmp / "huge.txt", "wb") as f:  # sparse: claims its size honestly, costs no disk
        f.truncate(MAX_DOCUMENT_BYTES + 1)
    case("too-large", tmp / "huge.txt", "document is too large")
    return cases


def test_bad_documents_get_one_line_document_errors(tmp_path):
    for name, (path, message) in _bad_documents(tmp_path).items():
        with pytest.raises(DocumentError) as caught:
            read_document(path)
        assert message in str(caught.value) and "\n" not in str(caught.value), name


def test_a_byte_order_mark_says_how_a_document_is_encoded(tmp_path):
    text = "Chongqing will hold events.\n重慶將舉辦活動。\n"
    for encoding in ("utf-16", "utf-32", "utf-8-sig"):
        path = tmp_path / f"{encoding}.txt"
        path.write_bytes(text.encode(encoding))
        assert [p.text for p in read_document(path).paragraphs] == text.split("\n")[:2], encoding


def test_a_folder_without_search_permission_is_a_one_line_error(tmp_path, monkeypatch):
    import errno

    from bilingual_qa import document

    # Root ignores permissions, so the refusal the kernel gives everyone else is simulated.
    def refuse(path, flags, *args):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(document.os, "open", refuse)
    with pytest.raises(
        DocumentError, match=r"^permission denied reading the document \(or a folder on its path\)"
    ):
        read_document(tmp_path / "locked" / "notes.txt")


def test_new_fields_come_last_with_defaults_so_the_old_api_holds():
    from dataclasses import fields

    from bilingual_qa.document import Document, Paragraph

    assert [f.name for f in fields(Paragraph)] == [
        "id",
        "language",
        "text",
        "sentences",
        "twin_id",
        "location",
    ]
    assert [f.name for f in fields(Document)] == ["name", "sha256", "paragraphs", "layout_pairs"]
    paragraph = Paragraph("P1", "en", "Hi.", ())
    assert paragraph.location is None and Document("x.txt", "0" * 64, (paragraph,)).layout_pairs == ()


def test_text_formats_parse_as_before_whatever_the_reader_formats():
    data = "# Title\n\nFirst line\nwrapped here.\n\n第一行\n接著寫。\n".encode()
    for name in ("notes.txt", "notes.md", "notes.markdown", "notes.text", "notes"):
        doc = parse_document(data, name)
        assert [p.text for p in doc.paragraphs] == ["Title", "First line wrapped here.", "第一行接著寫。"]
        assert doc.layout_pairs == () and all(p.location is None for p in doc.paragraphs)


def test_punctuation_alone_is_never_a_sentence():
    """XQuAD's "獎。 。" and a stray closing quote end the sentence before them (or open the next)."""
    import re

    cases = ["公司獎。 。下一句。", '"Yes." " Then no.', "。 Hello there. World.", "Stop. ... Go on."]
    for text in cases:
        sentences = split_sentences(text)
        assert all(re.search(r"\w", s.text) for s in sentences), text
        assert all(text[s.start : s.end] == s.text for s in sentences)
        # Nothing of the paragraph is lost between its sentences.
        assert re.sub(r"\s", "", "".join(s.text for s in sentences)) == re.sub(r"\s", "", text)
    assert [s.text for s in split_sentences("公司獎。 。下一句。")] == ["公司獎。 。", "下一句。"]
