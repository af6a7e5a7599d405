"""Milvus: the index in a Milvus store that many server replicas share, built once.

One build of a document under a model is three collections, named by the document's sha256,
the model and the build (``bqa_<sha>_<model>_<build>_…``):

- ``…_para``: one row per paragraph: its vector (dense search, inner product) and its BM25
  weights as a sparse vector (lexical search, inner product), the project's own BM25
  (:func:`bilingual_qa.language.lexical_tokens`, ``bm25s``'s weights), so a question's scores,
  and so its citations, are the ones the in-memory retriever computes. Milvus's built-in BM25
  function tokenizes differently and weighs terms by segment, not by document.
- ``…_sent``: one row per sentence: its vector and its paragraph.
- ``…_meta``: the manifest (format, pipeline, document, model, counts, checksums, and whether
  the build finished), the parsed document (paragraph languages, twins, sentence offsets,
  text) and the BM25 vocabulary, as JSON in bounded chunks.

``bqa_catalog`` says which build of a document is published (and who is building one): a build
is published, after its manifest says it finished, by one upsert there, so a build killed half
way is never served, and builders that race each fill their own collections (the last one
published wins; both are the same index). A builder waits for another builder of the same
document that is alive (a heartbeat in the catalog) rather than building it twice, and removes
what killed builders left.

A replica loads at start what every answer reads whole: the document, the BM25 vocabulary and
the sentence vectors (every sentence's similarity to the question feeds the answerer's
salience). Per question it asks Milvus for the paragraphs nearest the query vector and for
every paragraph's BM25 score; paragraph vectors stay in the store.

The URI is a Milvus server or cluster (``http://host:19530``) or a Milvus Lite file
(``./index.db``): pymilvus starts Milvus Lite's gRPC server in this process for a ``.db``, which
then holds the file; several processes share a Milvus Lite by its server
(``milvus-lite server --data-dir DIR --port 19530``) as they would share a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import language as lang
from .config import Settings
from .document import Document, Paragraph, Sentence, parse_document
from .embedding import Embedder
from .errors import IndexStoreError
from .files import exclusive_lock, sha256_bytes

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CATALOG = "bqa_catalog"
#: Characters of JSON per meta row: Milvus's VARCHAR holds 65,535 bytes, and UTF-8 takes at
#: most 4 bytes a character.
CHUNK_CHARS = 16_000
#: Rows per insert call: bounded messages (gRPC's default limit is 64 MB; 384 floats are ~8 KB
#: of protobuf with the sparse weights).
INSERT_ROWS = 1_000
#: Milvus returns at most this many hits a search; a lexical search asks for every paragraph
#: with a matching term, so BM25 ranks are exact up to this many paragraphs.
LEXICAL_LIMIT = 16_384
#: A builder whose heartbeat is older than this is taken for dead: its build is not waited for.
STALE_SECONDS = 120.0
HEARTBEAT_SECONDS = 10.0
#: A paragraph without BM25 tokens still needs a sparse vector (Milvus refuses an empty one):
#: one weight on a dimension no term gets.
_NO_TERM = 2**32 - 2
_DUMMY_DIM = 2  # catalog and meta rows: Milvus wants a vector field in every collection


def base_name(sha256: str, model_id: str) -> str:
    """The collection-name prefix of a document's builds under a model."""
    return f"bqa_{sha256[:16]}_{sha256_bytes(model_id.encode())[:8]}"


