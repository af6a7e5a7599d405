"""Benchmark suite (``bilingual-qa bench``): start-up, warm answers, index build, scale, memory, web.

The machine this runs on is usually shared, so absolute times are noisy. Every
target is therefore a *ratio* of two quantities measured side by side in the
same run, interleaved, after a warm-up, as medians of repeats (p95 where a
target says so); absolute times are reported for orientation only.

What is measured, and against what:

* cold start: ``bilingual-qa ask`` in a fresh process (index already built) vs a
  naive llama-index pipeline (sentence-transformers, one node per paragraph) in
  a fresh process, both from process start to result; the web server from
  process start until ``/ask`` answers through ``gradio_client``;
* warm answers: :meth:`Assistant.ask` vs one bare query encoding of the same
  (never repeated) questions by a second instance of the same engine;
* index build: ``build_index`` vs ``embed_passages`` on the same texts;
* scale: answer latency on synthetic documents of up to ~10,000 paragraphs
  (repeats of the default document with numbered variations, so twins still
  align), and search alone on up to 1,000,000 synthetic clustered vectors with
  the FAISS index :func:`bilingual_qa.index.make_faiss_index` picks, recall@10
  against exact search;
* memory: resident set size of a warm CLI process and of the warm web server;
* web: 16 concurrent ``gradio_client`` callers of ``/ask``.

Encoding 40,000 synthetic passages would take hours on a small CPU, so the
scale documents replay the default document's real passage vectors (slightly
perturbed per copy) while their questions are encoded for real: query cost and
the build's own work (alignment, BM25, FAISS, saving) are real, and the build's
encoding cost is the measured passages-per-second rate times the passages.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import DEFAULT_MODEL, Settings
from .errors import BilingualQAError

#: Where ``bilingual-qa bench`` writes report.json, report.html and bench.png.
DEFAULT_REPORT_DIR = Path("eval") / "reports" / "bench"
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
WEB_CALLERS = 16

_EN_QUESTIONS = (
    "What mechanism will Chongqing set up with the diplomatic missions?",
    "When was the press conference held?",
    "Which forum did the Chongqing FAO hold in 2023?",
    "What will the Center for ILSTC International Exchanges and Cooperation do?",
    "Who translated the press release?",
    "What is the role of the ILSTC Think Tank Alliance?",
    "Which countries' consulates are mentioned?",
    "How will Chongqing support international exchanges along the corridor?",
)
_ZH_QUESTIONS = (
    "重慶將與哪些國家的駐華使領館搭建溝通協調機制？",
    "新闻发布会是哪天举行的？",
    "重慶市政府外辦今年舉辦了哪些外事活動？",
    "陆海新通道国际交流合作中心有什么作用？",
    "西部陸海新通道智庫聯盟將圍繞什麼開展研究？",
    "外办将从哪几个方面支持陆海新通道建设？",
    "這篇新聞的來源是哪裡？",
    "重庆如何深度参与中国—东盟合作？",
)
# Variations that keep each question's meaning but make every string distinct, so
# the embedder's query cache never hides an encoding.
_EN_PREFIXES = ("", "Please tell me: ", "According to the document, ", "In the press release, ", "Q: ")
_ZH_PREFIXES = ("", "請問", "请问", "根據文件，", "根据新闻稿，")
_EN_SUFFIXES = ("", " Thanks.", " Briefly.", " Please cite.")
_ZH_SUFFIXES = ("", "謝謝。", "简单说。", "請引用。")

_NAIVE_PIPELINE = '''\
"""Naive llama-index pipeline: one TextNode per paragraph, the model through sentence-transformers."""
import os
import sys

for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[name] = "1"  # nothing may download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode
from pydantic import PrivateAttr
from sentence_transformers import SentenceTransformer

model, document, question = sys.argv[1:4]


class E5Embedding(BaseEmbedding):
    _model: SentenceTransformer = PrivateAttr()

    def __init__(self, folder):
        super().__init__(model_name=folder)
        self._model = SentenceTransformer(folder, device="cpu", local_files_only=True)

    def _encode(self, texts):
        return self._model.encode(texts, normalize_embeddings=True).tolist()

    def _get_query_embedding(self, query):
        return self._encode(["query: " + query])[0]

    async def _aget_query_embedding(self, query):
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text):
        return self._encode(["passage: " + text])[0]

    def _get_text_embeddings(self, texts):
        return self._encode(["passage: " + t for t in texts])


with open(document, encoding="utf-8") as fh:
    nodes = [TextNode(text=line.strip()) for line in fh if line.strip()]
index = VectorStoreIndex(nodes, embed_model=E5Embedding(model))  # explicit: global Settings untouched
hits = index.as_retriever(similarity_top_k=3).retrieve(question)
print(len(hits), flush=True)
'''

_WARM_PROCESS = """\
import json, sys
from bilingual_qa import Assistant
bot = Assistant()
for question in sys.argv[1:]:
    bot.ask(question)
