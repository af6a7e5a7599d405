"""Answer: the results every answerer returns (an Answer and the Citations it quotes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Citation:
    """A paragraph an answer quotes: its id, language, full text, twin and quoted spans.

    ``twin_spans`` are the spans of the twin paragraph (``twin_id``) that say what the
    quoted spans say, for a page to highlight the translation.
    """

    paragraph_id: str
    language: str
    text: str
    twin_id: str | None
    score: float
    spans: tuple[tuple[int, int], ...] = ()
    twin_spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Answer:
    """An answer in the question's language and script, with [P#] markers and its citations.

    ``backend`` is "extractive" (quoted sentences) or "llm" (generated, and passed
    every guardrail of :mod:`bilingual_qa.generation`).
    """

    question: str
    text: str
    language: str
    answered: bool
    citations: tuple[Citation, ...]
    backend: str = "extractive"
    standalone_question: str | None = None
    evidence_language: str | None = None
    signals: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # Generative backend only: why its answer was replaced by this extractive one
    # (None when it was not), and the guardrail checks that fired on its text.
    fallback_reason: str | None = None
    guardrails: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the answer."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The answer as JSON with readable Chinese (no \\u escapes)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)
