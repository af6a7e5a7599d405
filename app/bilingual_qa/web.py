"""Chat web page (Gradio) over :class:`bilingual_qa.Assistant`: ``bilingual-qa serve``.

The page: a chat that streams answers and keeps follow-ups in context, a sources
panel with one card per cited paragraph beside its aligned translation, a
Document tab with the whole document side by side, example questions in English,
繁體 and 简体, labels in English or Chinese, and uploads of another .txt/.md/.pdf/.docx/.html
document for one browser tab. ``/ask`` is the programmatic endpoint: the same
contract as :meth:`Assistant.ask`, as JSON, for ``gradio_client``.

Gradio is imported only inside this module's functions (``import bilingual_qa``
and the CLI stay light); what the page shows is rendered, and escaped, by
:mod:`bilingual_qa.webpage`.

Concurrency: one Assistant (and one embedding model) per process, shared by every
request; :meth:`Assistant.ask` is safe to call from many threads and the embedder
serializes its forward passes. Each browser tab has its own :class:`Session` in a
``gr.State`` (dropped after ``settings.session_minutes`` idle): its conversation and,
after an upload, the upload's key. Uploaded documents live in one :class:`UploadCache`
per page, shared by content hash and bounded by ``settings.upload_cache_mb``; their
engines share the model. Indexing runs :data:`INDEXING_SLOTS` at a time and a further
upload is told at once that the server is busy. An upload is ready once its paragraphs are
encoded (a progressive build); its sentences are encoded after, in a thread that keeps its
indexing slot until the index is saved.

Limits at the HTTP layer: :class:`BodyLimit` refuses request bodies over
:data:`MAX_REQUEST_BYTES` (file uploads: their own, larger limit) with 413 before anything
reads them, whoever sends them (it runs before the password check). With a password
(``--auth``), :class:`LoginLimit` refuses a client's logins with 429 after
:data:`LOGIN_FAILURES` failures in :data:`LOGIN_WINDOW` seconds, and :class:`LoginRequired`
asks Gradio's own login check before the Gradio routes that skip it (``/gradio_api/cancel``,
``/gradio_api/reset``, the heartbeat, streams): without the login cookie they get 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import language as lang
from . import webpage as page
from .config import DEFAULT_HOST, DEFAULT_PORT, Settings
from .document import SUFFIXES
from .errors import BilingualQAError, ConfigError, QuestionError
from .files import atomic_write, sha256_bytes
from .gradio_import import import_gradio
from .webpage import Exchange, Message, Notice, Session, Upload

if TYPE_CHECKING:
    import gradio as gr

    from .assistant import Assistant
    from .embedding import Embedder

log = logging.getLogger(__name__)

#: Largest document a browser may upload. Indexing is CPU work on the server everyone shares
#: and grows with the text (the bench report measures passages per second), so the limit is
#: a long report, not a book.
MAX_UPLOAD_BYTES = 256 * 1024
UPLOAD_SUFFIXES = SUFFIXES
#: Seconds between streamed chunks: an extractive answer is ready at once, but the page
#: streams it like an LLM backend would, so the experience does not change with the backend.
STREAM_DELAY = 0.025
STREAM_STEPS = 24
#: /ask calls run at once; more wait in Gradio's queue, in order. Answering takes tens of
#: milliseconds of CPU and the model encodes one batch at a time, so this bounds threads,
#: not throughput.
ASK_CONCURRENCY = 16
#: Uploads indexed at once (embedding every passage is the heavy job, whoever asks). A further
#: upload that needs indexing is told at once that the server is busy, not queued silently.
INDEXING_SLOTS = 2
#: Largest request body for anything but a file upload. /ask and the queue carry a question
#: (2,000 characters by default) and a history (history_limit: 160,000 characters by default,
#: under 0.5 MB as UTF-8); nothing else the page sends comes near.
MAX_REQUEST_BYTES = 1024 * 1024
#: Gradio's file upload route, whose bodies get the upload limit instead (see start()).
UPLOAD_ROUTE = "/gradio_api/upload"
#: Room for a multipart body's framing (boundary, part headers) around the uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
#: Characters an answer may take in /ask's history, for its size limit: an extractive answer
#: quotes at most a few sentences, an LLM answer is cut at llm_max_tokens (400 by default).
HISTORY_ANSWER_CHARS = 4000
#: Failed logins a client may make in LOGIN_WINDOW seconds; then 429 until the oldest of them is
#: a window old. A person who mistypes has five tries a minute; a script has five guesses a
#: minute per address (7,200 a day) instead of the hundreds a second the login route answers.
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0
#: Clients whose failures are remembered (least recently failed forgotten first): at most
#: LOGIN_FAILURES timestamps each, a few MB in all. Someone with more addresses than this has
#: more guesses whatever the table remembers.
LOGIN_CLIENTS = 10_000
#: What Gradio's login route answers to wrong credentials (400; 401 should a version use it).
LOGIN_FAILED_STATUSES = frozenset({400, 401})
#: Gradio's password form; its API routes are under GRADIO_API.
LOGIN_ROUTE = "/login"
GRADIO_API = "/gradio_api/"
#: The route whose answer says whether a request is logged in (Gradio's own check, reused).
LOGIN_CHECK_ROUTE = "/gradio_api/login_check"
#: GET routes under GRADIO_API that act on a session yet answer without login in Gradio 6:
#: the heartbeat (closing it ends the session's events), media streams, the run history (which
#: may use the server's own Hugging Face token). Every other method under GRADIO_API needs the
#: login too (see LoginRequired).
LOGIN_REQUIRED_GETS = ("heartbeat/", "stream/", "run-history/")

_ASSETS = Path(__file__).resolve().parent / "web_assets"


@dataclass
class Controls:
    """The page's components that handlers update (the order of :meth:`labelled` is the outputs')."""

    session: Any
    locale: Any  # hidden: the browser's language, filled in by JavaScript on load
    ui: Any
    title: Any
    status: Any
    chat_tab: Any
    document_tab: Any
    chatbot: Any
    question: Any
    send: Any
    examples: Any
    upload: Any
    default_document: Any
    new_chat: Any
    ask_new: Any  # shown when the latest question was taken as a follow-up
    cancel: Any  # shown while this tab's upload is being indexed
    refused: Any  # hidden button: page.js clicks it for a file too large to send (see refuse_upload)
    refused_file: Any  # hidden: that file's name and size, filled in by the click's JavaScript
    sources: Any
    document: Any

    # The components whose text depends on the UI language: the outputs of a relabel, in
    # this order. ChatPage.labels names its updates by these fields, so the two cannot drift.
    LABELLED: ClassVar[tuple[str, ...]] = (
        "session", "ui", "title", "status", "chat_tab", "document_tab", "chatbot", "question",
        "send", "examples", "upload", "default_document", "new_chat", "ask_new", "cancel", "sources",
        "document",
    )  # fmt: skip

    def labelled(self) -> list[Any]:
        """Every component whose text depends on the UI language (in :attr:`LABELLED` order)."""
        return [getattr(self, name) for name in self.LABELLED]


class ChatPage:
    """The page's handlers, over one shared default Assistant.

    Args:
        assistant: the process-wide Assistant (default document, loaded model).
        max_upload_bytes: the largest document a tab may upload.
        stream_delay: seconds between streamed answer chunks (0 streams without pausing).
        cache_bytes: memory budget of the uploaded documents' cache; by default
            ``settings.upload_cache_mb`` MiB of the assistant's settings.
    """

    def __init__(
        self,
        assistant: Assistant,
        *,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        stream_delay: float = STREAM_DELAY,
        cache_bytes: int | None = None,
    ) -> None:
        self.assistant = assistant
        self.max_upload_bytes = max_upload_bytes
        self.stream_delay = stream_delay
        settings = assistant.settings
        # Uploaded files and their indexes live in a private folder removed with the page, so
        # strangers' documents neither pile up in nor mix with the index folder. The file is
        # kept (files/<sha256>/) so that an engine evicted from the cache can be reopened from
        # its saved index without embedding anything.
        upload_dir = Path(tempfile.mkdtemp(prefix="bilingual-qa-uploads-"))
        self._files = upload_dir / "files"
        # Uploads are distinct documents (each stored as document.<its suffix>), not versions of
        # one: none is pruned as an old version; the folder goes with the page.
        # They stay FAISS files there even when the page's own document is in a shared Milvus:
        # a tab's upload is private to this replica and goes with it.
        self._upload_settings = settings.replace(
            index_dir=upload_dir / "index",
            index_versions=2**31,
            vector_store="faiss" if settings.vector_store == "milvus" else settings.vector_store,
        )
        weakref.finalize(self, shutil.rmtree, upload_dir, True)
        self.uploads = UploadCache(settings.upload_cache_mb * 2**20 if cache_bytes is None else cache_bytes)
        self._indexing = threading.BoundedSemaphore(INDEXING_SLOTS)
        self._cancels: dict[str, threading.Event] = {}  # tab -> its upload's cancel switch
        self._cancels_lock = threading.Lock()
        self._finishing: set[threading.Thread] = set()  # uploads' builds finishing behind the page
        self.history_limit = history_limit(settings)

    # --- rendering helpers ------------------------------------------------------------------

    def _chat(self, session: Session, ui: str, partial: str | None = None) -> list[dict[str, str]]:
        return page.chat_messages(session, ui, partial)[0]

    def _engine(self, session: Session) -> Assistant:
        """The tab's engine: the default one, or its upload's from the cache (reopened if evicted).

        Raises:
            _UploadGone: the upload cannot be reopened (its file or saved index is gone).
        """
        upload = session.upload
        if upload is None:
            return self.assistant
        try:
            return self.uploads.get_or_open(upload.sha256, lambda: self._reopen(upload.sha256))
        except _Busy:  # met an upload of the same file waiting for an indexing slot
            raise _UploadGone from None

    def _document_view(self, session: Session) -> tuple[str, str]:
        """The tab's document status line (Markdown) and Document tab (HTML)."""
        ui = session.ui
        if session.upload is None:
            document = self.assistant.document
            return page.document_status(document, True, ui), page.document_html(document, ui)
        status = page.document_status(session.upload, False, ui)
        try:
            document = self._engine(session).document
        except _UploadGone:
            return status, page.missing_document_html(session.upload, ui)
        return status, page.document_html(document, ui)

    def labels(self, ui: str, session: Session) -> list[Any]:
        """Switch the tab to UI language ``ui``: updates for :meth:`Controls.labelled`.

        The language is kept in the session, on the server, so that the next handler
        reads it there rather than from a radio button the browser may not have updated yet.
        """
        import gradio as gr

        ui = ui if ui in page.UI_LANGUAGES else page.ui_language(ui)
        session = replace(session, ui=ui)
        text = page.strings(ui)
        status, document = self._document_view(session)
        is_default = session.upload is None
        updates = {
            "session": session,
            "ui": gr.update(value=ui, label=text["ui_language"]),
            "title": _title(text),
            "status": status,
            "chat_tab": gr.update(label=text["tab_chat"]),
            "document_tab": gr.update(label=text["tab_document"]),
            "chatbot": gr.update(
                value=self._chat(session, ui), label=text["chat_label"], placeholder=text["chat_placeholder"]
            ),
            "question": gr.update(placeholder=text["question_placeholder"]),
            "send": gr.update(value=text["send"]),
            "examples": gr.update(label=text["examples_label"], visible=is_default),
            "upload": gr.update(label=text["upload"]),
            "default_document": gr.update(value=text["default_document"]),
            "new_chat": gr.update(value=text["new_chat"]),
            "cancel": gr.update(value=text["cancel_upload"]),
            "ask_new": gr.update(value=text["ask_new"], visible=_merged(session) is not None),
            "sources": page.sources_html(session, ui),
            "document": document,
        }
        return [updates[name] for name in Controls.LABELLED]

    def on_load(self, locale: str, session: Session) -> list[Any]:
        """Label the page in the browser's language (``locale`` comes from ``navigator.language``)."""
        return self.labels(page.ui_language(locale), session)

    # --- chat ---------------------------------------------------------------------------------

    async def chat(
        self, question: str, session: Session, on_its_own: bool = False
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Answer ``question`` in the tab's conversation, streaming the answer.

        Args:
            question: the text typed (or the example clicked).
            session: the tab's session; its earlier answers give follow-ups their context.
            on_its_own: ask without the earlier turns (the visitor said it is a new question).

        Yields:
            (chat messages, question box, session, sources panel): first the question with
            a "searching" placeholder, then the answer as it grows, then the final state,
            whose answer text replaces whatever was streamed.
        """
        ui = session.ui
        import gradio as gr

        text = page.strings(ui)
        if not isinstance(question, str) or not question.strip():
            # Nothing to ask: the box itself says what to do, where the visitor is looking.
            hint = gr.update(value="", placeholder=text["empty_question"])
            yield self._chat(session, ui), hint, session, page.sources_html(session, ui)
            return
        pending = session.add(Exchange(question))
        waiting = page.sources_html(pending, ui)
        box = gr.update(value="", placeholder=text["question_placeholder"])  # the hint, if shown, goes
        yield self._chat(pending, ui), box, pending, waiting
        shown = ""
        exchange = None
        history = [] if on_its_own else session.history()
        async for item in self._produce(session, question, history):
            if isinstance(item, Exchange):
                exchange = item
                break
            # Type the new text out in a few steps: an LLM's tokens arrive a few at a time
            # and show at once, a whole extractive answer reads like it is being written.
            for prefix in page.stream_prefixes(item, STREAM_STEPS // 3 if shown else STREAM_STEPS):
                yield self._chat(pending, ui, partial=shown + prefix), "", pending, waiting
                await asyncio.sleep(self.stream_delay)
            shown += item
        done = pending.with_last(exchange)
        sources = page.sources_html(done, ui)
        yield self._chat(done, ui), "", done, sources

    async def _produce(
        self, session: Session, question: str, history: list[tuple[str, str]]
    ) -> AsyncIterator[str | Exchange]:
        """The engine's answer as text as it comes (coalesced), then the finished :class:`Exchange`.

        The engine runs in a worker thread so that the server keeps serving others; its
        ``ask_stream`` gives text chunks, then the Answer. The tab's engine is found there
        too, since an evicted upload is reopened from disk first.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Exchange] = asyncio.Queue()

        def put(item: str | Exchange) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                assistant = self._engine(session)
            except _UploadGone:
                name = session.upload.name if session.upload else ""
                put(Exchange(question, error=Message("upload_gone", {"name": name})))
                return
            put(self._answer(assistant, question, history, on_text=put))

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                text = ""
                while isinstance(item, str):
                    text += item
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                if text:
                    yield text
                if isinstance(item, Exchange):
                    yield item
                    return
        finally:
            await worker

    def _answer(
        self, assistant: Assistant, question: str, history: list[tuple[str, str]], on_text: Any = None
    ) -> Exchange:
        """Ask the engine, streaming its text to ``on_text``; a failure becomes a chat message."""
        answer = None
        try:
            for item in assistant.ask_stream(question, history=history):
                if isinstance(item, str):
                    if on_text is not None:
                        on_text(item)
                else:
                    answer = item
        except BilingualQAError as exc:
            return Exchange(question, error=Message("question_failed", {"reason": str(exc)}))
        except Exception:
            log.exception("answering failed for a question of %d characters", len(question))
            return Exchange(question, error=Message("engine_failed"))
        if answer is None:
            log.error("the engine's stream ended without an answer")
            return Exchange(question, error=Message("engine_failed"))
        return Exchange(question, answer=answer, twins=page.cited_twins(answer, assistant.document))

    async def ask_as_new(self, session: Session) -> AsyncIterator[tuple[Any, ...]]:
        """Ask the latest question again, on its own, when it had been taken as a follow-up."""
        merged = _merged(session)
        if merged is None:
            yield self._chat(session, session.ui), "", session, page.sources_html(session, session.ui)
            return
        async for update in self.chat(merged.question, session, on_its_own=True):
            yield update

    def ask_new_button(self, session: Session) -> Any:
        """The "ask as a new question" button: shown only after an answer to a condensed follow-up."""
        import gradio as gr

        return gr.update(visible=_merged(session) is not None)

    async def chat_example(self, sample: list[str], session: Session) -> AsyncIterator[tuple[Any, ...]]:
        """Ask a clicked example question (``sample`` is the example's row)."""
        async for update in self.chat(sample[0] if sample else "", session):
            yield update

    def new_chat(self, session: Session) -> tuple[Any, ...]:
        """Forget the conversation; the tab keeps its document and language."""
        fresh = Session(upload=session.upload, ui=session.ui)
        return self._chat(fresh, fresh.ui), fresh, page.sources_html(fresh, fresh.ui)

    def show_sources(self, session: Session, event: gr.SelectData) -> tuple[Any, ...]:
        """Show the sources of the answer that was clicked in the chat."""
        import gradio as gr

        owners = page.chat_messages(session, session.ui)[1]
        index = event.index if isinstance(event.index, int) else None
        if index is None or not 0 <= index < len(owners):
            return gr.skip(), gr.skip()
        shown = replace(session, shown=owners[index])
        return shown, page.sources_html(shown, shown.ui)

    # --- documents ---------------------------------------------------------------------------

    def load_document(
        self, path: str | None, session: Session, progress: gr.Progress | None = None, tab: str | None = None
    ) -> tuple[Any, ...]:
        """Index an uploaded document (.txt, .md, .pdf, .docx, .html, .odt, .epub) and use it in this tab.

        The same bytes uploaded by several tabs are indexed once and shared (by sha256);
        while both indexing slots are taken, an upload that needs indexing is answered at
        once with a "busy" message.

        Args:
            path: the uploaded file (Gradio's temporary copy), or None.
            session: the tab's session.
            progress: Gradio's progress tracker (shown over the chat while indexing).
            tab: the browser tab's key; :meth:`cancel_upload` with it stops the indexing.

        Returns:
            (chat messages, session, sources panel, document status, document table,
            examples update).
            A bad file leaves the tab's document as it was and says why in the chat.
        """
        if not path:
            return self._document_outputs(session)
        cancel = threading.Event()
        if tab is not None:
            with self._cancels_lock:
                self._cancels[tab] = cancel
        try:
            outcome = self._index_upload(Path(path), session.ui, progress, cancel)
        finally:
            # The bytes are in the page's private folder now; Gradio would keep serving its copy.
            Path(path).unlink(missing_ok=True)
            if tab is not None:
                with self._cancels_lock:
                    if self._cancels.get(tab) is cancel:
                        del self._cancels[tab]
        if isinstance(outcome, Message):
            # Refused, failed or busy: an error in a chat message of its own (a cancel is no error).
            notice = Notice(outcome, error=outcome.key != "upload_cancelled")
            return self._document_outputs(session.add(notice))
        # A new document starts a new conversation: earlier answers cite another text.
        fresh = Session(upload=outcome, ui=session.ui).add(Notice(page.loaded_message(outcome)))
        return self._document_outputs(fresh)

    def cancel_upload(self, tab: str | None) -> None:
        """Stop the indexing of ``tab``'s upload at its next chunk of passages; the tab keeps its document."""
        with self._cancels_lock:
            cancel = self._cancels.get(tab) if tab is not None else None
        if cancel is not None:
            cancel.set()

    def _index_upload(
        self, path: Path, ui: str, progress: gr.Progress | None, cancel: threading.Event | None = None
    ) -> Upload | Message:
        """The uploaded file's key, its engine in the cache (built, reopened or shared); or why not."""
        name = path.name
        stored = None
        try:
            self._check_upload(path)
            data = path.read_bytes()
            sha256 = sha256_bytes(data)
            stored = self._stored(sha256, path.suffix.lower())
            for attempt in (1, 2):
                try:
                    assistant = self.uploads.get_or_open(
                        sha256, lambda: self._open_upload(sha256, data, name, ui, progress, cancel, stored)
                    )
                    break
                except _UploadGone:  # waited on a failed reopen of the same file: open it ourselves
                    if attempt == 2:
                        raise
        except _UploadRejected as exc:
            return exc.message
        except _Busy:
            return Message("upload_busy", {"name": name})
        except _Cancelled:
            return Message("upload_cancelled", {"name": name})
        except BilingualQAError as exc:
            # The server's paths and file names mean nothing to the visitor: name the file they sent.
            reason = str(exc)
            if stored is not None:
                reason = reason.replace(str(stored), name).replace(stored.name, name)
            return Message("upload_failed", {"name": name, "reason": reason.replace(str(path), name)})
        except Exception:
            log.exception("indexing an uploaded document failed")
            return Message("upload_failed", {"name": name, "reason": page.strings(ui)["engine_failed"]})
        return Upload.of(assistant.document, name)

    def _stored(self, sha256: str, suffix: str | None = None) -> Path:
        """Where the page keeps the uploaded file with this content (one file per content).

        The file keeps its suffix, which says how it is read (a PDF is no text file); without
        ``suffix``, the file kept for this content, whatever its suffix.
        """
        if suffix is None:
            kept = sorted((self._files / sha256).glob("document.*"))
            return kept[0] if kept else self._files / sha256 / "document.txt"
        return self._files / sha256 / f"document{suffix}"

    def _open_upload(
        self,
        sha256: str,
        data: bytes,
        name: str,
        ui: str,
        progress: gr.Progress | None,
        cancel: threading.Event | None = None,
        target: Path | None = None,
    ) -> Assistant:
        """An engine for uploaded ``data`` that is not in the cache (called by the cache, once per hash).

        Raises:
            _Busy: it needs indexing and both indexing slots are taken.
        """
        from .assistant import Assistant

        if self._stored(sha256).is_file():  # uploaded before and evicted: its saved index reopens
            try:
                return self._reopen(sha256)
            except _UploadGone:
                pass
        if not self._indexing.acquire(blocking=False):
            raise _Busy
        slot_handed_on = False
        try:
            desc = page.strings(ui)["indexing"].format(name=name)
            shown = [True]  # the visitor watches the build until the document is ready

            def report(done: float) -> None:
                if not shown[0]:
                    return
                if cancel is not None and cancel.is_set():
                    raise _Cancelled  # between chunks: the build stops, its encoded vectors stay cached
                if progress is not None:
                    progress(0.05 + 0.9 * done, desc=desc)

            report(0.0)
            stored = atomic_write(target or self._stored(sha256, ".txt"), data)
            try:
                # The shared model encodes the upload a chunk at a time (the index build does that
                # when given progress), so other visitors' questions get it between chunks. Ready
                # once its paragraphs are encoded; its sentences are encoded after, behind the page.
                assistant = Assistant(
                    document=stored,
                    settings=self._upload_settings,
                    embedder=self.assistant.embedder,
                    progress=report,
                    progressive=True,
                )
            except BaseException:
                shutil.rmtree(stored.parent, ignore_errors=True)  # keep only documents that indexed
                raise
            shown[0] = False
            if assistant.index_pending:
                self._finish_behind(assistant, sha256)  # it keeps the indexing slot until done
                slot_handed_on = True
            return assistant
        finally:
            if not slot_handed_on:
                self._indexing.release()

    def _finish_behind(self, assistant: Assistant, sha256: str) -> None:
        """Finish an upload's progressive build in a thread of its own, then free its indexing slot."""

        def finish() -> None:
            try:
                assistant.finish_index()
            except Exception as exc:
                # Its questions could no longer encode what they need: the tab reopens it, or is
                # asked to upload again (its index was never saved).
                log.warning("finishing the index of the uploaded document %s failed: %s", sha256[:12], exc)
                self.uploads.discard(sha256)
            finally:
                self._indexing.release()
                self._finishing.discard(threading.current_thread())

        worker = threading.Thread(target=finish, name=f"bqa-finish-{sha256[:8]}", daemon=True)
        self._finishing.add(worker)
        worker.start()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the uploads' builds finishing behind the page; whether they all did in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in list(self._finishing):
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in list(self._finishing))

    def _reopen(self, sha256: str) -> Assistant:
        """The engine of an upload evicted from the cache, from its kept file and saved index.

        Never embeds passages: if the saved index is gone or unusable, the tab is told to
        upload again (which rebuilds it in an indexing slot) rather than rebuilding here.

        Raises:
            _UploadGone: the file or its index is gone.
        """
        from .assistant import Assistant

        path = self._stored(sha256)
        if not path.is_file():
            raise _UploadGone
        try:
            return Assistant(
                document=path, settings=self._upload_settings, embedder=_QueriesOnly(self.assistant.embedder)
            )
        except Exception as exc:
            log.warning("cannot reopen the uploaded document %s: %s", sha256[:12], exc)
            raise _UploadGone from None

    def _check_upload(self, path: Path) -> None:
        """Reject anything but a small file of a supported type before any work is done on it."""
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            raise _UploadRejected(Message("upload_wrong_type", {"name": path.name}))
        size = path.stat().st_size
        if size > self.max_upload_bytes:
            params = {"name": path.name, "size": _size(size), "limit": _size(self.max_upload_bytes)}
            raise _UploadRejected(Message("upload_too_large", params))

    def refuse_upload(self, refused: str, session: Session) -> tuple[Any, ...]:
        """Say in the chat that a file was too large to send (the browser did not send it).

        Gradio refuses a file over its size limit (4 x ``max_upload_bytes``) in the browser,
        before any handler hears of it; page.js stops it there instead and sends its name and
        size here, so that it is refused like any other file: an error message in the chat.

        Args:
            refused: JSON ``{"name": ..., "size": ...}`` from page.js (anything else is ignored).
            session: the tab's session; its document stays.

        Returns:
            The same outputs as :meth:`load_document`.
        """
        try:
            file = json.loads(refused)
            name, size = str(file["name"])[:255], max(0, int(file["size"]))
        except (TypeError, ValueError, KeyError, OverflowError, RecursionError):
            return self._document_outputs(session)
        params = {"name": name, "size": _size(size), "limit": _size(self.max_upload_bytes)}
        return self._document_outputs(session.add(Notice(Message("upload_too_large", params), error=True)))

    def use_default(self, session: Session) -> tuple[Any, ...]:
        """Switch the tab back to the default document (a new conversation)."""
        if session.upload is None:
            return self._document_outputs(session)
        return self._document_outputs(Session(ui=session.ui).add(Notice(Message("default_loaded"))))

    def _document_outputs(self, session: Session) -> tuple[Any, ...]:
        import gradio as gr

        ui = session.ui
        status, document = self._document_view(session)
        return (
            self._chat(session, ui),
            session,
            page.sources_html(session, ui),
            status,
            document,
            gr.update(visible=session.upload is None),  # the examples are about the default document
        )

    # --- API ----------------------------------------------------------------------------------

    def api_ask(self, question: str, history: str = "") -> dict:
        """Answer a question about the server's default document (the ``/ask`` endpoint).

        Args:
            question: English or Chinese (Traditional or Simplified).
            history: optional JSON list of earlier [question, answer] pairs (or
                {"question", "answer"} objects), oldest first, for a follow-up; at most
                160,000 characters with the default settings (see :func:`history_limit`).

        Returns:
            The Answer as a dict: question, text (with [P#] markers), language,
            answered, citations (paragraph_id, language, text, twin_id, score, spans),
            backend, standalone_question, evidence_language, signals, seconds.

        Raises:
            gradio.Error: the question or history is invalid, or answering failed.
        """
        import gradio as gr

        try:
            answer = self.assistant.ask(question, history=_parse_history(history, self.history_limit))
        except BilingualQAError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("/ask failed")
            raise gr.Error(
                "answering failed on the server; the error was logged", print_exception=False
            ) from None
        return answer.to_dict()