status = open("/proc/self/status").read()
print(json.dumps({k: int(v.split()[0]) for k, v in
                  (line.split(":", 1) for line in status.splitlines()) if k in ("VmRSS", "VmHWM")}))
"""


class BenchmarkError(BilingualQAError):
    """A benchmark stage could not run (a subprocess failed, a server never answered)."""


@dataclass(frozen=True)
class Measurement:
    """One measured quantity: median (and p95) of its samples, in ``unit``."""

    name: str
    label: str
    unit: str
    samples: tuple[float, ...]
    note: str = ""

    @property
    def median(self) -> float:
        """Median of the samples."""
        return float(np.median(self.samples))

    @property
    def p95(self) -> float:
        """95th percentile of the samples (linear interpolation)."""
        return float(np.percentile(self.samples, 95))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary with the raw samples."""
        return {
            "name": self.name,
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "p95": self.p95,
            "n": len(self.samples),
            "samples": list(self.samples),
            "note": self.note,
        }


@dataclass(frozen=True)
class Target:
    """A target of issue #6: a measured value (usually a ratio) against its bound.

    ``met`` is None when the target was skipped; ``note`` says why.
    """

    name: str
    description: str
    value: float | None
    bound: float
    met: bool | None
    note: str = ""


@dataclass(frozen=True)
class ScalePoint:
    """Answer latency and index build time at one corpus size.

    ``build_seconds`` is the build's own work (alignment, BM25-ready store, FAISS),
    measured with replayed vectors; ``encode_seconds`` is what encoding its passages
    costs at the passage rate measured in the same run.
    """

    paragraphs: int
    passages: int
    answer_p50_ms: float
    answer_p95_ms: float
    build_seconds: float
    encode_seconds: float


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured."""

    quick: bool
    started: str
    seconds: float
    machine: dict[str, object]
    measurements: tuple[Measurement, ...]
    targets: tuple[Target, ...]
    scale: tuple[ScalePoint, ...]
    notes: tuple[str, ...] = ()

    def measurement(self, name: str) -> Measurement | None:
        """The measurement called ``name``, if it ran."""
        return next((m for m in self.measurements if m.name == name), None)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form of the whole report."""
        return {
            "quick": self.quick,
            "started": self.started,
            "seconds": self.seconds,
            "machine": self.machine,
            "measurements": [m.to_dict() for m in self.measurements],
            "targets": [dataclasses.asdict(t) for t in self.targets],
            "scale": [dataclasses.asdict(p) for p in self.scale],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)


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
        quick: fewer repeats and smaller corpora (a smoke test; under 2 minutes here).
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
        env=_child_env(settings),
        questions=_question_stream(),
    )
    load_before = _load_average()
    try:
        stages = (
            ("cold start: index build, CLI answer, naive llama-index", _cold_start),
            ("memory of a warm process", _memory),
            ("web server: start-up and 16 concurrent callers", _web),
            ("warm answers vs bare query encoding", _warm_answers),
            ("index build vs bare passage encoding", _build_throughput),
            ("answer latency as the corpus grows", _scale),
            ("vector search on synthetic vectors", _search_scale),
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


# --- stages ------------------------------------------------------------------------------------


def _cold_start(ctx: _Context) -> None:
    """Cold index build and cold CLI answer vs the naive llama-index pipeline, interleaved."""
    builds = 1 if ctx.quick else 3
    build_wall, build_inner = [], []
    for i in range(builds):
        # A fresh index folder each time: the build itself is what is timed.
        env = {**ctx.env, "BILINGUAL_QA_INDEX_DIR": str(ctx.work / f"cold-index-{i}")}
        seconds, _, out = _run([sys.executable, "-m", "bilingual_qa.cli", "index", "--json"], env)
        build_wall.append(seconds)
        build_inner.append(float(json.loads(out)["build_seconds"]))
    # The last fresh build becomes the index every later stage (and CLI run) opens.
    shutil.move(str(ctx.work / f"cold-index-{builds - 1}"), str(ctx.settings.index_dir))
    cold = ctx.add(
        "index_cold_cli", "index build, default document: `bilingual-qa index`, cold", "s", build_wall
    )
    ctx.add("index_build_only", "index build, default document: build_index alone", "s", build_inner)
    ctx.target("index_cold", "default-document index build, cold process, ≤ 5 s", cold.median, 5.0)

    question = _EN_QUESTIONS[0]
    naive_model, naive_skip = _naive_model(ctx)
    script = ctx.work / "naive_llama_index.py"
    script.write_text(_NAIVE_PIPELINE, encoding="utf-8")
    document = ctx.settings.document or _default_document()
    cli_cmd = [sys.executable, "-m", "bilingual_qa.cli", "ask", question]
    naive_cmd = [sys.executable, str(script), str(naive_model), str(document), question]
    repeats, naive_repeats = (2, 1) if ctx.quick else (5, 3)
    _run(cli_cmd, ctx.env)  # warm-up: the OS file cache, .pyc files
    if not ctx.quick and naive_skip is None:
        naive_skip = _try(lambda: _run(naive_cmd, ctx.env, timeout=900))
    cli_times, cli_rss, naive_times, naive_rss = [], [], [], []
    for i in range(repeats):
        seconds, rss, _ = _run(cli_cmd, ctx.env)
        cli_times.append(seconds)
        cli_rss.append(rss)
        if i < naive_repeats and naive_skip is None:
            try:
                seconds, rss, out = _run(naive_cmd, ctx.env, timeout=900)
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
        _, _, out = _run([sys.executable, "-c", _WARM_PROCESS, *questions], ctx.env)
        rss.append(json.loads(out.strip().splitlines()[-1])["VmRSS"] / 1024)
    m = ctx.add("warm_process_rss", "RSS of a warm process after answering (default document)", "MB", rss)
    ctx.target("warm_rss", f"warm process RSS ≤ {RSS_BOUND_MB:.0f} MB", m.median, RSS_BOUND_MB)


def _web(ctx: _Context) -> None:
    """Web server: time until /ask answers, then 16 concurrent callers, then its RSS."""
    skip = _web_unavailable()
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

    port = _free_port()
    env = {**ctx.env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}/"
    ready = []
    for attempt in range(1 if ctx.quick else 3):
        with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would block the server
            started = time.perf_counter()
            server = subprocess.Popen(
                [sys.executable, "-m", "bilingual_qa.cli", "serve", "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                _wait_for_answer(Client, url, server, log, ctx.next_questions("en", 1)[0], started)
                ready.append(time.perf_counter() - started)
                if attempt == 0:
                    _web_load(ctx, Client, url, server.pid)
            finally:
                _stop(server)
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
    rss = _rss_mb(pid)
    if rss is not None:
        ctx.add("web_rss", "RSS of the warm web server after the concurrent callers", "MB", [rss])
        ctx.target("web_rss", f"warm web server RSS ≤ {RSS_BOUND_MB:.0f} MB", rss, RSS_BOUND_MB)


def _warm_answers(ctx: _Context) -> None:
    """Assistant.ask vs a bare query encoding of the same questions, interleaved, en and zh."""
    from .assistant import Assistant
    from .embedding import load_embedder

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
    from .index import build_index

    base = _base_document(ctx)
    if ctx.quick:  # a smoke test: 3 English paragraphs and their translations
        base = dataclasses.replace(base, paragraphs=base.paragraphs[:6])
    document = synthetic_document(base, 1 if ctx.quick else 4)
    texts = [p.text for p in document.paragraphs] + [s.text for p in document.paragraphs for s in p.sentences]
    # Warm-up: the first build in a process also imports llama-index (seconds, once).
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
    from .assistant import Assistant
    from .index import build_index, open_index

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
            path.write_bytes(synthetic_text(base, copies)[0].encode("utf-8"))
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

    from .index import EXACT_SEARCH_LIMIT, IVF_NPROBE, FaissSearch, make_faiss_index, train_faiss_index

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


# --- synthetic data ---------------------------------------------------------------------------


def synthetic_text(base: object, copies: int) -> tuple[str, list[str]]:
    """A larger bilingual document: ``copies`` numbered variations of ``base``, paragraph for paragraph.

    English paragraphs get "(Part N) " and Chinese ones "（第N部分）", so each copy
    differs and a paragraph's translation still shares its number (an alignment anchor).

    Args:
        base: a parsed :class:`~bilingual_qa.document.Document`.
        copies: how many variations to concatenate.

    Returns:
        The document text (one paragraph per line) and each paragraph's language.
    """
    lines, languages = [], []
    for n in range(1, copies + 1):
        for p in base.paragraphs:  # type: ignore[attr-defined]
            lines.append(f"(Part {n}) {p.text}" if p.language == "en" else f"（第{n}部分）{p.text}")
            languages.append(p.language)
    return "\n".join(lines) + "\n", languages


def synthetic_document(base: object, copies: int) -> object:
    """:func:`synthetic_text` parsed as ``synthetic-<copies>.txt`` (languages carried over, no detection)."""
    from .document import parse_document

    text, languages = synthetic_text(base, copies)
    return parse_document(text.encode("utf-8"), name=f"synthetic-{copies}.txt", languages=languages)


_VARIATION = re.compile(r"^(?:\(Part \d+\) |（第\d+部分）)")


class ReplayEmbedder:
    """Queries through the real embedder; passage vectors replayed from an index of the base document.

    A synthetic paragraph or sentence maps back to its base text (the "(Part N)"
    marker removed); its vector is the base vector nudged by a small deterministic
    perturbation, so copies are near-duplicates, not identical. Texts without a
    base vector get a deterministic random one.

    Args:
        embedder: the real embedder (queries, model id, dimension).
        index: an index of the base document, whose vectors are replayed.
    """

    def __init__(self, embedder: object, index: object) -> None:
        self._embedder = embedder
        self.model_id = embedder.model_id  # type: ignore[attr-defined]
        self.dimension = embedder.dimension  # type: ignore[attr-defined]
        doc = index.document  # type: ignore[attr-defined]
        self._vectors = {p.text: index.paragraph_vectors[i] for i, p in enumerate(doc.paragraphs)}  # type: ignore[attr-defined]
        sentences = [s.text for p in doc.paragraphs for s in p.sentences]
        self._vectors.update(zip(sentences, index.sentence_vectors, strict=True))  # type: ignore[attr-defined]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors from the real engine."""
        return self._embedder.embed_queries(texts)  # type: ignore[attr-defined]

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Replayed, perturbed passage vectors (no model call)."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            rng = np.random.default_rng(
                int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest())
            )
            base = self._vectors.get(_VARIATION.sub("", text))
            noise = rng.standard_normal(self.dimension).astype(np.float32)
            v = noise if base is None else base + 0.05 * noise / math.sqrt(self.dimension)
            out[i] = v / np.linalg.norm(v)
        return out


def clustered_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """``n`` deterministic unit vectors in two-level clusters (topics → subtopics → points).

    1,000 topics of 100 subtopics each; a point's cosine to its subtopic is about
    0.86 and a subtopic's to its topic about 0.78. Sentence embeddings are
    similarly clumped, unlike uniform noise, which no approximate index searches well.

    Args:
        n: how many vectors.
        dim: their dimension.
        seed: 0 for the corpus, another value for queries from the same clusters.

    Returns:
        A C-contiguous float32 array of shape (n, dim), rows L2-normalized.
    """
    base = np.random.default_rng(12345)  # the clusters are shared by every seed
    topics = base.standard_normal((1000, dim), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    subtopics = np.repeat(topics, 100, axis=0)
    subtopics += 0.8 * base.standard_normal(subtopics.shape, dtype=np.float32) / math.sqrt(dim)
    subtopics /= np.linalg.norm(subtopics, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        x = subtopics[rng.integers(0, len(subtopics), m)]
        x += 0.6 * rng.standard_normal((m, dim), dtype=np.float32) / math.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _question_stream() -> Iterator[tuple[str, str]]:
    """Distinct (language, question) pairs, alternating en and zh, never repeating."""
    en = [p + q + s for s in _EN_SUFFIXES for p in _EN_PREFIXES for q in _EN_QUESTIONS]
    zh = [p + q + s for s in _ZH_SUFFIXES for p in _ZH_PREFIXES for q in _ZH_QUESTIONS]
    for round_ in range(10_000):
        tag = "" if round_ == 0 else f" ({round_})"  # only once the variations run out
        for a, b in zip(en, zh, strict=True):
            yield "en", a + tag
            yield "zh", b + tag


# --- helpers ----------------------------------------------------------------------------------


def _child_env(settings: Settings) -> dict[str, str]:
    """Environment for the CLI, server and baseline subprocesses: this package, these settings."""
    app_dir = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILINGUAL_QA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [app_dir, os.environ.get("PYTHONPATH")]))
    for name in ("model", "engine", "vector_store", "cache_dir", "index_dir", "threads", "document"):
        value = getattr(settings, name)
        if value is not None:
            env["BILINGUAL_QA_" + name.upper()] = str(value)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, float, str]:
    """Run a command to completion: (wall seconds, peak RSS in MB, stdout).

    Raises:
        BenchmarkError: non-zero exit or timeout (with the last line of stderr).
    """
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            out = proc.stdout.read() if proc.stdout else b""  # type: ignore[union-attr]
            # wait4, not wait: it also returns this child's own peak RSS.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stdout:
            proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode("utf-8", "replace").strip().splitlines() or ["(no message)"]
            what = "timed out" if proc.returncode < 0 else f"exited {proc.returncode}"
            raise BenchmarkError(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} {what}: {lines[-1][:200]}")
    return seconds, usage.ru_maxrss / 1024, out.decode("utf-8", "replace")


