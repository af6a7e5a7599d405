import dataclasses

import pytest

from bilingual_qa.chat import REFERENCE, SHORT, Turn, as_turns, condense, follow_up_cue, is_follow_up
from bilingual_qa.errors import QuestionError

HISTORY = [Turn("Which sister cities will Chongqing draw on?", "Ho Chi Minh City, Bangkok… [P9]")]


@pytest.mark.parametrize(
    "question",
    ["And which of them are in Thailand?", "What about Cambodia?", "那其中哪些在泰國?", "泰國的呢?", "Why?"],
)
def test_follow_ups_are_condensed_with_the_previous_question(question):
    assert is_follow_up(question)
    assert condense(question, HISTORY) == f"{HISTORY[0].question} {question}"
    # Searched with the answer too (it names what "them" is); its [P#] markers are no words.
    searched = condense(question, HISTORY, with_answer=True)
    assert searched == f"{HISTORY[0].question} Ho Chi Minh City, Bangkok… {question}"


@pytest.mark.parametrize(
    ("question", "points_back"),
    [
        ("When did ABC change its logo?", False),
        ("Which company did ABC hire to design and produce its 2001–02 identity?", False),
        ("When did Kawann Short retire from their team?", False),
        ("When did he change its logo?", True),  # "he" has no name before it
        ("When did it change its logo?", True),
        ("What did Jean Ribault call it?", True),  # only possessives look back to a name
        ("How did its logo change?", True),
        ("Its logo?", True),
    ],
)
def test_a_possessive_after_a_name_the_question_gives_does_not_point_back(question, points_back):
    assert (follow_up_cue(question) == REFERENCE) == points_back


@pytest.mark.parametrize(
    "question",
    ["How many promotional events will Chongqing host?", "重慶將與哪些國家的駐華使領館搭建溝通協調機制?"],
)
def test_standalone_questions_are_unchanged(question):
    assert not is_follow_up(question)
    assert condense(question, HISTORY) == question


def test_no_history_no_change():
    assert condense("And which of them?", []) == "And which of them?"


def test_chained_follow_ups_walk_back_to_a_standalone_question():
    history = [*HISTORY, Turn("And which of them are in Thailand?", "Bangkok, Chiang Mai [P9]")]
    assert condense("What about Cambodia?", history).startswith(HISTORY[0].question)


def test_history_shapes():
    turns = as_turns([("q1", "a1"), {"question": "q2", "answer": "a2"}, Turn("q3")])
    assert [t.question for t in turns] == ["q1", "q2", "q3"]
    with pytest.raises(QuestionError):
        as_turns([42])


def test_assistant_uses_history(fake_assistant):
    first = fake_assistant.ask("Which sister cities in Thailand will Chongqing use?")
    follow = fake_assistant.ask("And in Cambodia?", history=[(first.question, first.text)])
    assert follow.standalone_question is not None
    assert follow.standalone_question.endswith("And in Cambodia?")
    assert follow.question == "And in Cambodia?"
    assert (
        fake_assistant.ask("Which sister cities in Thailand will Chongqing use?").standalone_question is None
    )


@pytest.mark.parametrize(
    ("question", "cue"),
    [
        ("Can it grep too?", REFERENCE),
        ("What is the population of the second one?", REFERENCE),
        ("Together with which countries?", REFERENCE),
        ("這樣做的目的是什麼?", REFERENCE),
        ("那 filterm 呢？", REFERENCE),  # mostly Latin, still a Chinese follow-up
        ("和哪些国家一起办?", REFERENCE),
        ("Which countries?", SHORT),
        ("How many promotional events will Chongqing host?", None),
        ("重慶將與哪些國家的駐華使領館搭建溝通協調機制?", None),
    ],
)
def test_follow_up_cues(question, cue):
    assert follow_up_cue(question) == cue


def _asked(bot, question, previous):
    return bot.ask(question, history=[(previous, "…")])