class UploadCache:
    """Uploaded documents' engines, shared by content hash, within a memory budget.

    One :class:`Assistant` per distinct upload (keyed by the sha256 of its bytes), whichever
    tabs uploaded it. When the estimated memory of the entries (:func:`upload_bytes`) passes
    ``budget``, the least recently used are evicted (the newest stays, even alone over the
    budget: its tab is using it). Tabs hold keys, not engines, so an evicted engine is freed
    once no request still uses it, and is reopened by whoever asks for it next.

    Whoever asks for a key that is missing opens it; others asking for the same key meanwhile
    wait for that one opening and share its result (or its exception), so the same file
    uploaded by many tabs at once is indexed once. Thread-safe.

    Args:
        budget: memory budget in bytes.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Assistant, int]] = OrderedDict()  # oldest use first
        self._opening: dict[str, Future[Assistant]] = {}
        self.opened = 0  # engines opened (built or reopened)
        self.waited = 0  # requests that waited for another's opening instead of opening
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def used(self) -> int:
        """Estimated bytes held by the cached engines."""
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def get(self, key: str) -> Assistant | None:
        """The cached engine for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def get_or_open(self, key: str, open_engine: Callable[[], Assistant]) -> Assistant:
        """The engine for ``key``: cached, or opened by ``open_engine`` (once, however many ask).

        Raises:
            Exception: what ``open_engine`` raised, in this caller and every one waiting on it.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0]
            future = self._opening.get(key)
            owner = future is None
            if owner:
                future = self._opening[key] = Future()
            else:
                self.waited += 1
        if not owner:
            return future.result()
        try:
            assistant = open_engine()
            size = upload_bytes(assistant)
        except BaseException as exc:
            with self._lock:
                del self._opening[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._opening[key]
            self.opened += 1
            self._entries[key] = (assistant, size)
            self._evict()
        future.set_result(assistant)
        return assistant

    def discard(self, key: str) -> None:
        """Forget ``key``'s engine (the next request for it reopens it)."""
        with self._lock:
            self._entries.pop(key, None)

    def _evict(self) -> None:
        """Drop least recently used engines until the estimate fits the budget (the newest stays)."""
        used = sum(size for _, size in self._entries.values())
        while used > self.budget and len(self._entries) > 1:
            key, (_, size) = self._entries.popitem(last=False)
            used -= size
            self.evicted += 1
            log.info("upload cache: evicted %s (%.1f MB); %.1f MB held", key[:12], size / 2**20, used / 2**20)


