"""The web page's content, free of Gradio: session state, chat messages, source cards, the document.

:mod:`bilingual_qa.web` wires these functions to Gradio components; keeping them
here makes them plain functions of plain data, testable without a server.

Everything that reaches the browser is escaped here, because the page shows
text from people we do not control (questions, uploaded documents, file names):
text bound for Markdown components goes through :func:`md_escape`, text bound for
HTML components through :func:`html_escape`. The only markup is the page's own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from . import language as lang
from .prompts import ui_strings

if TYPE_CHECKING:
    from .answering import Answer, Citation
    from .document import Document, Paragraph

UI_LANGUAGES = (lang.EN, lang.HANT, lang.HANS)
MARKER = re.compile(r"\[(P\d+)\]")
#: Characters of a question shown in the chat and over the sources panel; a longer one (a
#: question refused for its length can be 20,000 characters) is cut there, with its length.
QUESTION_SHOWN_CHARS = 300

# --- UI language and strings ------------------------------------------------------------------


def ui_language(locale: str | None) -> str:
    """The page language for a browser locale or a toggle value.

    Args:
        locale: e.g. "en-US", "zh-TW", "zh-Hans-CN", "zh", or one of :data:`UI_LANGUAGES`.

    Returns:
        "en", "zh-Hant" or "zh-Hans": Traditional for Taiwan, Hong Kong, Macao and
        explicit Hant tags, Simplified for other Chinese locales, English otherwise.
    """
    tag = (locale or "").strip().replace("_", "-").lower()
    if not tag.startswith("zh"):
        return lang.EN
    parts = set(tag.split("-")[1:])
    if "hans" in parts:
        return lang.HANS
    if "hant" in parts or parts & {"tw", "hk", "mo"}:
        return lang.HANT
    return lang.HANS


def strings(ui: str) -> dict[str, str]:
    """The page's labels and messages in UI language ``ui`` (English when unknown)."""
    table = ui_strings()
    return dict(table.get(ui if ui in UI_LANGUAGES else lang.EN) or table[lang.EN])


def examples() -> list[str]:
    """Example questions about the default document, in English, 繁體 and 简体."""
    return list(ui_strings().get("examples", []))


def language_name(code: str, ui: str) -> str:
    """A paragraph or answer language ("en", "zh-Hant", …) named in UI language ``ui``."""
    key = {lang.EN: "lang_en", lang.HANT: "lang_zh_hant", lang.HANS: "lang_zh_hans"}.get(code, "lang_und")
    return strings(ui)[key]


# --- escaping ---------------------------------------------------------------------------------

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping
# all that Markdown could read as syntax (emphasis, links, lists, tables, autolinks,
# math) makes any text show as typed.
_MD_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:@=^\"'])")
# Characters Gradio's HTML component could read as template syntax (`${…}`, `{{…}}`),
# written as character references, which the browser turns back into text after parsing.
_TEMPLATE_CHARS = str.maketrans({"$": "&#36;", "{": "&#123;", "}": "&#125;", "`": "&#96;", "\\": "&#92;"})


def md_escape(text: str) -> str:
    """``text`` as Markdown that renders literally: no HTML, links, emphasis or math."""
    return _MD_SYNTAX.sub(r"\\\1", html.escape(text, quote=False))


def html_escape(text: str) -> str:
    """``text`` as HTML text (and attribute value) that shows literally."""
    return html.escape(text, quote=True).translate(_TEMPLATE_CHARS)


def _md_format(template: str, **params: object) -> str:
    """A Markdown template from ui.toml with its parameters escaped."""
    return template.format(**{k: md_escape(str(v)) for k, v in params.items()})


# --- session state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A localizable message: a key of prompts/ui.toml and its parameters (plain text)."""

    key: str
    params: Mapping[str, object] = field(default_factory=dict)

    def markdown(self, ui: str) -> str:
        """The message in UI language ``ui``, as Markdown with the parameters escaped."""
        return _md_format(strings(ui)[self.key], **self.params)


