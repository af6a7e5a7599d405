"""The index in Milvus: built once, served by replicas, as the FAISS path answers.

A Milvus Lite gRPC server (``milvus-lite server``) runs for the session in its own process, as
a Milvus cluster would for several server replicas; every test uses its own collections (a
document of its own, or its own model id).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bilingual_qa import Assistant, milvus
from bilingual_qa.bench.replicas import start_server
from bilingual_qa.config import Settings
from bilingual_qa.errors import IndexStoreError
from bilingual_qa.retrieval import Retriever
from conftest import ROOT, FakeEmbedder, real_settings

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

QUESTIONS = [
    "What mechanism will Chongqing set up?",
    "重庆将举办多少场推介活动？",
    "重慶將與哪些國家的駐華使領館搭建溝通協調機制？",
    "How many promotional events will be held?",
    "Which countries are named?",
    "What is the capital of France?",
    "陸海新通道",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    """A Milvus Lite gRPC server in its own process, shared by the session's tests."""
    server, uri = start_server(tmp_path_factory.mktemp("milvus") / "data")
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _settings(tmp_path: Path, uri: str, **kw) -> Settings:
    return Settings(
        index_dir=tmp_path / "index",
        cache_dir=tmp_path / "cache",
        answer_threshold=0.0,
        vector_store="milvus",
        milvus_uri=uri,
        **kw,
    )


class NamedFake(FakeEmbedder):
    """The fake embedder under a model id of its own: its own collections in the shared server."""

    def __init__(self, model_id: str) -> None:
        super().__init__()
        self.model_id = model_id
        self.passages: list[str] = []

    def embed_passages(self, texts):
        self.passages.extend(texts)
        return super().embed_passages(texts)


class Refusing(NamedFake):
    """A replica's embedder: it may encode questions, never a passage."""

    def embed_passages(self, texts):
        raise AssertionError(f"a replica encoded {len(texts)} passages")


def _default_sha() -> str:
    from bilingual_qa.document import read_bytes
    from bilingual_qa.files import sha256_bytes

    return sha256_bytes(read_bytes(None)[1])


def _answers(assistant: Assistant) -> list[tuple[str, list[tuple[str, float]], bool]]:
    out = []
    for q in QUESTIONS:
        a = assistant.ask(q)
        out.append((a.text, [(c.paragraph_id, c.score) for c in a.citations], a.answered))
    return out


def _same(ours, theirs) -> None:
    for (text, cites, answered), (text2, cites2, answered2) in zip(ours, theirs, strict=True):
        assert text == text2 and answered == answered2
        assert [c for c, _ in cites] == [c for c, _ in cites2]
        assert np.allclose([s for _, s in cites], [s for _, s in cites2], atol=1e-5)


def test_a_replica_answers_as_faiss_without_encoding_a_passage(tmp_path, milvus_uri):
    settings = _settings(tmp_path, milvus_uri)
    builder = NamedFake("fake-replicas")
    built = Assistant(settings=settings, embedder=builder)
    assert builder.passages and built.index.vector_store == "milvus"
    faiss = Assistant(
        settings=settings.replace(vector_store="faiss", index_dir=tmp_path / "faiss"),
        embedder=NamedFake("fake-replicas"),
    )
    replica = Assistant(
        settings=settings.replace(index_dir=tmp_path / "other"), embedder=Refusing("fake-replicas")
    )
    assert replica.index.build_seconds == 0.0
    assert replica.paragraphs == faiss.paragraphs  # languages, twins, sentences: from the store
    assert np.array_equal(replica.index.sentence_vectors, faiss.index.sentence_vectors)
    expected = _answers(faiss)
    _same(_answers(built), expected)
    _same(_answers(replica), expected)


def test_the_stored_bm25_scores_are_the_in_memory_ones(tmp_path, milvus_uri):
    from bilingual_qa.document import read_document

    document = ROOT / "eval" / "xquad" / "xquad-1.txt"
    if not document.exists():
        document = None
    settings = _settings(tmp_path, milvus_uri, document=document)
    replica = Assistant(settings=settings, embedder=NamedFake("fake-bm25"))
    local = Retriever(
        Assistant(settings=settings.replace(vector_store="faiss"), embedder=NamedFake("fake-bm25")).index
    )
    stored = Retriever(replica.index)
    text = read_document(document).paragraphs
    questions = [*QUESTIONS, *(p.text[:60] for p in text[::7]), "the the the", "，。"]
    for q in questions:
        assert np.allclose(stored.lexical_scores(q), local.lexical_scores(q), rtol=1e-5, atol=1e-6), q


