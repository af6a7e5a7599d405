"""Fairness under load (``bilingual-qa bench``): does one heavy request stall everyone else?

A normal question's latency is measured idle, then while each of these is in flight in
the same process, sharing the one embedding model as the web server's requests do:

(a) follow-ups with a 20-turn history of 2,000-character questions, asked back to back;
(b) the build of a 250 KB one-paragraph upload (64 KB in quick mode);
(c) an answer from an LLM server that keeps its stream alive with SSE comments and never
    sends a token (``llm_timeout`` 5 s): also timed itself, to its extractive fallback.

Target for (a)-(c): the p95 during the load ≤ 2 × the idle p50 + one bounded batch: the
longest turn another request may hold the model for, one text of the model's whole window
(:data:`~bilingual_qa.embedding.WINDOW_TOKENS`; batches of several texts are smaller,
:data:`~bilingual_qa.embedding.BATCH_TOKENS`).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import BenchmarkError

#: The LLM deadline the keep-alive scenario sets, and the bound on its fallback answer.
LLM_TIMEOUT = 5.0
LLM_FALLBACK_BOUND = 6.0


class KeepAliveLLM:
    """An OpenAI-compatible server that opens a stream, then only sends SSE comments, forever.

    The shape of a stalled or hostile backend: every read succeeds, no token ever arrives.
    """

    def __init__(self, interval: float = 0.5) -> None:
        stop = self._stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    while not stop.wait(interval):
                        self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                except OSError:  # the client hung up: what the deadline should make it do
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving and end the open streams."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def one_paragraph_upload(base: object, size: int) -> str:
    """A document of one line of ``size`` bytes: the base document's English sentences, repeated."""
    sentences = [s.text for p in base.paragraphs if p.language == "en" for s in p.sentences]  # type: ignore[attr-defined]
    parts: list[str] = []
    total = i = 0
    while total < size:
        # Numbered, so that each sentence is a distinct text to embed, as in a real report.
        text = f"{sentences[i % len(sentences)]} ({i})"
        parts.append(text)
        total += len(text.encode()) + 1
        i += 1
    return " ".join(parts)


@contextlib.contextmanager
def running(work: Callable[[], object], repeat: bool) -> Iterator[Callable[[], bool]]:
    """Run ``work`` in a thread (again and again if ``repeat``); yields "is it still running?"."""
    done = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while True:
                work()
                if not repeat or done.is_set():
                    return
        except BaseException as exc:  # reported to the stage, which fails loudly
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield thread.is_alive
    finally:
        done.set()
        thread.join()
    if errors:
        raise BenchmarkError(f"background load failed: {type(errors[0]).__name__}: {errors[0]}")