@dataclass(frozen=True)
class Exchange:
    """A question and what came of it: an answer, an error message, or nothing yet (pending).

    An answer keeps the aligned translations of the paragraphs it cites (its source cards
    show them), not the whole document: a tab's conversation holds no document or index.
    """

    question: str
    answer: Answer | None = None
    error: Message | None = None
    twins: tuple[Paragraph, ...] = ()  # the cited paragraphs' translations, for the source cards


def cited_twins(answer: Answer, document: Document) -> tuple[Paragraph, ...]:
    """The aligned translations of the paragraphs ``answer`` cites (what its source cards show)."""
    twins = (document.paragraph(c.twin_id) for c in answer.citations if c.twin_id)
    return tuple(dict.fromkeys(t for t in twins if t is not None))


@dataclass(frozen=True)
class Upload:
    """A tab's uploaded document as the tab knows it: a key, not the document.

    ``sha256`` (of the file's bytes) finds the indexed document in the page's shared cache,
    which may evict it and reopen it later; the rest is what the page shows about it.
    """

    sha256: str
    name: str  # the file name this tab uploaded (the same bytes may come under other names)
    paragraphs: int
    pairs: int
    unpaired: int

    @classmethod
    def of(cls, document: Document, name: str) -> Upload:
        """The key of an indexed ``document`` uploaded as ``name``."""
        return cls(sha256=document.sha256, name=name, **document_stats(document))

    def stats(self) -> dict[str, int]:
        """Paragraph, aligned-pair and unpaired counts (as :func:`document_stats`)."""
        return {"paragraphs": self.paragraphs, "pairs": self.pairs, "unpaired": self.unpaired}


@dataclass(frozen=True)
class Notice:
    """A message from the page itself in the chat (a document was loaded, an upload failed).

    ``error``: the message says something failed (an upload refused, the server busy), and the
    chat shows it as an error, in a message of its own.
    """

    message: Message
    error: bool = False


@dataclass(frozen=True)
class Session:
    """One browser tab's state: its document and its conversation (kept in a ``gr.State``).

    Immutable: handlers return a new Session, so a half-finished handler never
    leaves a tab with a half-updated one. An uploaded document is held by its key
    (:class:`Upload`), never as an engine: the page's cache owns the engines.
    """

    upload: Upload | None = None  # None: the process-wide default document
    entries: tuple[Exchange | Notice, ...] = ()
    shown: int | None = None  # the entry whose sources the panel shows; None: the latest answer
    ui: str = lang.EN  # the page's language in this tab

    def add(self, entry: Exchange | Notice) -> Session:
        """A copy with ``entry`` appended (and the sources panel following the newest answer)."""
        return replace(self, entries=(*self.entries, entry), shown=None)

    def with_last(self, entry: Exchange | Notice) -> Session:
        """A copy whose last entry is replaced by ``entry``."""
        return replace(self, entries=(*self.entries[:-1], entry), shown=None)

    def history(self) -> list[tuple[str, str]]:
        """Earlier answered (question, answer text) pairs, oldest first, for follow-ups."""
        return [(e.question, e.answer.text) for e in self.entries if isinstance(e, Exchange) and e.answer]

    def shown_exchange(self) -> tuple[int, Exchange] | None:
        """The exchange whose sources the panel shows, with its index, if any."""
        if self.shown is not None and 0 <= self.shown < len(self.entries):
            entry = self.entries[self.shown]
            return (self.shown, entry) if isinstance(entry, Exchange) else None
        for i in range(len(self.entries) - 1, -1, -1):
            if isinstance(self.entries[i], Exchange):
                return i, self.entries[i]
        return None


# --- chat ---------------------------------------------------------------------------------------


def card_id(turn: int, paragraph_id: str) -> str:
    """The HTML id of a source card: unique per answer, so markers of older answers stay distinct."""
    return f"src-{turn}-{paragraph_id}"


def question_shown(question: str, ui: str) -> str:
    """A question as the page shows it (plain text): whole, or cut with "…" and its length.

    A question longer than :data:`QUESTION_SHOWN_CHARS` characters shows its beginning, "…"
    and how many characters it has, e.g. "(20,000 characters)", in the chat and over the
    sources panel; the engine is always asked the whole question.
    """
    if len(question) <= QUESTION_SHOWN_CHARS:
        return question
    start = question[:QUESTION_SHOWN_CHARS].rstrip()
    return strings(ui)["question_cut"].format(start=start, count=f"{len(question):,}")


