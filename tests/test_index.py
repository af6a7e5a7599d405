import json
import os
from pathlib import Path

import numpy as np
import pytest

from bilingual_qa.document import read_document
from bilingual_qa.errors import IndexStoreError
from bilingual_qa.index import (
    MANIFEST,
    STORE_FILES,
    VECTORS,
    build_index,
    index_folder,
    load_index,
    open_index,
    save_index,
)


def _hits(index, embedder, question="sister cities in Thailand"):
    return index.dense_search(embedder.embed_queries([question])[0], 5)


def _spying(embedder):
    """The embedder with every passage it encodes recorded, in order."""
    encoded: list[str] = []
    original = embedder.embed_passages

    def spy(texts):
        encoded.extend(texts)
        return original(texts)

    embedder.embed_passages = spy
    return encoded


def test_build_save_load_gives_same_hits(settings, fake_embedder):
    doc = read_document()
    built = build_index(doc, fake_embedder)
    folder = index_folder(settings, doc, fake_embedder.model_id)
    save_index(built, folder)
    loaded = load_index(folder, doc, fake_embedder.model_id)
    for q in ["sister cities in Thailand", "翻譯", "重庆的国际友城"]:
        assert _hits(built, fake_embedder, q) == _hits(loaded, fake_embedder, q)
    assert [p.twin_id for p in loaded.document.paragraphs] == [p.twin_id for p in built.document.paragraphs]
    np.testing.assert_array_equal(built.sentence_vectors, loaded.sentence_vectors)


def test_open_index_reuses_a_valid_index(settings, fake_embedder):
    doc = read_document()
    first = open_index(doc, fake_embedder, settings)
    calls = fake_embedder.calls
    second = open_index(doc, fake_embedder, settings)
    assert fake_embedder.calls == calls, "a valid index must not be re-embedded"
    assert second.path == first.path


def _corrupt(folder: Path, how: str) -> None:
    if how == "truncated-vectors":
        data = (folder / VECTORS).read_bytes()
        (folder / VECTORS).write_bytes(data[: len(data) // 2])
    elif how == "missing-faiss":
        (folder / STORE_FILES["faiss"]).unlink()
    elif how == "garbage-manifest":
        (folder / MANIFEST).write_text("{not json")
    elif how == "other-document":
        m = json.loads((folder / MANIFEST).read_text())
        m["document_sha256"] = "0" * 64
        (folder / MANIFEST).write_text(json.dumps(m))
    elif how == "flipped-bit":  # "en" -> "el" in P1's label, the checksum left as it was
        text = (folder / MANIFEST).read_text()
        (folder / MANIFEST).write_text(text.replace('"en"', '"el"', 1))
    elif how == "garbage-everywhere":
        for f in folder.iterdir():
            f.write_bytes(os.urandom(64))


@pytest.mark.parametrize(
    "how",
    [
        "truncated-vectors",
        "missing-faiss",
        "garbage-manifest",
        "other-document",
        "flipped-bit",
        "garbage-everywhere",
    ],
)
def test_broken_index_is_detected_and_rebuilt(settings, fake_embedder, how):
    doc = read_document()
    folder = open_index(doc, fake_embedder, settings).path
    _corrupt(folder, how)
    with pytest.raises(IndexStoreError):
        load_index(folder, doc, fake_embedder.model_id)
    rebuilt = open_index(doc, fake_embedder, settings)
    assert rebuilt.path == folder
    load_index(folder, doc, fake_embedder.model_id)  # valid again


def test_writes_leave_no_temporary_folders(settings, fake_embedder):
    doc = read_document()
    folder = open_index(doc, fake_embedder, settings).path
    _corrupt(folder, "missing-faiss")
    open_index(doc, fake_embedder, settings)
    entries = sorted(settings.index_dir.iterdir())
    assert [e for e in entries if e.is_dir()] == [folder]
    files = {e.name for e in entries if not e.is_dir()}  # the builders' lock and the vector cache
    assert files - {"vectors.sqlite", "vectors.sqlite-wal", "vectors.sqlite-shm"} == {f".{folder.name}.lock"}


def test_concurrent_builders_of_one_document_build_once(settings, fake_embedder):
    import threading

    doc = read_document()
    started, release = threading.Event(), threading.Event()
    encode = fake_embedder.embed_passages
    builds = []

    def slow(texts):
        builds.append(len(texts))
        started.set()
        assert release.wait(10)  # the other builders arrive while this one is encoding
        return encode(texts)

    fake_embedder.embed_passages = slow
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(open_index(doc, fake_embedder, settings)))
        for _ in range(3)
    ]
    workers[0].start()
    assert started.wait(10)
    for w in workers[1:]:
        w.start()
    release.set()
    for w in workers:
        w.join(20)
    assert len(results) == 3 and len(builds) == 1, "the waiting builders load the first one's index"
    assert {r.path for r in results} == {results[0].path}
    assert all(_hits(r, fake_embedder) == _hits(results[0], fake_embedder) for r in results)