def _try(action: Callable[[], object]) -> str | None:
    """None when ``action`` succeeds, else the reason it failed."""
    try:
        action()
    except BenchmarkError as exc:
        return str(exc)
    return None


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
    from .weights import materialize_default_model

    return str(materialize_default_model(ctx.settings.model_cache_dir)), None


def _web_unavailable() -> str | None:
    """Why the web rows cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("bilingual_qa.web") is None:
        return "bilingual_qa.web does not exist yet"
    for name in ("gradio", "gradio_client"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed"
    from . import cli

    commands = next(a for a in cli._parser()._actions if a.dest == "command")
    if "serve" not in commands.choices:  # type: ignore[operator]
        return "the CLI has no serve command yet"
    return None


def _wait_for_answer(
    client_class: type, url: str, server: subprocess.Popen, log: object, question: str, started: float
) -> None:
    """Poll until /ask answers.

    Raises:
        BenchmarkError: the server exited (with the last line of its ``log``) or did not
            answer within 120 s.
    """
    while time.perf_counter() - started < 120:
        if server.poll() is not None:
            log.seek(0)  # type: ignore[attr-defined]
            lines = log.read().decode("utf-8", "replace").strip().splitlines() or ["(no message)"]  # type: ignore[attr-defined]
            raise BenchmarkError(f"web server exited {server.returncode}: {lines[-1][:200]}")
        try:
            client_class(url, verbose=False).predict(question=question, api_name="/ask")
            return
        except Exception:  # not up yet: connection refused, config not served, queue closed
            time.sleep(0.1)
    raise BenchmarkError("web server did not answer /ask within 120 s")


def _stop(server: subprocess.Popen) -> None:
    """Stop a server we started: Ctrl+C first, then kill."""
    import signal

    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of a process in MB (Linux /proc), or None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _base_document(ctx: _Context) -> object:
    """The benchmark's document (the default one unless settings name another), parsed."""
    from .document import read_document

    return read_document(ctx.settings.document, seed=ctx.settings.langdetect_seed)


