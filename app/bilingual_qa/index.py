"""Index: paragraph and sentence embeddings, twins, and a vector store, persisted.

Everything a question needs is precomputed here, so answering costs one query
encoding. The vector store is a seam chosen by ``Settings.vector_store``: the
default FAISS index (exact inner-product search up to ``EXACT_SEARCH_LIMIT``
paragraphs, an inverted-file (IVF) index above), persisted in the file format of
llama-index's ``FaissVectorStore`` (which loads it as is), or llama-index's
``SimpleVectorStore``; any other llama-index store (Qdrant, Elasticsearch…)
plugs in the same way through :class:`StoreSearch`. Building and querying a
FAISS store go straight to FAISS, so neither waits for llama-index to import.
An index lives in its own folder, named by document and model, with a manifest
(format version, document sha256, model id, settings, file checksums). A stale,
partial or corrupt folder is detected and rebuilt, never trusted; writes go to a
temporary folder that is renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import alignment
from .cache import FILENAME as CACHE_FILE
from .cache import VectorCache
from .config import Settings
from .document import Document, parse_document, read_bytes
from .embedding import Embedder
from .errors import IndexStoreError
from .files import exclusive_lock, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
MANIFEST = "manifest.json"
VECTORS = "vectors.npz"
TWINS = "twins.json"
STORE_FILES = {"faiss": "paragraphs.faiss", "simple": "paragraphs.simple.json"}
#: Up to this many paragraphs, FAISS searches exactly; above, an inverted-file index
#: (about sqrt(n) k-means lists, IVF_NPROBE of them searched, float16 vectors) keeps query cost flat.
#: Exact search reads every vector (1.5 KB each): 100k took 20-50 ms a query on 2 busy
#: cores, as much as encoding the query; 50k stays near 10 ms. IVF rather than HNSW:
#: an HNSW graph (M=32, efConstruction=80) took 264 s to build for 100k vectors there,
#: about an hour for 1M; IVF builds 1M in 13-30 s with recall@10 ≥ 0.99 at nprobe 16.
#: `bilingual-qa bench` measures build time, latency and recall@10 against exact search.
EXACT_SEARCH_LIMIT = 50_000
IVF_NPROBE = 16
#: k-means trains on this many sampled vectors per list (FAISS wants at least 39).
IVF_TRAIN_PER_LIST = 64
# Bump when sentence splitting, alignment, embedding windows or lexical tokens (a Milvus store
# keeps the BM25 vocabulary) change what an index contains.
PIPELINE_VERSION = "sentences-2/alignment-1/windows-512/lexical-3"


class FaissSearch:
    """Top-k inner-product search straight on a FAISS index (the persisted FaissVectorStore)."""

    def __init__(self, faiss_index: object) -> None:
        self.faiss_index = faiss_index
        if hasattr(faiss_index, "nprobe"):  # IVF: how many lists a query visits
            faiss_index.nprobe = IVF_NPROBE

    def search(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, score) pairs, best first."""
        import faiss

        # One query is too little work to share: on 2 busy cores a 10k-vector exact search took
        # 10-24 ms with FAISS's default OpenMP threads and 2-5 ms with one. The setting is the
        # calling thread's own (an OpenMP ICV) and is restored, so builds keep every core.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, rows = self.faiss_index.search(query_vector.reshape(1, -1).astype(np.float32), k)  # type: ignore[attr-defined]
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]


class StoreSearch:
    """Top-k search through any llama-index vector store whose node ids are paragraph ids."""

    def __init__(self, store: object, paragraph_ids: list[str]) -> None:
        self.store = store
        self._row = {pid: i for i, pid in enumerate(paragraph_ids)}

    def search(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, score) pairs, best first."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        result = self.store.query(  # type: ignore[attr-defined]
            VectorStoreQuery(query_embedding=query_vector.tolist(), similarity_top_k=k)
        )
        return [(self._row[i], float(s)) for i, s in zip(result.ids, result.similarities, strict=True)]


