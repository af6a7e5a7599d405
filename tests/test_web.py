"""The chat web page: handlers, the API from gradio_client, server processes, a real browser.

Fast tests use the fake embedder, including a real Gradio server on a free loopback
port; tests marked integration use the real model, and those also marked browser drive
Debian's Chromium through Playwright (no browser download). What the page shows
(pure rendering) is tested in test_webpage.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bilingual_qa import Assistant, webpage
from bilingual_qa.cli import _parser
from bilingual_qa.config import Settings
from bilingual_qa.errors import ConfigError
from bilingual_qa.webpage import Session
from conftest import ROOT, FakeEmbedder

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Gradio's queue calls pandas in ways pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

XSS = "<img src=x onerror=alert(1)> ${7*7} {{x}} **bold** [link](javascript:alert(2))"
#: The browser tests' screens: a laptop and a phone (CSS pixels).
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(assistant, **kwargs):
    from bilingual_qa import web

    started = time.perf_counter()
    running = web.start(assistant, host="127.0.0.1", port=_free_port(), **kwargs)
    return running, time.perf_counter() - started


# --- handlers, called directly --------------------------------------------------------------------


def _drain(generator):
    async def collect():
        return [update async for update in generator]

    return asyncio.run(collect())


@pytest.fixture
def chat_page(fake_assistant):
    from bilingual_qa.web import ChatPage

    return ChatPage(fake_assistant, stream_delay=0, max_upload_bytes=2048)


def test_relabelling_updates_every_labelled_component_in_its_language(chat_page):
    from bilingual_qa.web import Controls

    for ui in webpage.UI_LANGUAGES:
        updates = chat_page.labels(ui, Session())
        assert len(updates) == len(Controls.LABELLED)
        by_name = dict(zip(Controls.LABELLED, updates, strict=True))
        assert by_name["session"].ui == ui
        assert by_name["send"]["value"] == webpage.strings(ui)["send"]
        assert by_name["ui"]["value"] == ui


def test_chat_streams_then_settles_with_sources(chat_page):
    updates = _drain(chat_page.chat("How many promotional events will Chongqing host?", Session()))
    first, *middle, last = updates
    assert first[0][-1]["content"] == "*Searching the document…*" and first[1]["value"] == ""
    assert len(middle) >= 3  # streamed in pieces
    lengths = [len(u[0][-1]["content"]) for u in updates[1:]]
    assert lengths == sorted(lengths)
    session = last[2]
    answer = session.entries[-1].answer
    assert answer.answered and f"src-0-{answer.citations[0].paragraph_id}" in last[3]


def test_follow_up_uses_the_conversation(chat_page):
    first = _drain(chat_page.chat("Which cities are sister cities of Chongqing?", Session()))[-1][2]
    last = _drain(chat_page.chat("And which of them are in Thailand?", first))[-1]
    answer = last[2].entries[-1].answer
    assert (
        answer.standalone_question
        == "Which cities are sister cities of Chongqing? And which of them are in Thailand?"
    )
    assert "Follow-up understood as" in last[3] and "Which cities are sister cities" in last[3]


@pytest.mark.parametrize(
    ("question", "shown"),
    [("x" * 2001, "the question is too long"), ("bad\x00question", "control character")],
    ids=["too-long", "control-character"],
)
def test_bad_question_is_a_chat_message(chat_page, question, shown):
    last = _drain(chat_page.chat(question, Session(ui="zh-Hans")))[-1]
    asked, reply = (m["content"] for m in last[0])
    # The refusal is an error message of its own (the page styles .bqa-error), after the question.
    assert reply.startswith('<div class="bqa-error" role="alert">\n\n⚠️ 无法回答这个问题')
    assert shown in reply.replace("\\", "")
    assert last[2].history() == []
    # A question too long to answer is shown cut, with its length; the session keeps it whole.
    assert last[2].entries[-1].question == question
    if len(question) > webpage.QUESTION_SHOWN_CHARS:
        assert asked.endswith("…（共 2,001 个字符）") and len(asked) < 2 * webpage.QUESTION_SHOWN_CHARS
        assert "2,001" in last[3] and question not in last[3]


def test_engine_failure_is_a_chat_message_and_logged(chat_page, caplog, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chat_page.assistant, "ask", explode)
    monkeypatch.setattr(chat_page.assistant, "ask_stream", explode, raising=False)
    last = _drain(chat_page.chat("anything at all?", Session()))[-1]
    assert "Something went wrong" in last[0][-1]["content"] and "boom" not in last[0][-1]["content"]
    assert last[0][-1]["content"].startswith('<div class="bqa-error"')
    assert "boom" in caplog.text


def test_an_engine_failing_mid_stream_replaces_the_partial_answer_with_an_error(chat_page, monkeypatch):
    class Failing:
        document = chat_page.assistant.document

        def ask_stream(self, question, history=None):
            yield "Chongqing will host "
            raise TimeoutError("the LLM stopped answering")

    monkeypatch.setattr(chat_page, "assistant", Failing())
    updates = _drain(chat_page.chat("How many events?", Session()))
    assert any("Chongqing will host" in u[0][-1]["content"] for u in updates[1:-1])  # it streamed
    final = updates[-1][0]
    assert [m["role"] for m in final] == ["user", "assistant"]  # the error is the reply, not added to it
    assert final[-1]["content"].startswith('<div class="bqa-error"')
    assert "Chongqing will host" not in final[-1]["content"] and "LLM" not in final[-1]["content"]


def test_a_streaming_engine_streams_and_its_final_answer_wins(chat_page, fake_assistant, monkeypatch):
    final = fake_assistant.ask("How many promotional events will Chongqing host?")

    class Streaming:
        document = fake_assistant.document

        def ask_stream(self, question, history=None):
            yield from ("Chongqing will ", "host more than ", "ten events. [P99]")  # [P99]: invented
            yield final

    monkeypatch.setattr(chat_page, "assistant", Streaming())
    updates = _drain(chat_page.chat("How many?", Session()))
    shown = [u[0][-1]["content"] for u in updates[1:-1]]
    assert any(text.startswith("Chongqing will host") for text in shown)
    assert updates[-1][0][-1]["content"] == webpage.answer_markdown(final.text, 0)
    assert updates[-1][2].entries[-1].answer is final


def test_a_follow_up_can_be_asked_again_as_a_new_question(chat_page):
    first = _drain(chat_page.chat("Which sister cities in Thailand will Chongqing use?", Session()))[-1][2]
    assert chat_page.ask_new_button(first)["visible"] is False  # nothing was merged
    merged = _drain(chat_page.chat("And which of them are in Cambodia?", first))[-1][2]
    assert merged.entries[-1].answer.standalone_question is not None
    assert chat_page.ask_new_button(merged)["visible"] is True
    again = _drain(chat_page.ask_as_new(merged))[-1][2]
    last = again.entries[-1]
    assert last.question == "And which of them are in Cambodia?"
    assert last.answer.standalone_question is None  # asked without the earlier turns
    assert len(again.entries) == len(merged.entries) + 1  # the conversation is kept
    assert chat_page.ask_new_button(again)["visible"] is False
    # with nothing to re-ask, the button changes nothing
    (update,) = _drain(chat_page.ask_as_new(again))
    assert update[2] == again


def test_a_file_too_large_to_send_is_refused_in_the_chat(chat_page):
    refused = json.dumps({"name": "<b>big</b>.txt", "size": 5_000_000})
    chat, session, _, status, _, examples = chat_page.refuse_upload(refused, Session(ui="en"))
    assert session.upload is None and examples["visible"] is True and "(default)" in status.replace("\\", "")
    assert session.entries[-1].error
    text = chat[-1]["content"].replace("\\", "")
    assert text.startswith('<div class="bqa-error"') and "<b>" not in text
    assert "Cannot load &lt;b&gt;big&lt;/b&gt;.txt: it is 4.8 MB, larger than the 2 KB limit" in text
    # Whatever else is sent (the event is the page's own, but anyone can call it) changes nothing.
    fields = ('{"name": "x.txt"}', '{"name": "x", "size": "many"}', '{"name": "x", "size": 1e999}')
    for junk in ("", "not json", "[]", *fields, "[" * 5000, "[" * 5000 + "]" * 5000):
        assert chat_page.refuse_upload(junk, Session())[1] == Session()


def test_empty_question_changes_nothing_but_says_what_to_do(chat_page):
    (update,) = _drain(chat_page.chat("   ", Session(ui="zh-Hant")))
    assert update[0] == [] and update[2] == Session(ui="zh-Hant")
    assert update[1]["value"] == "" and update[1]["placeholder"].startswith("請先輸入問題")
    first = next(iter(_drain(chat_page.chat("What is RCEP?", Session()))))
    assert first[1]["placeholder"] == "Ask in English, 繁體 or 简体…"  # the hint goes with the next question


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.rtf", b"{\\rtf1 hello}", "only .txt and .md (UTF-8 text), .pdf, .docx"),
        ("notes.pdf", b"%PDF-1.4", "damaged or not a PDF file"),
        ("big.txt", b"x" * 4096, "larger than the 2 KB limit"),
        ("binary.txt", b"\x00\x01\x02\x03", "binary"),
        ("latin1.md", "café olé".encode("latin-1"), "UTF-8"),
    ],
)
def test_bad_upload_is_explained_and_keeps_the_document(chat_page, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    chat, session, _, status, _, examples = chat_page.load_document(str(path), Session())
    assert examples["visible"] is True
    assert session.upload is None and "(default)" in status.replace("\\", "")
    text = chat[-1]["content"].replace("\\", "")
    assert f"Cannot load {name}" in text and message in text
    assert text.startswith('<div class="bqa-error"') and session.entries[-1].error  # shown as an error
    assert str(tmp_path) not in text  # no server paths in messages
    assert not path.exists()  # not left in Gradio's cache, served to whoever knows its path


def test_upload_is_indexed_for_this_session_with_the_shared_model(chat_page, tmp_path):
    path = tmp_path / "fruit.md"
    path.write_text(
        "# Apples\n\nApples grow on trees in Shaanxi.\n\n蘋果長在陝西的樹上。\n", encoding="utf-8"
    )
    shown = []
    chat, session, _, status, table, examples = chat_page.load_document(
        str(path), Session(), progress=lambda done, desc=None: shown.append((done, desc))
    )
    assert examples["visible"] is False  # the examples are about the default document
    engine = chat_page.uploads.get(session.upload.sha256)  # the tab holds a key, the cache the engine
    assert engine.embedder is chat_page.assistant.embedder  # one model for all
    assert shown[0][0] == pytest.approx(0.05) and shown[-1][0] > 0.9 and "fruit.md" in shown[-1][1]
    assert [d for d, _ in shown] == sorted(d for d, _ in shown)
    assert not path.exists()
    assert "fruit.md" in status.replace("\\", "") and "Shaanxi" in table
    assert "Loaded **fruit\\.md**" in chat[-1]["content"] and not session.entries[-1].error
    # The uploaded document's index lives in the page's private folder, not the shared index folder.
    assert engine.settings.index_dir != chat_page.assistant.settings.index_dir
    answer = _drain(chat_page.chat("Where do apples grow?", session))[-1][2].entries[-1].answer
    uploaded = {p.text for p in engine.paragraphs}
    assert answer.answered and {c.text for c in answer.citations} <= uploaded and "Apples" in answer.text
    chat, back, *_ = chat_page.use_default(session)
    assert back.upload is None and "default document" in chat[-1]["content"]


# --- uploads: shared by content, a memory budget, busy indexing slots ------------------------------

FRUIT = {
    "apples": ["Apples grow on trees in Shaanxi.", "蘋果長在陝西的樹上。"],
    "tea": ["Oolong tea is grown on the hills of Alishan.", "烏龍茶種植在阿里山的山坡上。"],
    "rice": ["Rice is planted in the wet fields of Hunan.", "稻米種植在湖南潮濕的田裡。"],
}


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, counting passage encodings (index builds); ``gate`` holds them until set."""

    def __init__(self) -> None:
        super().__init__()
        self.passage_calls = 0
        self.building: set[int] = set()  # threads that have started encoding passages
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def passage_engine(self, texts):
        yield self  # as the real embedder does for a small build: builds go through this

    def embed_passages(self, texts):
        with self._lock:
            self.passage_calls += 1
            self.building.add(threading.get_ident())
        if self.gate is not None:
            assert self.gate.wait(60), "the test never released the gate"
        return super().embed_passages(texts)


