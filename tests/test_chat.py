import pytest

from bilingual_qa.chat import Turn, as_turns, condense, is_follow_up
from bilingual_qa.errors import QuestionError

HISTORY = [Turn("Which sister cities will Chongqing draw on?", "Ho Chi Minh City, Bangkok… [P9]")]


@pytest.mark.parametrize(
    "question",
    ["And which of them are in Thailand?", "What about Cambodia?", "那其中哪些在泰國?", "泰國的呢?", "Why?"],
)
def test_follow_ups_are_condensed_with_the_previous_question(question):
    assert is_follow_up(question)
    assert condense(question, HISTORY) == f"{HISTORY[0].question} {question}"


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