def fairness(ctx: object) -> None:
    """The stage: idle latency, latency under (a), (b), (c), and the LLM deadline."""
    from ..assistant import Assistant
    from ..embedding import WINDOW_TOKENS, load_embedder

    settings = ctx.settings  # type: ignore[attr-defined]
    embedder = load_embedder(settings)
    bot = Assistant(settings=settings, embedder=embedder)
    quick = ctx.quick  # type: ignore[attr-defined]
    n = 8 if quick else 20

    def timed(ask: Callable[[str], object], question: str) -> float:
        t = time.perf_counter()
        ask(question)
        return time.perf_counter() - t

    def sample(while_running: Callable[[], bool]) -> list[float]:
        out: list[float] = []
        while len(out) < n and (while_running() or not out):
            question = ctx.next_questions("en" if len(out) % 2 else "zh", 1)[0]  # type: ignore[attr-defined]
            out.append(timed(bot.ask, question))
        return out

    for question in ctx.next_questions("en", 2) + ctx.next_questions("zh", 2):  # type: ignore[attr-defined]
        bot.ask(question)  # warm-up
    idle = ctx.add("fair_idle", "normal question, idle (shared model)", "s", sample(lambda: True))  # type: ignore[attr-defined]

    # One bounded batch: the longest turn on the model, one text of the model's whole window.
    words = " ".join(["corridor"] * 2000)
    batch_text = embedder.clip(words, WINDOW_TOKENS - 8, False)  # type: ignore[attr-defined]
    batch = []
    for _ in range(3):
        t = time.perf_counter()
        embedder.embed_passages([batch_text + f" {len(batch)}"])
        batch.append(time.perf_counter() - t)
    batch_m = ctx.add("fair_batch", f"one bounded batch (a {WINDOW_TOKENS}-token text)", "s", batch)  # type: ignore[attr-defined]
    bound = 2 * idle.median + batch_m.median

    def judge(name: str, label: str, samples: list[float], note: str = "") -> None:
        m = ctx.add(name, label, "s", samples, note)  # type: ignore[attr-defined]
        ctx.target(  # type: ignore[attr-defined]
            name,
            f"{label}: p95 ≤ 2 × idle p50 + one batch ({bound:.2f} s)",
            m.p95 / bound,
            1.0,
            f"p95 {m.p95:.2f} s, idle p50 {idle.median:.2f} s, batch {batch_m.median:.2f} s",
        )

    # (a) 20 turns of 2,000-character questions behind a follow-up.
    history = [
        (" ".join(f"{question} {i}" for i in range(200))[:2000], "…")
        for question in ctx.next_questions("en", 20)  # type: ignore[attr-defined]
    ]
    with running(lambda: bot.ask("And what about them?", history=history), repeat=True) as alive:
        time.sleep(0.5)  # the load is under way
        during = sample(alive)
    judge("fair_history", "normal question during 20 × 2,000-character follow-ups", during)

    # (b) a 250 KB one-paragraph upload being built, as a tab's upload is, on the shared model.
    size = 64 * 1024 if quick else 250 * 1024
    upload = Path(ctx.work) / "one-paragraph-upload.txt"  # type: ignore[attr-defined]
    upload.write_text(one_paragraph_upload(bot.document, size) + "\n", encoding="utf-8")
    upload_settings = settings.replace(index_dir=Path(ctx.work) / "upload-index")  # type: ignore[attr-defined]
    built: list[float] = []

    def build() -> None:
        t = time.perf_counter()
        Assistant(document=upload, settings=upload_settings, embedder=embedder)
        built.append(time.perf_counter() - t)

    with running(build, repeat=False) as alive:
        time.sleep(0.5)
        during = sample(alive)
    judge(
        "fair_upload",
        f"normal question during a {size // 1024} KB one-paragraph upload's build",
        during,
        f"the build took {built[0]:.1f} s" if built else "",
    )

    # (c) an LLM that keeps the stream alive and never answers.
    server = KeepAliveLLM()
    try:
        llm_bot = Assistant(
            settings=settings.replace(llm_url=server.url, llm_timeout=LLM_TIMEOUT), embedder=embedder
        )
        fallback: list[float] = []
        reasons: list[str] = []

        def answerable() -> str:
            # The LLM is asked only when the document answers (else the refusal is immediate).
            while True:
                question = ctx.next_questions("en", 1)[0]  # type: ignore[attr-defined]
                if bot.ask(question).answered:
                    return question

        def stalled() -> None:
            question = answerable()
            t = time.perf_counter()
            answer = llm_bot.ask(question)
            fallback.append(time.perf_counter() - t)
            reasons.append(f"{answer.backend}/{answer.fallback_reason}")

        with running(stalled, repeat=False) as alive:
            time.sleep(0.5)
            during = sample(alive)
        judge("fair_llm", "normal question during a keep-alive LLM answer", during)
        for _ in range(0 if quick else 2):  # more samples of the deadline itself
            stalled()
    finally:
        server.close()
    m = ctx.add(  # type: ignore[attr-defined]
        "llm_deadline", f"answer with llm_timeout {LLM_TIMEOUT:.0f} s, keep-alive server", "s", fallback,
        ", ".join(sorted(set(reasons))),
    )  # fmt: skip
    ctx.target(  # type: ignore[attr-defined]
        "llm_deadline",
        f"llm_timeout {LLM_TIMEOUT:.0f} s vs a keep-alive server: fallback ≤ {LLM_FALLBACK_BOUND:.0f} s",
        max(m.samples),
        LLM_FALLBACK_BOUND,
        ", ".join(sorted(set(reasons))),
    )