def error_markdown(markdown: str) -> str:
    """An error message (Markdown) as a chat message of its own, marked for the page to style.

    The page's own markup wraps the message: ``<div class="bqa-error" role="alert">``, with
    blank lines so that the Markdown inside it (already escaped) is still read as Markdown.
    """
    return f'<div class="bqa-error" role="alert">\n\n⚠️ {markdown}\n\n</div>'


def answer_markdown(text: str, turn: int) -> str:
    """Answer text as Markdown: escaped, each [P#] marker a link to its source card."""
    pieces: list[str] = []
    last = 0
    for match in MARKER.finditer(text):
        pieces.append(md_escape(text[last : match.start()]))
        pid = match.group(1)
        pieces.append(f"[\\[{pid}\\]](#{card_id(turn, pid)})")
        last = match.end()
    pieces.append(md_escape(text[last:]))
    return "".join(pieces)


def chat_messages(
    session: Session, ui: str, partial: str | None = None
) -> tuple[list[dict[str, str]], list[int]]:
    """The conversation as Gradio chat messages, and the entry each message belongs to.

    Args:
        session: the tab's session.
        ui: the UI language, for the page's own messages.
        partial: while an answer streams, the part of the last answer shown so far.

    Returns:
        (messages, owners): ``{"role", "content"}`` dicts with Markdown content, and
        for each message the index of its entry in ``session.entries``. An error (a refused
        question, a failed upload) is a message of its own in :func:`error_markdown`'s markup,
        never part of an answer; the page shows every message in a bubble of its own.
    """
    text = strings(ui)
    messages: list[dict[str, str]] = []
    owners: list[int] = []
    last = len(session.entries) - 1
    for i, entry in enumerate(session.entries):
        if isinstance(entry, Notice):
            notice = entry.message.markdown(ui)
            if entry.error:
                notice = error_markdown(notice)
            messages.append({"role": "assistant", "content": notice})
            owners.append(i)
            continue
        messages.append({"role": "user", "content": md_escape(question_shown(entry.question, ui))})
        owners.append(i)
        if entry.error is not None:
            reply = error_markdown(entry.error.markdown(ui))
        elif partial is not None and i == last:
            reply = answer_markdown(partial, i)
        elif entry.answer is None:
            reply = f"*{md_escape(text['searching'])}*"
        else:
            reply = answer_markdown(entry.answer.text, i)
        messages.append({"role": "assistant", "content": reply})
        owners.append(i)
    return messages, owners


# Streaming units: a whole [P#] marker, one CJK character, a word with its trailing
# spaces, or any other single character, so a prefix never cuts a marker in half.
_STREAM_UNIT = re.compile(rf"\[P\d+\]|[{lang.WIDE}]|[^\s{lang.WIDE}\[]+\s*|\s+|.")


