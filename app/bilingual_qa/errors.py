"""The one exception family of bilingual-qa.

Every error a user can cause or meet (a bad question, a bad document, a model
that cannot be loaded, a broken index) is a :class:`BilingualQAError`, whose
message is one readable line: the CLI prints it and exits non-zero, the web page
shows it in the chat.
"""

from __future__ import annotations


class BilingualQAError(Exception):
    """Base class: a user-facing error with a one-line message."""

    exit_code = 2


class QuestionError(BilingualQAError):
    """The question is empty, too long, or contains control characters."""


class DocumentError(BilingualQAError):
    """The document is missing, empty, a directory, binary or not UTF-8."""


class ModelError(BilingualQAError):
    """The embedding model cannot be found, materialized or loaded."""

    exit_code = 3


class IndexStoreError(BilingualQAError):
    """A built index is unreadable or cannot be written."""

    exit_code = 4


class ConfigError(BilingualQAError):
    """A setting has an invalid value."""


class EvaluationError(BilingualQAError):
    """A reference set or baseline is malformed, empty or made for another document."""


class BenchmarkError(BilingualQAError):
    """A benchmark stage could not run (a subprocess failed, a server never answered)."""