@dataclass(frozen=True)
class Index:
    """A document ready to be searched: vectors, twins and the FAISS store."""

    document: Document
    model_id: str
    paragraph_vectors: np.ndarray
    sentence_vectors: np.ndarray
    sentence_paragraph: np.ndarray
    searcher: FaissSearch | StoreSearch
    vector_store: str = "faiss"
    path: Path | None = None
    build_seconds: float = 0.0
    # A store that keeps the BM25 side too (Milvus) searches it per question; None: the
    # retriever builds BM25 over the paragraphs in memory.
    lexical: object | None = None
    # Where a shared store keeps this index (e.g. "http://host:19530/bqa_…"), for messages.
    location: str | None = None
    # Side-by-side pairs of the file's layout (Document.layout_pairs) the alignment would have
    # made otherwise, one line each: the layout's pairs are kept, these say where to look.
    layout_disagreements: tuple[str, ...] = ()
    # While a progressive build (:class:`Build`) runs: True for the sentence rows not encoded
    # yet (their rows hold zeros; search scores them as their paragraph). None: all encoded.
    pending: np.ndarray | None = None

    def sentence_range(self, paragraph_index: int) -> range:
        """Rows of ``sentence_vectors`` that belong to a paragraph."""
        lo = int(np.searchsorted(self.sentence_paragraph, paragraph_index, side="left"))
        hi = int(np.searchsorted(self.sentence_paragraph, paragraph_index, side="right"))
        return range(lo, hi)

    def dense_search(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-``k`` paragraphs by inner product, as (paragraph index, score)."""
        return self.searcher.search(query_vector, min(k, len(self.document.paragraphs)))

    def stats(self) -> dict[str, object]:
        """Numbers worth printing after a build."""
        doc = self.document
        languages: dict[str, int] = {}
        for p in doc.paragraphs:
            languages[p.language] = languages.get(p.language, 0) + 1
        return {
            "document": doc.name,
            "sha256": doc.sha256,
            "paragraphs": len(doc.paragraphs),
            "languages": languages,
            "sentences": len(self.sentence_paragraph),
            "pairs": sum(1 for p in doc.paragraphs if p.twin_id and p.language == "en"),
            "unpaired": [p.id for p in doc.paragraphs if p.twin_id is None],
            "layout_pairs": len(doc.layout_pairs),
            "layout_disagreements": list(self.layout_disagreements),
            "model": self.model_id,
            "vector_store": self.vector_store,
            "dimension": int(self.paragraph_vectors.shape[1]),
            "path": str(self.path) if self.path else self.location,
            "build_seconds": round(self.build_seconds, 3),
        }


#: Told the share of passages encoded (0..1) as a build goes. A progress object may also have
#: ``start(passages)``, called once before encoding with the number of passages to encode
#: (a terminal's progress bar shows passages/s and time left from it).
Progress = Callable[[float], None]
# With a progress callback, passages are encoded this many at a time: the caller hears how far
# the build is, and a model shared with other requests is free for them between chunks.
PROGRESS_CHUNK = 16


def build_index(
    document: Document,
    embedder: Embedder,
    vector_store: str = "faiss",
    progress: Progress | None = None,
    cache: VectorCache | None = None,
) -> Index:
    """Embed paragraphs and sentences, align twins and fill the vector store (in memory).

    Args:
        document: the parsed document.
        embedder: encodes the passages.
        vector_store: "faiss" or a llama-index store name (``config.VECTOR_STORES``).
        progress: called with the share of passages encoded (0..1, rising to 1.0), between
            chunks of :data:`PROGRESS_CHUNK`; None encodes everything in one call.
        cache: passage vectors kept from earlier builds: only the texts it lacks are encoded.

    Raises:
        ModelError: the embedder fails.
    """
    started = time.perf_counter()
    texts = [p.text for p in document.paragraphs]
    sentences = [(i, s.text) for i, p in enumerate(document.paragraphs) for s in p.sentences]
    passages = texts + [s for _, s in sentences]
    # A one-sentence paragraph is its own sentence (and documents repeat lines): encode
    # each distinct text once; encoding is nearly all of a build's cost.
    distinct = {text: row for row, text in enumerate(dict.fromkeys(passages))}
    encoded = _encode(embedder, list(distinct), progress, cache)
    vectors = encoded[[distinct[text] for text in passages]]
    paragraph_vectors = vectors[: len(texts)]
    document, disagreements = _aligned(document, paragraph_vectors)
    return Index(
        document=document,
        model_id=embedder.model_id,
        paragraph_vectors=paragraph_vectors,
        sentence_vectors=vectors[len(texts) :],
        sentence_paragraph=np.array([i for i, _ in sentences], dtype=np.int32),
        searcher=_build_store(vector_store, document, paragraph_vectors),
        vector_store=vector_store,
        build_seconds=time.perf_counter() - started,
        layout_disagreements=disagreements,
    )


def _aligned(document: Document, paragraph_vectors: np.ndarray) -> tuple[Document, tuple[str, ...]]:
    """The document with its twins (aligned, or the file's side-by-side layout), and the disagreements."""
    pairs = alignment.align(document.paragraphs, paragraph_vectors)
    disagreements: tuple[str, ...] = ()
    if document.layout_pairs:
        twins, disagreements = alignment.with_layout(pairs, document.layout_pairs)
        if disagreements:
            log.warning(
                "%s: the alignment disagrees with %d of the file's %d side-by-side pairs: %s",
                document.name, len(disagreements), len(document.layout_pairs), "; ".join(disagreements[:5]),
            )  # fmt: skip
    else:
        twins = alignment.twins(pairs)
    return document.with_twins(twins), disagreements


class Build:
    """An index built in two steps: the paragraphs first, enough to search and answer, then the sentences.

    The paragraphs are about half of a document's tokens. They give the vector store and the
    twins, so :attr:`index` can be searched at once; its sentence rows stay ``pending`` until
    :meth:`fill` encodes those of the paragraphs a question ranks first, or :meth:`finish`
    encodes the rest and keeps the whole index (the same one :func:`build_index` makes). The
    build holds its engine, and what it was given to hold (the builders' lock), until
    :meth:`finish` or :meth:`close`. Safe to share between threads.

    Args:
        document: the parsed document.
        embedder: encodes the passages (its ``passage_engine`` picks the engine for the whole build).
        vector_store: "faiss" or a llama-index store name.
        progress: told the share of the build's passages encoded, as :func:`build_index` does.
        cache: passage vectors kept from earlier builds; what is encoded is added chunk by chunk.
        keep: called with the finished index (to save it); its result is what :meth:`finish` returns.
        hold: closed after the build (after ``keep``), whether it finished or not.

    Raises:
        ModelError: the embedder fails on the paragraphs.
    """

    def __init__(
        self,
        document: Document,
        embedder: Embedder,
        vector_store: str = "faiss",
        progress: Progress | None = None,
        cache: VectorCache | None = None,
        keep: Callable[[Index], Index] | None = None,
        hold: contextlib.ExitStack | None = None,
    ) -> None:
        self._started = time.perf_counter()
        self._stack = contextlib.ExitStack()  # the engine
        self._hold = hold or contextlib.ExitStack()  # let go after the index is kept
        self._lock = threading.Lock()
        self._closing = False
        self._progress, self._cache, self._keep = progress, cache, keep
        self.finished: Index | None = None
        try:
            texts = [p.text for p in document.paragraphs]
            self._sentences = [s.text for p in document.paragraphs for s in p.sentences]
            distinct = list(dict.fromkeys(texts + self._sentences))
            self._vectors = cache.get(distinct, embedder.dimension) if cache is not None else {}
            missing = [t for t in distinct if t not in self._vectors]
            self._total, self._done = len(missing), 0
            if missing:
                log.info(
                    "encoding %d of %d passages (%d cached)", len(missing), len(distinct), len(self._vectors)
                )
            start_progress = getattr(progress, "start", None)
            if callable(start_progress):
                start_progress(len(missing))
            choose = getattr(embedder, "passage_engine", None)
            # The engine is chosen for the whole build (what it will encode, not only the paragraphs).
            self._engine = (
                self._stack.enter_context(choose(missing)) if callable(choose) and missing else embedder
            )
            self._encode([t for t in dict.fromkeys(texts) if t not in self._vectors])
            paragraph_vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
            for row, text in enumerate(texts):
                paragraph_vectors[row] = self._vectors[text]
            document, disagreements = _aligned(document, paragraph_vectors)
            self.index = self._with_known(
                Index(
                    document=document,
                    model_id=embedder.model_id,
                    paragraph_vectors=paragraph_vectors,
                    sentence_vectors=np.zeros((len(self._sentences), embedder.dimension), dtype=np.float32),
                    sentence_paragraph=np.array(
                        [i for i, p in enumerate(document.paragraphs) for _ in p.sentences], dtype=np.int32
                    ),
                    searcher=_build_store(vector_store, document, paragraph_vectors),
                    vector_store=vector_store,
                    layout_disagreements=disagreements,
                    pending=np.ones(len(self._sentences), dtype=bool),
                )
            )
        except BaseException:
            self._stack.close()
            self._hold.close()
            raise

    def fill(self, positions: Iterable[int]) -> Index:
        """The index with every sentence of these paragraphs encoded (the rest may still be pending).

        Raises:
            ModelError: the engine fails.
        """
        with self._lock:
            index = self.finished if self.finished is not None else self.index
            if index.pending is None:
                return index
            wanted = {self._sentences[r] for p in set(positions) for r in index.sentence_range(p)}
            todo = [t for t in dict.fromkeys(self._sentences) if t in wanted and t not in self._vectors]
            if todo:
                self._check_open()
                self._encode(todo)
                self.index = self._with_known(index)
            return self.index

    def finish(self) -> Index:
        """Encode the sentences still pending, keep the index and let go of the engine; idempotent.

        Returns:
            The complete index (as ``keep`` returned it).

        Raises:
            ModelError: the engine fails (the build is closed; the cache keeps what was encoded).
            IndexStoreError: the build was closed before it finished.
        """
        try:
            with self._lock:
                todo = [t for t in dict.fromkeys(self._sentences) if t not in self._vectors]
            step = max(1, getattr(self._engine, "progress_chunk", PROGRESS_CHUNK))
            for start in range(0, len(todo), step):
                # Chunk by chunk, letting go between: a question's fill goes in between.
                with self._lock:
                    if self.finished is not None:
                        return self.finished
                    self._check_open()
                    chunk = [t for t in todo[start : start + step] if t not in self._vectors]
                    if chunk:
                        self._encode(chunk)
            with self._lock:
                if self.finished is not None:
                    return self.finished
                self._check_open()
                index = dataclasses.replace(
                    self._with_known(self.index), build_seconds=time.perf_counter() - self._started
                )
                if self._progress is not None and not self._total:
                    self._progress(1.0)
                self._stack.close()  # the engine's memory goes back before the index is saved
                kept = self._keep(index) if self._keep is not None else index
                self._hold.close()
                self.finished = self.index = kept
                return kept
        finally:
            if self.finished is None:
                self.close()

    def close(self) -> None:
        """Stop the build, unfinished or not: the engine and what it holds are let go; idempotent."""
        self._closing = True
        with self._lock:  # after the chunk being encoded, if any
            self._stack.close()
            self._hold.close()

    def _check_open(self) -> None:
        if self._closing:
            raise IndexStoreError("the index build was stopped before it finished")

    def _encode(self, texts: list[str]) -> None:
        """Encode ``texts`` (chunk by chunk with progress), into the vectors and the cache."""
        step = (
            len(texts) if self._progress is None else getattr(self._engine, "progress_chunk", PROGRESS_CHUNK)
        )
        for start in range(0, len(texts), max(1, step)):
            chunk = texts[start : start + step]
            vectors = self._engine.embed_passages(chunk)
            self._vectors.update(zip(chunk, vectors, strict=True))
            if self._cache is not None:  # a build killed halfway keeps what it encoded
                self._cache.put(chunk, vectors)
            self._done += len(chunk)
            if self._progress is not None:
                self._progress(min(1.0, self._done / max(1, self._total)))

    def _with_known(self, index: Index) -> Index:
        """``index`` with the pending sentence rows whose vectors are now known filled in."""
        if index.pending is None:
            return index
        rows = [r for r in np.flatnonzero(index.pending) if self._sentences[r] in self._vectors]
        if not rows:
            return index
        vectors = index.sentence_vectors.copy()
        vectors[rows] = np.stack([self._vectors[self._sentences[r]] for r in rows])
        pending = index.pending.copy()
        pending[rows] = False
        return dataclasses.replace(
            index, sentence_vectors=vectors, pending=pending if pending.any() else None
        )


def _encode(
    embedder: Embedder, texts: list[str], progress: Progress | None, cache: VectorCache | None = None
) -> np.ndarray:
    """Passage vectors of ``texts``: from the cache, the rest encoded (in one call, or chunk by chunk
    reporting progress) and kept in the cache."""
    known = cache.get(texts, embedder.dimension) if cache is not None else {}
    missing = [t for t in texts if t not in known]
    if missing:
        log.info("encoding %d of %d passages (%d cached)", len(missing), len(texts), len(known))
    start_progress = getattr(progress, "start", None)
    if callable(start_progress):
        start_progress(len(missing))
    fresh: dict[str, np.ndarray] = {}
    choose = getattr(embedder, "passage_engine", None)
    with choose(missing) if callable(choose) and missing else contextlib.nullcontext(embedder) as engine:
        step = len(missing) if progress is None else getattr(engine, "progress_chunk", PROGRESS_CHUNK)
        for start in range(0, len(missing), max(1, step)):
            chunk = missing[start : start + step]
            vectors = engine.embed_passages(chunk)
            fresh.update(zip(chunk, vectors, strict=True))
            if cache is not None:  # chunk by chunk: a build killed halfway keeps what it encoded
                cache.put(chunk, vectors)
            if progress is not None:
                progress(min(1.0, (start + len(chunk)) / len(missing)))
    if progress is not None and not missing:
        progress(1.0)
    if not texts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.stack([known[t] if t in known else fresh[t] for t in texts]).astype(np.float32, copy=False)


def _build_store(kind: str, document: Document, vectors: np.ndarray) -> FaissSearch | StoreSearch:
    """The paragraph vector store: a FAISS index, or a llama-index store of one node per paragraph."""
    if kind == "faiss":
        # Filled directly: llama-index's FaissVectorStore.add() only calls faiss_index.add()
        # on the same rows, and importing llama-index would cost a cold build seconds. The
        # file is the one FaissVectorStore persists and loads (row i is paragraph i).
        faiss_index = make_faiss_index(int(vectors.shape[1]), len(vectors))
        train_faiss_index(faiss_index, vectors)
        faiss_index.add(np.ascontiguousarray(vectors, dtype=np.float32))  # type: ignore[attr-defined]
        return FaissSearch(faiss_index)
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import SimpleVectorStore

    nodes = [
        TextNode(
            id_=p.id,
            text=p.text,
            embedding=vectors[i].tolist(),
            metadata={"language": p.language, "twin_id": p.twin_id or ""},
        )
        for i, p in enumerate(document.paragraphs)
    ]
    store = SimpleVectorStore()
    store.add(nodes)
    return StoreSearch(store, [p.id for p in document.paragraphs])


def make_faiss_index(dimension: int, size: int) -> object:
    """An empty FAISS inner-product index suited to ``size`` vectors: exact, or IVF when large.

    An IVF index must be trained (:func:`train_faiss_index`) before vectors are added.
    """
    import faiss

    if size <= EXACT_SEARCH_LIMIT:
        return faiss.IndexFlatIP(dimension)
    lists = round(size**0.5)
    # Vectors kept as float16: a query scans half the bytes (search is memory-bound: 2.9 → 1.6 ms
    # at 1M) and the index takes half the memory, for recall@10 0.999 instead of 1.0.
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dimension),
        dimension,
        lists,
        faiss.ScalarQuantizer.QT_fp16,
        faiss.METRIC_INNER_PRODUCT,
    )
    index.nprobe = IVF_NPROBE
    return index


