"""bilingual-qa: answer English or Chinese questions about a bilingual document, with citations.

>>> from bilingual_qa import Assistant
>>> bot = Assistant()
>>> bot.ask("What mechanism will Chongqing set up with the diplomatic missions?").text
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Settings
from .errors import (
    BilingualQAError,
    ConfigError,
    DocumentError,
    IndexStoreError,
    ModelError,
    QuestionError,
)

if TYPE_CHECKING:
    from .answer import Answer, Backend, Citation, FallbackReason, Guardrail, Signals
    from .assistant import Assistant
    from .document import Paragraph

__all__ = [
    "Answer",
    "Assistant",
    "Backend",
    "BilingualQAError",
    "Citation",
    "ConfigError",
    "DocumentError",
    "FallbackReason",
    "Guardrail",
    "IndexStoreError",
    "ModelError",
    "Paragraph",
    "QuestionError",
    "Settings",
    "Signals",
]
__version__ = "0.1.0"

_LAZY = {
    "Assistant": "assistant",
    "Answer": "answer",
    "Citation": "answer",
    "Backend": "answer",
    "FallbackReason": "answer",
    "Guardrail": "answer",
    "Signals": "answer",
    "Paragraph": "document",
}


def __getattr__(name: str) -> object:
    # The pipeline imports numpy and friends; keep `import bilingual_qa` (and --help) light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