@pytest.fixture
def counting_page(settings):
    """A page factory over a counting embedder: (page, embedder)."""
    from bilingual_qa.web import ChatPage

    def make(cache_bytes=None, gate=None):
        embedder = CountingEmbedder()
        assistant = Assistant(settings=settings, embedder=embedder)  # builds the default index first
        embedder.gate, embedder.building = gate, set()  # then uploads' builds may be held
        page = ChatPage(assistant, stream_delay=0, max_upload_bytes=4096, cache_bytes=cache_bytes)
        return page, embedder

    return make


def _fruit_file(folder: Path, topic: str, name: str | None = None) -> Path:
    english, chinese = FRUIT[topic]
    path = folder / (name or f"{topic}.md")
    path.write_text(
        f"# {topic.title()}\n\n{english}\n\n{chinese}\n\nThis line has no translation.\n", "utf-8"
    )
    return path


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _last_reply(session_or_updates) -> str:
    return session_or_updates[0][-1]["content"].replace("\\", "")


def test_the_same_upload_from_two_tabs_is_indexed_once_and_shared(counting_page, tmp_path):
    page, embedder = counting_page()
    first = page.load_document(str(_fruit_file(tmp_path, "apples", "apples.md")), Session())[1]
    built = embedder.passage_calls
    # Another tab, the same bytes under another name: no encoding, the same engine.
    chat, second, _, status, *_ = page.load_document(
        str(_fruit_file(tmp_path, "apples", "mine.txt")), Session(ui="zh-Hans")
    )
    assert embedder.passage_calls == built
    assert page.uploads.opened == 1 and len(page.uploads) == 1
    assert first.upload.sha256 == second.upload.sha256
    # Each tab shows the name it uploaded; neither holds the engine, the cache does.
    assert second.upload.name == "mine.txt" and "mine.txt" in status.replace("\\", "")
    assert "mine.txt" in chat[-1]["content"].replace("\\", "")
    assert not any(isinstance(value, Assistant) for value in vars(second).values())
    for session in (first, second):
        answer = _drain(page.chat("Where do apples grow?", session))[-1][2].entries[-1].answer
        assert "Shaanxi" in answer.text
    assert embedder.passage_calls == built  # answering encodes questions only


def test_the_cache_evicts_least_recently_used_uploads_over_its_budget(counting_page, tmp_path):
    from bilingual_qa.web import upload_bytes

    page, _ = counting_page()
    tabs = {}
    for topic in ("apples", "tea"):
        tabs[topic] = page.load_document(str(_fruit_file(tmp_path, topic)), Session())[1]
    sizes = {t: upload_bytes(page.uploads.get(s.upload.sha256)) for t, s in tabs.items()}
    assert page.uploads.used == sum(sizes.values()) and min(sizes.values()) > 0
    page.uploads.budget = sum(sizes.values()) + min(sizes.values()) // 2  # two fit, three do not
    _drain(page.chat("Where do apples grow?", tabs["apples"]))  # apples: now the most recently used
    tabs["rice"] = page.load_document(str(_fruit_file(tmp_path, "rice")), Session())[1]
    held = {topic for topic, session in tabs.items() if session.upload.sha256 in page.uploads}
    assert held == {"apples", "rice"} and page.uploads.evicted == 1
    assert page.uploads.used <= page.uploads.budget


def test_an_evicted_upload_is_reopened_from_its_saved_index_without_encoding(counting_page, tmp_path):
    page, embedder = counting_page(cache_bytes=1)  # holds only the newest upload
    apples = page.load_document(str(_fruit_file(tmp_path, "apples")), Session())[1]
    tea = page.load_document(str(_fruit_file(tmp_path, "tea")), Session())[1]
    assert apples.upload.sha256 not in page.uploads and tea.upload.sha256 in page.uploads
    built = embedder.passage_calls
    last = _drain(page.chat("Where do apples grow?", apples))[-1]
    assert "Shaanxi" in last[2].entries[-1].answer.text
    assert 'class="bqa-card"' in last[3]  # with its source cards
    assert embedder.passage_calls == built  # reopened: nothing encoded again
    assert apples.upload.sha256 in page.uploads and tea.upload.sha256 not in page.uploads
    # Relabelling an evicted tab reopens its document too, for the Document tab.
    from bilingual_qa.web import Controls

    by_name = dict(zip(Controls.LABELLED, page.labels("zh-Hant", apples), strict=True))
    assert "Shaanxi" in by_name["document"] and "apples.md" in by_name["status"].replace("\\", "")
    assert embedder.passage_calls == built


def test_an_uploaded_pdf_is_read_as_a_pdf_also_when_reopened(counting_page, tmp_path):
    from bilingual_qa.bench.docfiles import two_column_pdf

    page, embedder = counting_page(cache_bytes=1)  # holds only the newest upload
    pdf = two_column_pdf([tuple(pair) for pair in FRUIT.values()], tmp_path / "fruit.pdf")
    apples = page.load_document(str(pdf), Session())[1]
    assert apples.upload is not None and apples.upload.name == "fruit.pdf"
    engine = page.uploads.get(apples.upload.sha256)
    assert [p.location for p in engine.document.paragraphs] == ["page 1"] * 6
    assert engine.document.layout_pairs == (("P1", "P2"), ("P3", "P4"), ("P5", "P6"))
    page.load_document(str(_fruit_file(tmp_path, "tea")), Session())  # evicts the PDF
    built = embedder.passage_calls
    last = _drain(page.chat("Where do apples grow?", apples))[-1]
    answer = last[2].entries[-1].answer
    assert "Shaanxi" in answer.text and answer.citations[0].location == "page 1"
    assert 'class="bqa-where">page 1<' in last[3]  # the source card says where it came from
    assert embedder.passage_calls == built  # reopened from the kept .pdf: nothing encoded again