def train_faiss_index(faiss_index: object, vectors: np.ndarray) -> None:
    """Train an index that needs it (IVF) on a fixed sample of ``vectors``; others are left alone."""
    if getattr(faiss_index, "is_trained", True):
        return
    # A deterministic sample: k-means on every vector would cost minutes for no better lists.
    n = min(len(vectors), IVF_TRAIN_PER_LIST * int(faiss_index.nlist))  # type: ignore[attr-defined]
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), n, replace=False))
    faiss_index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))  # type: ignore[attr-defined]


def index_folder(settings: Settings, document: Document, model_id: str) -> Path:
    """Where the index of ``document`` under ``model_id`` lives."""
    return _folder(settings, document.name, document.sha256, model_id)


def _folder(settings: Settings, name: str, sha256: str, model_id: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem).strip("-")[:40] or "document"
    model_hash = sha256_bytes(f"{model_id}|{settings.vector_store}".encode())[:8]
    return settings.index_dir / f"{stem}-{sha256[:12]}-{model_hash}"


def _manifest_digest(manifest: dict) -> str:
    """The checksum a manifest carries of itself (every key but the checksum, canonical JSON)."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def read_manifest(folder: Path) -> dict:
    """An index folder's manifest, verified against the checksum it carries.

    Raises:
        IndexStoreError: the manifest is missing, unreadable, malformed or altered.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise IndexStoreError(f"unreadable manifest in {folder}: {exc}") from None
    if not isinstance(manifest, dict):
        raise IndexStoreError(f"malformed manifest in {folder}")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise IndexStoreError(f"altered manifest in {folder}: it does not match its own checksum")
    return manifest


