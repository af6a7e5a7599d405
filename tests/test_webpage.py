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
    assert messages[-1]["content"].startswith('<div class="bqa-error" role="alert">\n\n⚠️ ')


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


def _twin_citation(fake_assistant, text: str, twin_text: str):
    """A citation of a made-up English paragraph whose Chinese twin says the same in its second sentence."""
    from bilingual_qa.answer import Citation
    from bilingual_qa.document import Paragraph

    paragraph = next(p for p in fake_assistant.document.paragraphs if p.twin_id)
    twin = dataclasses.replace(
        fake_assistant.document.paragraph(paragraph.twin_id), id="P2", language="zh-Hant", text=twin_text
    )
    assert isinstance(twin, Paragraph)
    first = twin_text.index("。") + 1
    citation = Citation(
        paragraph_id="P1", language="en", text=text, twin_id="P2", score=0.9,
        spans=((0, text.index(".") + 1),), twin_spans=((first, len(twin_text)),),
    )  # fmt: skip
    return citation, twin


def test_the_twin_sentences_are_highlighted_quieter_and_escaped(fake_assistant):
    english = "Chongqing <b>will</b> host 10 events. Nothing else."
    chinese = "前言<img src=x onerror=alert(1)>。重慶將舉辦10場推介活動${7*7}。"
    citation, twin = _twin_citation(fake_assistant, english, chinese)
    card = webpage.source_card(citation, twin, 0, "en")
    # The quote in the cited paragraph, the twin's sentence in its own (second) colour.
    assert card.count("<mark>") == 1 and card.count('<mark class="bqa-twin">') == 1
    assert "<mark>Chongqing &lt;b&gt;will&lt;/b&gt; host 10 events.</mark>" in card
    assert '<mark class="bqa-twin">重慶將舉辦10場推介活動&#36;&#123;7*7&#125;。</mark>' in card
    # The document's text stays text: no markup of its own reaches the page.
    assert "<img" not in card and "<b>" not in card and "${" not in card
    assert "前言&lt;img src=x onerror=alert(1)&gt;。" in card  # the sentence before is not marked
    # English left, Chinese right, each mark on its own side.
    english_side = card[card.index('lang="en"') : card.index('lang="zh-Hant"')]
    chinese_side = card[card.index('lang="zh-Hant"') :]
    assert "<mark>" in english_side and "bqa-twin" not in english_side
    assert "bqa-twin" in chinese_side and "<mark>" not in chinese_side
    # Spans of another paragraph than the card's translation are not applied to it.
    other = dataclasses.replace(twin, id="P7")
    assert "bqa-twin" not in webpage.source_card(citation, other, 0, "en")


@pytest.mark.parametrize("ui", webpage.UI_LANGUAGES)
def test_the_legend_explains_both_colours_in_every_language(fake_assistant, ui):
    citation, twin = _twin_citation(fake_assistant, "One. Two.", "一。二。")
    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    answer = dataclasses.replace(answer, citations=(citation,))
    text = webpage.strings(ui)
    html = webpage.sources_html(Session(ui=ui).add(Exchange("q", answer=answer, twins=(twin,))), ui)
    legend = re.search(r'<p class="bqa-legend">(.*?)</p>', html).group(1)
    assert text["legend_quoted"] in legend and text["legend_twin"] in legend
    assert '<mark class="bqa-swatch" aria-hidden="true">' in legend
    assert '<mark class="bqa-swatch bqa-twin" aria-hidden="true">' in legend
    assert html.index("bqa-legend") < html.index("bqa-card")  # read before the cards
    # No twin highlighted (no translation, or no spans in it): the legend has the quote's key only.
    bare = webpage.sources_html(Session(ui=ui).add(Exchange("q", answer=answer)), ui)
    assert text["legend_quoted"] in bare and text["legend_twin"] not in bare
    # No citations (a refusal): no legend.
    refused = dataclasses.replace(answer, citations=(), answered=False)
    assert "bqa-legend" not in webpage.sources_html(Session(ui=ui).add(Exchange("q", answer=refused)), ui)