def quiet() -> None:
    """Keep pymilvus's own logging of failed calls off stderr: errors here are one line.

    Milvus Lite's gRPC server runs in this process for a ``.db`` file; it logs a traceback
    for every call it does not implement (pymilvus asks for AllocTimestamp after creating
    an index, then carries on), which is noise on a user's terminal, not an error.
    """
    for name in [n for n in logging.root.manager.loggerDict if n == "pymilvus" or n.startswith("pymilvus.")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


def connect(settings: Settings):
    """A MilvusClient for ``settings.milvus_uri``, its token read from the environment.

    Raises:
        IndexStoreError: the store cannot be reached (one line naming the URI).
    """
    uri = settings.milvus_uri or ""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise IndexStoreError(
            "vector_store milvus needs pymilvus: pip install 'bilingual-qa[milvus]'"
        ) from None
    quiet()  # after the import, which configures pymilvus's loggers
    if uri.endswith(".db") and not uri.startswith(("http://", "https://")):
        folder = Path(uri).expanduser().resolve().parent
        if not folder.is_dir():
            raise IndexStoreError(f"cannot open Milvus Lite file {uri}: folder {folder} does not exist")
    token = os.environ.get(settings.milvus_token_env, "")
    try:
        client = MilvusClient(uri=uri, token=token, timeout=settings.milvus_timeout)
        client.list_collections(timeout=settings.milvus_timeout)
    except Exception as exc:  # pymilvus raises MilvusException and gRPC errors alike
        raise IndexStoreError(f"cannot reach Milvus at {uri}: {_reason(exc)}") from None
    return client


def _reason(exc: BaseException) -> str:
    """One line from a pymilvus or gRPC exception."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


class MilvusSearch:
    """Top-k inner-product search of the paragraph vectors in a Milvus collection."""

    def __init__(self, client, collection: str, uri: str, timeout: float, nprobe: int) -> None:
        self.client, self.collection, self.uri, self.timeout = client, collection, uri, timeout
        self.params = {"metric_type": "IP", "params": {"nprobe": nprobe}}

    def search(self, query_vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, score) pairs, best first.

        Raises:
            IndexStoreError: Milvus failed or did not answer within the timeout.
        """
        hits = _call(
            self.uri,
            "search",
            lambda: self.client.search(
                self.collection,
                data=[np.asarray(query_vector, dtype=np.float32).tolist()],
                anns_field="vector",
                limit=k,
                output_fields=[],
                search_params=self.params,
                timeout=self.timeout,
            ),
        )
        return [(int(h["row"]), float(h["distance"])) for h in hits[0]]


class MilvusLexical:
    """Every paragraph's BM25 score for a question, from the sparse vectors in Milvus."""

    def __init__(self, client, collection: str, uri: str, timeout: float, vocabulary: list[str], size: int):
        self.client, self.collection, self.uri, self.timeout = client, collection, uri, timeout
        self.vocab = {token: i for i, token in enumerate(vocabulary)}
        self.size = size

    def scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every paragraph (zero where no term matches).

        Raises:
            IndexStoreError: Milvus failed or did not answer within the timeout.
        """
        # Repeated terms count again, as in bm25s's get_scores.
        weights = Counter(self.vocab[t] for t in tokens if t in self.vocab)
        out = np.zeros(self.size, dtype=np.float32)
        if not weights:
            return out
        hits = _call(
            self.uri,
            "BM25 search",
            lambda: self.client.search(
                self.collection,
                data=[{int(k): float(v) for k, v in weights.items()}],
                anns_field="lexical",
                limit=min(self.size, LEXICAL_LIMIT),
                output_fields=[],
                search_params={"metric_type": "IP"},
                timeout=self.timeout,
            ),
        )
        for h in hits[0]:
            out[int(h["row"])] = float(h["distance"])
        return out


def _call(uri: str, what: str, fn: Callable[[], object]):
    """Run one Milvus call; any failure becomes one IndexStoreError line."""
    try:
        return fn()
    except IndexStoreError:
        raise
    except Exception as exc:
        raise IndexStoreError(f"Milvus at {uri} failed a {what}: {_reason(exc)}") from None


def open_document(
    name: str,
    data: bytes,
    settings: Settings,
    embedder: Embedder | Callable[[], Embedder],
    progress=None,
):
    """The :class:`~bilingual_qa.index.Index` of a document's bytes in the Milvus store.

    A published build is loaded (nothing parsed, nothing encoded); otherwise the document is
    parsed, built (waiting for a live builder of the same document first) and published.

    Raises:
        IndexStoreError: the store cannot be reached, or fails.
        DocumentError: the document cannot be parsed (when it has to be built).
        ModelError: building needed the embedder and it failed.
    """
    from .embedding import model_id_for

    loader = embedder if callable(embedder) and not hasattr(type(embedder), "embed_passages") else None
    model_id = model_id_for(settings) if loader else embedder.model_id
    sha = sha256_bytes(data)
    store = Store(connect(settings), settings)
    base = base_name(sha, model_id)
    index = store.load(base, name, sha, model_id)
    if index is not None:
        return index
    document = parse_document(data, name=name, seed=settings.langdetect_seed)
    # Builders on this machine take turns on a lock file; builders elsewhere see each
    # other's heartbeat in the catalog.
    lock_dir = settings.index_dir
    with contextlib.suppress(OSError):
        lock_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_dir / f".{base}.milvus.lock"):
        index = store.wait_for_builder(base, name, sha, model_id)
        if index is not None:
            return index
        return store.build(base, document, loader() if loader else embedder, progress)


class Store:
    """One Milvus database seen through this project's layout (catalog, builds, loading)."""

    def __init__(self, client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.uri = settings.milvus_uri or ""
        self.timeout = settings.milvus_timeout

    # -- catalog -------------------------------------------------------------------------

    def _catalog(self) -> None:
        """Create the catalog collection if it is missing."""
        if _call(self.uri, "lookup", lambda: self.client.has_collection(CATALOG, timeout=self.timeout)):
            return
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("value", DataType.VARCHAR, max_length=65_535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=_DUMMY_DIM)
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type="L2")
        with contextlib.suppress(Exception):  # another builder created it meanwhile
            self.client.create_collection(
                CATALOG, schema=schema, index_params=params, consistency_level="Strong", timeout=self.timeout
            )
        _call(self.uri, "load", lambda: self.client.load_collection(CATALOG, timeout=self.timeout))

    def _get(self, collection: str, keys: list[str]) -> dict[str, str]:
        """Meta or catalog values by key, 64 keys (at most 4 MB) a call."""
        out: dict[str, str] = {}
        for start in range(0, len(keys), 64):
            batch = keys[start : start + 64]
            rows = _call(
                self.uri,
                "read",
                lambda b=batch: self.client.get(
                    collection, ids=b, output_fields=["key", "value"], timeout=self.timeout
                ),
            )
            out.update((r["key"], r["value"]) for r in rows)
        return out

    def _put(self, collection: str, items: dict[str, str]) -> None:
        rows = [{"key": k, "value": v, "vector": [0.0] * _DUMMY_DIM} for k, v in items.items()]
        _call(self.uri, "write", lambda: self.client.upsert(collection, rows, timeout=self.timeout))

    def published(self, base: str) -> str | None:
        """The build id the catalog publishes for ``base``, if any."""
        if not _call(self.uri, "lookup", lambda: self.client.has_collection(CATALOG, timeout=self.timeout)):
            return None
        _call(self.uri, "load", lambda: self.client.load_collection(CATALOG, timeout=self.timeout))
        value = self._get(CATALOG, [base]).get(base)
        try:
            return str(json.loads(value)["build"]) if value else None
        except (ValueError, KeyError, TypeError):
            return None

    # -- loading -------------------------------------------------------------------------

    def load(self, base: str, name: str, sha: str, model_id: str):
        """The published index of ``base``, or None when there is none or it fails a check."""
        build = self.published(base)
        if build is None:
            return None
        try:
            return self._load(f"{base}_{build}", name, sha, model_id)
        except IndexStoreError as exc:
            log.warning("rebuilding index: %s", exc)
            return None

    def _load(self, prefix: str, name: str, sha: str, model_id: str):
        from .index import IVF_NPROBE, PIPELINE_VERSION, Index

        meta, para, sent = f"{prefix}_meta", f"{prefix}_para", f"{prefix}_sent"
        for collection in (meta, para, sent):
            if not _call(
                self.uri, "lookup", lambda c=collection: self.client.has_collection(c, timeout=self.timeout)
            ):
                raise IndexStoreError(f"Milvus index {prefix} is incomplete: {collection} is missing")
            _call(self.uri, "load", lambda c=collection: self.client.load_collection(c, timeout=self.timeout))
        manifest = json.loads(self._get(meta, ["manifest"]).get("manifest") or "{}")
        expected = {
            "format_version": FORMAT_VERSION,
            "pipeline": PIPELINE_VERSION,
            "document_sha256": sha,
            "model_id": model_id,
            "finished": True,
        }
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise IndexStoreError(
                    f"stale Milvus index {prefix}: {key} is {manifest.get(key)!r}, need {value!r}"
                )
        chunks = self._get(
            meta,
            [f"{part}:{i}" for part in ("document", "vocabulary") for i in range(manifest["chunks"][part])],
        )
        blobs = {}
        for part in ("document", "vocabulary"):
            text = "".join(chunks.get(f"{part}:{i}", "") for i in range(manifest["chunks"][part]))
            if sha256_bytes(text.encode("utf-8")) != manifest["checksums"][part]:
                raise IndexStoreError(
                    f"corrupt Milvus index {prefix}: its {part} does not match its checksum"
                )
            blobs[part] = json.loads(text)
        document = _document_from_json(blobs["document"], name)
        n_sentences = sum(len(p.sentences) for p in document.paragraphs)
        dimension = int(manifest["dimension"])
        vectors = np.zeros((n_sentences, dimension), dtype=np.float32)
        owner = np.full(n_sentences, -1, dtype=np.int32)
        seen = 0
        for batch in self._scan(sent, ["row", "vector", "paragraph"], n_sentences):
            rows = np.fromiter((r["row"] for r in batch), dtype=np.int64, count=len(batch))
            if len(rows) and (rows.min() < 0 or rows.max() >= n_sentences):
                raise IndexStoreError(f"corrupt Milvus index {prefix}: sentence rows out of range")
            vectors[rows] = np.asarray([r["vector"] for r in batch], dtype=np.float32)
            owner[rows] = [r["paragraph"] for r in batch]
            seen += len(batch)
        if seen != n_sentences or (owner < 0).any() or manifest.get("paragraphs") != len(document.paragraphs):
            raise IndexStoreError(f"corrupt Milvus index {prefix}: its rows do not match its document")
        return Index(
            document=document,
            model_id=model_id,
            # Paragraph vectors stay in Milvus; searches go there.
            paragraph_vectors=np.zeros((0, dimension), dtype=np.float32),
            sentence_vectors=vectors,
            sentence_paragraph=owner,
            searcher=MilvusSearch(self.client, para, self.uri, self.timeout, IVF_NPROBE),
            vector_store="milvus",
            lexical=MilvusLexical(
                self.client, para, self.uri, self.timeout, blobs["vocabulary"], len(document.paragraphs)
            ),
            location=f"{_display(self.uri)}/{prefix}",
            layout_disagreements=tuple(str(x) for x in manifest.get("layout_disagreements") or []),
        )

    def _scan(self, collection: str, fields: list[str], rows: int) -> Iterator[list[dict]]:
        """Rows 0..rows-1 of a collection, in batches by primary key.

        Pages by key ranges rather than with pymilvus's query iterator, which asks the server
        for a timestamp that Milvus Lite does not give.
        """
        for start in range(0, rows, INSERT_ROWS):
            stop = min(rows, start + INSERT_ROWS)
            yield _call(
                self.uri,
                "read",
                lambda a=start, b=stop: self.client.query(
                    collection,
                    filter=f"row >= {a} and row < {b}",
                    output_fields=fields,
                    limit=b - a,
                    timeout=self.timeout,
                ),
            )

    # -- building ------------------------------------------------------------------------

    def wait_for_builder(self, base: str, name: str, sha: str, model_id: str):
        """Wait while another live builder builds ``base``; its index once published, else None."""
        self._catalog()
        while True:
            index = self.load(base, name, sha, model_id)
            if index is not None:
                return index
            marker = self._get(CATALOG, [f"{base}.building"]).get(f"{base}.building")
            try:
                beat = float(json.loads(marker)["heartbeat"]) if marker else 0.0
            except (ValueError, KeyError, TypeError):
                beat = 0.0
            if time.time() - beat > STALE_SECONDS:
                return None
            log.info("waiting for another builder of %s", base)
            time.sleep(1.0)

    def build(self, base: str, document: Document, embedder: Embedder, progress=None):
        """Build ``document`` into new collections, publish them, and return the index."""
        from .index import build_index, vector_cache

        build = uuid.uuid4().hex[:12]
        prefix = f"{base}_{build}"
        owner = f"{socket.gethostname()}:{os.getpid()}"
        self._catalog()
        self._clear_debris(base)
        beat = _Heartbeat(
            lambda: self._put(
                CATALOG,
                {f"{base}.building": json.dumps({"build": build, "owner": owner, "heartbeat": time.time()})},
            )
        )
        try:
            with beat:
                cache = vector_cache(self.settings, embedder)
                try:
                    built = build_index(document, embedder, "faiss", _beating(progress, beat), cache)
                finally:
                    cache.close()
                self._write(prefix, built)
                published = {"build": build, "owner": owner, "published": time.time()}
                self._put(CATALOG, {base: json.dumps(published)})
        except BaseException:
            # A failed build says so at once (a killed one by its heartbeat going stale) and
            # leaves no collections behind.
            with contextlib.suppress(Exception):
                self.client.delete(CATALOG, ids=[f"{base}.building"], timeout=self.timeout)
            with contextlib.suppress(Exception):
                self._clear_debris(base)
            raise
        _call(
            self.uri,
            "write",
            lambda: self.client.delete(CATALOG, ids=[f"{base}.building"], timeout=self.timeout),
        )
        self._clear_debris(base, keep=build)
        index = self._load(prefix, document.name, document.sha256, built.model_id)
        return dataclasses.replace(index, build_seconds=built.build_seconds)

    def _write(self, prefix: str, built) -> None:
        """Fill the three collections of a build; the manifest says finished last."""
        from pymilvus import DataType

        from .index import PIPELINE_VERSION

        document = built.document
        dimension = int(built.paragraph_vectors.shape[1])
        n = len(document.paragraphs)
        meta, para, sent = f"{prefix}_meta", f"{prefix}_para", f"{prefix}_sent"
        self._create(
            meta,
            [
                ("key", DataType.VARCHAR, {"is_primary": True, "max_length": 256}),
                ("value", DataType.VARCHAR, {"max_length": 65_535}),
                ("vector", DataType.FLOAT_VECTOR, {"dim": _DUMMY_DIM}),
            ],
            {"vector": ("FLAT", "L2", {})},
        )
        manifest = {"format_version": FORMAT_VERSION, "finished": False, "document": document.name}
        self._put(meta, {"manifest": json.dumps(manifest)})
        self._create(
            para,
            [
                ("row", DataType.INT64, {"is_primary": True}),
                ("vector", DataType.FLOAT_VECTOR, {"dim": dimension}),
                ("lexical", DataType.SPARSE_FLOAT_VECTOR, {}),
            ],
            {"vector": _dense_index(n), "lexical": ("SPARSE_INVERTED_INDEX", "IP", {})},
        )
        self._create(
            sent,
            [
                ("row", DataType.INT64, {"is_primary": True}),
                ("vector", DataType.FLOAT_VECTOR, {"dim": dimension}),
                ("paragraph", DataType.INT64, {}),
            ],
            {"vector": ("FLAT", "IP", {})},
        )
        vocabulary, weights = bm25_weights(document)
        self._insert(
            para,
            (
                {"row": i, "vector": built.paragraph_vectors[i].tolist(), "lexical": weights[i]}
                for i in range(n)
            ),
        )
        self._insert(
            sent,
            (
                {"row": i, "vector": v.tolist(), "paragraph": int(p)}
                for i, (v, p) in enumerate(zip(built.sentence_vectors, built.sentence_paragraph, strict=True))
            ),
        )
        blobs = {
            "document": json.dumps(_document_to_json(document), ensure_ascii=False),
            "vocabulary": json.dumps(vocabulary, ensure_ascii=False),
        }
        chunks = {}
        for part, text in blobs.items():
            pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
            chunks[part] = len(pieces)
            for start in range(0, len(pieces), 64):
                self._put(
                    meta, {f"{part}:{start + j}": piece for j, piece in enumerate(pieces[start : start + 64])}
                )
        for collection in (meta, para, sent):
            _call(self.uri, "flush", lambda c=collection: self.client.flush(c, timeout=self.timeout))
        manifest.update(
            finished=True,
            pipeline=PIPELINE_VERSION,
            document_sha256=document.sha256,
            model_id=built.model_id,
            dimension=dimension,
            paragraphs=n,
            sentences=len(built.sentence_paragraph),
            layout_disagreements=list(built.layout_disagreements),
            chunks=chunks,
            checksums={part: sha256_bytes(text.encode("utf-8")) for part, text in blobs.items()},
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._put(meta, {"manifest": json.dumps(manifest)})
        _call(self.uri, "flush", lambda: self.client.flush(meta, timeout=self.timeout))

    def _create(self, name: str, fields: list, indexes: dict) -> None:
        """Create a collection with its fields and indexes, and load it."""
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        for field, kind, options in fields:
            schema.add_field(field, kind, **options)
        params = self.client.prepare_index_params()
        for field, (index_type, metric, extra) in indexes.items():
            params.add_index(field, index_type=index_type, metric_type=metric, params=extra)
        _call(
            self.uri,
            "create",
            lambda: self.client.create_collection(
                name, schema=schema, index_params=params, consistency_level="Strong", timeout=self.timeout
            ),
        )

    def _insert(self, collection: str, rows: Iterator[dict]) -> None:
        """Insert rows in bounded batches."""
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) == INSERT_ROWS:
                _call(
                    self.uri, "write", lambda b=batch: self.client.insert(collection, b, timeout=self.timeout)
                )
                batch = []
        if batch:
            _call(self.uri, "write", lambda: self.client.insert(collection, batch, timeout=self.timeout))

    def _clear_debris(self, base: str, keep: str | None = None) -> list[str]:
        """Drop the collections of ``base``'s builds that never finished and are not being built.

        A finished build stays even once another is published: replicas that loaded it (an
        older version of the code, during a rolling upgrade; the loser of two racing builders)
        still search it. Those are dropped by name once nothing serves them.
        """
        marker = self._get(CATALOG, [f"{base}.building"]).get(f"{base}.building")
        live = {keep}
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if marker and time.time() - float(json.loads(marker)["heartbeat"]) <= STALE_SECONDS:
                live.add(json.loads(marker)["build"])
        names = _call(self.uri, "lookup", lambda: self.client.list_collections(timeout=self.timeout))
        builds: dict[str, list[str]] = {}
        for name in names:
            if name.startswith(base + "_"):
                builds.setdefault(name[len(base) + 1 :].rpartition("_")[0], []).append(name)
        dropped = []
        for build, collections in builds.items():
            if build in live or self._finished(f"{base}_{build}", collections):
                continue
            for name in collections:
                with contextlib.suppress(Exception):
                    self.client.drop_collection(name, timeout=self.timeout)
                    dropped.append(name)
        if dropped:
            log.info("dropped %d collection(s) of unfinished builds of %s", len(dropped), base)
        return dropped

    def _finished(self, prefix: str, collections: list[str]) -> bool:
        """Whether a build's manifest says it finished (whatever its checks would say now)."""
        if f"{prefix}_meta" not in collections:
            return False
        try:
            _call(
                self.uri, "load", lambda: self.client.load_collection(f"{prefix}_meta", timeout=self.timeout)
            )
            manifest = json.loads(self._get(f"{prefix}_meta", ["manifest"]).get("manifest") or "{}")
        except (IndexStoreError, ValueError):
            return False
        return isinstance(manifest, dict) and manifest.get("finished") is True


def _dense_index(n: int) -> tuple[str, str, dict]:
    """The paragraph vector index: exact up to the FAISS path's limit, IVF above (the same lists)."""
    from .index import EXACT_SEARCH_LIMIT

    if n <= EXACT_SEARCH_LIMIT:
        return ("FLAT", "IP", {})
    return ("IVF_FLAT", "IP", {"nlist": round(n**0.5)})


def bm25_weights(document: Document) -> tuple[list[str], list[dict[int, float]]]:
    """The BM25 vocabulary and every paragraph's term weights, as the in-memory retriever has them.

    A paragraph's score for a question is the sum of its weights over the question's terms
    (bm25s's precomputed scores), so the store searches them by inner product.
    """
    import bm25s
    import scipy.sparse

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    tokens = [lang.lexical_tokens(p.text) for p in document.paragraphs]
    bm25 = bm25s.BM25()
    bm25.index([t or ["\u2205"] for t in tokens], show_progress=False)
    s = bm25.scores
    # bm25s appends "" to its vocabulary without a column of scores.
    vocabulary = [""] * (len(s["indptr"]) - 1)
    for token, i in bm25.vocab_dict.items():
        if i < len(vocabulary):
            vocabulary[i] = token
    matrix = scipy.sparse.csc_matrix(
        (s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(vocabulary))
    ).tocsr()
    weights = []
    for i in range(len(tokens)):
        lo, hi = matrix.indptr[i], matrix.indptr[i + 1]
        row = {int(j): float(w) for j, w in zip(matrix.indices[lo:hi], matrix.data[lo:hi], strict=True) if w}
        weights.append(row or {_NO_TERM: 1.0})
    return vocabulary, weights


def _document_to_json(document: Document) -> dict:
    """A parsed, aligned document as JSON: every field, sentences as offsets."""
    paragraphs = []
    for p in document.paragraphs:
        fields = {k: v for k, v in p.__dict__.items() if k != "sentences"}
        fields["sentences"] = [[s.start, s.end] for s in p.sentences]
        paragraphs.append(fields)
    extra = {
        k: v
        for k, v in document.__dict__.items()
        if k not in ("name", "sha256", "paragraphs") and not k.startswith("_")
    }
    return {"sha256": document.sha256, "paragraphs": paragraphs, "extra": extra}


def _document_from_json(data: dict, name: str) -> Document:
    """The document :func:`_document_to_json` wrote, named as the file it was opened from."""
    paragraphs = []
    for fields in data["paragraphs"]:
        fields = dict(fields)
        text = fields["text"]
        sentences = tuple(Sentence(text[a:b], a, b) for a, b in fields.pop("sentences"))
        paragraphs.append(Paragraph(**fields, sentences=sentences))
    extra = {k: _tuples(v) for k, v in data.get("extra", {}).items()}
    return Document(name=name, sha256=data["sha256"], paragraphs=tuple(paragraphs), **extra)


def _tuples(value: object) -> object:
    """JSON lists back into the tuples a frozen dataclass holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _display(uri: str) -> str:
    """The URI without credentials, for messages and stats."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.rpartition('@')[2]}"
    return uri


class _Heartbeat:
    """Calls ``beat`` now and then (at most every HEARTBEAT_SECONDS) while a build runs."""

    def __init__(self, beat: Callable[[], None]) -> None:
        self._beat = beat
        self._last = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> _Heartbeat:
        self.maybe()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def maybe(self) -> None:
        """Beat unless the last beat is recent."""
        with self._lock:
            if time.monotonic() - self._last < HEARTBEAT_SECONDS and self._last:
                return
            self._last = time.monotonic()
        with contextlib.suppress(IndexStoreError):  # a missed beat only lets another builder start
            self._beat()


def _beating(progress, beat: _Heartbeat):
    """A progress callback that also keeps the build's heartbeat alive."""

    class _Progress:
        def __call__(self, share: float) -> None:
            beat.maybe()
            if progress is not None:
                progress(share)

        def start(self, passages: int) -> None:
            start = getattr(progress, "start", None)
            if callable(start):
                start(passages)

    return _Progress()