def test_another_language_without_pointing_back_is_a_new_topic(fake_assistant):
    # The cases: a short question in the other language is not merged into the last turn.
    assert (
        _asked(fake_assistant, "巴黎有多少人口？", "What is the population of Paris?").standalone_question
        is None
    )
    assert _asked(fake_assistant, "What is the ILSTC?", "重庆将与哪些国家合作？").standalone_question is None
    # …but one that points back is, whatever its language.
    merged = _asked(fake_assistant, "那柬埔寨呢？", "Which sister cities in Thailand will Chongqing use?")
    assert merged.standalone_question is not None


def test_a_follow_up_keeps_the_conversation_script(fake_assistant):
    # "那柬埔寨呢？" reads the same in both scripts: the conversation's script decides.
    for previous, script in (
        ("重庆在泰国有哪些国际友城？", "zh-Hans"),
        ("重慶在泰國有哪些國際友城？", "zh-Hant"),
    ):
        assert _asked(fake_assistant, "那柬埔寨呢？", previous).language == script


@pytest.mark.parametrize(
    ("alone", "merged", "condensed"),
    [(0.9, 0.95, False), (0.1, 0.8, True), (0.1, 0.05, False)],
    ids=["answered-alone", "needs-the-last-turn", "no-help-from-it"],
)
def test_a_question_without_a_cue_is_condensed_only_when_the_evidence_asks(
    settings, fake_embedder, monkeypatch, alone, merged, condensed
):
    from bilingual_qa import Assistant

    bot = Assistant(settings=settings.replace(answer_threshold=0.5), embedder=fake_embedder)
    previous = "阿波罗1号的测试是哪天开始的？"
    question = "测试暂停期间机舱里发生了什么？"  # no pronoun: the subject is left out
    assert follow_up_cue(question) is None
    asked = []

    def confidence(text, language, retrieval):
        # judged on the units the search text finds: the question's own, or the condensed one's
        asked.append(retrieval.question)
        return alone if retrieval.question == question else merged

    monkeypatch.setattr(bot._answerer, "confidence", confidence)
    answer = _asked(bot, question, previous)
    assert (answer.standalone_question is not None) == condensed
    assert asked[0] == question  # the question on its own is judged first


def test_only_the_last_turns_are_read_and_each_is_cut_to_size():
    long = "x" * 5000 + " the end"
    turns = as_turns(iter([42] * 100 + [(long, long)] * 3), max_turns=3, max_chars=100)
    assert len(turns) == 3
    assert all(len(t.question) == len(t.answer) == 100 and t.question.endswith("the end") for t in turns)
    assert as_turns([("q", None)]) == [Turn("q", "")]
    with pytest.raises(QuestionError):
        as_turns([(1, "a")])


def test_a_follow_up_quotes_the_sentence_about_whom_the_last_answer_named(settings, fake_embedder, tmp_path):
    # "he" is named only in the last answer: the follow-up's sentences are weighed against
    # the conversation too, not against "How many fumbles did he force?" alone.
    from bilingual_qa import Assistant

    document = tmp_path / "season.txt"
    document.write_text(
        "The defense was the best in years. Davis forced four fumbles and made nine tackles this season. "
        "Short forced three fumbles and recovered two this season.\n\n"
        "防守是多年來最好的。Davis 本賽季迫使對手四次失誤，並完成九次擒抱。"
        "Short 本賽季迫使對手三次失誤，並兩次收回球權。\n",
        encoding="utf-8",
    )
    settings = settings.replace(answer_threshold=0.0)
    bot = Assistant(document=document, settings=settings, embedder=fake_embedder)
    # One sentence an answer, so the quote is the best-weighed sentence.
    model = bot._answerer.model
    bot._answerer = bot._answerer.with_model(dataclasses.replace(model, second=1.01, elsewhere=1.01))
    history = [("Who led the team in sacks?", "Short led the team in sacks [P1].")]
    answer = bot.ask("How many fumbles did he force?", history=history)
    # Shown as understood (the last question and the follow-up), searched with the answer too.
    assert answer.standalone_question == "Who led the team in sacks? How many fumbles did he force?"
    assert "three fumbles" in answer.text and "four fumbles" not in answer.text