def test_concurrent_builders_encode_the_document_once(tmp_path, milvus_uri):
    settings = _settings(tmp_path, milvus_uri)
    embedders = [NamedFake("fake-concurrent"), NamedFake("fake-concurrent")]
    results: list[Assistant] = []
    threads = [
        threading.Thread(target=lambda e=e: results.append(Assistant(settings=settings, embedder=e)))
        for e in embedders
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2
    assert sorted(bool(e.passages) for e in embedders) == [False, True]
    assert results[0].index.location == results[1].index.location


def test_a_builder_waits_for_a_live_builder_elsewhere_and_not_for_a_dead_one(
    tmp_path, milvus_uri, monkeypatch
):
    settings = _settings(tmp_path, milvus_uri)
    store = milvus.Store(milvus.connect(settings), settings)
    store._catalog()
    base = milvus.base_name("0" * 64, "fake-waiting")
    marker = f"{base}.building"
    store._put(milvus.CATALOG, {marker: json.dumps({"build": "b1", "heartbeat": time.time()})})
    done: list[object] = []
    waiter = threading.Thread(
        target=lambda: done.append(store.wait_for_builder(base, "x.txt", "0" * 64, "fake-waiting"))
    )
    waiter.start()
    time.sleep(2.5)
    assert waiter.is_alive()  # the other builder is alive: wait for it
    store._put(milvus.CATALOG, {marker: json.dumps({"build": "b1", "heartbeat": time.time() - 10_000})})
    waiter.join(10)
    assert not waiter.is_alive() and done == [None]  # it died: build


KILLED_BUILD = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import FakeEmbedder
from bilingual_qa import Assistant
from bilingual_qa.config import Settings

from bilingual_qa import milvus

class Named(FakeEmbedder):
    model_id = "fake-killed"

insert = milvus.Store._insert
def stalled(self, collection, rows):
    insert(self, collection, rows)
    print("writing", flush=True)  # one collection filled, then killed here
    time.sleep(600)

milvus.Store._insert = stalled
Assistant(settings=Settings(index_dir={index!r}, cache_dir={cache!r}, vector_store="milvus",
          milvus_uri={uri!r}), embedder=Named())
"""


def test_a_killed_build_is_never_served_and_its_debris_is_dropped(tmp_path, milvus_uri, monkeypatch):
    settings = _settings(tmp_path, milvus_uri)
    code = KILLED_BUILD.format(
        tests=str(ROOT / "tests"),
        index=str(tmp_path / "killed"),
        cache=str(tmp_path / "kcache"),
        uri=milvus_uri,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app")}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = milvus.Store(milvus.connect(settings), settings)
    base = milvus.base_name(_default_sha(), "fake-killed")
    assert [n for n in store.client.list_collections() if n.startswith(base)]  # what it left
    assert store.published(base) is None
    monkeypatch.setattr(milvus, "STALE_SECONDS", 0.5)
    time.sleep(0.6)
    embedder = NamedFake("fake-killed")
    assistant = Assistant(settings=settings, embedder=embedder)
    assert embedder.passages  # built again, not served half-built
    assert store.published(base) is not None
    names = [n for n in store.client.list_collections() if n.startswith(base)]
    assert len(names) == 3 and all(assistant.index.location.endswith(n.rpartition("_")[0]) for n in names)


def test_a_failed_build_leaves_nothing_and_says_why(tmp_path, milvus_uri):
    from bilingual_qa.errors import ModelError

    class Failing(NamedFake):
        def embed_passages(self, texts):
            if len(self.passages) > 20:
                raise ModelError("the model broke")
            return super().embed_passages(texts)

    settings = _settings(tmp_path, milvus_uri)
    with pytest.raises(ModelError, match="the model broke"):
        Assistant(settings=settings, embedder=Failing("fake-failing"))
    store = milvus.Store(milvus.connect(settings), settings)
    base = milvus.base_name(_default_sha(), "fake-failing")
    assert not [n for n in store.client.list_collections() if n.startswith(base)]
    assert store.published(base) is None
    # and the next builder does not wait for it
    embedder = NamedFake("fake-failing")
    Assistant(settings=settings, embedder=embedder)
    assert embedder.passages


def test_a_wrong_uri_is_one_line(tmp_path, capfd):
    from bilingual_qa import cli

    bad = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(IndexStoreError, match=f"cannot reach Milvus at {bad}"):
        Assistant(settings=_settings(tmp_path, bad), embedder=NamedFake("fake-wrong"))
    code = cli.main(
        ["ask", "--vector-store", "milvus", "--milvus-uri", bad, "--index-dir", str(tmp_path), "hi"]
    )
    err = capfd.readouterr().err
    assert code == 4 and err.count("\n") == 1 and err.startswith("bilingual-qa: error: cannot reach Milvus")
    missing = tmp_path / "no" / "such" / "x.db"
    with pytest.raises(IndexStoreError, match=r"folder .* does not exist"):
        Assistant(settings=_settings(tmp_path, str(missing)), embedder=NamedFake("fake-wrong"))


def test_milvus_needs_a_uri():
    from bilingual_qa.errors import ConfigError

    with pytest.raises(ConfigError, match="needs milvus_uri"):
        Settings(vector_store="milvus")
    assert (
        Settings.from_env(
            {"BILINGUAL_QA_VECTOR_STORE": "milvus", "BILINGUAL_QA_MILVUS_URI": "x.db"}
        ).milvus_uri
        == "x.db"
    )


def test_a_stopped_server_mid_question_is_an_error_not_a_hang(tmp_path):
    """A replica whose Milvus went away answers with one IndexStoreError line, within its timeout."""
    server, uri = start_server(tmp_path / "d")
    try:
        settings = _settings(tmp_path, uri, milvus_timeout=3.0)
        assistant = Assistant(settings=settings, embedder=NamedFake("fake-gone"))
        assert assistant.ask(QUESTIONS[0]).citations
    finally:
        server.kill()
        server.wait()
    with pytest.raises(IndexStoreError, match=r"Milvus at .* failed a"):
        assistant.ask(QUESTIONS[0])


# --- integration: the real model, the CLI, two server processes ------------------------------------


@pytest.mark.integration
def test_two_served_replicas_answer_every_reference_question_as_faiss(tmp_path, milvus_uri, real_embedder):
    """Built once by `bilingual-qa index`, served by two processes, same answers as FAISS."""
    from gradio_client import Client

    from bilingual_qa.evaluation import load_reference_set

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "app"),
        "BILINGUAL_QA_INDEX_DIR": str(tmp_path / "index"),
        "BILINGUAL_QA_VECTOR_STORE": "milvus",
        "BILINGUAL_QA_MILVUS_URI": milvus_uri,
        "BILINGUAL_QA_BUILD_ENGINE": "model",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bilingual_qa.cli", "index", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["vector_store"] == "milvus" and stats["build_seconds"] > 0

    faiss = Assistant(settings=real_settings(tmp_path), embedder=real_embedder)
    replica = Assistant(
        settings=real_settings(tmp_path).replace(
            vector_store="milvus", milvus_uri=milvus_uri, index_dir=tmp_path / "replica"
        ),
        embedder=real_embedder,
    )
    assert replica.index.build_seconds == 0.0 and replica.index.location == stats["path"]
    cases = load_reference_set(ROOT / "eval" / "reference_qa.jsonl").cases
    for case in cases:
        history = [{"question": q, "answer": a} for q, a in case.history] or None
        ours, theirs = replica.ask(case.question, history=history), faiss.ask(case.question, history=history)
        assert [c.paragraph_id for c in ours.citations] == [c.paragraph_id for c in theirs.citations], (
            case.question
        )
        assert ours.text == theirs.text, case.question
        assert np.allclose([c.score for c in ours.citations], [c.score for c in theirs.citations], atol=1e-4)

    servers, urls = [], []
    try:
        for _ in range(2):
            port = _free_port()
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bilingual_qa.cli", "serve", "--port", str(port)],
                    env=env,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}/")
        for server in servers:
            lines = [server.stderr.readline() for _ in range(3)]
            assert "index loaded" in lines[1], lines  # nothing built by a replica
            threading.Thread(target=lambda s=server: s.stderr.read(), daemon=True).start()
        answers = [
            [Client(url, verbose=False).predict(q, "[]", api_name="/ask") for q in QUESTIONS] for url in urls
        ]
        keep = ("text", "language", "answered", "citations", "standalone_question")
        assert [[{k: a[k] for k in keep} for a in one] for one in answers] == [
            [{k: a[k] for k in keep} for a in answers[0]]
        ] * 2
        expected = [faiss.ask(q) for q in QUESTIONS]
        assert [[c["paragraph_id"] for c in a["citations"]] for a in answers[0]] == [
            [c.paragraph_id for c in e.citations] for e in expected
        ]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def test_a_milvus_lite_file_uri_takes_the_same_path(tmp_path, caplog):
    """A ``.db`` URI: pymilvus runs Milvus Lite's server in this process; built once, then loaded."""
    settings = _settings(tmp_path, str(tmp_path / "index.db"))
    builder = NamedFake("fake-lite-file")
    built = Assistant(settings=settings, embedder=builder)
    assert builder.passages and (tmp_path / "index.db").exists()
    # The in-process server's tracebacks for calls it does not implement stay off the terminal.
    assert not [r for r in caplog.records if r.name.startswith("grpc")]
    replica = Assistant(
        settings=settings.replace(index_dir=tmp_path / "other"), embedder=Refusing("fake-lite-file")
    )
    assert replica.index.location == built.index.location
    _same(_answers(replica), _answers(built))


def test_a_document_in_many_chunks_loads_whole(tmp_path, milvus_uri, monkeypatch):
    monkeypatch.setattr(milvus, "CHUNK_CHARS", 40)  # the document's JSON in hundreds of rows
    settings = _settings(tmp_path, milvus_uri)
    built = Assistant(settings=settings, embedder=NamedFake("fake-chunks"))
    replica = Assistant(
        settings=settings.replace(index_dir=tmp_path / "other"), embedder=Refusing("fake-chunks")
    )
    assert replica.paragraphs == built.paragraphs


def test_uploads_on_a_milvus_page_stay_private_to_the_replica(tmp_path, milvus_uri):
    from bilingual_qa.web import ChatPage
    from bilingual_qa.webpage import Session

    assistant = Assistant(settings=_settings(tmp_path, milvus_uri), embedder=NamedFake("fake-page"))
    page = ChatPage(assistant, stream_delay=0, max_upload_bytes=4096)
    upload = tmp_path / "fruit.md"
    upload.write_text("Apples grow on trees in Shaanxi.\n\n蘋果長在陝西的樹上。\n", encoding="utf-8")
    session = page.load_document(str(upload), Session())[1]
    engine = page.uploads.get(session.upload.sha256)
    assert engine.index.vector_store == "faiss" and engine.index.path is not None
    assert assistant.index.vector_store == "milvus"


def test_a_tampered_index_in_the_store_is_rebuilt_not_trusted(tmp_path, milvus_uri):
    settings = _settings(tmp_path, milvus_uri)
    built = Assistant(settings=settings, embedder=NamedFake("fake-tampered"))
    store = milvus.Store(milvus.connect(settings), settings)
    prefix = built.index.location.rpartition("/")[2]
    chunk = store._get(f"{prefix}_meta", ["document:0"])["document:0"]
    store._put(f"{prefix}_meta", {"document:0": chunk.replace("Chongqing", "Chungking", 1)})
    again = NamedFake("fake-tampered")
    rebuilt = Assistant(settings=settings.replace(index_dir=tmp_path / "other"), embedder=again)
    assert again.passages  # its checksum failed: built again, from the file
    assert rebuilt.index.location != built.index.location
    assert rebuilt.paragraphs == built.paragraphs
    # The tampered build finished once, so it stays (a replica may still serve it); it is not
    # published: a replica started now loads the new one.
    assert len([n for n in store.client.list_collections() if n.startswith(prefix)]) == 3
    assert (
        Assistant(settings=settings, embedder=Refusing("fake-tampered")).index.location
        == rebuilt.index.location
    )
