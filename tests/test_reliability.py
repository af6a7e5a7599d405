"""Reliability: what a hostile or unlucky user sends stays inside the error family.

* fuzzed questions and histories (hypothesis, derandomized: the same 2,000+ cases every run)
  through the real model: an Answer that keeps its invariants, or a BilingualQAError;
* the bad-document table through the Assistant and the CLI: one-line DocumentErrors;
* the index-fault table: truncations, bit flips and tampering of every index file, a save
  killed with SIGKILL, concurrent builders in separate processes: always a rebuild (or one
  build), and the same answers as a clean build.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bilingual_qa import Answer, Assistant
from bilingual_qa.errors import BilingualQAError, DocumentError, IndexStoreError
from bilingual_qa.index import MANIFEST, STORE_FILES, TWINS, VECTORS, _manifest_digest, load_index

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How many events will Chongqing hold?",
    "重慶的國際友城有哪些？",
    "重庆将与哪些国家合作？",
    "What is RCEP?",
]

# --- fuzzed questions ------------------------------------------------------------------------------

FRAGMENTS = [
    "How many", "events", "Chongqing", "ILSTC", "RCEP", "重慶", "重庆", "陸海新通道", "呢？", "那", "it",
    "[P3]", "[[[", "]]]", "{", "}", '"', "\\", "<script>", "</b>", "\u200b", "\u202e", "\ufeff", "\x00",
    "\x1b[31m", "\ud800", "\udcff", "\U0001f600", "重" * 600, "word " * 300, "\n", "\r\n", "\t", "?",
    "？", "。", "…", "重慶は", "충칭은", "Сколько", "ما هو", "ทาง", "e\u0301", "ﬁ", "Ⅻ", "٣", "𠀀", "they",
]  # fmt: skip
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)  # surrogates and controls included
BUILT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=24).map(" ".join)
QUESTION = st.one_of(ANY_TEXT, BUILT, BUILT, st.none(), st.integers(), st.binary(max_size=40))
TURN = st.one_of(
    st.tuples(st.one_of(ANY_TEXT, BUILT), st.one_of(ANY_TEXT, st.none())),
    st.fixed_dictionaries({"question": st.one_of(BUILT, st.integers())}, optional={"answer": ANY_TEXT}),
    st.lists(BUILT, max_size=3),
    st.integers(),
    BUILT,
)
HISTORY = st.one_of(st.none(), st.lists(TURN, max_size=24))


@pytest.fixture(scope="module")
def bot(tmp_path_factory, real_embedder):
    from conftest import real_settings

    return Assistant(settings=real_settings(tmp_path_factory.mktemp("fuzz")), embedder=real_embedder)


@pytest.mark.integration
@settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(question=QUESTION, history=HISTORY, streamed=st.booleans())
def test_fuzzed_questions_answer_or_raise_inside_the_family(bot, question, history, streamed):
    try:
        answer = list(bot.ask_stream(question, history))[-1] if streamed else bot.ask(question, history)
    except BilingualQAError as exc:
        message = str(exc)
        assert message and "\n" not in message
        message.encode("utf-8")  # printable: no lone surrogate in a message
        return
    assert isinstance(answer, Answer)
    cited = {c.paragraph_id for c in answer.citations}
    assert set(re.findall(r"\[(P\d+)\]", answer.text)) <= cited
    answer.to_json().encode("utf-8")


def test_fuzzed_web_histories_are_parsed_or_refused_inside_the_family():
    from bilingual_qa.config import Settings
    from bilingual_qa.web import _parse_history, history_limit

    limit = history_limit(Settings())
    samples = [
        "[" * 5000 + "]" * 5000,
        '[["q", "a"]]' + " " * limit,
        json.dumps([["q" * 100, "a"]] * 2000),
        '"\\ud800"',
        "[1, 2, {}]",
        "null",
        "{}",
        '[["\\udcff", null]]',
    ]

    @settings(max_examples=1000, deadline=None, derandomize=True)
    @given(
        st.one_of(
            ANY_TEXT, st.builds(json.dumps, st.recursive(st.none() | ANY_TEXT, st.lists, max_leaves=20))
        )
    )
    def parse(raw):
        try:
            _parse_history(raw, limit)
        except BilingualQAError as exc:
            assert "\n" not in str(exc)

    for raw in samples:
        with contextlib.suppress(BilingualQAError):
            _parse_history(raw, limit)
    parse()


# --- bad documents -------------------------------------------------------------------------------


def test_every_bad_document_is_a_one_line_document_error(tmp_path, settings, fake_embedder):
    from test_document import _bad_documents

    for name, (path, message) in _bad_documents(tmp_path).items():
        with pytest.raises(DocumentError) as caught:
            Assistant(document=path, settings=settings, embedder=fake_embedder)
        assert message in str(caught.value) and "\n" not in str(caught.value), name


@pytest.mark.integration
def test_the_cli_never_shows_a_traceback_for_a_bad_document(tmp_path):
    from test_document import _bad_documents

    env = {**os.environ, "BILINGUAL_QA_INDEX_DIR": str(tmp_path / "index"), "PYTHONPATH": str(ROOT / "app")}
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, (path, message) in _bad_documents(docs).items():
        out = subprocess.run(
            [sys.executable, "-m", "bilingual_qa.cli", "ask", "What is RCEP?", "--document", str(path)],
            capture_output=True,
            env=env,
            timeout=120,
        )
        err = out.stderr.decode("utf-8", "replace")
        assert out.returncode == 2 and "Traceback" not in err and message in err, (name, err)
        assert err.count("\n") == 1, (name, err)


# --- index faults --------------------------------------------------------------------------------


def _answers(bot: Assistant) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.text, tuple(c.paragraph_id for c in a.citations)) for a in map(bot.ask, QUESTIONS)]


def _fault(folder: Path, how: str, name: str) -> None:
    path = folder / name
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    elif how == "bit-flip":
        for position in (len(data) // 3, len(data) // 2, len(data) - 2):  # header, body, end
            flipped = bytearray(data)
            flipped[position] ^= 0x04
            if flipped != data:
                data = flipped
                break
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [VECTORS, TWINS, STORE_FILES["faiss"], MANIFEST])
@pytest.mark.parametrize("how", ["truncated", "emptied", "deleted", "bit-flip"])
def test_every_index_file_fault_rebuilds_and_answers_as_a_clean_build(settings, fake_embedder, how, name):
    clean = Assistant(settings=settings, embedder=fake_embedder)
    expected = _answers(clean)
    _fault(clean.index.path, how, name)
    with pytest.raises(IndexStoreError):
        load_index(clean.index.path, clean.index.document, fake_embedder.model_id)
    again = Assistant(settings=settings, embedder=fake_embedder)  # rebuilt (from cached vectors)
    load_index(again.index.path, again.index.document, fake_embedder.model_id)  # valid again
    assert _answers(again) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"languages": 0},  # P1 relabelled, checksum recomputed
        {"paragraphs": 16},
        {"model_id": "another-model"},
        {"files": {}},
        {"dimension": 3},
    ],
)
def test_a_tampered_manifest_with_a_valid_checksum_still_rebuilds(settings, fake_embedder, change):
    clean = Assistant(settings=settings, embedder=fake_embedder)
    expected = _answers(clean)
    path = clean.index.path / MANIFEST
    manifest = json.loads(path.read_text())
    for key, value in change.items():
        if key == "languages":
            manifest["languages"][value] = "zh-Hans"
        else:
            manifest[key] = value
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    again = Assistant(settings=settings, embedder=fake_embedder)
    assert json.loads(path.read_text())["manifest_sha256"] != manifest["manifest_sha256"]  # rewritten
    load_index(again.index.path, again.index.document, fake_embedder.model_id)
    assert _answers(again) == expected


# A child process that builds the default document's index with a slow, deterministic fake
# embedder; it marks each step in a file, so the parent can kill it at a chosen moment.
_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from conftest import FakeEmbedder
    from bilingual_qa import index
    from bilingual_qa.config import Settings

    marks, moment = Path(sys.argv[2]), sys.argv[4]

    class Slow(FakeEmbedder):
        def embed_passages(self, texts):
            with open(marks, "a") as f:
                f.write("build\\n")
            if moment == "build":
                time.sleep(60)
            time.sleep(0.2)
            return super().embed_passages(texts)

    persist = index._persist_store

    def stalled(searcher, path):
        persist(searcher, path)
        with open(marks, "a") as f:
            f.write("save\\n")
        if moment == "save":
            time.sleep(60)

    index._persist_store = stalled
    folder = Path(sys.argv[1])
    settings = Settings(index_dir=folder, cache_dir=folder / "cache", answer_threshold=0.0)
    index.open_document(None, settings, Slow())
    """
)