def _recorded_languages(folder: Path) -> list[str] | None:
    """The paragraph languages an existing index's manifest recorded, if any.

    Detecting languages loads langdetect's profiles; a document indexed before needs none
    of that. Only a hint: the manifest must match its checksum, each label must fit its
    paragraph (:func:`~bilingual_qa.document.parse_document` checks), and the index itself is
    still verified when it is loaded.
    """
    try:
        languages = read_manifest(folder).get("languages")
    except IndexStoreError:
        return None
    ok = isinstance(languages, list) and all(isinstance(x, str) for x in languages)
    return languages if ok else None


def open_document(
    source: str | Path | None,
    settings: Settings,
    embedder: Embedder | Callable[[], Embedder],
    progress: Progress | None = None,
    progressive: bool = False,
) -> Index | Build:
    """The one way a document file becomes a searchable :class:`Index`.

    Read the bytes → hash them → look for this document's index → parse (reusing the
    languages the index recorded) → load the index, or build and persist it.

    Args:
        source: a UTF-8 ``.txt``/``.md`` file, or None for the embedded default document.
        settings: where indexes live, the vector store, the langdetect seed.
        embedder: the embedder, or a function that loads it — called only once the document
            has been read and parsed, so a bad document fails before a model is loaded.
        progress: told how far encoding is when the index has to be built (see
            :func:`build_index`).
        progressive: when the index has to be built, return the :class:`Build` once its
            paragraphs are encoded (its ``finish`` saves the index); a shared store (Milvus)
            always builds whole.

    Returns:
        The index, with the aligned document as ``index.document``; or the running build.

    Raises:
        DocumentError: the document cannot be read or parsed.
        ModelError: the embedder cannot be loaded, or building needed it and it failed.
    """
    from .embedding import model_id_for

    name, data = read_bytes(source)
    if settings.vector_store == "milvus":
        from . import milvus

        return milvus.open_document(name, data, settings, embedder, progress)
    # Asked of the type: an embedder's own attribute lookup may be lazy (or refuse).
    loader = embedder if callable(embedder) and not hasattr(type(embedder), "embed_passages") else None
    model_id = model_id_for(settings) if loader else embedder.model_id
    folder = _folder(settings, name, sha256_bytes(data), model_id)
    document = parse_document(
        data, name=name, seed=settings.langdetect_seed, languages=_recorded_languages(folder)
    )
    return open_index(document, loader() if loader else embedder, settings, progress, progressive)