_HAN_RE = re.compile(f"[{lang.HAN}]")
#: Memory one character of an uploaded document costs beyond its vectors, measured with
#: tracemalloc on 3,000-paragraph documents after two questions: paragraph and sentence
#: strings, and above all their BM25 and evidence tokens (small str objects in lists and
#: sets: two per Han character, a unigram and a bigram; one per English word). A Han
#: character cost 309 bytes, any other character 9.3; with these, the whole estimate of
#: English, Chinese and mixed documents came within 5% of the measured memory.
HAN_CHAR_BYTES = 300
OTHER_CHAR_BYTES = 10


def upload_bytes(assistant: Assistant) -> int:
    """Estimated memory held by one uploaded document's engine (what :class:`UploadCache` budgets).

    The estimate: its index arrays as they are (paragraph and sentence vectors, the
    sentence-to-paragraph map: ``nbytes``); the vector store as the vectors it holds (FAISS:
    ``ntotal`` x ``d`` float32, an upper bound for its float16 IVF layout; a llama-index
    SimpleVectorStore: lists of Python floats, about 32 bytes a value); and the document's
    text at :data:`HAN_CHAR_BYTES` per Han character and :data:`OTHER_CHAR_BYTES` per other
    character. What every engine shares (the model, the answerer's weights) is not counted.
    """
    index = assistant.index
    arrays = index.paragraph_vectors.nbytes + index.sentence_vectors.nbytes + index.sentence_paragraph.nbytes
    faiss_index = getattr(index.searcher, "faiss_index", None)
    if faiss_index is not None:
        store = int(faiss_index.ntotal) * int(faiss_index.d) * 4  # type: ignore[attr-defined]
    else:
        store = int(index.paragraph_vectors.size) * 32
    text = "".join(p.text for p in index.document.paragraphs)
    han = len(_HAN_RE.findall(text))
    return int(arrays) + store + HAN_CHAR_BYTES * han + OTHER_CHAR_BYTES * (len(text) - han)


