import re

import pytest

from bilingual_qa import language as lang
from bilingual_qa.prompts import messages

QUESTIONS = [
    "Which sister cities in Thailand will Chongqing use?",
    "How many promotional events will Chongqing host?",
    "重慶將與哪些國家的駐華使領館搭建溝通協調機制?",
    "重庆将举办多少场专场推介活动?",
    "Who is credited with the translation?",
    "智库联盟重点围绕哪些方面开展工作?",
]


def _markers(text):
    return re.findall(r"\[(P\d+)\]", text)


@pytest.mark.parametrize("question", QUESTIONS)
def test_every_marker_is_a_citation_and_quotes_come_from_it(fake_assistant, question):
    answer = fake_assistant.ask(question)
    assert answer.answered
    cited = {c.paragraph_id: c for c in answer.citations}
    assert set(_markers(answer.text)) == set(cited)
    for c in answer.citations:
        paragraph = fake_assistant.document.paragraph(c.paragraph_id)
        assert c.text == paragraph.text and c.twin_id == paragraph.twin_id
        for start, end in c.spans:
            quoted = lang.to_script(paragraph.text[start:end], answer.language)
            assert quoted in answer.text


@pytest.mark.parametrize("question", QUESTIONS)
def test_answers_come_back_in_the_question_script(fake_assistant, question):
    answer = fake_assistant.ask(question)
    assert answer.language == lang.question_language(question)
    han = "".join(ch for ch in answer.text if lang.is_cjk(ch))
    if answer.language == lang.HANS:
        assert han == lang.to_script(han, lang.HANS)
    elif answer.language == lang.HANT:
        assert han == lang.to_script(han, lang.HANT)


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("What is the boiling point of mercury?", "en"),
        ("長江有多長?", "zh-Hant"),
        ("怎么申请中国签证?", "zh-Hans"),
    ],
)
def test_refuses_in_the_question_language(settings, fake_embedder, question, language):
    from bilingual_qa import Assistant

    # The refusal's form; which questions the fitted answerer refuses is measured by the eval.
    bot = Assistant(settings=settings.replace(answer_threshold=1.0), embedder=fake_embedder)
    answer = bot.ask(question)
    assert answer.signals["threshold"] == 1.0 and answer.signals["confidence"] < 1.0
    assert not answer.answered
    assert answer.citations == ()
    assert answer.language == language
    assert not _markers(answer.text)
    assert (lang.question_language(answer.text) == "en") == (language == "en")


def test_fact_only_in_the_other_language_says_so(tmp_path, settings, fake_embedder):
    from bilingual_qa import Assistant

    doc = tmp_path / "forum.txt"
    doc.write_text(
        "The forum was held in Chongqing in 2023. It gathered officials from ten countries.\n"
        "論壇於2023年在重慶舉行。來自十個國家的官員出席。\n"
        "Translation/Li Ming and Wang Fang\n",
        encoding="utf-8",
    )
    bot = Assistant(document=doc, settings=settings, embedder=fake_embedder)
    assert [p.twin_id for p in bot.paragraphs] == ["P2", "P1", None]
    answer = bot.ask("Li Ming和誰一起做了翻譯?")
    assert answer.answered
    assert "Wang Fang" in answer.text and "[P3]" in answer.text
    assert answer.evidence_language == "en" and answer.language == "zh-Hant"
    assert "英文版本" in answer.text
    # However freely second sentences are quoted, one from the other version stands alone:
    # a Chinese sentence beside it would make the answer mixed.
    import dataclasses

    from bilingual_qa.answering import load_model

    eager = dataclasses.replace(load_model(), second=0.0, elsewhere=0.0, threshold=0.0)
    bot._answerer = bot._answerer.with_model(eager)
    answer = bot.ask("Li Ming和誰一起做了翻譯?")
    assert "英文版本" in answer.text and [c.paragraph_id for c in answer.citations] == ["P3"]
    assert not any(lang.is_cjk(ch) for ch in answer.text.split("：", 1)[-1].split("[P3]")[0])


def test_answer_quotes_sentences_not_whole_paragraphs(fake_assistant):
    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    (citation,) = answer.citations[:1]
    assert "more than ten promotional events" in answer.text
    assert len(answer.text) < len(citation.text)