def open_index(
    document: Document,
    embedder: Embedder,
    settings: Settings,
    progress: Progress | None = None,
    progressive: bool = False,
) -> Index | Build:
    """Load the persisted index for ``document``, or build and persist it.

    A folder that fails any check is rebuilt. When the index folder cannot be
    written, the freshly built index is used from memory and a warning logged.
    With ``progressive``, a build is returned running (:class:`Build`), holding the
    builders' lock until it finishes and saves the index.

    Raises:
        ModelError: building needed the embedder and it failed.
    """
    folder = index_folder(settings, document, embedder.model_id)
    tidy(folder.parent)
    if folder.exists():
        try:
            return _used(load_index(folder, document, embedder.model_id, settings.vector_store))
        except IndexStoreError as exc:
            log.warning("rebuilding index: %s", exc)
    # Builders of the same document (threads, processes) take turns: the first builds, the
    # others wait and load what it saved, rather than all spending minutes on the same build.
    with contextlib.suppress(OSError):  # unwritable: built in memory, unlocked, as below
        folder.parent.mkdir(parents=True, exist_ok=True)
    held = contextlib.ExitStack()
    with held:
        locked = held.enter_context(exclusive_lock(folder.parent / f".{folder.name}.lock"))
        if locked and folder.exists():
            try:
                return _used(load_index(folder, document, embedder.model_id, settings.vector_store))
            except IndexStoreError as exc:
                log.warning("rebuilding index: %s", exc)
        cache = held.enter_context(contextlib.closing(vector_cache(settings, embedder)))
        keep = functools.partial(_keep, folder=folder, versions=settings.index_versions)
        if progressive:
            return Build(document, embedder, settings.vector_store, progress, cache, keep, held.pop_all())
        index = build_index(document, embedder, settings.vector_store, progress, cache)
        cache.close()
        return keep(index)