class _QueriesOnly:
    """The shared embedder for reopening a saved index: it embeds questions, never passages.

    Reopening must find the upload's saved index; were it gone, the Assistant would rebuild it,
    embedding every passage outside the indexing slots. Here that fails instead.
    """

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.model_id = embedder.model_id
        self.dimension = embedder.dimension

    def __getattr__(self, name: str) -> Any:  # anything else the engine asks of its embedder
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._embedder, name)

    def embed_queries(self, texts: Any) -> Any:
        return self._embedder.embed_queries(texts)

    def embed_passages(self, texts: Any) -> Any:
        raise _UploadGone("the saved index is gone: reopening would have to embed the document")

    @contextlib.contextmanager
    def passage_engine(self, texts: Any) -> Iterator[Any]:
        """Itself: a build engine of the shared embedder would embed the passages after all."""
        yield self


class _UploadGone(Exception):
    """An uploaded document the page no longer has (its file or saved index is gone)."""


class _Busy(Exception):
    """Every indexing slot is taken."""


def _tab(request: Any) -> str | None:
    """A browser tab's key: Gradio's session hash of the request, if any."""
    return getattr(request, "session_hash", None) if request is not None else None


def _merged(session: Session) -> Exchange | None:
    """The latest exchange, if its question was answered as a follow-up (condensed)."""
    for entry in reversed(session.entries):
        if isinstance(entry, Exchange):
            answer = entry.answer
            return entry if answer is not None and answer.standalone_question else None
    return None