def stream_prefixes(text: str, steps: int = 24) -> list[str]:
    """Growing prefixes of ``text`` ending with the whole text, cut between streaming units.

    Args:
        text: the answer text.
        steps: about how many prefixes to return (fewer for short texts).

    Returns:
        Non-empty prefixes, the last one equal to ``text`` (``[text]`` for an empty text).
    """
    units = _STREAM_UNIT.findall(text)
    if len(units) <= 1:
        return [text]
    size = max(1, -(-len(units) // max(1, steps)))
    prefixes = ["".join(units[:end]) for end in range(size, len(units), size)]
    return [*prefixes, text]


# --- sources panel ------------------------------------------------------------------------------


def highlight(text: str, spans: Sequence[tuple[int, int]], klass: str | None = None) -> str:
    """``text`` as escaped HTML with the character ``spans`` wrapped in <mark> (of class ``klass``)."""
    tag = f'<mark class="{html_escape(klass)}">' if klass else "<mark>"
    out: list[str] = []
    pos = 0
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in spans):
        if end <= pos:
            continue
        start = max(start, pos)
        out.append(html_escape(text[pos:start]))
        out.append(f"{tag}{html_escape(text[start:end])}</mark>")
        pos = end
    out.append(html_escape(text[pos:]))
    return "".join(out)


def _side(
    paragraph_id: str, language: str, body: str, badge: str, ui: str, *, cited: bool, where: str | None = None
) -> str:
    """One half of a source card: a paragraph's id, language, where in the file, and (escaped) text."""
    place = f' · <span class="bqa-where">{html_escape(where)}</span>' if where else ""
    head = (
        f'<div class="bqa-side-head"><span class="bqa-pid">{html_escape(paragraph_id)}</span> '
        f"{html_escape(language_name(language, ui))} · {html_escape(badge)}{place}</div>"
    )
    klass = "bqa-side bqa-cited" if cited else "bqa-side"
    return f'<div class="{klass}" lang="{html_escape(language)}">{head}<p class="bqa-text">{body}</p></div>'


def source_card(citation: Citation, twin: Paragraph | None, turn: int, ui: str) -> str:
    """One cited paragraph beside its aligned translation (English left, Chinese right).

    The quoted sentences are highlighted in the cited paragraph (``<mark>``) and the
    sentences of the translation that say the same (``citation.twin_spans``) in a second,
    quieter colour (``<mark class="bqa-twin">``); :func:`legend_html` explains the two.

    Args:
        citation: the cited paragraph, with the quoted character spans and the twin's.
        twin: its aligned translation (``citation.twin_id``), if it has one.
        turn: the exchange's index, which makes the card's HTML id unique.
        ui: the UI language of the labels.

    Returns:
        An escaped HTML ``<article>`` whose id is :func:`card_id`.
    """
    text = strings(ui)
    quoted = _side(
        citation.paragraph_id,
        citation.language,
        highlight(citation.text, citation.spans),
        text["quoted"],
        ui,
        cited=True,
        where=citation.location,
    )
    if twin is None:
        other = f'<div class="bqa-side bqa-missing">{html_escape(text["no_translation"])}</div>'
    else:
        spans = citation.twin_spans if twin.id == citation.twin_id else ()
        body = highlight(twin.text, spans, TWIN_MARK)
        other = _side(twin.id, twin.language, body, text["translation"], ui, cited=False, where=twin.location)
    english, chinese = (other, quoted) if lang.is_chinese(citation.language) else (quoted, other)
    return (
        f'<article class="bqa-card" id="{card_id(turn, citation.paragraph_id)}">'
        f'<div class="bqa-pair">{english}{chinese}</div></article>'
    )


TWIN_MARK = "bqa-twin"


def legend_html(ui: str, twin: bool = True) -> str:
    """The key to the source cards' two highlight colours (the quote; the same in the translation).

    Args:
        ui: the UI language.
        twin: whether a card shows highlighted sentences in a translation (else only the quote's key).
    """
    text = strings(ui)
    keys = [("bqa-swatch", text["legend_quoted"])]
    if twin:
        keys.append((f"bqa-swatch {TWIN_MARK}", text["legend_twin"]))
    items = (
        f'<span class="bqa-key"><mark class="{klass}" aria-hidden="true"></mark>{html_escape(label)}</span>'
        for klass, label in keys
    )
    return f'<p class="bqa-legend">{"".join(items)}</p>'


def _panel(parts: Sequence[str], ui: str) -> str:
    """The sources panel: a heading that folds it (on a phone, where it sits under the chat) and ``parts``."""
    title = html_escape(strings(ui)["sources_title"])
    return (
        f'<details class="bqa-fold" open><summary class="bqa-summary"><h3 class="bqa-title">{title}</h3>'
        f'</summary><div class="bqa-sources">{"".join(parts)}</div></details>'
    )


def sources_html(session: Session, ui: str) -> str:
    """The sources panel for the exchange the session shows (or a hint before the first answer)."""
    text = strings(ui)
    shown = session.shown_exchange()
    if shown is None:
        return _panel([f'<p class="bqa-hint">{html_escape(text["sources_hint"])}</p>'], ui)
    turn, exchange = shown
    parts = [f'<p class="bqa-question">{html_escape(question_shown(exchange.question, ui))}</p>']
    answer = exchange.answer
    if answer is None:  # the chat says what went wrong; or the answer is still coming
        if exchange.error is None:
            parts.append(f'<p class="bqa-hint">{html_escape(text["searching"])}</p>')
        return _panel(parts, ui)
    if answer.standalone_question:
        parts.append(
            f'<p class="bqa-standalone"><span>{html_escape(text["searched_as"])}:</span> '
            f"<q>{html_escape(answer.standalone_question)}</q></p>"
        )
    twins = {p.id: p for p in exchange.twins}
    if not answer.citations:
        parts.append(f'<p class="bqa-hint">{html_escape(text["no_sources"])}</p>')
    else:
        twin_marked = any(c.twin_spans and c.twin_id in twins for c in answer.citations)
        parts.append(legend_html(ui, twin=twin_marked))
    for citation in answer.citations:
        parts.append(source_card(citation, twins.get(citation.twin_id or ""), turn, ui))
    meta = f"{language_name(answer.language, ui)} · {text['seconds'].format(seconds=f'{answer.seconds:.2f}')}"
    parts.append(f'<p class="bqa-meta">{html_escape(meta)}</p>')
    return _panel(parts, ui)


# --- document tab ---------------------------------------------------------------------------------


def aligned_rows(document: Document) -> list[tuple[Paragraph | None, Paragraph | None]]:
    """The document as (English, Chinese) rows in reading order; unpaired paragraphs get a None."""
    rows: list[tuple[Paragraph | None, Paragraph | None]] = []
    for members in document.units:
        first = document.paragraphs[members[0]]
        twin = document.paragraphs[members[1]] if len(members) > 1 else None
        rows.append((twin, first) if lang.is_chinese(first.language) else (first, twin))
    return rows


def _cell(paragraph: Paragraph | None, missing: str) -> str:
    if paragraph is None:
        return f'<td class="bqa-missing" title="{html_escape(missing)}">—</td>'
    where = f' <span class="bqa-where">{html_escape(paragraph.location)}</span>' if paragraph.location else ""
    return (
        f'<td lang="{html_escape(paragraph.language)}">'
        f'<span class="bqa-pid">{html_escape(paragraph.id)}</span>{where} {html_escape(paragraph.text)}</td>'
    )


def document_html(document: Document, ui: str) -> str:
    """The whole document as an aligned side-by-side table (English | 中文)."""
    text = strings(ui)
    rows = []
    for english, chinese in aligned_rows(document):
        klass = ' class="bqa-unpaired"' if english is None or chinese is None else ""
        missing = text["no_translation"]
        rows.append(f"<tr{klass}>{_cell(english, missing)}{_cell(chinese, missing)}</tr>")
    return (
        f'<p class="bqa-hint">{html_escape(text["document_hint"])}</p>'
        f'<table class="bqa-doc"><thead><tr><th>{html_escape(text["english"])}</th>'
        f"<th>{html_escape(text['chinese'])}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def document_stats(document: Document) -> dict[str, int]:
    """Paragraph, aligned-pair and unpaired counts of a document."""
    paired = sum(1 for p in document.paragraphs if p.twin_id)
    return {
        "paragraphs": len(document.paragraphs),
        "pairs": paired // 2,
        "unpaired": len(document.paragraphs) - paired,
    }


def document_status(source: Document | Upload, is_default: bool, ui: str) -> str:
    """One Markdown line naming the tab's document and its alignment counts."""
    text = strings(ui)
    marker = text["default_marker"] if is_default else ""
    stats = source.stats() if isinstance(source, Upload) else document_stats(source)
    return _md_format(text["document_status"], name=source.name, default=marker, **stats)


def missing_document_html(upload: Upload, ui: str) -> str:
    """The Document tab of a tab whose uploaded document the server no longer has."""
    return f'<p class="bqa-hint">{html_escape(strings(ui)["upload_gone"].format(name=upload.name))}</p>'


def loaded_message(upload: Upload) -> Message:
    """The chat notice after a document was loaded."""
    return Message("document_loaded", {"name": upload.name, **upload.stats()})