def test_errors_are_messages_of_their_own_marked_as_errors(fake_assistant):
    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    session = (
        Session()
        .add(Exchange("q1", answer=answer))
        .add(Notice(Message("upload_wrong_type", {"name": XSS}), error=True))
        .add(Notice(Message("default_loaded")))
        .add(Exchange("q2", error=Message("question_failed", {"reason": XSS})))
    )
    messages, owners = webpage.chat_messages(session, "en")
    contents = [m["content"] for m in messages]
    assert owners == [0, 0, 1, 2, 3, 3]
    # The answer's message is the answer alone; the upload error follows it as a message of its own.
    assert contents[1] == webpage.answer_markdown(answer.text, 0)
    upload_error, notice, question_error = contents[2], contents[3], contents[5]
    for error in (upload_error, question_error):
        assert error.startswith('<div class="bqa-error" role="alert">\n\n⚠️ ') and error.endswith("\n\n</div>")
        assert "<img" not in error and "&lt;img" in error  # parameters escaped inside the page's markup
    assert "Cannot load" in upload_error and "I cannot answer that" in question_error
    assert "bqa-error" not in notice  # a notice that is no error looks like any other message


@pytest.mark.parametrize(
    ("ui", "length"),
    [
        ("en", "… (20,000 characters)"),
        ("zh-Hant", "…（共 20,000 個字元）"),
        ("zh-Hans", "…（共 20,000 个字符）"),
    ],
)
def test_a_long_question_is_shown_cut_with_its_length(ui, length):
    question = "word " * 4000
    shown = webpage.question_shown(question, ui)
    assert shown == question[: webpage.QUESTION_SHOWN_CHARS].rstrip() + length
    session = Session(ui=ui).add(Exchange(question, error=Message("question_failed", {"reason": "too long"})))
    messages, _ = webpage.chat_messages(session, ui)
    assert messages[0]["content"] == webpage.md_escape(shown)
    html = webpage.sources_html(session, ui)
    assert f'<p class="bqa-question">{webpage.html_escape(shown)}</p>' in html and question not in html
    # Up to the limit, a question is shown whole.
    whole = "x" * webpage.QUESTION_SHOWN_CHARS
    assert webpage.question_shown(whole, ui) == whole
    assert webpage.question_shown(XSS, ui) == XSS


def test_the_sources_panel_folds_under_its_heading():
    for session in (Session(), Session().add(Exchange("q"))):
        html = webpage.sources_html(session, "zh-Hant")
        assert html.startswith('<details class="bqa-fold" open><summary class="bqa-summary">')
        assert '<h3 class="bqa-title">出處</h3></summary>' in html and html.endswith("</div></details>")


def test_where_a_paragraph_came_from_shows_on_its_card_and_in_the_document_tab(fake_assistant):
    english = "Chongqing will host 10 events. Nothing else."
    chinese = "重慶將舉辦10場推介活動。其他沒有。"
    citation, twin = _twin_citation(fake_assistant, english, chinese)
    placed = dataclasses.replace(citation, location="page <3>")
    card = webpage.source_card(placed, dataclasses.replace(twin, location="page 4"), 0, "en")
    assert card.count('class="bqa-where"') == 2
    assert "page &lt;3&gt;" in card and "page 4" in card and "<3>" not in card  # text, never markup
    assert 'class="bqa-where"' not in webpage.source_card(citation, twin, 0, "en")  # a text file: none
    document = fake_assistant.document
    located = dataclasses.replace(
        document,
        paragraphs=tuple(dataclasses.replace(p, location=f"§ {p.id}") for p in document.paragraphs),
    )
    html = webpage.document_html(located, "en")
    assert html.count('class="bqa-where"') == len(document.paragraphs)
    assert 'class="bqa-where"' not in webpage.document_html(document, "en")