class _Cancelled(Exception):
    """The visitor cancelled the indexing of their upload."""


class _UploadRejected(Exception):
    """An upload refused before indexing, with the message to show."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.key)
        self.message = message


def _title(text: dict[str, str]) -> str:
    """The page's heading and tagline, as Markdown."""
    return f"## {page.md_escape(text['title'])}\n{page.md_escape(text['tagline'])}"


def _size(n: int) -> str:
    """A byte count for people: "850 KB", "1.5 MB"."""
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def history_limit(settings: Settings) -> int:
    """The most characters /ask accepts as its history (JSON text), before parsing it.

    ``max_history_turns`` turns, each a question and an answer: twice the longest question
    (room for JSON quoting and escapes) plus :data:`HISTORY_ANSWER_CHARS` for the answer;
    160,000 characters with the default settings. Only the last turns are read anyway.
    """
    return settings.max_history_turns * (2 * settings.max_question_chars + HISTORY_ANSWER_CHARS)


def _parse_history(history: object, limit: int) -> list[object]:
    """The /ask history parameter (JSON text, or already a list) as a list of turns.

    Args:
        history: JSON text, a list, or None/"" for no history.
        limit: the most characters the JSON text may have (see :func:`history_limit`),
            checked before it is parsed.

    Raises:
        QuestionError: too long, not JSON, nested too deeply, or not a list.
    """
    if history is None or (isinstance(history, str) and not history.strip()):
        return []
    if isinstance(history, str):
        if len(history) > limit:
            raise QuestionError(
                f"history is too long: {len(history)} characters (limit {limit}); send only the last turns"
            )
        try:
            history = json.loads(history)
        except json.JSONDecodeError as exc:
            raise QuestionError(f"history is not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise QuestionError(
                "history is nested too deeply: send a list of [question, answer] pairs"
            ) from None
    if not isinstance(history, list):
        raise QuestionError("history must be a JSON list of [question, answer] pairs")
    return history


