"""Chat: conversation turns and condensing a follow-up into a standalone question.

"And which of them are in Thailand?" means nothing to retrieval on its own;
the previous question supplies what "them" refers to. Without an LLM the
standalone question is the previous (already standalone) question followed by
the follow-up, which keeps the earlier key terms for retrieval while the
follow-up's own terms decide which sentence answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import language as lang
from .errors import QuestionError

MAX_TURNS = 20

_EN_FOLLOW_UP = re.compile(
    r"^(?:and|but|also|so|then|what about|how about|and what|which of|who of|why|how so)\b"
    r"|\b(?:it|its|they|them|their|theirs|those|these|that one|there|he|she|his|her|this one)\b",
    re.IGNORECASE,
)
_ZH_FOLLOW_UP = re.compile(
    r"^(?:那|那麼|那么|還有|还有|另外|其中|而且|並且|并且)|他們|他们|它們|它们|這些|这些|那些|其中|該|该|此|呢[?？]?$"
)
_SHORT_EN_WORDS = 12
_SHORT_ZH_CHARS = 20


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: the user's question and the answer given."""

    question: str
    answer: str = ""


def as_turns(history: Iterable[object] | None) -> list[Turn]:
    """Normalize a history of Turns, (question, answer) pairs or {"question", "answer"} dicts.

    Raises:
        QuestionError: an item has another shape.
    """
    turns: list[Turn] = []
    for item in history or ():
        if isinstance(item, Turn):
            turns.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("question"), str):
            turns.append(Turn(item["question"], str(item.get("answer") or "")))
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            turns.append(Turn(str(item[0]), str(item[1] or "")))
        else:
            raise QuestionError("history items must be (question, answer) pairs or Turn objects")
    return turns[-MAX_TURNS:]


def is_follow_up(question: str) -> bool:
    """Whether a question leans on the conversation (a pronoun, "and…", "那…呢", very few key terms)."""
    if lang.question_language(question) == lang.EN:
        short = len(question.split()) <= _SHORT_EN_WORDS
        return short and (bool(_EN_FOLLOW_UP.search(question)) or len(lang.key_terms(question)) <= 1)
    compact = re.sub(r"\s+", "", question)
    short = len(compact) <= _SHORT_ZH_CHARS
    return short and (bool(_ZH_FOLLOW_UP.search(compact)) or len(lang.key_terms(question)) <= 2)


def condense(question: str, history: Sequence[Turn]) -> str:
    """A standalone version of ``question`` given the earlier turns (unchanged when standalone)."""
    if not history or not is_follow_up(question):
        return question
    previous = history[-1].question
    # The previous question may itself have been a follow-up: walk back to a standalone one.
    for turn in reversed(history[:-1]):
        if not is_follow_up(previous):
            break
        previous = f"{turn.question} {previous}"
    return f"{previous} {question}"