@pytest.mark.parametrize("lost", ["file", "index"])
def test_an_evicted_upload_that_is_gone_asks_the_tab_to_upload_again(counting_page, tmp_path, lost):
    import shutil

    page, embedder = counting_page(cache_bytes=1)
    apples = page.load_document(str(_fruit_file(tmp_path, "apples")), Session())[1]
    page.load_document(str(_fruit_file(tmp_path, "tea")), Session())  # evicts apples
    assert page.settle(30)  # their builds, finished behind the page, have saved their indexes
    if lost == "file":
        shutil.rmtree(page._stored(apples.upload.sha256).parent)
    else:  # its saved index: reopening would have to encode the document, which it must not
        shutil.rmtree(page._upload_settings.index_dir)
    built = embedder.passage_calls
    last = _drain(page.chat("Where do apples grow?", apples))[-1]
    assert "apples.md is no longer kept on the server. Load the file again" in _last_reply(last)
    assert _last_reply(last).startswith('<div class="bqa-error"')  # an error, in a message of its own
    assert embedder.passage_calls == built
    *_, status, document, _ = page._document_outputs(apples)
    assert "apples.md" in status.replace("\\", "") and "no longer kept on the server" in document
    # Uploading it again works: indexed again (in an indexing slot) only if its index was lost.
    again = page.load_document(str(_fruit_file(tmp_path, "apples")), apples)[1]
    assert (embedder.passage_calls > built) == (lost == "index")
    assert "Shaanxi" in _drain(page.chat("Where do apples grow?", again))[-1][2].entries[-1].answer.text


def test_an_upload_is_ready_from_its_paragraphs_and_its_sentences_finish_behind_the_page(
    counting_page, tmp_path
):
    page, embedder = counting_page()
    calls, release = [], threading.Event()
    encode = embedder.embed_passages

    def held(texts):
        calls.append(list(texts))
        if len(calls) > 1:  # the sentences, encoded after the page said the document is ready
            assert release.wait(30), "the test never released the sentences"
        return encode(texts)

    embedder.embed_passages = held
    path = tmp_path / "orchard.md"
    path.write_text(
        "Apples grow on trees in Shaanxi. They are picked in October. Most are sold in Xi'an.\n\n"
        "蘋果長在陝西的樹上。十月採摘。大多在西安出售。\n",
        encoding="utf-8",
    )
    chat, session, *_ = page.load_document(str(path), Session())
    assert "Loaded **orchard\\.md**" in chat[-1]["content"]
    engine = page.uploads.get(session.upload.sha256)
    assert set(calls[0]) == {p.text for p in engine.paragraphs}
    _wait_for(lambda: len(calls) == 2, "the build to go on with the sentences")
    assert engine.index_pending and engine.index.path is None
    assert page._indexing.acquire(blocking=False)  # one slot is free, the other is the build's
    assert not page._indexing.acquire(blocking=False)
    page._indexing.release()
    release.set()
    assert page.settle(30)
    assert not engine.index_pending and engine.index.path is not None and engine.index.path.exists()
    for _ in range(2):  # its slot is free again
        assert page._indexing.acquire(blocking=False)
    page._indexing.release()
    page._indexing.release()
    answer = _drain(page.chat("When are apples picked?", session))[-1][2].entries[-1].answer
    assert answer.answered and "October" in answer.text


def test_concurrent_uploads_of_the_same_file_build_once(counting_page, tmp_path):
    gate = threading.Event()
    page, embedder = counting_page(gate=gate)
    start = embedder.passage_calls
    first, second = _fruit_file(tmp_path, "tea", "a.md"), _fruit_file(tmp_path, "tea", "b.md")
    with ThreadPoolExecutor(max_workers=2) as pool:
        one = pool.submit(page.load_document, str(first), Session())
        _wait_for(lambda: embedder.building, "the first upload to start encoding")
        two = pool.submit(page.load_document, str(second), Session())
        _wait_for(lambda: page.uploads.waited == 1, "the second upload to wait for the first")
        gate.set()
        sessions = [one.result(timeout=60)[1], two.result(timeout=60)[1]]
    assert len(embedder.building) == 1 and page.uploads.opened == 1
    assert sessions[0].upload.sha256 == sessions[1].upload.sha256
    assert [s.upload.name for s in sessions] == ["a.md", "b.md"]
    concurrent = embedder.passage_calls - start
    # One build is this many encodings: the same upload on a fresh page (its own upload folder).
    from bilingual_qa.web import ChatPage

    alone = ChatPage(page.assistant, max_upload_bytes=4096)
    before = embedder.passage_calls
    alone.load_document(str(_fruit_file(tmp_path, "tea", "c.md")), Session())
    assert concurrent == embedder.passage_calls - before > 0


def test_an_upload_while_both_indexing_slots_are_taken_is_told_the_server_is_busy(counting_page, tmp_path):
    from bilingual_qa.web import INDEXING_SLOTS

    gate = threading.Event()
    page, embedder = counting_page(gate=gate)
    assert INDEXING_SLOTS == 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        busy = [
            pool.submit(page.load_document, str(_fruit_file(tmp_path, t)), Session())
            for t in ("apples", "tea")
        ]
        _wait_for(lambda: len(embedder.building) == 2, "two uploads to be indexing")
        rice = _fruit_file(tmp_path, "rice")
        started = time.perf_counter()
        chat, session, *_ = page.load_document(str(rice), Session(ui="zh-Hant"))
        assert time.perf_counter() - started < 2.0  # answered at once, not queued
        assert "目前無法載入 rice.md：伺服器正忙著為其他文件建立索引" in chat[-1]["content"].replace("\\", "")
        assert session.upload is None and not rice.exists()
        assert session.entries[-1].error and 'class="bqa-error"' in chat[-1]["content"]
        english = page.load_document(str(_fruit_file(tmp_path, "rice")), Session())[0]
        assert (
            "the server is busy indexing other documents. Please try again shortly" in english[-1]["content"]
        )
        gate.set()
        assert all(f.result(timeout=60)[1].upload is not None for f in busy)
    # Their sentences, encoded behind the page, hold the slots until their indexes are saved;
    # then the slots are free again: the same upload now loads.
    assert page.settle(30)
    session = page.load_document(str(_fruit_file(tmp_path, "rice")), Session())[1]
    assert session.upload is not None and session.upload.name == "rice.md"


def test_history_is_refused_when_too_long_or_nested_too_deeply(chat_page):
    from bilingual_qa.errors import QuestionError
    from bilingual_qa.web import _parse_history, history_limit

    limit = history_limit(chat_page.assistant.settings)
    assert chat_page.history_limit == limit == 20 * (2 * 2000 + 4000)
    fits = json.dumps([["q", "a" * 1000]] * 20)
    assert len(_parse_history(fits, limit)) == 20
    with pytest.raises(QuestionError, match=f"history is too long: {limit + 1} characters"):
        _parse_history("[" + " " * (limit - 1) + "]", limit)  # refused before it is parsed
    with pytest.raises(QuestionError, match="nested too deeply"):
        _parse_history("[" * 5000 + "]" * 5000, limit)


# --- CLI and module boundaries ---------------------------------------------------------------


def test_serve_command_defaults_to_loopback():
    args = _parser().parse_args(["serve"])
    assert (args.host, args.port, args.auth) == ("127.0.0.1", 7860, None)
    args = _parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "8080", "--auth", "ann:pw:x"])
    assert (args.host, args.port, args.auth) == ("0.0.0.0", 8080, "ann:pw:x")


def test_parse_auth():
    from bilingual_qa.web import parse_auth

    assert parse_auth("ann:s3:cret") == ("ann", "s3:cret")
    assert parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(ConfigError, match="USER:PASS"):
            parse_auth(bad)


def test_bad_auth_fails_before_loading_anything(capsys):
    from bilingual_qa.cli import main

    assert main(["serve", "--auth", "nopassword"]) == 2
    assert "--auth expects USER:PASS" in capsys.readouterr().err


def test_web_modules_import_gradio_only_when_used():
    code = "import sys, bilingual_qa.web, bilingual_qa.webpage; print('gradio' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


# --- a real server, from gradio_client (fake embedder: fast) ------------------------------------


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    # answer_threshold: see conftest.settings
    settings = Settings(index_dir=tmp / "index", cache_dir=tmp / "cache", answer_threshold=0.0)
    assistant = Assistant(settings=settings, embedder=FakeEmbedder())
    running, _ = _start(assistant, stream_delay=0, max_upload_bytes=4096)
    yield running
    running.close()


@pytest.fixture
def client(fake_server):
    from gradio_client import Client

    return Client(fake_server.url, verbose=False)


def test_server_listens_on_loopback_only(fake_server):
    assert fake_server.url.startswith("http://127.0.0.1:")


def test_a_busy_port_is_a_clear_error(fake_server):
    from bilingual_qa import web

    port = int(fake_server.url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} .*choose another --port"):
        web.start(fake_server.app.bilingual_qa_page.assistant, port=port)