# --- request size limit -------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body over its limit gets 413 before the app reads it.

    A declared ``Content-Length`` over the limit is refused at once, unread. A body that does
    not declare its length (chunked) is counted as it streams in and cut where it passes the
    limit: the app's next read fails, and whatever the app then answers (an error about the
    body) is replaced by the 413. Gradio's upload route (:data:`UPLOAD_ROUTE`) gets
    ``upload_limit``, every other request ``limit``. Plain ASGI: no dependency.

    Args:
        app: the ASGI app to guard.
        limit: the most body bytes of an ordinary request.
        upload_limit: the most body bytes of a file upload (multipart).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", "")).rstrip("/")
        limit = self.upload_limit if path.endswith(UPLOAD_ROUTE) else self.limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        received = 0
        cut = False
        started = False

        async def counted_receive() -> MutableMapping[str, Any]:
            nonlocal received, cut
            if cut:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if cut:  # the app's answer to a body it could not finish reading: the 413 replaces it
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    """Raised into the app when the body it reads passes the limit."""


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    """The request's declared Content-Length, or None (absent or unreadable: the server's business)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body too large (limit {limit} bytes)"}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FailureLimiter:
    """Failed attempts per client in a sliding window, in bounded memory.

    A client may fail ``max_failures`` times in any ``window`` seconds. Its failures are kept
    as timestamps, clients in the order they last failed: clients whose failures are all older
    than the window are dropped, and past ``max_clients`` the least recently failed one is
    forgotten. Thread-safe.

    Args:
        max_failures: failures a client may have in the window.
        window: seconds a failure counts.
        max_clients: clients remembered at most.
        clock: the time in seconds (monotonic; tests pass a fake one).
    """

    def __init__(
        self,
        max_failures: int = LOGIN_FAILURES,
        window: float = LOGIN_WINDOW,
        max_clients: int = LOGIN_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Clients remembered."""
        return len(self._failures)

    def attempt(self, key: str) -> float | None:
        """Count an attempt by ``key`` as failed, or refuse it.

        Returns:
            The failure's timestamp (give it to :meth:`forgive` if the attempt turns out not to
            have failed), or None when ``key`` is at its limit (:meth:`retry_after` says how long).
        """
        with self._lock:
            now = self.clock()
            self._prune(now)
            stamps = self._recent(key, now)
            if len(stamps) >= self.max_failures:
                return None
            stamps.append(now)
            self._failures[key] = stamps
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            return now

    def forgive(self, key: str, stamp: float) -> None:
        """Take back the failure :meth:`attempt` counted at ``stamp`` (the attempt succeeded)."""
        with self._lock:
            stamps = self._failures.get(key)
            if stamps is None or stamp not in stamps:
                return
            stamps.remove(stamp)
            if not stamps:
                del self._failures[key]

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            stamps = self._recent(key, now)
            if len(stamps) < self.max_failures:
                return 0.0
            return stamps[-self.max_failures] + self.window - now

    def _recent(self, key: str, now: float) -> deque[float]:
        """The key's failures still in the window (an empty deque, not stored, when none)."""
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def _prune(self, now: float) -> None:
        """Forget clients whose latest failure is out of the window (the oldest come first)."""
        while self._failures:
            stamps = next(iter(self._failures.values()))
            if stamps and stamps[-1] > now - self.window:
                return
            self._failures.popitem(last=False)


def client_key(scope: MutableMapping[str, Any]) -> str:
    """Whom a request counts against: its client address from the ASGI scope.

    An IPv6 address counts by its /64, which one host usually has whole; an IPv4-mapped one as
    the IPv4 address. Headers such as X-Forwarded-For are not read here. (Uvicorn, as Gradio
    starts it, replaces the scope's client with X-Forwarded-For's only for connections from its
    trusted proxies, by default this machine's loopback: a local reverse proxy's visitors are then
    told apart, and a local process that could send that header can read ``--auth`` from the
    server's command line anyway.)
    """
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"  # a Unix socket, or a server that does not say
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _route(scope: MutableMapping[str, Any]) -> str:
    """The request's path below the app's root path."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path


class LoginLimit:
    """ASGI middleware: a client with too many failed logins gets 429 until its window passes.

    Every POST to Gradio's login route is counted against its client (:func:`client_key`) as a
    failure when it arrives, so that many guesses sent at once cannot all get in before the
    first is answered; it is forgiven once Gradio answers with anything but a failed-login
    status (:data:`LOGIN_FAILED_STATUSES`), so successful logins never count. A client at the
    limit is refused, unread and with Retry-After, whatever password it sends, the right one
    included: otherwise guessing would go on and a right guess would still show.

    Args:
        app: the ASGI app to guard.
        limiter: the failures so far (one per server).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, limiter: FailureLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or _route(scope).rstrip("/") != LOGIN_ROUTE
        ):
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        stamp = self.limiter.attempt(key)
        if stamp is None:
            await _too_many_logins(send, self.limiter.retry_after(key))
            return
        status = 0

        async def observed_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status not in LOGIN_FAILED_STATUSES:
                    self.limiter.forgive(key, stamp)
                elif self.limiter.retry_after(key) > 0:
                    log.warning(
                        "login: %s failed %d times in %d s; refused for now",
                        key,
                        self.limiter.max_failures,
                        self.limiter.window,
                    )
            await send(message)

        # An attempt that never gets an answer (the app failed) stays counted.
        await self.app(scope, receive, observed_send)