def _default_document() -> Path:
    """Path of the embedded default document."""
    from .document import DEFAULT_DOCUMENT

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


# --- output -----------------------------------------------------------------------------------


def format_table(report: BenchReport) -> str:
    """The report as two plain-text tables: measurements, then targets.

    Args:
        report: a finished run.

    Returns:
        Text ready to print.
    """
    lines = [
        f"bilingual-qa bench{' --quick' if report.quick else ''}: {report.started}, {report.seconds:.0f} s, "
        f"{report.machine['cores']} cores, load {report.machine['load_average_before']} → "
        f"{report.machine['load_average_after']}",
        "",
        f"{'measurement':<72} {'median':>10} {'p95':>10} {'n':>4}  unit",
    ]
    for m in report.measurements:
        lines.append(
            f"{m.label[:72]:<72} {_num(m.median):>10} {_num(m.p95):>10} {len(m.samples):>4}  {m.unit}"
        )
        if m.note:
            lines.append(f"    {m.note}")
    lines += ["", f"{'target':<88} {'measured':>9} {'bound':>7}  result"]
    for t in report.targets:
        result = "skipped" if t.met is None else ("met" if t.met else "MISSED")
        value = "—" if t.value is None else _num(t.value)
        lines.append(f"{t.description[:88]:<88} {value:>9} {_num(t.bound):>7}  {result}")
        if t.met is None and t.note:
            lines.append(f"    {t.note}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _num(x: float) -> str:
    """A number with three significant digits, without exponent for everyday sizes."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def write_report(report: BenchReport, directory: Path) -> dict[str, Path]:
    """Write report.json, bench.png (or bench.svg) and report.html into ``directory``.

    Args:
        report: a finished run.
        directory: created when missing.

    Returns:
        The written files by kind ("json", "plot", "html").

    Raises:
        BenchmarkError: the directory cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"json": directory / "report.json"}
        paths["json"].write_text(report.to_json() + "\n", encoding="utf-8")
        png = _plot_png(report)
        if png is not None:
            paths["plot"] = directory / "bench.png"
            paths["plot"].write_bytes(png)
            data = base64.b64encode(png).decode()
            figure = (
                f'<img alt="latency and build time against corpus size" src="data:image/png;base64,{data}">'
            )
        else:
            paths["plot"] = directory / "bench.svg"
            figure = _plot_svg(report)
            paths["plot"].write_text(figure, encoding="utf-8")
        paths["html"] = directory / "report.html"
        paths["html"].write_text(_html(report, figure), encoding="utf-8")
    except OSError as exc:
        raise BenchmarkError(f"cannot write the benchmark report to {directory}: {exc}") from None
    return paths