def test_api_lists_ask_only(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/ask"]
    params = [p["parameter_name"] for p in endpoints["/ask"]["parameters"]]
    assert params == ["question", "history"]


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("How many promotional events will Chongqing host?", "en"),
        ("重慶將舉辦多少場專場推介活動？", "zh-Hant"),
        ("重庆将举办多少场专场推介活动？", "zh-Hans"),
    ],
)
def test_ask_endpoint_returns_the_answer_contract(client, fake_server, question, language):
    result = client.predict(question, api_name="/ask")
    expected = fake_server.app.bilingual_qa_page.assistant.ask(question).to_dict()
    assert result["language"] == language and result["answered"]
    assert result.keys() == expected.keys()
    assert result["text"] == expected["text"]
    cited = result["citations"][0]
    assert cited.keys() == {
        "paragraph_id",
        "language",
        "text",
        "twin_id",
        "score",
        "spans",
        "twin_spans",
        "location",
    }
    assert all(0 <= start < end <= len(cited["text"]) for start, end in cited["spans"])
    if cited["twin_id"]:
        twin = fake_server.app.bilingual_qa_page.assistant.document.paragraph(cited["twin_id"])
        assert all(0 <= start < end <= len(twin.text) for start, end in cited["twin_spans"])


def test_ask_endpoint_follow_up_with_history(client):
    history = json.dumps([["Which cities are sister cities of Chongqing?", "…"]])
    result = client.predict("And which of them are in Thailand?", history, api_name="/ask")
    assert result["standalone_question"].startswith("Which cities are sister cities of Chongqing?")
    assert "Thailand" in result["text"]


@pytest.mark.parametrize(
    ("question", "history", "message"),
    [
        ("x" * 2001, "", "the question is too long: 2001 characters (limit 2000)"),
        ("", "", "the question is empty"),
        ("What about it?", "not json", "history is not valid JSON"),
        ("What about it?", '{"a": 1}', "history must be a JSON list"),
        ("What about it?", "[42]", "history items must be"),
        ("What about it?", json.dumps([["x" * 170_000, ""]]), "history is too long"),
        ("What about it?", "[" * 5000 + "]" * 5000, "history is nested too deeply"),
    ],
    ids=[
        "too-long", "empty", "history-not-json", "history-not-list", "history-bad-item",
        "history-too-long", "history-too-deep",
    ],
)  # fmt: skip
def test_ask_endpoint_errors_are_clear(client, question, history, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(question, history, api_name="/ask")


@pytest.mark.parametrize(
    ("question", "history", "message"),
    [
        ("重慶\ud800", "", "the question contains an invalid character (a lone surrogate, U+D800)"),
        ("What about it?", '[["\\udcff", ""]]', "the history contains an invalid UTF-8 byte (0xFF)"),
    ],
)
def test_unencodable_text_sent_as_json_escapes_is_a_clear_error(chat_page, question, history, message):
    # A JSON body may carry lone surrogates ("\ud800") that no client library would encode.
    import gradio as gr

    with pytest.raises(gr.Error, match=re.escape(message)):
        chat_page.api_ask(question, history)


def test_upload_is_per_session_and_a_bad_one_is_explained(client, fake_server, tmp_path):
    from gradio_client import Client, handle_file

    bad = tmp_path / "slides.pptx"
    bad.write_bytes(b"PK\x03\x04")
    chat, *_ = client.predict(handle_file(str(bad)), api_name="/load_document")
    said = chat[-1]["content"][0]["text"].replace("\\", "")
    assert "Cannot load slides.pptx: only .txt and .md (UTF-8 text), .pdf" in said

    good = tmp_path / "fruit.txt"
    good.write_text("Apples grow on trees in Shaanxi.\n蘋果長在陝西的樹上。\n", encoding="utf-8")
    client.predict(handle_file(str(good)), api_name="/load_document")
    mine = client.predict("Where do apples grow?", api_name="/chat")
    theirs = Client(fake_server.url, verbose=False).predict("Where do apples grow?", api_name="/chat")
    assert "Shaanxi" in mine[0][-1]["content"][0]["text"]
    assert "Shaanxi" not in theirs[0][-1]["content"][0]["text"]  # another tab keeps the default document
    assert len(theirs[0]) == 2  # and sees none of this tab's conversation
    # A third tab uploading the same bytes shares the engine the first one built.
    uploads = fake_server.app.bilingual_qa_page.uploads
    opened = uploads.opened
    third = Client(fake_server.url, verbose=False)
    third.predict(handle_file(str(good)), api_name="/load_document")
    assert uploads.opened == opened
    assert "Shaanxi" in third.predict("Where do apples grow?", api_name="/chat")[0][-1]["content"][0]["text"]


def _raw_post(url: str, path: str, headers: dict[str, str], chunks=()) -> tuple[int, bytes]:
    """POST over a plain socket (so nothing fixes the headers up): the status code and the response."""
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    response = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            while data := sock.recv(65536):  # the server closes the connection after a 413
                response += data
        except (BrokenPipeError, ConnectionResetError):
            pass
    return int(response.split(b" ", 2)[1]), response


def _chunked(total: int, size: int = 64 * 1024):
    """A chunked body of ``total`` bytes, without its final empty chunk (the server cuts it first)."""
    yield b'b\r\n{"data": ["\r\n'
    for _ in range(total // size + 1):
        yield f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"


@pytest.mark.parametrize("path", ["/gradio_api/run/ask", "/gradio_api/queue/join", "/gradio_api/upload"])
def test_an_oversized_declared_body_is_refused_unread(fake_server, path):
    from bilingual_qa.web import MAX_REQUEST_BYTES

    headers = {"Content-Type": "application/json", "Content-Length": str(50 * 2**20)}
    status, response = _raw_post(fake_server.url, path, headers)  # and no body at all: never read
    assert status == 413 and b"request body too large" in response
    limit = 4 * 4096 + 64 * 1024 if path.endswith("upload") else MAX_REQUEST_BYTES
    assert f"limit {limit} bytes".encode() in response
    # Just over the limit is refused too; the upload route's limit is its own.
    assert _raw_post(fake_server.url, path, {**headers, "Content-Length": str(limit + 1)})[0] == 413


@pytest.mark.parametrize("path", ["/gradio_api/run/ask", "/gradio_api/queue/join"])
def test_a_chunked_body_is_cut_at_the_limit(fake_server, path):
    from bilingual_qa.web import MAX_REQUEST_BYTES

    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    status, response = _raw_post(fake_server.url, path, headers, _chunked(MAX_REQUEST_BYTES + 1))
    assert status == 413 and b"request body too large" in response
    # A small chunked body still goes through to Gradio (which says what it thinks of it).
    small = [b"2\r\n{}\r\n", b"0\r\n\r\n"]
    assert _raw_post(fake_server.url, path, {**headers, "Connection": "close"}, small)[0] != 413


def test_the_body_limit_comes_before_the_password(fake_assistant):
    running, _ = _start(fake_assistant, stream_delay=0, auth=("ann", "s3cret"))
    try:
        big = {"Content-Type": "application/json", "Content-Length": str(50 * 2**20)}
        assert _raw_post(running.url, "/gradio_api/queue/join", big)[0] == 413
        small = {"Content-Type": "application/json", "Content-Length": "2", "Connection": "close"}
        assert _raw_post(running.url, "/gradio_api/queue/join", small, [b"{}"])[0] == 401
    finally:
        running.close()


# --- with a password: failed logins are limited, Gradio's open routes need the login ------------

RIGHT = {"username": "ann", "password": "s3cret"}
WRONG = {"username": "ann", "password": "guess"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_limiter_counts_each_client_in_its_own_window():
    from bilingual_qa.web import FailureLimiter

    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock)
    for _ in range(3):
        assert limiter.attempt("a") is not None
        clock.now += 1
    assert limiter.attempt("a") is None  # at the limit: refused, and not counted
    assert limiter.retry_after("a") == pytest.approx(57.0)  # until the oldest is a window old
    # Another client is counted on its own.
    assert limiter.retry_after("b") == 0
    stamp = limiter.attempt("b")
    assert stamp is not None
    limiter.forgive("b", stamp)  # it succeeded: it does not count
    assert "b" not in limiter._failures
    clock.now += 56.9
    assert limiter.attempt("a") is None
    clock.now += 0.2  # the first failure is out of the window: one more try
    assert limiter.retry_after("a") == 0 and limiter.attempt("a") is not None
    assert limiter.attempt("a") is None
    clock.now += 61
    assert limiter.retry_after("a") == 0 and len(limiter) == 0  # all forgotten


def test_failure_limiter_memory_is_bounded():
    from bilingual_qa.web import FailureLimiter

    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, max_clients=3, clock=clock)
    for key in ("a", "b", "c", "d"):
        limiter.attempt(key)
        limiter.attempt(key)
        assert len(limiter._failures[key]) == 2  # never more than max_failures each
    assert len(limiter) == 3 and "a" not in limiter._failures  # the least recently failed went
    clock.now += 30
    limiter.attempt("b")  # refused (at its limit), and "b" stays the oldest
    limiter.attempt("e")
    assert list(limiter._failures) == ["c", "d", "e"]
    clock.now += 31  # c and d's failures are out of the window: dropped on the next attempt
    limiter.attempt("f")
    assert list(limiter._failures) == ["e", "f"]


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("203.0.113.7", 5000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 5000), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 5000), "2001:db8:1:2::/64"),  # one host's /64: one key
        (("::ffff:198.51.100.4", 5000), "198.51.100.4"),
        (None, "unknown"),
    ],
)
def test_a_client_is_its_address_from_the_scope(client, key):
    from bilingual_qa.web import client_key

    headers = [(b"x-forwarded-for", b"192.0.2.1")]  # not read
    assert client_key({"type": "http", "client": client, "headers": headers}) == key


