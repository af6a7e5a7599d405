"""Prompts and messages as data: text templates read from the prompts/ folder."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from .errors import ConfigError

_HERE = Path(__file__).resolve().parent


def prompts_dir() -> Path:
    """The prompts folder: inside the installed wheel, else the checkout's top-level prompts/."""
    for candidate in (_HERE / "prompts", _HERE.parent.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("prompts folder not found; reinstall bilingual-qa")


@cache
def messages(language: str) -> dict[str, str]:
    """Localized answerer messages for ``language`` ("en", "zh-Hant", "zh-Hans"; or "unserved").

    Raises:
        ConfigError: the messages file is missing, malformed or lacks the language.
    """
    path = prompts_dir() / "messages.toml"
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if language not in table:
        raise ConfigError(f"{path} has no messages for {language}")
    return dict(table[language])


def unserved_reply(language: str) -> str:
    """The reply to a question in a script the product does not serve, in ``language`` if it has one.

    Raises:
        ConfigError: the messages file is missing, malformed or lacks the [unserved] table.
    """
    replies = messages("unserved")
    return replies.get(language) or replies["und"]


@cache
def ui_strings() -> dict[str, object]:
    """The web page's labels and example questions (prompts/ui.toml), one table per UI language.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    path = prompts_dir() / "ui.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


@cache
def template(name: str) -> str:
    """A prompt template of the generative backend: prompts/llm/<name>.txt (e.g. "system.en").

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    path = prompts_dir() / "llm" / f"{name}.txt"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