def _series(report: BenchReport) -> dict[str, list[tuple[float, float]]]:
    """The plotted lines: (paragraphs, value) per series."""
    return {
        "answer p50 (ms)": [(p.paragraphs, p.answer_p50_ms) for p in report.scale],
        "answer p95 (ms)": [(p.paragraphs, p.answer_p95_ms) for p in report.scale],
        "build excl. encoding (s)": [(p.paragraphs, p.build_seconds) for p in report.scale],
        "encoding, projected from measured rate (s)": [
            (p.paragraphs, p.encode_seconds) for p in report.scale
        ],
    }


def _plot_png(report: BenchReport) -> bytes | None:
    """The scale plot as PNG bytes via matplotlib, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = _series(report)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, ax in (("answer p50 (ms)", left), ("answer p95 (ms)", left)):
        xs, ys = zip(*series[name], strict=True) if series[name] else ((), ())
        ax.plot(xs, ys, marker="o", label=name)
    for name in ("build excl. encoding (s)", "encoding, projected from measured rate (s)"):
        xs, ys = zip(*series[name], strict=True) if series[name] else ((), ())
        right.plot(xs, ys, marker="o", label=name)
    left.set_title("warm answer latency")
    left.set_ylabel("ms")
    left.set_ylim(bottom=0)
    right.set_title("index build time")
    right.set_ylabel("s")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("paragraphs in the document")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("bilingual-qa: cost against corpus size" + (" (quick)" if report.quick else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plot_svg(report: BenchReport) -> str:
    """A small dependency-free SVG of the same plot (log x, linear y per panel)."""
    series = _series(report)
    panels = (
        ("warm answer latency (ms)", ("answer p50 (ms)", "answer p95 (ms)")),
        ("index build time (s)", ("build excl. encoding (s)", "encoding, projected from measured rate (s)")),
    )
    colors = ("#1f77b4", "#ff7f0e")
    width, height, pad = 420, 280, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" font-size="11">']
    for k, (title, names) in enumerate(panels):
        points = [pt for name in names for pt in series[name]]
        if not points:
            continue
        x0 = k * width
        lx = [math.log10(max(x, 1)) for x, _ in points]
        ymax = max(y for _, y in points) or 1.0
        xlo, xhi = min(lx), max(max(lx), min(lx) + 1)

        def sx(x: float, x0: int = x0, xlo: float = xlo, xhi: float = xhi) -> float:
            return x0 + pad + (math.log10(max(x, 1)) - xlo) / (xhi - xlo) * (width - 2 * pad)

        def sy(y: float, ymax: float = ymax) -> float:
            return height - pad - y / ymax * (height - 2 * pad)

        parts.append(f'<text x="{x0 + pad}" y="20">{html.escape(title)}, max {_num(ymax)}</text>')
        parts.append(
            f'<rect x="{x0 + pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
            'fill="none" stroke="#ccc"/>'
        )
        for color, name in zip(colors, names, strict=True):
            pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series[name])
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            parts.append(f'<text x="{x0 + pad + 4}" y="{pad + 14 + 14 * names.index(name)}" '
                         f'fill="{color}">{html.escape(name)}</text>')  # fmt: skip
        parts.append(f'<text x="{x0 + pad}" y="{height - 10}">paragraphs (log scale)</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html(report: BenchReport, figure: str) -> str:
    """A self-contained HTML page: tables and the plot."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(m.label)}</td><td>{_num(m.median)}</td><td>{_num(m.p95)}</td>"
        f"<td>{len(m.samples)}</td><td>{esc(m.unit)}</td><td>{esc(m.note)}</td></tr>"
        for m in report.measurements
    )
    targets = "".join(
        f"<tr><td>{esc(t.description)}</td><td>{'—' if t.value is None else _num(t.value)}</td>"
        f"<td>{_num(t.bound)}</td><td>{'skipped' if t.met is None else ('met' if t.met else 'MISSED')}</td>"
        f"<td>{esc(t.note)}</td></tr>"
        for t in report.targets
    )
    machine = esc(json.dumps(report.machine, ensure_ascii=False))
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bilingual-qa benchmark</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left}}
img,svg{{max-width:100%}}</style></head><body>
<h1>bilingual-qa benchmark{" (quick)" if report.quick else ""}</h1>
<p>{esc(report.started)}, {report.seconds:.0f} s. Machine: <code>{machine}</code></p>
<p>Targets are ratios of quantities measured side by side in this run (medians of repeats);
absolute times are for orientation on this machine.</p>
<h2>Targets</h2>
<table><tr><th>target</th><th>measured</th><th>bound</th><th>result</th><th>note</th></tr>{targets}</table>
<h2>Cost against corpus size</h2>
{figure}
<h2>Measurements</h2>
<table><tr><th>measurement</th><th>median</th><th>p95</th><th>n</th><th>unit</th><th>note</th></tr>{rows}</table>
<ul>{notes}</ul>
</body></html>
"""


def run_cli(args: object, settings: Settings) -> int:
    """``bilingual-qa bench``: run, print the table (or JSON), write the report.

    Args:
        args: parsed CLI arguments (``quick``, ``json``, ``report``).
        settings: from the common CLI flags.

    Returns:
        0 (missed targets are reported, not an error).
    """

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    report = run_benchmark(settings, quick=args.quick, progress=progress)  # type: ignore[attr-defined]
    paths = write_report(report, Path(args.report) if args.report else DEFAULT_REPORT_DIR)  # type: ignore[attr-defined]
    print(report.to_json() if args.json else format_table(report))  # type: ignore[attr-defined]
    print(f"bench: report {paths['html']}, plot {paths['plot']}", file=sys.stderr)
    return 0