@pytest.mark.parametrize(
    ("method", "route", "guarded"),
    [
        ("POST", "/gradio_api/cancel", True),
        ("POST", "/gradio_api/reset", True),
        ("POST", "/gradio_api/reset/", True),
        ("POST", "/gradio_api/stream/abc/close", True),
        ("POST", "/gradio_api/queue/join", True),  # Gradio checks it too: checked twice, same answer
        ("GET", "/gradio_api/heartbeat/abc", True),
        ("GET", "/gradio_api/stream/s/r/1/playlist.m3u8", True),
        ("GET", "/gradio_api/run-history/buckets", True),
        ("GET", "/gradio_api/startup-events", False),  # Gradio's launch() calls it, without a cookie
        ("GET", "/gradio_api/queue/data", False),  # Gradio checks the login itself
        ("POST", "/login", False),
        ("GET", "/", False),
        ("OPTIONS", "/gradio_api/cancel", False),  # CORS preflight
    ],
)
def test_which_routes_need_the_login(method, route, guarded):
    from bilingual_qa.web import needs_login

    assert needs_login(method, route) is guarded


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-auth")
    settings = Settings(index_dir=tmp / "index", cache_dir=tmp / "cache", answer_threshold=0.0)
    running, _ = _start(
        Assistant(settings=settings, embedder=FakeEmbedder()), stream_delay=0, auth=("ann", "s3cret")
    )
    yield running
    running.close()


def _from_address(address: str):
    """An HTTP client whose connections come from ``address`` (another loopback address: another client)."""
    import httpx

    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
    except OSError:
        pytest.skip(f"cannot connect from {address} here")
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def test_failed_logins_are_limited_per_client(fake_assistant):
    import httpx

    from bilingual_qa.web import LOGIN_FAILURES, LOGIN_WINDOW

    assert (LOGIN_FAILURES, LOGIN_WINDOW) == (5, 60.0)
    running, _ = _start(fake_assistant, stream_delay=0, auth=("ann", "s3cret"))  # a limiter of its own
    login = running.url + "login"
    try:
        with httpx.Client(timeout=30) as ann:
            assert ann.post(login, data=RIGHT).status_code == 200  # successes do not count
            for _ in range(LOGIN_FAILURES):
                response = ann.post(login, data=WRONG)
                assert response.status_code == 400 and "Incorrect credentials" in response.text
            locked = ann.post(login, data=WRONG)
            assert locked.status_code == 429 and "too many failed logins" in locked.text
            assert 0 < int(locked.headers["retry-after"]) <= LOGIN_WINDOW
            # The right password too, while locked: otherwise guessing would go on and a hit show.
            refused = ann.post(login, data=RIGHT)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert "access-token" not in " ".join(refused.cookies.keys())
            # A session that logged in before keeps working.
            assert ann.get(running.url + "config").status_code == 200
        # Another address is another client; an X-Forwarded-For header does not make a new one.
        with _from_address("127.0.0.2") as other:
            for _ in range(LOGIN_FAILURES):
                assert other.post(login, data=WRONG).status_code == 400
            spoofed = other.post(login, data=WRONG, headers={"X-Forwarded-For": "203.0.113.7"})
            assert spoofed.status_code == 429
        # Guesses sent at once are counted as they arrive, not as they are answered.
        with _from_address("127.0.0.3") as burst, ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(lambda _: burst.post(login, data=WRONG).status_code, range(20)))
        assert sorted(set(codes)) == [400, 429] and codes.count(400) == LOGIN_FAILURES
    finally:
        running.close()


SESSION_ROUTES = [
    ("/gradio_api/cancel", {"session_hash": "s", "fn_index": 0, "event_id": "e"}, 200),
    ("/gradio_api/reset", {"event_id": "e"}, 200),
    ("/gradio_api/reset/", {"event_id": "e"}, 200),
    ("/gradio_api/stream/e/close", None, 404),  # no such event
]


@pytest.mark.parametrize(("path", "body", "logged_in"), SESSION_ROUTES)
def test_gradio_session_routes_need_the_login_with_auth(auth_server, path, body, logged_in):
    import httpx

    url = auth_server.url.rstrip("/") + path
    anonymous = httpx.post(url, json=body, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]["error"] == "Not authenticated"  # Gradio's own answer
    forged = httpx.post(url, json=body, cookies={"access-token-unsecure-x": "forged"}, timeout=30)
    assert forged.status_code == 401
    with httpx.Client(timeout=30) as ann:
        assert ann.post(auth_server.url + "login", data=RIGHT).status_code == 200
        assert ann.post(url, json=body).status_code == logged_in


def test_the_heartbeat_needs_the_login_with_auth(auth_server):
    import httpx

    url = auth_server.url + "gradio_api/heartbeat/some-session"
    with httpx.stream("GET", url, timeout=30) as response:  # only its status: it may be endless
        assert response.status_code == 401
    with httpx.Client(timeout=30) as ann:
        ann.post(auth_server.url + "login", data=RIGHT)
        with ann.stream("GET", url) as response:
            assert response.status_code == 200


def test_gradio_client_works_behind_the_password(auth_server):
    from gradio_client import Client

    client = Client(auth_server.url, auth=("ann", "s3cret"), verbose=False)
    result = client.predict("How many promotional events will Chongqing host?", api_name="/ask")
    assert result["answered"]


@pytest.mark.parametrize(("path", "body", "_"), SESSION_ROUTES[:3])
def test_gradio_session_routes_answer_as_before_without_auth(fake_server, path, body, _):
    import httpx

    response = httpx.post(fake_server.url.rstrip("/") + path, json=body, timeout=30)
    assert response.status_code == 200 and response.json() == {"success": True}


def test_sessions_expire_and_uploads_do_not_queue(fake_server):
    import gradio as gr

    app = fake_server.app
    minutes = app.bilingual_qa_page.assistant.settings.session_minutes
    states = [block for block in app.blocks.values() if isinstance(block, gr.State)]
    assert [state.time_to_live for state in states] == [minutes * 60]
    upload = next(fn for fn in app.fns.values() if fn.api_name == "load_document")
    assert upload.concurrency_limit is None  # the handler answers "busy" itself, at once


def test_server_survives_a_failing_engine(client, fake_server, monkeypatch):
    from gradio_client.exceptions import AppError

    page = fake_server.app.bilingual_qa_page
    monkeypatch.setattr(page.assistant, "ask", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(page.assistant, "ask_stream", lambda *a, **k: 1 / 0, raising=False)
    with pytest.raises(AppError, match="answering failed on the server"):
        client.predict("How many events?", api_name="/ask")
    chat, *_ = client.predict("How many events?", api_name="/chat")
    assert "Something went wrong" in chat[-1]["content"][0]["text"]
    monkeypatch.undo()
    assert client.predict("How many promotional events will Chongqing host?", api_name="/ask")["answered"]


# --- integration: the real model, many clients, a real browser ------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_command_serves_the_page_behind_a_password(tmp_path, stop):
    import httpx
    from gradio_client import Client

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app"), "BILINGUAL_QA_INDEX_DIR": str(tmp_path / "index")}
    command = [sys.executable, "-m", "bilingual_qa.cli", "serve", "--port", str(port), "--auth", "ann:s3cret"]
    # As started from a terminal: a shell that ran these tests in the background handed them
    # SIGINT ignored, and a child inherits that (Python then never raises KeyboardInterrupt).
    server = subprocess.Popen(
        command,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    try:
        # What it is doing, then the URL, printed once the page accepts connections.
        progress = [server.stderr.readline() for _ in range(3)]
        # Keep reading: a server blocked on a full stderr pipe would never stop.
        threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()
        assert progress[0] == "bilingual-qa: opening the default document and loading the model…\n"
        assert re.match(
            r"bilingual-qa: ilstc-five-year-action-plan.txt: 17 paragraphs, (index loaded|indexed in)",
            progress[1],
        )
        assert progress[2].startswith(
            f"bilingual-qa: serving ilstc-five-year-action-plan.txt at http://127.0.0.1:{port}/"
        )
        url = f"http://127.0.0.1:{port}/"
        assert httpx.get(url + "config").status_code == 401  # nothing without the password
        client = Client(url, auth=("ann", "s3cret"), verbose=False)
        result = client.predict("重庆将举办多少场推介活动？", api_name="/ask")
        assert result["language"] == "zh-Hans" and result["answered"]
    finally:
        # Stopped with the client still connected, as a browser tab would be.
        server.send_signal(stop)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            code = None
        assert code == 0, "".join(lines)[-3000:]


def test_a_stopped_server_process_exits_even_when_a_thread_hangs():
    code = (
        "import threading, time\n"
        "from bilingual_qa import cli\n"
        "threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: would block exit\n"
        "cli._exit_deadline(1.0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app")}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and "exiting now" in out.stderr
    assert time.perf_counter() - started < 30


@pytest.fixture(scope="module")
def real_server(real_assistant):
    running, seconds = _start(real_assistant)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "web-startup.json").write_text(json.dumps({"server_ready_seconds": round(seconds, 3)}))
    yield running
    running.close()