async def _too_many_logins(send: Any, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = json.dumps({"detail": f"too many failed logins; try again in {seconds} s"}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(seconds).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LoginRequired:
    """ASGI middleware: Gradio routes that act on a session need the login when --auth is on.

    Gradio 6 checks the login on its API routes but not on ``/gradio_api/cancel``,
    ``/gradio_api/reset``, ``/gradio_api/stream/…``, the heartbeat or the run history. Here every
    request under :data:`GRADIO_API` that is not a GET (HEAD, OPTIONS), and the GETs of
    :data:`LOGIN_REQUIRED_GETS`, first asks Gradio's own check (:data:`LOGIN_CHECK_ROUTE`, which
    reads the access-token cookie, or an auth dependency, as the API routes do) with the request's
    headers; unless it says yes, the request gets that check's 401 and goes no further. Install
    it only with auth: without, Gradio's check lets everyone through anyway.

    Args:
        app: the ASGI app to guard (Gradio's routes are inside).
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not needs_login(str(scope.get("method", "")), _route(scope)):
            await self.app(scope, receive, send)
            return
        status, answer = await self._login_check(scope)
        if status == 200:
            await self.app(scope, receive, send)
            return
        if status != 401:  # the check is missing or broken (a Gradio upgrade?): refuse
            log.error("login check %s answered %s; refusing %s", LOGIN_CHECK_ROUTE, status, scope.get("path"))
            answer = [
                {"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]},
                {"type": "http.response.body", "body": b""},
            ]
        for message in answer:
            await send(message)

    async def _login_check(
        self, scope: MutableMapping[str, Any]
    ) -> tuple[int, list[MutableMapping[str, Any]]]:
        """Gradio's login check on the request's headers: its status and its response messages."""
        check = str(scope.get("root_path", "")).rstrip("/") + LOGIN_CHECK_ROUTE
        headers = [
            (name, value)
            for name, value in scope.get("headers", ())
            if name.lower() not in (b"content-length", b"transfer-encoding", b"content-type")
        ]
        sub = {
            **scope,
            "method": "GET",
            "path": check,
            "raw_path": check.encode(),
            "query_string": b"",
            "headers": headers,
        }
        sent = False

        async def no_body() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        answer: list[MutableMapping[str, Any]] = []

        async def keep(message: MutableMapping[str, Any]) -> None:
            answer.append(message)

        await self.app(sub, no_body, keep)
        status = next((m["status"] for m in answer if m["type"] == "http.response.start"), 0)
        return status, answer


def needs_login(method: str, route: str) -> bool:
    """Whether LoginRequired guards a request (``route``: its path below the root path)."""
    if not route.startswith(GRADIO_API):
        return False
    if method.upper() not in ("GET", "HEAD", "OPTIONS"):
        return True
    return route[len(GRADIO_API) :].startswith(LOGIN_REQUIRED_GETS)


# --- building and serving the page -------------------------------------------------------------


def build_app(
    assistant: Assistant,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    stream_delay: float = STREAM_DELAY,
) -> gr.Blocks:
    """The chat page over ``assistant`` (not yet running; see :func:`start`).

    Args:
        assistant: the process-wide Assistant; its document is every tab's default.
        max_upload_bytes: the largest document a tab may upload.
        stream_delay: seconds between streamed answer chunks.

    Returns:
        The Gradio Blocks app, with the ``/ask`` API endpoint.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry, no version check
    gr = import_gradio()

    handlers = ChatPage(assistant, max_upload_bytes=max_upload_bytes, stream_delay=stream_delay)
    text = page.strings("en")
    with gr.Blocks(title="bilingual-qa", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        controls = _layout(gr, handlers, text)
        _wire(gr, app, handlers, controls)
    app.bilingual_qa_page = handlers  # for tests and embedding applications
    return app


def _layout(gr: Any, handlers: ChatPage, text: dict[str, str]) -> Controls:
    """Create the components (labelled in English until the browser's language is known)."""
    session = Session()
    document = handlers.assistant.document
    choices = [(page.strings(code)["language_name"], code) for code in page.UI_LANGUAGES]
    # An idle tab's state is dropped after session_minutes (Gradio would keep up to 10,000).
    state = gr.State(session, time_to_live=handlers.assistant.settings.session_minutes * 60)
    with gr.Row(elem_id="bqa-header", equal_height=True):
        title = gr.Markdown(_title(text), elem_id="bqa-title")
        ui = gr.Radio(
            choices, value="en", label=text["ui_language"], scale=0, min_width=320, elem_id="bqa-ui"
        )
    status = gr.Markdown(page.document_status(document, True, "en"), elem_id="bqa-status")
    locale = gr.Textbox(visible=False)
    # On a phone (page.css) the two columns dissolve into one: the chat, the sources of its
    # answer right under it, then the question box (kept on screen), examples and buttons.
    with gr.Tabs():
        with (
            gr.Tab(text["tab_chat"], id="chat", elem_id="bqa-chat-tab") as chat_tab,
            gr.Row(elem_id="bqa-main"),
        ):
            with gr.Column(scale=5, min_width=360, elem_id="bqa-chat-col"):
                chatbot = gr.Chatbot(
                    label=text["chat_label"],
                    placeholder=text["chat_placeholder"],
                    height=520,
                    elem_id="bqa-chat",
                    latex_delimiters=[],  # "$" in a document is money, not math
                    sanitize_html=True,
                    feedback_options=None,
                    buttons=["copy"],
                    # One bubble per message: an error after an answer is never shown inside it.
                    group_consecutive_messages=False,
                )
                with gr.Row(equal_height=True, elem_id="bqa-ask-row"):
                    question = gr.Textbox(
                        show_label=False,
                        placeholder=text["question_placeholder"],
                        lines=1,
                        max_lines=6,
                        scale=8,
                        # page.js focuses it on wide screens without scrolling: autofocus scrolls
                        # a phone's page past its header to the box (and opens the keyboard).
                        autofocus=False,
                        elem_id="bqa-question",
                    )
                    send = gr.Button(
                        text["send"], variant="primary", scale=1, min_width=80, elem_id="bqa-send"
                    )
                examples = gr.Dataset(
                    components=[question],
                    samples=[[q] for q in page.examples()],
                    label=text["examples_label"],
                    elem_id="bqa-examples",
                )
                with gr.Row(elem_id="bqa-actions"):
                    upload = gr.UploadButton(
                        text["upload"], type="filepath", size="sm", variant="secondary", elem_id="bqa-upload"
                    )
                    default_document = gr.Button(text["default_document"], size="sm", elem_id="bqa-default")
                    new_chat = gr.Button(text["new_chat"], size="sm", elem_id="bqa-new-chat")
                    cancel = gr.Button(
                        text["cancel_upload"], size="sm", variant="stop", visible=False, elem_id="bqa-cancel"
                    )
                    ask_new = gr.Button(text["ask_new"], size="sm", visible=False, elem_id="bqa-ask-new")
                    # Rendered (page.js clicks it) but never shown (page.css).
                    refused = gr.Button("", size="sm", elem_id="bqa-refused")
            with gr.Column(scale=6, min_width=360, elem_id="bqa-sources-col"):
                sources = gr.HTML(page.sources_html(session, "en"), elem_id="bqa-sources", js_on_load=None)
        with gr.Tab(text["tab_document"], id="document", elem_id="bqa-document-tab") as document_tab:
            document_view = gr.HTML(
                page.document_html(document, "en"), elem_id="bqa-document", js_on_load=None
            )
    return Controls(
        session=state,
        locale=locale,
        ui=ui,
        title=title,
        status=status,
        chat_tab=chat_tab,
        document_tab=document_tab,
        chatbot=chatbot,
        question=question,
        send=send,
        examples=examples,
        upload=upload,
        default_document=default_document,
        new_chat=new_chat,
        cancel=cancel,
        refused=refused,
        refused_file=gr.Textbox(visible=False),
        ask_new=ask_new,
        sources=sources,
        document=document_view,
    )


def _wire(gr: Any, app: Any, handlers: ChatPage, c: Controls) -> None:
    """Connect events to handlers. Chat events are UI-only ("undocumented"); /ask is the API."""
    chat_outputs = [c.chatbot, c.question, c.session, c.sources]
    document_outputs = [c.chatbot, c.session, c.sources, c.status, c.document, c.examples]
    # The chat and upload events stay callable by clients (tests use them) but out of the API docs.
    ui_only = {"api_visibility": "undocumented"}
    private = {"api_visibility": "private", "show_progress": "hidden"}
    # Answering is cheap next to streaming pauses; the embedder's lock already serializes the model.
    chat = {"fn": handlers.chat, "inputs": [c.question, c.session], "outputs": chat_outputs}
    button = {"fn": handlers.ask_new_button, "inputs": [c.session], "outputs": [c.ask_new], **private}
    c.question.submit(
        **chat, api_name="chat", concurrency_limit=None, show_progress="hidden", **ui_only
    ).then(**button)
    c.send.click(**chat, concurrency_limit=None, **private).then(**button)
    c.examples.click(
        handlers.chat_example, [c.examples, c.session], chat_outputs, concurrency_limit=None, **private
    ).then(**button)
    c.ask_new.click(handlers.ask_as_new, [c.session], chat_outputs, concurrency_limit=None, **private).then(
        **button
    )

    # Gradio finds its special parameters (progress tracker, click data) by their default
    # value or real type annotation, which the handlers cannot name without importing gradio.
    def load_document(path, session, request, progress=gr.Progress()):  # noqa: B008 - that is the API
        # The Cancel button goes in the same update as the document: the page changes once.
        hide_cancel = gr.update(visible=False)
        return (*handlers.load_document(path, session, progress, tab=_tab(request)), hide_cancel)

    def cancel_upload(request):
        handlers.cancel_upload(_tab(request))

    load_document.__annotations__ = {"request": gr.Request}
    cancel_upload.__annotations__ = {"request": gr.Request}

    def show_sources(session, event):
        return handlers.show_sources(session, event)

    show_sources.__annotations__ = {"event": gr.SelectData}

    # Indexing is the heavy job: INDEXING_SLOTS at a time at most, whoever asks. The handler
    # counts them itself and answers "busy" at once when they are taken, so the event must
    # not queue: every upload starts at once (most are quick: refused, shared or busy).
    # The Cancel button shows while the upload runs (a separate, instant event) and stops it.
    c.upload.upload(lambda: gr.update(visible=True), None, [c.cancel], queue=False, **private)
    c.upload.upload(
        load_document,
        [c.upload, c.session],
        [*document_outputs, c.cancel],
        api_name="load_document",
        show_progress_on=c.chatbot,  # one progress bar, where the "loaded" message will appear
        concurrency_limit=None,
        **ui_only,
    ).then(lambda: gr.update(visible=False), None, [c.cancel], **private)
    # A file too large to send: page.js stops it before Gradio refuses it in a pop-up, and says so here.
    c.refused.click(
        handlers.refuse_upload,
        [c.refused_file, c.session],
        document_outputs,
        js="(refused, session) => [window.bqaRefused || '', session]",
        **private,
    )
    c.cancel.click(cancel_upload, None, None, queue=False, **private).then(
        lambda: gr.update(visible=False), None, [c.cancel], **private
    )
    c.default_document.click(handlers.use_default, [c.session], document_outputs, **private)
    for trigger in (c.new_chat.click, c.chatbot.clear):  # the chat's own trash button too
        trigger(handlers.new_chat, [c.session], [c.chatbot, c.session, c.sources], **private).then(**button)
    c.chatbot.select(show_sources, [c.session], [c.session, c.sources], **private).then(
        None, js="() => { if (window.bqaReveal) window.bqaReveal(); }", **private
    )
    c.ui.input(handlers.labels, [c.ui, c.session], c.labelled(), **private)
    # The browser's language labels the page; the radio above overrides it.
    app.load(
        handlers.on_load,
        [c.locale, c.session],
        c.labelled(),
        js="(locale, session) => [navigator.language || 'en', session]",
        **private,
    )

    def ask(question, history=""):
        return handlers.api_ask(question, history)

    ask.__doc__ = ChatPage.api_ask.__doc__
    # Real types, not the strings `from __future__ import annotations` makes: gr.api reads them.
    ask.__annotations__ = {"question": str, "history": str, "return": dict}
    gr.api(ask, api_name="ask", concurrency_limit=ASK_CONCURRENCY, concurrency_id="ask")


@dataclass
class Running:
    """A started page: its app, URL and how to stop it."""

    app: Any
    url: str

    def close(self) -> None:
        """Stop the server and release its port."""
        self.app.close()


def start(
    assistant: Assistant,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth: tuple[str, str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    stream_delay: float = STREAM_DELAY,
) -> Running:
    """Start the page in background threads and return once it accepts connections.

    Args:
        assistant: the process-wide Assistant.
        host: the interface to bind; the loopback interface unless told otherwise.
        port: the TCP port.
        auth: (user, password) required to open the page, or None.
        max_upload_bytes: the largest document a tab may upload.
        stream_delay: seconds between streamed answer chunks.

    Returns:
        The running page; call ``close()`` to stop it.

    Raises:
        ConfigError: the port cannot be bound.
    """
    from starlette.middleware import Middleware  # FastAPI's, which Gradio is built on

    app = build_app(assistant, max_upload_bytes=max_upload_bytes, stream_delay=stream_delay)
    app.queue(default_concurrency_limit=4)
    max_file_size = 4 * max_upload_bytes
    # Outermost first: the body limit comes before everything, the password check included.
    middleware = [
        Middleware(BodyLimit, limit=MAX_REQUEST_BYTES, upload_limit=max_file_size + MULTIPART_OVERHEAD)
    ]
    if auth is not None:
        middleware += [Middleware(LoginLimit, limiter=FailureLimiter()), Middleware(LoginRequired)]
    try:
        _, url, _ = app.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            share=False,  # never a public share link, whatever GRADIO_SHARE says
            inbrowser=False,
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            ssr_mode=False,
            mcp_server=False,
            footer_links=["api"],
            # Gradio refuses larger files before they reach the handler, which explains its own limit.
            max_file_size=max_file_size,
            # Every request passes these, in this process only: no static file workers
            # (GRADIO_NUM_WORKERS would start some, with an upload route of their own).
            app_kwargs={"middleware": middleware},
            num_workers=0,
            theme=_theme(),
            css=(_ASSETS / "page.css").read_text(encoding="utf-8"),
            js=(_ASSETS / "page.js").read_text(encoding="utf-8"),
        )
    except OSError as exc:
        log.debug("launch failed: %s", exc)
        raise ConfigError(
            f"cannot listen on {host}:{port} (in use or not allowed); choose another --port"
        ) from None
    return Running(app=app, url=url)


def _theme() -> Any:
    """A calm theme with local fonts only: the page must work without internet access."""
    import gradio as gr

    system = ["system-ui", "-apple-system", "Segoe UI", "Noto Sans", "Noto Sans CJK TC", "PingFang TC"]
    return gr.themes.Soft(
        primary_hue="teal",
        neutral_hue="slate",
        font=[*system, "Microsoft JhengHei", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` as a (user, password) pair.

    Raises:
        ConfigError: the value has no colon or an empty user or password.
    """
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth expects USER:PASS (both non-empty)")
    return user, password


def serve(
    assistant: Assistant,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth: tuple[str, str] | None = None,
) -> None:
    """Serve the page until interrupted (the ``bilingual-qa serve`` command).

    Raises:
        ConfigError: the port cannot be bound.
    """

    running = start(assistant, host=host, port=port, auth=auth)
    print(
        f"bilingual-qa: serving {assistant.document.name} at {running.url} (Ctrl+C to stop)", file=sys.stderr
    )
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(
            f"bilingual-qa: warning: listening on {host} without --auth: anyone who can reach "
            "this machine can use the page",
            file=sys.stderr,
        )
    try:
        running.app.block_thread()
    finally:
        running.close()


__all__ = ["ChatPage", "Running", "build_app", "import_gradio", "parse_auth", "serve", "start"]