def test_json_keeps_chinese_readable(fake_assistant):
    text = fake_assistant.ask("重庆将举办多少场专场推介活动?").to_json()
    assert "\\u" not in text and "推介" in text


@pytest.mark.parametrize("question", QUESTIONS)
def test_quotes_are_whole_sentences_and_twin_spans_whole_twin_sentences(fake_assistant, question):
    answer = fake_assistant.ask(question)
    assert answer.answered
    doc = fake_assistant.document
    for c in answer.citations:
        paragraph = doc.paragraph(c.paragraph_id)
        bounds = {s.start for s in paragraph.sentences}, {s.end for s in paragraph.sentences}
        assert c.spans and all(start in bounds[0] and end in bounds[1] for start, end in c.spans)
        if c.twin_id is None:
            assert c.twin_spans == ()
            continue
        twin = doc.paragraph(c.twin_id)
        twin_bounds = {s.start for s in twin.sentences}, {s.end for s in twin.sentences}
        for start, end in c.twin_spans:
            assert start in twin_bounds[0] and end in twin_bounds[1] and start < end


LIBRARY = (
    "The Riverside Library opens at 9 am on weekdays. It closes at 8 pm.\n\n"
    "The library was founded in 1987 by Mayor Ellen Park. Its reading room seats two hundred people.\n\n"
    "河畔圖書館在平日上午9點開放。晚上8點閉館。\n\n"
    "圖書館由市長朴艾倫於1987年創立。閱覽室可容納兩百人。\n"
)


@pytest.mark.parametrize(
    ("question", "language", "version"),
    [
        ("What is the Riverside Library called in Chinese?", "en", "zh-Hant"),
        ("How is Mayor Ellen Park's name written in Chinese characters?", "en", "zh-Hant"),
        ("英文版怎麼寫圖書館的開放時間?", "zh-Hant", "en"),
        ("英文版里阅览室可容纳多少人?", "zh-Hans", "en"),
    ],
)
def test_a_question_about_the_other_version_quotes_it(
    tmp_path, settings, fake_embedder, question, language, version
):
    from bilingual_qa import Assistant

    doc = tmp_path / "library.txt"
    doc.write_text(LIBRARY, encoding="utf-8")
    bot = Assistant(document=doc, settings=settings, embedder=fake_embedder)
    assert [p.twin_id for p in bot.paragraphs] == ["P3", "P4", "P1", "P2"]
    answer = bot.ask(question)
    assert answer.answered and answer.language == language
    # Quoted from the asked-for version, framed as what that version says, in the asker's language.
    assert all(c.language == version for c in answer.citations)
    frame = messages(language)["chinese_version_says" if version != "en" else "english_version_says"]
    assert answer.text.startswith(frame.split("{quote}")[0])
    assert set(_markers(answer.text)) == {c.paragraph_id for c in answer.citations}
    for c in answer.citations:
        for start, end in c.spans:
            assert lang.to_script(c.text[start:end], language) in answer.text


@pytest.mark.integration
def test_the_other_version_is_quoted_sentence_for_sentence(real_embedder, tmp_path):
    from bilingual_qa import Assistant
    from conftest import real_settings

    doc = tmp_path / "library.txt"
    doc.write_text(LIBRARY, encoding="utf-8")
    bot = Assistant(document=doc, settings=real_settings(tmp_path), embedder=real_embedder)
    name = bot.ask("How is Mayor Ellen Park's name written in Chinese?")
    assert "朴艾倫" in name.text and "閱覽室" not in name.text  # the translation of that sentence only
    hours = bot.ask("英文版怎么写图书馆的开放时间?")
    assert "9 am" in hours.text and hours.language == lang.HANS


def test_signals_read_as_attributes_and_as_the_old_mapping(fake_assistant):
    import json

    from bilingual_qa.answer import Signals

    answer = fake_assistant.ask("How many promotional events will Chongqing host?")
    signals = answer.signals
    assert isinstance(signals, Signals) and signals.confidence is not None
    assert signals["confidence"] == signals.confidence and dict(signals).keys() == {"confidence", "threshold"}
    assert "support" not in signals and signals.get("support") is None
    with pytest.raises(KeyError):
        signals["support"]
    assert json.loads(answer.to_json())["signals"] == dict(signals)  # unset ones stay out of JSON


