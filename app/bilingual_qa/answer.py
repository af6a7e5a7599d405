"""Answer: the results every answerer returns (an Answer and the Citations it quotes)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum


class Backend(StrEnum):
    """What wrote an answer."""

    EXTRACTIVE = "extractive"  # quoted sentences of the document
    LLM = "llm"  # generated, and passed every guardrail


class Guardrail(StrEnum):
    """A check of :mod:`bilingual_qa.generation` that fired on a generated answer."""

    EMPTY_OUTPUT = "empty_output"
    AMBIGUOUS_REFUSAL = "ambiguous_refusal"
    MODEL_REFUSED = "model_refused"
    PROMPT_LEAK = "prompt_leak"
    WRONG_LANGUAGE = "wrong_language"
    SCRIPT_CONVERTED = "script_converted"
    INVENTED_CITATION = "invented_citation"
    NO_CITATION = "no_citation"
    OFF_EVIDENCE = "off_evidence"
    UNSUPPORTED_NUMBER = "unsupported_number"
    UNSUPPORTED = "unsupported"
    ANSWER_TYPE = "answer_type"
    ROLE_INJECTION = "role_injection"
    UNSUPPORTED_ENTITY = "unsupported_entity"
    POLARITY_CHANGED = "polarity_changed"


class FallbackReason(StrEnum):
    """Why a generated answer was replaced by the extractive one."""

    DOCUMENT_SILENT = "document_silent"  # the extractive answerer refused: the LLM was not asked
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    HTTP_ERROR = "http_error"
    MALFORMED_RESPONSE = "malformed_response"
    LLM_ERROR = "llm_error"
    OUTPUT_CAPPED = "output_capped"
    # a guardrail that rejects the text
    EMPTY_OUTPUT = "empty_output"
    AMBIGUOUS_REFUSAL = "ambiguous_refusal"
    PROMPT_LEAK = "prompt_leak"
    WRONG_LANGUAGE = "wrong_language"
    NO_CITATION = "no_citation"
    OFF_EVIDENCE = "off_evidence"
    UNSUPPORTED_NUMBER = "unsupported_number"
    UNSUPPORTED = "unsupported"
    ANSWER_TYPE = "answer_type"
    ROLE_INJECTION = "role_injection"  # chat-template tokens or role markers in the answer
    UNSUPPORTED_ENTITY = "unsupported_entity"  # a name that is not in the cited paragraphs
    POLARITY_CHANGED = "polarity_changed"  # a negation added to or dropped from the evidence


@dataclass(frozen=True)
class Citation:
    """A paragraph an answer quotes: its id, language, full text, twin and quoted spans.

    ``twin_spans`` are the spans of the twin paragraph (``twin_id``) that say what the
    quoted spans say, for a page to highlight the translation. ``location`` says where in the
    file the paragraph is ("page 3" of a PDF, "§ Background" of a Word file or web page); None
    for text files.
    """

    paragraph_id: str
    language: str
    text: str
    twin_id: str | None
    score: float
    spans: tuple[tuple[int, int], ...] = ()
    twin_spans: tuple[tuple[int, int], ...] = ()
    location: str | None = None


@dataclass(frozen=True)
class Signals(Mapping):
    """What an answer was decided on; read as attributes or, like the 0.1 dict, by key.

    ``confidence`` and ``threshold``: the extractive answerer's P(the document answers) and
    the refusal threshold it was held to; ``support`` and ``llm_seconds``: the generative
    backend's share of supported key terms and its generation time. Unset ones are None
    and absent from the mapping.
    """

    confidence: float | None = None
    threshold: float | None = None
    support: float | None = None
    llm_seconds: float | None = None

    def __getitem__(self, key: str) -> float:
        value = getattr(self, key, None) if key in _SIGNAL_NAMES else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in _SIGNAL_NAMES if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_SIGNAL_NAMES = tuple(f.name for f in fields(Signals))


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
    backend: str = Backend.EXTRACTIVE
    standalone_question: str | None = None
    evidence_language: str | None = None
    signals: Signals = field(default_factory=Signals)
    seconds: float = 0.0
    # Generative backend only: why its answer was replaced by this extractive one
    # (None when it was not), and the guardrail checks that fired on its text.
    fallback_reason: str | None = None
    guardrails: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of the answer (``signals``: only the ones that are set)."""
        data = asdict(self)
        data["signals"] = dict(self.signals)
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The answer as JSON with readable Chinese (no \\u escapes)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)