def _child(tmp_path: Path, marks: Path, moment: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app")}
    argv = [sys.executable, "-c", _CHILD, str(tmp_path / "index"), str(marks), str(ROOT / "tests"), moment]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(marks: Path, word: str, child: subprocess.Popen) -> None:
    for _ in range(600):
        if marks.exists() and word in marks.read_text():
            return
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.05)
    raise AssertionError(f"the child never reached {word}")


@pytest.mark.parametrize("moment", ["build", "save"])
def test_a_build_killed_at_any_moment_leaves_nothing_that_is_trusted(
    tmp_path, settings, fake_embedder, moment
):
    from bilingual_qa.index import STALE_SECONDS

    settings = settings.replace(index_dir=tmp_path / "index")
    marks = tmp_path / "marks"
    child = _child(tmp_path, marks, moment)
    _wait_for(marks, moment, child)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    leftovers = [p for p in (tmp_path / "index").iterdir() if p.name.startswith(".tmp-")]
    assert (moment == "save") == bool(leftovers)  # a killed save leaves its temporary folder
    old = time.time() - STALE_SECONDS - 60
    for folder in leftovers:
        os.utime(folder, (old, old))
    bot = Assistant(settings=settings, embedder=fake_embedder)
    assert not [p for p in (tmp_path / "index").iterdir() if p.name.startswith(".tmp-")]
    clean = Assistant(settings=settings.replace(index_dir=tmp_path / "clean"), embedder=fake_embedder)
    assert _answers(bot) == _answers(clean)


def test_concurrent_builder_processes_build_once(tmp_path, settings, fake_embedder):
    marks = tmp_path / "marks"
    children = [_child(tmp_path, marks, "none") for _ in range(3)]
    for child in children:
        assert child.wait(120) == 0, child.stderr.read().decode() if child.stderr else ""
    assert marks.read_text().count("save") == 1  # one process built and saved; the others loaded it
    bot = Assistant(settings=settings.replace(index_dir=tmp_path / "index"), embedder=fake_embedder)
    clean = Assistant(settings=settings.replace(index_dir=tmp_path / "clean"), embedder=fake_embedder)
    assert _answers(bot) == _answers(clean)
