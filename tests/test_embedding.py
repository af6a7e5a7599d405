import numpy as np
import pytest

from bilingual_qa.config import Settings
from bilingual_qa.embedding import Embedder, load_embedder
from bilingual_qa.errors import ModelError


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