def _reference_questions(n: int) -> list[str]:
    with open(ROOT / "eval" / "reference_qa.jsonl", encoding="utf-8") as fh:
        cases = [json.loads(line) for line in fh if line.strip()]
    by_language: dict[str, list[str]] = {}
    for case in cases:
        if case["answerable"] and not case.get("history"):
            by_language.setdefault(case["language"], []).append(case["question"])
    picked = [q for group in zip(*by_language.values(), strict=False) for q in group]
    return picked[:n]


@pytest.mark.integration
def test_ask_endpoint_unanswerable(real_server):
    # Refusing is the fitted answerer's decision, made on the real model's similarities.
    from gradio_client import Client

    result = Client(real_server.url, verbose=False).predict(
        "What is the boiling point of liquid nitrogen?", api_name="/ask"
    )
    assert result["answered"] is False and result["citations"] == []
    assert "does not say" in result["text"]


@pytest.mark.integration
def test_sixteen_concurrent_ask_calls_get_their_own_answers(real_server, real_assistant):
    from gradio_client import Client

    # Sixteen questions whose answers all differ, so a reply given to the wrong caller shows.
    expected = {}
    for q in _reference_questions(200):
        answer = real_assistant.ask(q)
        if answer.text not in {a.text for a in expected.values()}:
            expected[q] = answer
    questions = list(expected)[:16]
    assert len(questions) == 16
    client = Client(real_server.url, verbose=False)

    def timed(question):
        started = time.perf_counter()
        result = client.predict(question, api_name="/ask")
        return question, result, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(timed, questions))
    wall = time.perf_counter() - started
    for question, result, _ in results:
        want = expected[question]
        assert result["question"] == question
        assert (result["text"], result["language"]) == (want.text, want.language)
        assert [c["paragraph_id"] for c in result["citations"]] == [c.paragraph_id for c in want.citations]
    latencies = sorted(seconds for *_, seconds in results)
    report = {
        "calls": len(results),
        "wall_seconds": round(wall, 3),
        "throughput_per_second": round(len(results) / wall, 2),
        "p50_seconds": round(statistics.median(latencies), 3),
        "p95_seconds": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
    }
    (ARTIFACTS / "web-load.json").write_text(json.dumps(report, indent=2))
    print("16 concurrent /ask:", report)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the README test command does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_at(browser, real_server):
    """Open the page in a fresh browser context with the given locale; record dialogs and requests."""
    contexts = []

    def open_page(locale="en-US", viewport=None):
        context = browser.new_context(viewport=viewport or {"width": 1400, "height": 1000}, locale=locale)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.foreign_requests = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        local = real_server.url.rstrip("/")
        page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((local, "data:", "blob:"))
                else page.foreign_requests.append(request.url)
            ),
        )
        page.goto(real_server.url)
        # Labelled in the browser's language once the page has loaded.
        ui = webpage.ui_language(locale)
        page.wait_for_function(
            "ui => document.querySelector('#bqa-ui input[value=\"' + ui + '\"]')?.checked",
            arg=ui,
            timeout=30_000,
        )
        return page

    yield open_page
    for context in contexts:
        context.close()


def _ask_in_page(page, question: str) -> None:
    answers = page.locator("#bqa-chat [data-testid=bot]").count()
    page.fill("#bqa-question textarea", question)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#bqa-chat [data-testid=bot]').length > n"
        " && !document.querySelector('#bqa-chat [data-testid=bot]:last-of-type em')"
        " && document.querySelector('#bqa-sources .bqa-question')",
        arg=answers,
        timeout=30_000,
    )
    # Streaming is over when the textbox is ready and the last answer stops growing.
    page.wait_for_function(
        """() => {
            const bots = document.querySelectorAll('#bqa-chat [data-testid=bot]');
            const text = bots[bots.length - 1].innerText;
            const same = window.__bqaLast === text;
            window.__bqaLast = text;
            return same && text.length > 0;
        }""",
        polling=300,
        timeout=30_000,
    )


@pytest.mark.integration
@pytest.mark.browser
def test_browser_answers_a_chinese_question_with_source_cards(page_at):
    page = page_at("zh-TW")
    question = "重慶將與哪些國家的駐華使領館搭建溝通協調機制？"
    _ask_in_page(page, question)
    answer = page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    assert "新加坡" in answer and "溝通協調機制" in answer and "[P10]" in answer
    card = page.locator("#bqa-sources article.bqa-card").first
    assert card.get_attribute("id") == "src-0-P10"
    assert "新加坡、緬甸、柬埔寨、泰國、馬來西亞" in card.locator("mark:not(.bqa-twin)").first.inner_text()
    assert "Singapore, Myanmar" in card.inner_text()  # its aligned English translation, beside it
    assert page.locator("#bqa-sources .bqa-title").inner_text() == "出處"
    # The [P10] marker reveals its card.
    page.locator("#bqa-chat a[href='#src-0-P10']").click()
    page.wait_for_selector("#src-0-P10.bqa-flash", timeout=5_000)
    assert page.url.rstrip("/") == page.url.split("#")[0].rstrip("/")  # no navigation
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-chat-zh.png"))
    assert page.foreign_requests == []  # the page works offline: nothing but the server is asked


@pytest.mark.integration
@pytest.mark.browser
def test_browser_follow_up_and_document_tab(page_at):
    page = page_at("en-US")
    _ask_in_page(page, "Which cities are sister cities of Chongqing?")
    _ask_in_page(page, "And which of them are in Thailand?")
    assert "Bangkok" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    standalone = page.locator("#bqa-sources .bqa-standalone").inner_text()
    assert "Which cities are sister cities of Chongqing? And which of them are in Thailand?" in standalone
    # It was merged, so the page offers to ask it again on its own.
    ask_new = page.locator("#bqa-ask-new")
    ask_new.wait_for(state="visible", timeout=10_000)
    answers = page.locator("#bqa-chat [data-testid=bot]").count()
    ask_new.click()
    page.wait_for_function(
        "n => document.querySelectorAll('#bqa-chat [data-testid=bot]').length > n",
        arg=answers,
        timeout=30_000,
    )
    ask_new.wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#bqa-sources .bqa-standalone')", timeout=30_000)
    # A marker of the first answer brings the first answer's sources back, at its card.
    page.locator("#bqa-chat a[href^='#src-0-']").first.click()
    page.wait_for_selector("#bqa-sources article[id^='src-0-'].bqa-flash", timeout=10_000)
    assert page.locator("#bqa-sources .bqa-standalone").count() == 0
    page.get_by_role("tab", name="Document").click()
    table = page.locator("#bqa-document table.bqa-doc")
    table.wait_for()
    assert table.locator("thead").inner_text().split() == ["English", "中文"]
    first = table.locator("tbody tr").first.inner_text()
    assert "P1" in first and "P4" in first and "press conference" in first and "新聞發布會" in first
    assert table.locator("tr.bqa-unpaired").count() >= 1  # P15 has no translation
    assert "Translation/Xiong Lingsong" in table.locator("tr.bqa-unpaired").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "web-document.png"), full_page=True)


def _upload_in_page(page, path: Path) -> None:
    notices = page.locator("#bqa-chat [data-testid=bot]").count()
    # Gradio renders the upload button's file input beside the button.
    page.locator("#bqa-upload").locator("xpath=..").locator("input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "n => document.querySelectorAll('#bqa-chat [data-testid=bot]').length > n",
        arg=notices,
        timeout=60_000,
    )


@pytest.mark.integration
@pytest.mark.browser
def test_browser_upload_is_used_in_this_tab_only(page_at, tmp_path):
    tea = tmp_path / "tea.md"
    lines = [
        "# Tea notes",
        "Oolong tea from Alishan is grown above 1000 metres.",
        "Pu'er tea from Yunnan is aged for years before it is sold.",
        "Longjing tea is pan-fired by hand in Hangzhou.",
        "阿里山烏龍茶種植於海拔一千公尺以上。",
        "雲南普洱茶在出售前要陳放多年。",
        "龍井茶在杭州以手工炒製。",
        "This line has no translation.",
    ]
    tea.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    page, other = page_at("en-US"), page_at("en-US")
    _upload_in_page(page, tea)
    assert "Loaded tea.md" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    assert "tea.md" in page.locator("#bqa-status").inner_text()
    assert page.locator("#bqa-examples").is_hidden()  # they are about the default document
    _ask_in_page(page, "Where is the oolong tea grown?")
    assert "Alishan" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    card = page.locator("#bqa-sources article.bqa-card").first
    assert "阿里山烏龍茶" in card.inner_text()  # the uploaded document's own alignment
    # Another tab still has the default document.
    assert "(default)" in other.locator("#bqa-status").inner_text()
    # A wrong file is explained in the chat and changes nothing.
    rtf = tmp_path / "notes.rtf"
    rtf.write_bytes(b"{\\rtf1 binary}")
    _upload_in_page(page, rtf)
    assert (
        "Cannot load notes.rtf: only .txt and .md (UTF-8 text), .pdf"
        in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    )
    assert "tea.md" in page.locator("#bqa-status").inner_text()
    # The default document is one click away.
    page.click("#bqa-default")
    page.wait_for_function("() => document.querySelector('#bqa-status').innerText.includes('(default)')")
    assert page.locator("#bqa-examples").is_visible()


