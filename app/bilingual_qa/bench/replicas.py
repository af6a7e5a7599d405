"""Milvus Lite beside FAISS (``bilingual-qa bench``): replicas over one shared store.

A Milvus Lite gRPC server runs in its own process, as a Milvus cluster would. On the default
document: the index built into it once by ``bilingual-qa index``, then a replica's cold
``bilingual-qa ask`` (it loads, never encodes a passage) against the FAISS one, and warm answers
of the two in this process, interleaved. On 10,000 and 100,000 synthetic clustered vectors
(100,000 in the full run only): build time, search p50 and recall@10 against exact search of
FAISS as :func:`~bilingual_qa.index.make_faiss_index` chooses it and of Milvus as
:mod:`bilingual_qa.milvus` indexes paragraph vectors (exact up to the same limit, IVF above),
and the memory that holds them: in every replica's process for FAISS, once in the Milvus server.

Targets: replica cold answer ≤ 2× FAISS's; warm answer ≤ 1.5× FAISS's; recall@10 at 100,000
≥ 0.99.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .processes import CLI, free_port, not_installed, rss_mb, run
from .scenarios import EN_QUESTIONS, clustered_vectors

SIZES = (10_000, 100_000)
QUICK_SIZES = (10_000,)
QUERIES = 100


def replicas(ctx) -> None:
    """Run the Milvus rows (skipped, with a note, when pymilvus or milvus-lite is missing)."""
    if not_installed(ctx, "Milvus rows", ("pymilvus", "milvus_lite"), "milvus"):
        return
    server, uri = start_server(ctx.work / "milvus")
    try:
        _default_document(ctx, uri)
        for n in QUICK_SIZES if ctx.quick else SIZES:
            _synthetic(ctx, uri, server.pid, n)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def start_server(data: Path) -> tuple[subprocess.Popen, str]:
    """A Milvus Lite gRPC server on a free loopback port, and its URI, once it accepts connections.

    Raises:
        BenchmarkError: it did not start within a minute.
    """
    from ..errors import BenchmarkError

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(data),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise BenchmarkError("the Milvus Lite server did not start") from None
            time.sleep(0.2)


def _default_document(ctx, uri: str) -> None:
    """Build once into Milvus; a replica's cold and warm answers beside FAISS's."""
    from .. import Assistant

    env = {
        **ctx.env,
        "BILINGUAL_QA_VECTOR_STORE": "milvus",
        "BILINGUAL_QA_MILVUS_URI": uri,
        "BILINGUAL_QA_INDEX_DIR": str(ctx.work / "milvus-index"),
    }
    seconds, _, _ = run([*CLI, "index", "--json"], env)
    ctx.add(
        "milvus_build_cli", "Milvus: `bilingual-qa index` of the default document, built once", "s", [seconds]
    )
    question = EN_QUESTIONS[1]
    run([*CLI, "ask", question], env)  # warm-up: the OS file cache, .pyc files
    faiss_times, milvus_times, milvus_rss = [], [], []
    for _ in range(2 if ctx.quick else 5):
        faiss_times.append(run([*CLI, "ask", question], ctx.env)[0])
        seconds, rss, _ = run([*CLI, "ask", question], env)
        milvus_times.append(seconds)
        milvus_rss.append(rss)
    faiss = ctx.add("milvus_cold_faiss", "cold CLI answer, FAISS (side by side)", "s", faiss_times)
    replica = ctx.add(
        "milvus_cold_replica", "cold CLI answer, a Milvus replica (nothing encoded)", "s", milvus_times
    )
    ctx.add("milvus_cold_replica_rss", "cold CLI answer, a Milvus replica: peak RSS", "MB", milvus_rss)
    ctx.target(
        "milvus_cold",
        "Milvus replica cold answer ÷ FAISS cold answer ≤ 2",
        replica.median / faiss.median,
        2.0,
    )

    local = Assistant(settings=ctx.settings, embedder=ctx.embedder)
    shared = Assistant(
        settings=ctx.settings.replace(
            vector_store="milvus", milvus_uri=uri, index_dir=ctx.work / "milvus-index"
        ),
        embedder=ctx.embedder,
    )
    for q in ctx.next_questions("en", 2) + ctx.next_questions("zh", 2):  # warm-up
        local.ask(q)
        shared.ask(q)
    # Every question is new to the process (the embedder keeps query vectors), each side its own.
    ours, theirs = [], []
    rounds = 5 if ctx.quick else 20
    for language in ("en", "zh") * rounds:
        mine, yours = ctx.next_questions(language, 2)
        t = time.perf_counter()
        shared.ask(mine)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        local.ask(yours)
        theirs.append(time.perf_counter() - t)
    base = ctx.add("milvus_warm_faiss", "warm answer, FAISS (side by side)", "ms", [s * 1000 for s in theirs])
    warm = ctx.add("milvus_warm_replica", "warm answer, Milvus Lite replica", "ms", [s * 1000 for s in ours])
    ctx.target("milvus_warm", "Milvus warm answer ÷ FAISS warm answer ≤ 1.5", warm.median / base.median, 1.5)


def _synthetic(ctx, uri: str, server_pid: int, n: int) -> None:
    """Build, search p50, recall@10 and memory of FAISS and Milvus over ``n`` synthetic vectors."""
    import faiss

    from .. import milvus
    from ..index import IVF_NPROBE, FaissSearch, make_faiss_index, train_faiss_index

    dim = 384
    vectors = clustered_vectors(n, dim, seed=0)
    queries = clustered_vectors(QUERIES, dim, seed=1)
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)

    t = time.perf_counter()
    index = make_faiss_index(dim, n)
    train_faiss_index(index, vectors)
    index.add(vectors)  # type: ignore[attr-defined]
    faiss_build = time.perf_counter() - t
    faiss_mb = len(faiss.serialize_index(index)) / 2**20
    local = FaissSearch(index)

    settings = ctx.settings.replace(vector_store="milvus", milvus_uri=uri)
    store = milvus.Store(milvus.connect(settings), settings)
    name = f"bench_{n}_{int(time.time())}"
    before = rss_mb(server_pid) or 0.0
    t = time.perf_counter()
    store._create(name, _fields(dim), {"vector": milvus._dense_index(n)})
    store._insert(name, ({"row": i, "vector": v.tolist()} for i, v in enumerate(vectors)))
    store.client.flush(name)
    store.client.load_collection(name)
    milvus_build = time.perf_counter() - t
    server_mb = (rss_mb(server_pid) or 0.0) - before
    shared = milvus.MilvusSearch(store.client, name, uri, settings.milvus_timeout, IVF_NPROBE)

    results = {}
    for label, search in (("faiss", local), ("milvus", shared)):
        for q in queries[:10]:  # warm-up
            search.search(q, 10)
        latencies, recall = [], []
        for q, truth in zip(queries, exact, strict=True):
            t = time.perf_counter()
            hits = search.search(q, 10)
            latencies.append(time.perf_counter() - t)
            recall.append(len({row for row, _ in hits} & set(truth.tolist())) / 10)
        results[label] = (latencies, recall)
    store.client.drop_collection(name)
    kind = milvus._dense_index(n)[0]
    ctx.add(
        f"milvus_{n}_build_faiss", f"{n:,} vectors: FAISS build ({type(index).__name__})", "s", [faiss_build]
    )
    ctx.add(
        f"milvus_{n}_build_milvus", f"{n:,} vectors: Milvus Lite insert + index ({kind})", "s", [milvus_build]
    )
    for label in ("faiss", "milvus"):
        latencies, recall = results[label]
        name_ = "FAISS" if label == "faiss" else f"Milvus Lite ({kind}, over gRPC)"
        ctx.add(
            f"milvus_{n}_p50_{label}",
            f"{n:,} vectors: search top-10, {name_}",
            "ms",
            [s * 1000 for s in latencies],
        )
        ctx.add(f"milvus_{n}_recall_{label}", f"{n:,} vectors: recall@10 vs exact, {name_}", "", recall)
    ctx.add(f"milvus_{n}_memory_faiss", f"{n:,} vectors: FAISS index held by every replica", "MB", [faiss_mb])
    ctx.add(
        f"milvus_{n}_memory_milvus",
        f"{n:,} vectors: Milvus Lite server RSS growth (once, shared; a replica holds none)",
        "MB",
        [server_mb],
    )
    if n >= 100_000:
        miss = 1 - float(np.mean(results["milvus"][1]))
        ctx.target("milvus_recall", f"1 − Milvus recall@10 at {n:,} vectors ≤ 0.01", miss, 0.01)


def _fields(dim: int) -> list:
    """A paragraph collection's dense part: row and vector."""
    from pymilvus import DataType

    return [("row", DataType.INT64, {"is_primary": True}), ("vector", DataType.FLOAT_VECTOR, {"dim": dim})]
