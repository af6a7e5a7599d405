"""Chat: conversation turns, cues that a question leans on them, and condensing a follow-up.

"And which of them are in Thailand?" means nothing to retrieval on its own;
the previous question supplies what "them" refers to. Without an LLM the
standalone question is the previous (already standalone) question followed by
the follow-up, which keeps the earlier key terms for retrieval while the
follow-up's own terms decide which sentence answers.

The cues here only nominate a question: whether it really is a follow-up is decided
from evidence by the Assistant (does the document answer it on its own, and does the
previous turn help?), so "its" in a self-contained question or a short new question
does not drag the last turn along.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import language as lang
from .errors import QuestionError

MAX_TURNS = 20
#: An earlier question or answer is read up to this many characters (its end).
MAX_TURN_CHARS = 2000

# A question pointing back at the conversation: a pronoun or demonstrative, "and…",
# "the second one", "那…呢", 这/該/其/他…
_EN_REFERENCE = re.compile(
    r"^(?:and|but|also|so|then|what about|how about|which of|who of|why|how so|together with"
    r"|with (?:whom|whose|which|what))\b"
    r"|\b(?:it|its|they|them|their|theirs|those|these|this|that|there|he|she|him|his|her|hers"
    r"|the (?:first|second|third|fourth|last|latter|former|same)(?: one)?)\b",
    re.IGNORECASE,
)
_ZH_REFERENCE = re.compile(
    r"^(?:那|那麼|那么|還有|还有|另外|其中|而且|並且|并且|和|與|与|跟|同)"
    r"|他|她|它|這|这|那些|那個|那个|該|该|此|其|第[一二三四五六七八九十两兩]+[个個所位家种種座條条]?|呢[?？]?$"
)
# "its" in "When did ABC change its logo?" points at a name the question itself gives.
_POSSESSIVE = frozenset({"its", "his", "her", "their"})
_NAME = re.compile(r"(?<=\s)[A-Z0-9][\w'’&.-]*")
_MARKER = re.compile(r"\s*\[P\d+\]")
REFERENCE = "reference"
SHORT = "short"
_SHORT_EN_WORDS = 12
_SHORT_ZH_CHARS = 20


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: the user's question and the answer given."""

    question: str
    answer: str = ""


def as_turns(
    history: Iterable[object] | None, max_turns: int = MAX_TURNS, max_chars: int = MAX_TURN_CHARS
) -> list[Turn]:
    """The last ``max_turns`` of a history of Turns, (question, answer) pairs or {"question", "answer"} dicts.

    Only those turns are read (a longer history costs nothing more), and each question and
    answer is cut to its last ``max_chars`` characters: what a follow-up needs is the latest.

    Raises:
        QuestionError: one of those items has another shape.
    """
    if history is None:
        return []
    if isinstance(history, Sequence) and not isinstance(history, str | bytes):
        recent: Iterable[object] = history[-max_turns:] if max_turns else ()
    else:
        recent = deque(history, maxlen=max_turns)
    return [_turn(item, max_chars) for item in recent]


def _turn(item: object, max_chars: int) -> Turn:
    """One history item as a Turn, each text cut to its last ``max_chars`` characters."""
    if isinstance(item, Turn):
        question, answer = item.question, item.answer
    elif isinstance(item, Mapping) and isinstance(item.get("question"), str):
        question, answer = item["question"], item.get("answer") or ""
    elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 2:
        question, answer = item[0], item[1] or ""
    else:
        raise QuestionError("history items must be (question, answer) pairs or Turn objects")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise QuestionError("history questions and answers must be text")
    invalid = invalid_character(question) or invalid_character(answer)
    if invalid:
        raise QuestionError(f"the history contains {invalid}")
    if len(question) > max_chars or len(answer) > max_chars:
        return Turn(question[-max_chars:], answer[-max_chars:])
    return item if isinstance(item, Turn) else Turn(question, answer)


def invalid_character(text: str) -> str | None:
    """What makes ``text`` unencodable, if anything: an invalid UTF-8 byte or a lone surrogate.

    Python keeps undecodable bytes of a command line as lone surrogates (U+DC80..U+DCFF);
    JSON may carry any lone surrogate ("\\ud800"). Neither can be encoded, so neither may
    reach the model, the log or the output.
    """
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            if 0xDC80 <= code <= 0xDCFF:
                return f"an invalid UTF-8 byte (0x{code - 0xDC00:02X})"
            return f"an invalid character (a lone surrogate, U+{code:04X})"
    return None


def follow_up_cue(question: str) -> str | None:
    """Why a question may lean on the conversation: :data:`REFERENCE`, :data:`SHORT` or None.

    REFERENCE: it points back (a pronoun, a demonstrative, "and…", "那…呢"). SHORT: a
    short question with at most one or two key terms ("Which countries?", "和哪些国家？").
    """
    # Both languages' cues: a Chinese question may be mostly Latin names ("那 filterm 呢？").
    if _points_back(question) or _ZH_REFERENCE.search(re.sub(r"\s+", "", question)):
        return REFERENCE
    few = 1 if lang.question_language(question) == lang.EN else 2
    return SHORT if is_short(question) and len(lang.key_terms(question)) <= few else None


def _points_back(question: str) -> bool:
    """An English cue that points outside the question (not a possessive after a name it gives)."""
    for match in _EN_REFERENCE.finditer(question):
        if match.group(0).lower() in _POSSESSIVE and _NAME.search(question, 0, match.start()):
            continue
        return True
    return False


def is_follow_up(question: str) -> bool:
    """Whether a question may lean on the conversation (see :func:`follow_up_cue`)."""
    return follow_up_cue(question) is not None


def is_short(question: str) -> bool:
    """Short enough to be an elliptical follow-up: in words (English), Han characters and Latin words."""
    if lang.question_language(question) == lang.EN:
        return len(question.split()) <= _SHORT_EN_WORDS
    units = sum(1 for ch in question if lang.is_cjk(ch)) + len(re.findall(r"[A-Za-z0-9]+", question))
    return units <= _SHORT_ZH_CHARS


def condense(question: str, history: Sequence[Turn], force: bool = False, with_answer: bool = False) -> str:
    """A standalone version of ``question`` given the earlier turns.

    The last standalone question followed by the follow-up. Unchanged when there is no
    history, or when the question has no follow-up cue and ``force`` is false (``force``:
    the caller decided from evidence that it is a follow-up).

    ``with_answer`` puts the last answer (its [P#] markers dropped) between them, for
    searching: "he" in "How many fumbles did he force?" is named in the answer, not in the
    question ("Who led the Panthers in sacks?").
    """
    if not history or not (force or is_follow_up(question)):
        return question
    previous = history[-1].question
    # The previous question may itself have been a follow-up: walk back to a standalone one.
    for turn in reversed(history[:-1]):
        if not is_follow_up(previous):
            break
        previous = f"{turn.question} {previous}"
    answer = _MARKER.sub("", history[-1].answer).strip() if with_answer else ""
    return " ".join(part for part in (previous, answer, question) if part)
