"""What the page shows: pure rendering functions of webpage.py, no Gradio, no server."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from bilingual_qa import language as lang
from bilingual_qa import webpage
from bilingual_qa.webpage import Exchange, Message, Notice, Session

XSS = "<img src=x onerror=alert(1)> ${7*7} {{x}} **bold** [link](javascript:alert(2))"


@pytest.mark.parametrize(
    ("locale", "ui"),
    [
        ("en-US", "en"),
        ("fr", "en"),
        ("", "en"),
        (None, "en"),
        ("zh-TW", "zh-Hant"),
        ("zh_HK", "zh-Hant"),
        ("zh-Hant", "zh-Hant"),
        ("zh-CN", "zh-Hans"),
        ("zh", "zh-Hans"),
        ("zh-Hans-HK", "zh-Hans"),
        ("zh-Hans", "zh-Hans"),
    ],
)
def test_ui_language_follows_the_browser_locale(locale, ui):
    assert webpage.ui_language(locale) == ui


def test_ui_strings_are_complete_in_every_language():
    english = webpage.strings("en")
    for ui in webpage.UI_LANGUAGES:
        text = webpage.strings(ui)
        assert text.keys() == english.keys(), ui
        for key, template in english.items():
            fields = set(re.findall(r"{(\w+)}", template))
            assert set(re.findall(r"{(\w+)}", text[key])) == fields, (ui, key)
    assert webpage.strings("klingon") == english


def test_examples_cover_english_traditional_and_simplified():
    languages = {lang.question_language(q) for q in webpage.examples()}
    assert languages == {"en", "zh-Hant", "zh-Hans"}


def test_markdown_escape_shows_text_literally():
    escaped = webpage.md_escape(XSS)
    assert "<" not in escaped and ">" not in escaped
    assert "\\*\\*bold\\*\\*" in escaped and "\\[link\\]\\(javascript" in escaped
    assert "\\$\\{7\\*7\\}" in escaped


def test_html_escape_leaves_no_markup_or_template_syntax():
    escaped = webpage.html_escape(XSS + ' "quoted" `tick` back\\slash')
    assert not set('<>"$`{}\\') & set(escaped)
    assert "&lt;img src=x onerror=alert(1)&gt;" in escaped


def test_answer_markers_link_to_their_cards():
    markdown = webpage.answer_markdown("A *fact*. [P9] 另一句。 [P10]", turn=3)
    assert "[\\[P9\\]](#src-3-P9)" in markdown and "[\\[P10\\]](#src-3-P10)" in markdown
    assert "\\*fact\\*" in markdown


def test_stream_prefixes_grow_to_the_whole_text_without_cutting_markers():
    text = "Chongqing will set up a mechanism. [P9] 搭建溝通協調機制。 [P10]"
    prefixes = webpage.stream_prefixes(text, steps=8)
    assert prefixes[-1] == text and len(prefixes) > 3
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(prefixes))
    for prefix in prefixes:
        assert not re.search(r"\[P?\d*$", prefix), prefix
    assert webpage.stream_prefixes("") == [""]


def test_highlight_marks_spans_and_escapes_the_rest():
    text = "<b>one</b>. Two & three."
    assert webpage.highlight(text, [(12, 24)]) == "&lt;b&gt;one&lt;/b&gt;. <mark>Two &amp; three.</mark>"
    # Overlapping, unsorted and out-of-range spans never duplicate or drop text.
    html = webpage.highlight("abcdef", [(3, 9), (0, 2), (1, 4)])
    assert re.sub(r"</?mark>", "", html) == "abcdef"


def test_document_table_shows_every_paragraph_once_english_left(fake_assistant):
    document = fake_assistant.document
    rows = webpage.aligned_rows(document)
    ids = [p.id for row in rows for p in row if p]
    assert sorted(ids) == sorted(p.id for p in document.paragraphs)
    for english, chinese in rows:
        assert english is None or not lang.is_chinese(english.language)
        assert chinese is None or lang.is_chinese(chinese.language)
        if english and chinese:
            assert english.twin_id == chinese.id
    html = webpage.document_html(document, "en")
    assert html.count("<tr") == len(rows) + 1
    unpaired = sum(1 for e, c in rows if e is None or c is None)
    assert html.count('class="bqa-unpaired"') == unpaired > 0


def test_source_card_puts_the_quote_beside_its_translation(fake_assistant):
    answer = fake_assistant.ask("用好新加坡、緬甸等沿線國家駐華使領館資源")
    citation = answer.citations[0]
    twin = fake_assistant.document.paragraph(citation.twin_id) if citation.twin_id else None
    card = webpage.source_card(citation, twin, 2, "zh-Hant")
    assert f'id="src-2-{citation.paragraph_id}"' in card
    assert card.count("<mark>") == len(citation.spans) >= 1
    assert "已引用" in card
    if twin is not None:
        assert webpage.html_escape(twin.text) in card
        # English on the left, Chinese on the right, whichever was quoted.
        assert card.index('lang="en"') < card.index('lang="zh-')


def test_session_history_and_shown_exchange(fake_assistant):
    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    session = (
        Session()
        .add(Notice(Message("default_loaded")))
        .add(Exchange("q1", answer=answer, twins=webpage.cited_twins(answer, fake_assistant.document)))
        .add(Exchange("bad", error=Message("engine_failed")))
    )
    assert session.history() == [("q1", answer.text)]
    assert session.shown_exchange()[0] == 2  # the latest exchange, even a failed one
    messages, owners = webpage.chat_messages(session, "en")
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert owners == [0, 1, 1, 2, 2]
    assert messages[-1]["content"].startswith("⚠️")


def test_an_upload_is_shown_from_its_key(fake_assistant):
    document = fake_assistant.document
    upload = webpage.Upload.of(document, XSS + ".md")
    assert upload.sha256 == document.sha256 and upload.stats() == webpage.document_stats(document)
    # The status line and the loaded notice need only the key (the engine may be evicted).
    assert webpage.document_status(upload, False, "en") == webpage.document_status(
        document, False, "en"
    ).replace(webpage.md_escape(document.name), webpage.md_escape(upload.name))
    assert "<img" not in webpage.document_status(upload, False, "en")
    assert webpage.loaded_message(upload).params["name"] == upload.name
    gone = webpage.missing_document_html(upload, "zh-Hans")
    assert "<img" not in gone and "服务器上已不再保留" in gone


def test_an_answer_keeps_only_its_cited_translations(fake_assistant):
    document = fake_assistant.document
    # An answer citing a paragraph that has an aligned translation (the fake embedder aligns few).
    cited = next(p for p in document.paragraphs if p.twin_id)
    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    citation = dataclasses.replace(
        answer.citations[0], paragraph_id=cited.id, language=cited.language, text=cited.text,
        twin_id=cited.twin_id, spans=((0, 3),), twin_spans=(),
    )  # fmt: skip
    answer = dataclasses.replace(answer, citations=(citation,))
    twins = webpage.cited_twins(answer, document)
    assert {t.id for t in twins} == {c.twin_id for c in answer.citations if c.twin_id}
    exchange = Exchange("q", answer=answer, twins=twins)
    assert not any(value is document for value in vars(exchange).values())  # no document held
    html = webpage.sources_html(Session().add(exchange), "en")
    for twin in twins:
        assert webpage.html_escape(twin.text) in html  # shown beside the quote, from the exchange
    bare = webpage.sources_html(Session().add(Exchange("q", answer=answer)), "en")
    assert "No aligned translation in the document." in bare


@pytest.mark.parametrize("key", ["upload_busy", "upload_gone"])
def test_busy_and_gone_messages_name_the_file_in_every_language(key):
    for ui in webpage.UI_LANGUAGES:
        text = Message(key, {"name": "notes_v2.md"}).markdown(ui)
        assert "notes\\_v2\\.md" in text, (ui, text)