@pytest.mark.integration
@pytest.mark.browser
def test_browser_a_parallel_pdf_upload_answers_and_names_its_page(page_at, tmp_path):
    from bilingual_qa.bench.docfiles import two_column_pdf

    rows = [
        ("Oolong tea from Alishan is grown above 1000 metres.", "阿里山烏龍茶種植於海拔一千公尺以上。"),
        ("Pu'er tea from Yunnan is aged for years before it is sold.", "雲南普洱茶在出售前要陳放多年。"),
        ("Longjing tea is pan-fired by hand in Hangzhou.", "龍井茶在杭州以手工炒製。"),
    ]
    pdf = two_column_pdf(rows, tmp_path / "tea.pdf")
    page = page_at("en-US")
    _upload_in_page(page, pdf)
    assert "Loaded tea.pdf" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    _ask_in_page(page, "普洱茶在出售前要怎样处理？")
    assert "陈放多年" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()  # in Simplified
    card = page.locator("#bqa-sources article.bqa-card").first
    assert "Yunnan" in card.inner_text()  # its twin, paired by the columns
    assert card.locator(".bqa-where").first.inner_text() == "page 1"


@pytest.mark.browser
def test_browser_shows_a_script_injection_as_text(page_at):
    page = page_at("en-US")
    _ask_in_page(page, XSS)
    page.wait_for_timeout(500)
    user = page.locator("#bqa-chat [data-testid=user]").last
    assert user.inner_text().strip() == XSS
    assert user.locator("img").count() == 0 and user.locator("a").count() == 0
    assert page.locator("#bqa-sources .bqa-question").inner_text() == XSS
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert page.dialogs == []
    page.screenshot(path=str(ARTIFACTS / "web-xss.png"))


@pytest.mark.integration
@pytest.mark.browser
def test_browser_language_toggle_relabels_the_page(page_at):
    page = page_at("en-US")
    assert page.locator("#bqa-send").inner_text() == "Ask"
    page.locator("#bqa-ui label", has_text="简体中文").click()
    page.wait_for_function("() => document.querySelector('#bqa-send').innerText === '提问'", timeout=10_000)
    page.get_by_role("tab", name="文件").wait_for(timeout=10_000)
    assert page.get_by_role("tab", name="问答").count() == 1
    assert "默认" in page.locator("#bqa-status").inner_text()


def test_cancel_stops_an_upload_and_the_tab_keeps_its_document(counting_page, tmp_path):
    gate = threading.Event()
    page, embedder = counting_page(gate=gate)
    before = Session(ui="en")
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            page.load_document(str(_fruit_file(tmp_path, "tea")), before, tab="tab-1")
        )
    )
    worker.start()
    _wait_for(lambda: embedder.building, "the upload's build to start")
    page.cancel_upload("tab-1")
    page.cancel_upload("another-tab")  # nothing of its own to cancel: harmless
    gate.set()
    worker.join(30)
    _chat, session, *_ = results[0]
    assert session.upload is None  # still the default document
    assert "Stopped indexing tea.md. This tab keeps its document." in _last_reply(results[0])
    assert not session.entries[-1].error and "bqa-error" not in _last_reply(results[0])  # no error
    assert not any(page._files.glob("*/document.txt")) and page._cancels == {}
    for _ in range(2):  # both indexing slots are free again
        assert page._indexing.acquire(blocking=False)
    page._indexing.release()
    page._indexing.release()
    again = page.load_document(str(_fruit_file(tmp_path, "tea")), before, tab="tab-1")
    assert again[1].upload is not None  # the same file loads when not cancelled


# --- the page as a person meets it: highlights, errors, phones, Chinese glyphs -----------------

# Background colours as [r, g, b, alpha] (Chromium reports rgb() or rgba()).
_RGBA = """el => {
    const parts = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g).map(Number);
    return parts.length === 3 ? [...parts, 1] : parts;
}"""


@pytest.mark.integration
@pytest.mark.browser
@SCREENS
def test_browser_twin_sentences_are_highlighted_in_a_quieter_colour_with_a_legend(
    page_at, real_assistant, viewport
):
    question = "重庆将与哪些国家的驻华使领馆搭建沟通协调机制？"
    page = page_at("zh-CN", viewport=viewport)
    _ask_in_page(page, question)
    card = page.locator("#bqa-sources #src-0-P10")
    quoted = card.locator(".bqa-cited mark")
    twin = card.locator(".bqa-side:not(.bqa-cited) mark")
    # The quote in P10, and in its English translation P9 the sentences that say the same: the
    # English splits P10's one sentence in two (the embassies, then the mechanism with them).
    quoted_texts = [quoted.nth(i).inner_text() for i in range(quoted.count())]
    assert quoted_texts and any("新加坡、緬甸、柬埔寨、泰國、馬來西亞" in text for text in quoted_texts)
    assert card.locator(".bqa-side:not(.bqa-cited)").get_attribute("lang") == "en"
    (citation,) = (c for c in real_assistant.ask(question).citations if c.paragraph_id == "P10")
    english = real_assistant.document.paragraph("P9").text
    marked = [english[start:end] for start, end in citation.twin_spans]
    assert marked and all(text.endswith(".") for text in marked)  # whole sentences
    assert "Singapore, Myanmar" in "".join(marked) or "diplomatic missions" in "".join(marked)
    assert [twin.nth(i).inner_text() for i in range(twin.count())] == marked
    assert {twin.nth(i).get_attribute("class") for i in range(twin.count())} == {"bqa-twin"}
    assert card.locator(".bqa-cited mark.bqa-twin").count() == 0
    # Two colours: the translation's is quieter (fainter) than the quote's, and the legend shows both.
    quote_colour, twin_colour = quoted.first.evaluate(_RGBA), twin.first.evaluate(_RGBA)
    assert quote_colour[:3] != twin_colour[:3] and 0 < twin_colour[3] < quote_colour[3]
    legend = page.locator("#bqa-sources .bqa-legend")
    assert legend.is_visible()
    text = webpage.strings("zh-Hans")
    keys = legend.locator(".bqa-key")
    assert [keys.nth(i).inner_text().strip() for i in range(keys.count())] == [
        text["legend_quoted"],
        text["legend_twin"],
    ]
    assert keys.nth(0).locator("mark").evaluate(_RGBA) == quote_colour
    assert keys.nth(1).locator("mark").evaluate(_RGBA) == twin_colour
    # On either screen the card fits it: the highlighted translation is on screen, not cut off.
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    width = viewport["width"]
    page.screenshot(path=str(ARTIFACTS / f"web-twin-{width}.png"), full_page=True)


def _bubbles(page) -> list[dict]:
    """Every chat message as the browser shows it: role, text, error markup, bubble colours."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#bqa-chat .message')].map(m => {
            const style = getComputedStyle(m);
            return {
                user: m.classList.contains('user'),
                text: m.innerText.trim(),
                error: m.querySelectorAll('.bqa-error').length,
                look: [style.backgroundColor, style.borderTopColor],
                rows: m.closest('.message-row').querySelectorAll('.message').length,
            };
        })"""
    )


@pytest.mark.integration
@pytest.mark.browser
@SCREENS
def test_browser_errors_are_chat_messages_of_their_own(page_at, tmp_path, viewport):
    page = page_at("en-US", viewport=viewport)
    _ask_in_page(page, "How many promotional events will Chongqing host?")
    answer = _bubbles(page)[-1]
    assert "[P11]" in answer["text"] and answer["error"] == 0
    # An upload error right after the answer: a new message, styled as an error, the answer untouched.
    pdf = tmp_path / "notes.pdf"
    pdf.write_bytes(b"%PDF-1.4 binary")
    _upload_in_page(page, pdf)
    *_, last_answer, error = _bubbles(page)
    assert last_answer == answer  # not a word added to the answer's bubble
    assert error["text"].startswith("⚠️ Cannot load notes.pdf: notes.pdf is damaged or not a PDF file")
    assert error["error"] == 1 and error["rows"] == 1 and not error["user"]
    assert error["look"] != answer["look"]  # its own colours
    probe = page.evaluate(
        """() => {
            const probe = document.createElement('div');
            probe.style.background = 'var(--error-background-fill)';
            document.querySelector('#bqa-chat').appendChild(probe);
            const colour = getComputedStyle(probe).backgroundColor;
            probe.remove();
            return colour;
        }"""
    )
    assert error["look"][0] == probe  # the theme's error colour
    # A file too large to send at all (Gradio's own limit, 4x the page's) is refused the same way,
    # not in a passing pop-up.
    huge = tmp_path / "huge.txt"
    huge.write_text("tea " * 300_000, encoding="utf-8")
    _upload_in_page(page, huge)
    too_large = _bubbles(page)[-1]
    limits = "it is 1.1 MB, larger than the 256 KB limit for uploads."
    assert too_large["text"] == f"⚠️ Cannot load huge.txt: {limits}"
    assert too_large["error"] == 1 and too_large["look"] == error["look"]
    assert page.locator("[data-testid=toast-body]").count() == 0
    # A question refused for its length: shown cut, with its length, and the refusal is an error too.
    question = ("How many promotional events will Chongqing host? " * 500)[:20_000]
    _ask_in_page(page, question)
    *_, asked, refused = _bubbles(page)
    shown = question[: webpage.QUESTION_SHOWN_CHARS].rstrip()
    assert asked["user"] and asked["text"] == f"{shown}… (20,000 characters)"
    assert refused["error"] == 1 and "the question is too long" in refused["text"]
    assert refused["look"] == error["look"]
    heading = page.locator("#bqa-sources .bqa-question")
    assert heading.inner_text() == asked["text"]  # never the whole question as the panel's heading
    assert heading.bounding_box()["height"] < 0.4 * viewport["height"]
    width = viewport["width"]
    page.screenshot(path=str(ARTIFACTS / f"web-errors-{width}.png"))