def test_unwritable_index_dir_keeps_the_index_in_memory(tmp_path, fake_embedder):
    from bilingual_qa.config import Settings

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = Settings(index_dir=blocker / "index", cache_dir=tmp_path / "cache")
    index = open_index(read_document(), fake_embedder, settings)
    assert index.path is None
    assert _hits(index, fake_embedder)


def test_stats_report_pairs_and_unpaired(settings, fake_embedder):
    stats = open_index(read_document(), fake_embedder, settings).stats()
    assert stats["paragraphs"] == 17
    assert stats["sentences"] == sum(len(p.sentences) for p in read_document().paragraphs)


def test_simple_vector_store_gives_the_same_hits_as_faiss(tmp_path, fake_embedder):
    """The vector store is a real seam: a second llama-index store answers the same."""
    from bilingual_qa.config import Settings

    doc = read_document()
    faiss_index = open_index(doc, fake_embedder, Settings(index_dir=tmp_path / "a", cache_dir=tmp_path))
    simple = open_index(
        doc, fake_embedder, Settings(index_dir=tmp_path / "b", cache_dir=tmp_path, vector_store="simple")
    )
    assert simple.vector_store == "simple" and (simple.path / STORE_FILES["simple"]).is_file()
    reloaded = load_index(simple.path, doc, fake_embedder.model_id, "simple")

    def ranked(index, q):  # ties may come back in either order
        return sorted((-round(s, 5), i) for i, s in _hits(index, fake_embedder, q))

    for q in ["sister cities in Thailand", "翻譯", "智库联盟"]:
        expected = ranked(faiss_index, q)
        assert ranked(simple, q) == expected
        assert ranked(reloaded, q) == expected


def test_the_faiss_file_is_one_llama_index_faiss_store_loads(settings, fake_embedder):
    """Built without llama-index, the persisted store is still llama-index's FaissVectorStore format."""
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.vector_stores.faiss import FaissVectorStore

    doc = read_document()
    index = open_index(doc, fake_embedder, settings)
    store = FaissVectorStore.from_persist_path(str(index.path / STORE_FILES["faiss"]))
    for q in ["sister cities in Thailand", "翻譯", "智库联盟"]:
        vector = fake_embedder.embed_queries([q])[0]
        result = store.query(VectorStoreQuery(query_embedding=vector.tolist(), similarity_top_k=5))
        theirs = [(int(i), round(float(s), 5)) for i, s in zip(result.ids, result.similarities, strict=True)]
        assert theirs == [(i, round(s, 5)) for i, s in index.dense_search(vector, 5)]