def test_a_second_sentence_comes_from_another_paragraph_only_past_its_own_ratio(fake_assistant):
    import dataclasses

    from bilingual_qa.answering import load_model

    bot = fake_assistant
    fitted = load_model()
    # Any second sentence of the same paragraph (or its twin), none from elsewhere.
    near = bot._answerer.with_model(dataclasses.replace(fitted, second=0.0, elsewhere=1.01, threshold=0.0))
    alone = bot._answerer.with_model(dataclasses.replace(fitted, second=1.01, elsewhere=1.01, threshold=0.0))
    # Any second sentence at all.
    anywhere = bot._answerer.with_model(dataclasses.replace(fitted, second=0.0, elsewhere=0.0, threshold=0.0))
    counts, spread = [], []
    for question in QUESTIONS:
        language = lang.question_language(question)
        _, retrieval = bot.weigh(question)
        answer = near.answer(question, language, retrieval)
        first = bot.document.paragraph(answer.citations[0].paragraph_id)
        assert {c.paragraph_id for c in answer.citations} <= {first.id, first.twin_id}
        counts.append(sum(len(c.spans) for c in answer.citations))
        # A ratio above one never quotes a second sentence.
        answer = alone.answer(question, language, retrieval)
        assert sum(len(c.spans) for c in answer.citations) == 1
        answer = anywhere.answer(question, language, retrieval)
        first = bot.document.paragraph(answer.citations[0].paragraph_id)
        spread.append(any(c.paragraph_id not in {first.id, first.twin_id} for c in answer.citations))
    assert max(counts) == 2  # the same paragraph's second sentences are quoted
    assert any(spread)  # … while another paragraph's would have been, had its ratio allowed it


def test_two_sentences_one_long_translated_sentence_covers_are_two_quotes(settings, fake_embedder, tmp_path):
    import dataclasses

    from bilingual_qa import Assistant
    from bilingual_qa.answering import load_model

    doc = tmp_path / "library.txt"
    # The Chinese translation says both English sentences in one.
    doc.write_text(
        LIBRARY.replace("上午9點開放。晚上8點閉館。", "上午9點開放，晚上8點閉館。"), encoding="utf-8"
    )
    bot = Assistant(document=doc, settings=settings, embedder=fake_embedder)
    assert len(bot.document.paragraph("P3").sentences) == 1 and bot.document.paragraph("P1").twin_id == "P3"
    # Any second sentence of the same paragraph or its twin: a sentence is never quoted twice,
    # but two English sentences are not one because one Chinese sentence translates both.
    model = dataclasses.replace(load_model(), second=0.0, elsewhere=1.01, threshold=0.0)
    answerer = bot._answerer.with_model(model)
    question = "When does the Riverside Library open?"
    _, retrieval = bot.weigh(question)
    answer = answerer.answer(question, "en", retrieval)
    assert "opens at 9 am" in answer.text and "It closes at 8 pm." in answer.text
    assert answer.text.count("9 am") == 1


@pytest.mark.parametrize(("language", "mark"), [("en", "…"), ("zh-Hant", "……"), ("zh-Hans", "……")])
def test_a_sentence_left_out_between_two_quotes_is_marked(settings, fake_embedder, tmp_path, language, mark):
    from types import SimpleNamespace

    from bilingual_qa import Assistant
    from bilingual_qa.answer import Signals
    from bilingual_qa.answering import _Quote

    doc = tmp_path / "library.txt"
    text = LIBRARY.replace("It closes at 8 pm.", "It closes at 8 pm. Entry is free.")
    doc.write_text(text, encoding="utf-8")
    bot = Assistant(document=doc, settings=settings, embedder=fake_embedder)
    english = bot.document.paragraph("P1")
    first, second, third = english.sentences

    def compose(*sentences):
        quotes = [_Quote(english, s, 0.5, 0, None) for s in sentences]
        weighing = SimpleNamespace(version=None)
        return bot._answerer._compose("q", language, quotes, Signals(0.9, 0.5), weighing, False).text

    apart, together = compose(first, third), compose(first, second)
    assert apart.count(mark) == 1 and apart.index(first.text) < apart.index(mark) < apart.index(third.text)
    assert "…" not in together and first.text in together and second.text in together