# Whether the question box's placeholder shows whole: on one line when it fits one (and then it
# must), else wrapped within the box's height. Measured with a copy of the box's text layout.
_PLACEHOLDER_FITS = """() => {
    const box = document.querySelector('#bqa-question textarea');
    const style = getComputedStyle(box);
    const copy = document.createElement('div');
    for (const name of ['fontFamily', 'fontSize', 'fontWeight', 'lineHeight', 'letterSpacing',
                        'paddingLeft', 'paddingRight', 'paddingTop', 'paddingBottom', 'boxSizing']) {
        copy.style[name] = style[name];
    }
    copy.style.position = 'absolute';
    copy.style.visibility = 'hidden';
    copy.style.whiteSpace = 'pre';
    copy.textContent = box.placeholder;
    document.body.appendChild(copy);
    const line = copy.getBoundingClientRect().width;
    copy.remove();
    return {placeholder: box.placeholder, needed: Math.ceil(line), width: box.clientWidth};
}"""


@pytest.mark.integration
@pytest.mark.browser
def test_browser_phone_layout_keeps_the_box_and_the_sources_in_reach(page_at):
    page = page_at("en-US", viewport=PHONE)
    height = PHONE["height"]
    # The placeholder shows whole in every page language.
    for ui in webpage.UI_LANGUAGES:
        name = webpage.strings(ui)["language_name"]
        page.locator("#bqa-ui label", has_text=name).click()
        page.wait_for_function(
            "p => document.querySelector('#bqa-question textarea').placeholder === p",
            arg=webpage.strings(ui)["question_placeholder"],
            timeout=10_000,
        )
        fit = page.evaluate(_PLACEHOLDER_FITS)
        assert fit["needed"] <= fit["width"], (ui, fit)
    page.locator("#bqa-ui label", has_text="English").click()
    page.wait_for_function("() => document.querySelector('#bqa-send').innerText === 'Ask'")
    _ask_in_page(page, "Which cities are sister cities of Chongqing?")
    # The sources come right under the answer they belong to.
    answer = page.locator("#bqa-chat [data-testid=bot]").last.bounding_box()
    sources = page.locator("#bqa-sources").bounding_box()
    gap = sources["y"] - (answer["y"] + answer["height"])
    assert 0 <= gap <= 90, gap
    assert page.locator("#bqa-sources #src-0-P9").count() == 1
    # Nothing sticks out sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # Wherever the page is scrolled, the question box and the Ask button are on screen.
    bottom = page.evaluate("document.documentElement.scrollHeight") - height
    assert bottom > height  # a long page: the answer and its card run past the screen
    for y in (0, bottom // 3, 2 * bottom // 3, bottom):
        page.evaluate("y => window.scrollTo(0, y)", y)
        page.wait_for_timeout(100)
        for selector in ("#bqa-question textarea", "#bqa-send"):
            box = page.locator(selector).bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= height, (y, selector, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (y, selector, box)
    # The sources fold away (and back) under the answer.
    summary = page.locator("#bqa-sources summary")
    summary.click()
    page.wait_for_function("() => !document.querySelector('#bqa-sources details').open")
    assert page.locator("#bqa-sources #src-0-P9").is_hidden()
    summary.click()
    page.locator("#bqa-sources #src-0-P9").wait_for(state="visible")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "web-phone.png"))


@pytest.mark.integration
@pytest.mark.browser
@SCREENS
def test_browser_page_loads_at_its_top(page_at, viewport):
    page = page_at("zh-TW", viewport=viewport)
    page.wait_for_timeout(500)  # whatever the page does once loaded
    assert page.evaluate("window.scrollY") == 0
    title = page.locator("#bqa-title").bounding_box()
    assert title["y"] >= 0 and title["y"] + title["height"] <= viewport["height"]
    # A keyboard at hand (a wide screen): the box has the focus. A phone's keyboard stays closed.
    focused = page.evaluate(
        "() => document.activeElement === document.querySelector('#bqa-question textarea')"
    )
    assert focused == (viewport is DESKTOP)


# Records, every frame, the page's scroll and where the header and the upload button are.
_RECORD_FRAMES = """() => {
    window.bqaFrames = [];
    const record = () => {
        const button = document.getElementById('bqa-upload');
        const title = document.getElementById('bqa-title');
        if (button && title) {  // (Gradio may re-render the button)
            const top = element => Math.round(element.getBoundingClientRect().top);
            window.bqaFrames.push([window.scrollY, top(title), top(button)]);
        }
        window.bqaRecording = requestAnimationFrame(record);
    };
    record();
}"""


@pytest.mark.integration
@pytest.mark.browser
@SCREENS
def test_browser_choosing_a_file_does_not_move_the_page(page_at, tmp_path, viewport):
    lines = [f"Line {i} is about green tea grown on hill {i}." for i in range(40)]
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    first.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    second.write_text("\n\n".join(reversed(lines)) + "\n", encoding="utf-8")
    page = page_at("en-US", viewport=viewport)
    # At the top of the page, the header stays where it is while a file is chosen and indexed.
    page.evaluate(_RECORD_FRAMES)
    _upload_in_page(page, first)
    page.wait_for_timeout(300)
    frames = page.evaluate("() => { cancelAnimationFrame(window.bqaRecording); return window.bqaFrames; }")
    assert {(y, title) for y, title, _ in frames} == {(0, frames[0][1])}, frames
    # Scrolled down to the button and choosing with it: the button stays under the pointer.
    page.locator("#bqa-upload").scroll_into_view_if_needed()
    with page.expect_file_chooser() as chooser:
        page.locator("#bqa-upload").click()
    page.evaluate(_RECORD_FRAMES)
    chooser.value.set_files(str(second))
    # A new document starts a new conversation: its notice replaces the chat.
    page.wait_for_function(
        "() => document.querySelector('#bqa-chat').innerText.includes('Loaded second.md')", timeout=60_000
    )
    page.wait_for_timeout(500)
    frames = page.evaluate("() => { cancelAnimationFrame(window.bqaRecording); return window.bqaFrames; }")
    assert "Loaded second.md" in page.locator("#bqa-chat [data-testid=bot]").last.inner_text()
    tops = {button for _, _, button in frames}
    assert max(tops) - min(tops) <= 2, frames


# How the page draws "重慶", beside two private-use characters, which no font draws: without a
# font for Chinese, Chromium draws every Han character as the same empty box (the fallback
# font's .notdef glyph, as it does the private-use ones), so "重" and "慶" come out as identical
# pixels and "重慶" as wide as the two boxes. With one (fonts-noto-cjk), each is its own glyph,
# a full em wide. Checked both ways in Debian's chromium at 40px: without the font "重慶" and the
# two boxes were both 48.0 px wide, with identical pixels (every assertion but the ink one fails);
# with it, 80 px against 48.0, three different pictures.
_GLYPHS = """selector => {
    const family = getComputedStyle(document.querySelector(selector)).fontFamily;
    const size = 40;
    const width = text => {
        const span = document.createElement('span');
        Object.assign(span.style, {fontFamily: family, fontSize: size + 'px', whiteSpace: 'pre',
                                   position: 'absolute', visibility: 'hidden'});
        span.textContent = text;
        document.body.appendChild(span);
        const w = span.getBoundingClientRect().width;
        span.remove();
        return w;
    };
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 64;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    const pixels = text => {
        context.clearRect(0, 0, 64, 64);
        context.font = size + 'px ' + family;
        context.textBaseline = 'top';
        context.fillText(text, 8, 8);
        const data = context.getImageData(0, 0, 64, 64).data;
        return {ink: data.filter((v, i) => i % 4 === 3 && v > 0).length, key: data.join(',')};
    };
    const [zhong, qing, box] = [pixels('重'), pixels('慶'), pixels('\\uE000')];
    return {
        size, family, han: width('重慶'), privateUse: width('\\uE000\\uE001'),
        inkZhong: zhong.ink, inkQing: qing.ink,
        sameAsEachOther: zhong.key === qing.key, sameAsBox: zhong.key === box.key,
    };
}"""


@pytest.mark.integration
@pytest.mark.browser
def test_browser_draws_chinese_glyphs_not_empty_boxes(page_at):
    page = page_at("zh-TW", viewport=DESKTOP)
    page.evaluate("document.fonts.ready")
    for selector in ("#bqa-title", "#bqa-question textarea", "#bqa-sources"):
        glyphs = page.evaluate(_GLYPHS, selector)
        size = glyphs["size"]
        assert glyphs["han"] >= 1.8 * size, glyphs  # two full-width glyphs
        assert abs(glyphs["han"] - glyphs["privateUse"]) > 0.1 * size, glyphs  # not two boxes
        assert not glyphs["sameAsEachOther"] and not glyphs["sameAsBox"], glyphs
        assert glyphs["inkZhong"] > 0 and glyphs["inkQing"] > 0, glyphs