def test_large_collections_switch_to_ivf_with_high_recall():
    import faiss

    from bilingual_qa.index import EXACT_SEARCH_LIMIT, FaissSearch, make_faiss_index, train_faiss_index

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 64))
    vectors = (centers[rng.integers(0, 50, 40000)] + 0.3 * rng.normal(size=(40000, 64))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert isinstance(make_faiss_index(64, 10), faiss.IndexFlatIP)
    ivf = make_faiss_index(64, EXACT_SEARCH_LIMIT + 1)
    assert isinstance(ivf, faiss.IndexIVFScalarQuantizer)
    train_faiss_index(ivf, vectors)
    ivf.add(vectors)
    exact = faiss.IndexFlatIP(64)
    exact.add(vectors)
    queries = vectors[:100] + 0.05 * rng.normal(size=(100, 64)).astype(np.float32)
    recall = np.mean(
        [
            len(
                {i for i, _ in FaissSearch(ivf).search(q, 10)}
                & {i for i, _ in FaissSearch(exact).search(q, 10)}
            )
            / 10
            for q in queries
        ]
    )
    assert recall >= 0.98


def test_build_encodes_each_distinct_text_once(fake_embedder):
    encoded = _spying(fake_embedder)
    doc = read_document()
    index = build_index(doc, fake_embedder)
    passages = [p.text for p in doc.paragraphs] + [s.text for p in doc.paragraphs for s in p.sentences]
    assert len(encoded) == len(set(encoded)) == len(set(passages)) < len(passages)
    one_sentence = next(i for i, p in enumerate(doc.paragraphs) if len(p.sentences) == 1)
    row = index.sentence_range(one_sentence)[0]
    np.testing.assert_array_equal(index.paragraph_vectors[one_sentence], index.sentence_vectors[row])


def test_open_document_reads_parses_then_loads_the_model_and_reuses_languages(
    settings, fake_embedder, tmp_path
):
    from bilingual_qa.errors import DocumentError
    from bilingual_qa.index import open_document

    loads = []

    def load():
        loads.append(1)
        return fake_embedder

    with pytest.raises(DocumentError):
        open_document(tmp_path / "missing.txt", settings, load)
    assert loads == []  # a bad document fails before any model is loaded
    first = open_document(None, settings, load)
    assert loads == [1] and first.document.units
    # the second open parses with the languages the manifest recorded and loads the index
    second = open_document(None, settings, fake_embedder)
    assert [p.language for p in second.document.paragraphs] == [p.language for p in first.document.paragraphs]
    assert second.path == first.path and second.document == first.document


def test_a_build_with_progress_encodes_in_chunks_and_gives_the_same_index(fake_embedder):
    from bilingual_qa.index import PROGRESS_CHUNK

    doc = read_document()
    whole = build_index(doc, fake_embedder)
    assert fake_embedder.calls == 1
    reported = []
    chunked = build_index(doc, fake_embedder, progress=reported.append)
    distinct = len({p.text for p in doc.paragraphs} | {s.text for p in doc.paragraphs for s in p.sentences})
    assert fake_embedder.calls - 1 == -(-distinct // PROGRESS_CHUNK)  # the model is free between chunks
    assert reported == sorted(reported) and reported[-1] == 1.0 and len(reported) == fake_embedder.calls - 1
    assert np.array_equal(whole.sentence_vectors, chunked.sentence_vectors)
    assert whole.document == chunked.document


@pytest.mark.parametrize("label", ["el", "zh-Hant", "und"])
def test_a_relabelled_paragraph_is_caught_even_with_a_recomputed_checksum(settings, fake_embedder, label):
    from bilingual_qa.index import _manifest_digest, open_document

    clean = open_document(None, settings, fake_embedder)
    manifest = json.loads((clean.path / MANIFEST).read_text())
    assert manifest["languages"][0] == "en"
    manifest["languages"][0] = label
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (clean.path / MANIFEST).write_text(json.dumps(manifest))
    reopened = open_document(None, settings, fake_embedder)
    assert [p.language for p in reopened.document.paragraphs] == [
        p.language for p in clean.document.paragraphs
    ]
    assert json.loads((clean.path / MANIFEST).read_text())["languages"][0] == "en"  # rebuilt
    assert _hits(reopened, fake_embedder) == _hits(clean, fake_embedder)


def test_stale_temporary_folders_are_removed_and_fresh_ones_kept(settings, fake_embedder):
    import time as clock

    from bilingual_qa.index import STALE_SECONDS

    settings.index_dir.mkdir(parents=True)
    stale, fresh = settings.index_dir / ".tmp-doc-abc", settings.index_dir / ".tmp-doc-def"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / VECTORS).write_bytes(b"partial")
    old = clock.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    open_index(read_document(), fake_embedder, settings)
    assert not stale.exists() and fresh.exists()  # a save in progress elsewhere is left alone


def test_old_versions_of_a_document_are_pruned(tmp_path, fake_embedder):
    from bilingual_qa.config import Settings
    from bilingual_qa.document import parse_document

    settings = Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", index_versions=2)
    folders = []
    for version in range(4):
        doc = parse_document(
            f"Version {version} of the report.\n第{version}版報告。\n".encode(), name="report.txt"
        )
        folders.append(open_index(doc, fake_embedder, settings).path)
    kept = sorted(p for p in settings.index_dir.iterdir() if p.is_dir())
    assert kept == sorted(folders[-2:])
    other = parse_document(b"Another document.\n", name="other.txt")
    open_index(other, fake_embedder, settings)
    assert set(folders[-2:]) <= set(settings.index_dir.iterdir())  # other names are not versions of it


def test_progress_hears_how_many_passages_will_be_encoded(settings, fake_embedder):
    class Progress:
        def __init__(self):
            self.started, self.shares = [], []

        def start(self, passages):
            self.started.append(passages)

        def __call__(self, share):
            self.shares.append(share)

    doc = read_document()
    first = Progress()
    open_index(doc, fake_embedder, settings, first)
    passages = len({p.text for p in doc.paragraphs} | {s.text for p in doc.paragraphs for s in p.sentences})
    assert first.started == [passages] and first.shares[-1] == 1.0
    assert first.shares == sorted(first.shares)


def test_layout_pairs_become_twins_and_a_disagreement_is_kept_with_the_index(
    settings, fake_embedder, tmp_path
):
    import dataclasses

    document = read_document(None)
    aligned = build_index(document, fake_embedder)
    english = next(p for p in aligned.document.paragraphs if p.language == "en" and p.twin_id)
    stranger = next(
        p for p in aligned.document.paragraphs
        if p.language != "en" and p.twin_id and p.id != english.twin_id
    )  # fmt: skip
    laid_out = dataclasses.replace(document, layout_pairs=((english.id, stranger.id),))
    index = build_index(laid_out, fake_embedder)
    assert index.document.paragraph(english.id).twin_id == stranger.id  # the layout's pair stands
    assert index.layout_disagreements == (
        f"{english.id}–{stranger.id}: the alignment pairs {english.id} with {english.twin_id} "
        f"and {stranger.id} with {stranger.twin_id}",
    )
    assert index.stats()["layout_disagreements"] == list(index.layout_disagreements)
    loaded = load_index(save_index(index, tmp_path / "saved").path, laid_out, index.model_id)
    assert loaded.layout_disagreements == index.layout_disagreements
    assert loaded.document.paragraph(english.id).twin_id == stranger.id


# --- progressive builds: paragraphs first, sentences on demand and after ------------------------


def test_a_progressive_build_is_searchable_from_its_paragraphs_and_finishes_as_the_whole_build(fake_embedder):
    from bilingual_qa.index import Build

    doc = read_document()
    whole = build_index(doc, fake_embedder)
    encoded = _spying(fake_embedder)
    build = Build(doc, fake_embedder)
    paragraphs = {p.text for p in doc.paragraphs}
    assert set(encoded) == paragraphs and len(encoded) == len(paragraphs)
    partial = build.index
    assert partial.document == whole.document  # the twins come from the paragraphs alone
    np.testing.assert_array_equal(partial.paragraph_vectors, whole.paragraph_vectors)
    assert _hits(partial, fake_embedder) == _hits(whole, fake_embedder)
    # A sentence that is its whole paragraph is known already; the others wait, as zeros.
    known = ~partial.pending
    np.testing.assert_array_equal(partial.sentence_vectors[known], whole.sentence_vectors[known])
    assert not partial.sentence_vectors[partial.pending].any()
    with pytest.raises(ValueError, match="pending"):
        save_index(partial, Path("/nonexistent"))

    target = max(range(len(doc.paragraphs)), key=lambda i: len(doc.paragraphs[i].sentences))
    encoded.clear()
    filled = build.fill([target])
    assert set(encoded) == {s.text for s in doc.paragraphs[target].sentences} - paragraphs
    rows = filled.sentence_range(target)
    assert not filled.pending[rows.start : rows.stop].any() and filled.pending.any()
    np.testing.assert_array_equal(
        filled.sentence_vectors[rows.start : rows.stop], whole.sentence_vectors[rows.start : rows.stop]
    )
    assert build.fill([target]) is filled and len(encoded) == len(set(encoded))  # nothing twice

    done = build.finish()
    assert done.pending is None and build.finish() is done
    np.testing.assert_array_equal(done.sentence_vectors, whole.sentence_vectors)
    distinct = paragraphs | {s.text for p in doc.paragraphs for s in p.sentences}
    assert len(encoded) + len(paragraphs) == len(distinct)  # each distinct text encoded once in all


def test_a_progressive_open_holds_the_builders_lock_until_it_has_saved(settings, fake_embedder):
    import fcntl

    from bilingual_qa.index import Build

    doc = read_document()
    progress = []
    build = open_index(doc, fake_embedder, settings, progress.append, progressive=True)
    assert isinstance(build, Build)
    folder = index_folder(settings, doc, fake_embedder.model_id)
    lock = folder.parent / f".{folder.name}.lock"

    def lock_is_free() -> bool:
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True

    assert not folder.exists() and not lock_is_free()
    done = build.finish()
    assert done.path == folder and lock_is_free()
    assert progress == sorted(progress) and progress[-1] == 1.0
    loaded = open_index(doc, fake_embedder, settings, progressive=True)  # a saved index loads whole
    assert loaded.pending is None and loaded.path == folder
    np.testing.assert_array_equal(loaded.sentence_vectors, done.sentence_vectors)


def test_a_progressive_build_stopped_early_saves_nothing_and_its_vectors_are_kept(settings, fake_embedder):
    doc = read_document()
    build = open_index(doc, fake_embedder, settings, progressive=True)
    target = next(i for i, p in enumerate(doc.paragraphs) if len(p.sentences) > 1)
    build.fill([target])
    build.close()
    build.close()  # idempotent
    with pytest.raises(IndexStoreError, match="stopped"):
        build.finish()
    folder = index_folder(settings, doc, fake_embedder.model_id)
    assert not folder.exists()
    encoded = _spying(fake_embedder)
    again = open_index(doc, fake_embedder, settings)  # the lock was let go: this build runs
    kept = {p.text for p in doc.paragraphs} | {s.text for s in doc.paragraphs[target].sentences}
    assert encoded and not set(encoded) & kept
    assert again.path == folder and again.pending is None


def test_questions_fill_a_progressive_build_while_it_finishes_in_another_thread(fake_embedder):
    import threading

    from bilingual_qa.index import Build

    doc = read_document()
    whole = build_index(doc, fake_embedder)
    build = Build(doc, fake_embedder, progress=lambda share: None)  # chunk by chunk
    finished = []
    worker = threading.Thread(target=lambda: finished.append(build.finish()))
    worker.start()
    for position in range(len(doc.paragraphs)):
        index = build.fill([position])
        rows = index.sentence_range(position)
        assert index.pending is None or not index.pending[rows.start : rows.stop].any()
    worker.join(20)
    assert finished and finished[0].pending is None
    np.testing.assert_array_equal(finished[0].sentence_vectors, whole.sentence_vectors)