def _keep(index: Index, folder: Path, versions: int) -> Index:
    """Save a built index (or keep it in memory if it cannot be saved) and prune older versions."""
    try:
        saved = save_index(index, folder)
    except IndexStoreError as exc:
        log.warning("index kept in memory only: %s", exc)
        return index
    prune(folder, versions)
    return saved


def vector_cache(settings: Settings, embedder: Embedder) -> VectorCache:
    """The passage-vector cache of ``settings.index_dir`` for ``embedder``'s model and scheme."""
    scheme = getattr(embedder, "vector_scheme", "plain")
    return VectorCache(
        settings.index_dir / CACHE_FILE, embedder.model_id, scheme, settings.vector_cache_mb * 2**20
    )


#: A ``.tmp-*`` or ``.old-*`` folder this old is debris of a killed process: saving an index
#: takes seconds (the build before it happens in memory).
STALE_SECONDS = 600


def tidy(index_dir: Path) -> list[Path]:
    """Remove the temporary folders a killed save left in ``index_dir``; returns them."""
    removed = []
    try:
        entries = list(index_dir.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            stale = entry.name.startswith((".tmp-", ".old-")) and now - entry.stat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        log.info("removed %d stale temporary index folder(s) from %s", len(removed), index_dir)
    return removed


def prune(folder: Path, keep: int) -> list[Path]:
    """Keep the ``keep`` most recently used indexes of ``folder``'s document name and model; remove the rest.

    An edited document gets a new index folder (its name carries the content hash), so
    without pruning every saved version would stay. Returns the folders removed.
    """
    stem, _, model_hash = folder.name.rpartition("-")
    stem = stem.rpartition("-")[0]
    pattern = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{12}}-{re.escape(model_hash)}")
    try:
        versions = [e for e in folder.parent.iterdir() if e.is_dir() and pattern.fullmatch(e.name)]
        versions.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    except OSError:
        return []
    removed = [v for v in versions if v != folder][max(0, keep - 1) :]
    for version in removed:
        shutil.rmtree(version, ignore_errors=True)
        (version.parent / f".{version.name}.lock").unlink(missing_ok=True)
    return removed


