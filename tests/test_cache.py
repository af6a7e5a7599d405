"""The passage-vector cache: re-indexing encodes only what changed, within a budget, safely."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bilingual_qa.cache import VectorCache
from bilingual_qa.document import parse_document, read_document
from bilingual_qa.index import build_index, open_index, vector_cache

TEXT = read_document().paragraphs


def _document(edit: int | None = None):
    lines = [p.text for p in TEXT]
    if edit is not None:
        lines[edit] = "Chongqing will also open a new rail line to Laos in 2025."
    return parse_document(("\n".join(lines) + "\n").encode(), name="report.txt")


def test_editing_one_paragraph_re_encodes_only_it_and_its_sentences(settings, recording_embedder):
    open_index(_document(), recording_embedder, settings)
    recording_embedder.batches.clear()
    edited = _document(edit=3)
    index = open_index(edited, recording_embedder, settings)
    changed = edited.paragraphs[3]
    assert set(recording_embedder.embedded) == {changed.text} | {s.text for s in changed.sentences}
    clean = build_index(edited, recording_embedder)  # no cache: every passage encoded
    np.testing.assert_allclose(index.paragraph_vectors, clean.paragraph_vectors, atol=1e-6)
    np.testing.assert_allclose(index.sentence_vectors, clean.sentence_vectors, atol=1e-6)


def test_a_document_seen_before_costs_no_encoding(settings, recording_embedder):
    import shutil

    first = open_index(_document(), recording_embedder, settings)
    shutil.rmtree(first.path)  # its index pruned or lost: the vectors are still kept
    recording_embedder.batches.clear()
    again = open_index(_document(), recording_embedder, settings)
    assert recording_embedder.batches == []
    np.testing.assert_array_equal(again.sentence_vectors, first.sentence_vectors)


def test_another_model_or_scheme_never_reads_these_vectors(tmp_path):
    path = tmp_path / "vectors.sqlite"
    VectorCache(path, "model-a", "s1", 2**20).put(["text"], np.ones((1, 4), np.float32))
    assert VectorCache(path, "model-a", "s1", 2**20).get(["text"], 4)
    assert not VectorCache(path, "model-b", "s1", 2**20).get(["text"], 4)
    assert not VectorCache(path, "model-a", "s2", 2**20).get(["text"], 4)
    assert not VectorCache(path, "model-a", "s1", 2**20).get(["text"], 8)  # a row of another size is a miss


def test_the_budget_drops_the_least_recently_used(tmp_path):
    row = 4 * 4 + 120
    cache = VectorCache(tmp_path / "v.sqlite", "m", "s", 3 * row)
    cache.put(["a", "b", "c"], np.ones((3, 4), np.float32))
    cache.get(["a"], 4)  # used: kept
    cache.put(["d"], np.ones((1, 4), np.float32))
    assert len(cache) == 3 and set(cache.get(["a", "b", "c", "d"], 4)) == {"a", "c", "d"}


def test_a_build_that_fails_halfway_keeps_what_it_encoded(settings, recording_embedder):
    forward = recording_embedder._forward
    last = _document().paragraphs[-1].sentences[-1].text  # encoded in the build's last chunk

    def failing(texts, is_query):
        if last in texts:
            raise RuntimeError("killed")
        return forward(texts, is_query)

    recording_embedder._forward = failing
    with pytest.raises(RuntimeError):
        open_index(_document(), recording_embedder, settings, progress=lambda _share: None)
    kept = len(vector_cache(settings, recording_embedder))
    assert kept > 0
    recording_embedder._forward = forward
    asked: list[str] = []
    embed = recording_embedder.embed_passages
    recording_embedder.embed_passages = lambda texts: asked.extend(texts) or embed(texts)
    open_index(_document(), recording_embedder, settings)
    document = _document()
    total = len(
        {p.text for p in document.paragraphs} | {s.text for p in document.paragraphs for s in p.sentences}
    )
    assert len(asked) == len(set(asked)) == total - kept  # only what the failed build had not kept


def test_writers_in_parallel_and_a_damaged_file_never_fail_a_build(tmp_path, settings, fake_embedder):
    path = tmp_path / "v.sqlite"
    errors = []

    def writer(n: int) -> None:
        try:
            cache = VectorCache(path, "m", "s", 2**20)
            for i in range(20):
                cache.put([f"{n}-{i}"], np.full((1, 4), n, np.float32))
            cache.close()
        except Exception as exc:  # any failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(VectorCache(path, "m", "s", 2**20)) == 80
    settings.index_dir.mkdir(parents=True)
    (settings.index_dir / "vectors.sqlite").write_bytes(b"not a database" * 100)
    index = open_index(read_document(), fake_embedder, settings)  # built without the cache
    assert index.path is not None