def _used(index: Index) -> Index:
    """Mark an index folder as just used (its mtime orders :func:`prune`)."""
    if index.path is not None:
        with contextlib.suppress(OSError):
            os.utime(index.path)
    return index


def save_index(index: Index, folder: Path) -> Index:
    """Write ``index`` to ``folder`` atomically; returns it with ``path`` set.

    Raises:
        IndexStoreError: the folder cannot be written.
        ValueError: the index still has sentences to encode (a running :class:`Build`).
    """
    if index.pending is not None:
        raise ValueError("an index is saved once its build has finished: sentences are still pending")
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=parent))
    except OSError as exc:
        raise IndexStoreError(f"cannot write index under {parent}: {exc.strerror or exc}") from None
    try:
        np.savez(
            tmp / VECTORS,
            paragraph_vectors=index.paragraph_vectors,
            sentence_vectors=index.sentence_vectors,
            sentence_paragraph=index.sentence_paragraph,
        )
        twins = {p.id: p.twin_id for p in index.document.paragraphs if p.twin_id}
        (tmp / TWINS).write_text(json.dumps(twins, indent=1), encoding="utf-8")
        store_file = STORE_FILES[index.vector_store]
        _persist_store(index.searcher, tmp / store_file)
        manifest = {
            "format_version": FORMAT_VERSION,
            "pipeline": PIPELINE_VERSION,
            "document": index.document.name,
            "document_sha256": index.document.sha256,
            "model_id": index.model_id,
            "vector_store": index.vector_store,
            "dimension": int(index.paragraph_vectors.shape[1]),
            "paragraphs": len(index.document.paragraphs),
            "languages": [p.language for p in index.document.paragraphs],
            "layout_disagreements": list(index.layout_disagreements),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: sha256_file(tmp / name) for name in (VECTORS, TWINS, store_file)},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _replace_dir(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexStoreError(f"cannot write index {folder}: {exc.strerror or exc}") from None
    return Index(**{**index.__dict__, "path": folder})


def _persist_store(searcher: FaissSearch | StoreSearch, path: Path) -> None:
    """Write the vector store: FAISS's own format, or the llama-index store's persist()."""
    if isinstance(searcher, FaissSearch):
        import faiss

        faiss.write_index(searcher.faiss_index, str(path))
    else:
        searcher.store.persist(persist_path=str(path))  # type: ignore[attr-defined]


def _replace_dir(tmp: Path, folder: Path) -> None:
    """Move a finished folder into place, replacing an older one."""
    if folder.exists():
        old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        # Another process won the race; its copy of the same index is as good.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / MANIFEST).exists():
            raise


def load_index(folder: Path, document: Document, model_id: str, vector_store: str = "faiss") -> Index:
    """Load and verify an index folder.

    Raises:
        IndexStoreError: missing files, bad checksums, another document, model, store or format.
    """
    manifest = read_manifest(folder)
    expected = {
        "format_version": FORMAT_VERSION,
        "pipeline": PIPELINE_VERSION,
        "document_sha256": document.sha256,
        "model_id": model_id,
        "vector_store": vector_store,
        "paragraphs": len(document.paragraphs),
        "languages": [p.language for p in document.paragraphs],
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise IndexStoreError(f"stale index {folder}: {key} is {manifest.get(key)!r}, need {value!r}")
    files = manifest.get("files")
    store_file = STORE_FILES[vector_store]
    if not isinstance(files, dict) or set(files) != {VECTORS, TWINS, store_file}:
        raise IndexStoreError(f"manifest of {folder} lists no files")
    try:
        for name, digest in files.items():
            if sha256_file(folder / name) != digest:
                raise IndexStoreError(f"corrupt index {folder}: {name} does not match its checksum")
        with np.load(folder / VECTORS) as data:
            paragraph_vectors = data["paragraph_vectors"]
            sentence_vectors = data["sentence_vectors"]
            sentence_paragraph = data["sentence_paragraph"]
        twins = json.loads((folder / TWINS).read_text(encoding="utf-8"))
        searcher = _load_store(vector_store, folder / store_file, document)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise IndexStoreError(f"corrupt index {folder}: {exc}") from None
    n_sentences = sum(len(p.sentences) for p in document.paragraphs)
    if (
        paragraph_vectors.shape != (len(document.paragraphs), manifest.get("dimension"))
        or len(sentence_vectors) != n_sentences
        or len(sentence_paragraph) != n_sentences
        or _store_size(searcher) != len(document.paragraphs)
    ):
        raise IndexStoreError(f"corrupt index {folder}: shapes do not match the document")
    document = document.with_twins(twins)
    disagreements = manifest.get("layout_disagreements") or []
    return Index(
        document=document,
        model_id=model_id,
        paragraph_vectors=paragraph_vectors,
        sentence_vectors=sentence_vectors,
        sentence_paragraph=sentence_paragraph,
        searcher=searcher,
        vector_store=vector_store,
        path=folder,
        layout_disagreements=tuple(str(x) for x in disagreements if isinstance(x, str)),
    )


def _load_store(kind: str, path: Path, document: Document) -> FaissSearch | StoreSearch:
    """Read a persisted vector store (FAISS without importing llama-index)."""
    if kind == "faiss":
        import faiss

        return FaissSearch(faiss.read_index(str(path)))
    from llama_index.core.vector_stores import SimpleVectorStore

    store = SimpleVectorStore.from_persist_path(str(path))
    return StoreSearch(store, [p.id for p in document.paragraphs])


def _store_size(searcher: FaissSearch | StoreSearch) -> int:
    """How many vectors a store holds."""
    if isinstance(searcher, FaissSearch):
        return int(searcher.faiss_index.ntotal)  # type: ignore[attr-defined]
    return len(searcher.store.data.embedding_dict)  # type: ignore[attr-defined]
