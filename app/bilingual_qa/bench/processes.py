"""Benchmark processes: the CLI, the web server and the naive pipeline, each run and timed in a fresh process.

Every subprocess gets :func:`child_env`: this checkout's package first on the path and
the benchmark's settings as ``BILINGUAL_QA_*`` variables. The CLI is only ever run,
never imported, here: the benchmark learns what it can do by asking it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BenchmarkError

#: How a fresh process runs the CLI (the form the bench times).
CLI = (sys.executable, "-m", "bilingual_qa.cli")
#: How a fresh process runs the naive llama-index pipeline of the evaluation.
NAIVE = (sys.executable, "-m", "bilingual_qa.evaluation.naive")
#: A process that answers the questions it is given, then prints its VmRSS and VmHWM (kB) as JSON.
WARM = (
    sys.executable,
    "-c",
    """\
import json, sys
from bilingual_qa import Assistant
bot = Assistant()
for question in sys.argv[1:]:
    bot.ask(question)
status = open("/proc/self/status").read()
print(json.dumps({k: int(v.split()[0]) for k, v in
                  (line.split(":", 1) for line in status.splitlines()) if k in ("VmRSS", "VmHWM")}))
""",
)


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of every subprocess: this package importable, these settings.

    Args:
        settings: model, engine, vector store, cache and index folders, threads and document
            are passed on; any ``BILINGUAL_QA_*`` variable of this process is not.

    Returns:
        The environment, to pass as ``env=``.
    """
    app_dir = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILINGUAL_QA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [app_dir, os.environ.get("PYTHONPATH")]))
    for name in (
        "model", "engine", "build_engine", "vector_store", "cache_dir", "index_dir", "threads", "document",
    ):  # fmt: skip
        value = getattr(settings, name)
        if value is not None:
            env["BILINGUAL_QA_" + name.upper()] = str(value)
    return env


@dataclass(frozen=True)
class Ran:
    """A finished process: its wall time, when its first output came, its peak RSS and its output."""

    seconds: float
    first_output: float | None  # seconds from start to the first bytes on stdout; None: it printed none
    rss_mb: float
    out: str


def run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, float, str]:
    """Run a command to completion and measure it: (wall seconds, peak RSS in MB, stdout).

    Raises:
        BenchmarkError: as :func:`run_timed`.
    """
    ran = run_timed(cmd, env, timeout)
    return ran.seconds, ran.rss_mb, ran.out


def run_timed(cmd: list[str], env: dict[str, str], timeout: float = 600) -> Ran:
    """Run a command to completion and measure it, its first output included.

    Args:
        cmd: the command, e.g. ``[*CLI, "ask", question]``.
        env: its environment (see :func:`child_env`).
        timeout: seconds before it is killed.

    Returns:
        The :class:`Ran`.

    Raises:
        BenchmarkError: non-zero exit or timeout (with the last line of stderr).
    """
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        done = threading.Event()
        peak = [0]
        watcher = threading.Thread(target=_watch_peak, args=(proc.pid, done, peak), daemon=True)
        watcher.start()
        try:
            chunks = []
            first = None
            while proc.stdout and (chunk := proc.stdout.read1(1 << 16)):  # type: ignore[union-attr]
                first = first if first is not None else time.perf_counter() - started
                chunks.append(chunk)
            # wait4, not wait: its peak RSS stands in where /proc could not be read.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            watcher.join()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stdout:
            proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().decode("utf-8", "replace").strip().splitlines() or ["(no message)"]
            what = "timed out" if proc.returncode < 0 else f"exited {proc.returncode}"
            raise BenchmarkError(f"{_name(cmd)} {what}: {lines[-1][:200]}")
    # The kernel's figure counts, at exec, the pages the child was forked with: the whole bench
    # process, which grows over a run (an upload's 650 MB read as 1,011 MB late in a full run).
    # The child's own high-water mark, read while it runs, is its program's alone.
    rss_mb = peak[0] / 1024 if peak[0] else usage.ru_maxrss / 1024
    return Ran(seconds, first, rss_mb, b"".join(chunks).decode("utf-8", "replace"))


def _watch_peak(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Keep in ``peak[0]`` the highest VmHWM (kB) of process ``pid`` seen until ``done``."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        if done.wait(0.02):
            return


def not_installed(ctx: Any, what: str, modules: tuple[str, ...], extra: str) -> bool:
    """Whether any of ``modules`` is missing; if so, a note says ``what`` was skipped and why.

    Args:
        ctx: the run's context (its ``notes``).
        what: the rows skipped, e.g. "Milvus rows".
        modules: import names the rows need.
        extra: the package extra that installs them.
    """
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        ctx.notes.append(f"{what} skipped: not installed: {', '.join(missing)} (pip install '.[{extra}]')")
    return bool(missing)


def failure(action: Callable[[], object]) -> str | None:
    """Why ``action`` failed, if it did.

    Args:
        action: something that raises BenchmarkError when it fails, e.g. a :func:`run`.

    Returns:
        None when it succeeded, else the error's message.
    """
    try:
        action()
    except BenchmarkError as exc:
        return str(exc)
    return None


def web_unavailable(env: dict[str, str]) -> str | None:
    """Why the web measurements cannot run here.

    Args:
        env: the subprocess environment, to ask the CLI with.

    Returns:
        The reason, or None when the web module, Gradio, its client and the CLI's
        ``serve`` command are all there.
    """
    if importlib.util.find_spec("bilingual_qa.web") is None:
        return "bilingual_qa.web does not exist yet"
    for name in ("gradio", "gradio_client"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed"
    if failure(lambda: run([*CLI, "serve", "--help"], env, timeout=120)) is not None:
        return "the CLI has no serve command yet"
    return None


def wait_for_answer(
    client_class: type, url: str, server: subprocess.Popen, log: Any, question: str, started: float
) -> None:
    """Poll a starting web server until its /ask answers.

    Args:
        client_class: ``gradio_client.Client``.
        url: the server's address.
        server: its process.
        log: the file its stdout and stderr go to.
        question: what to ask.
        started: its start, as ``time.perf_counter()``.

    Raises:
        BenchmarkError: the server exited (with the last line of its ``log``) or did not
            answer within 120 s of ``started``.
    """
    while time.perf_counter() - started < 120:
        if server.poll() is not None:
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").strip().splitlines() or ["(no message)"]
            raise BenchmarkError(f"web server exited {server.returncode}: {lines[-1][:200]}")
        try:
            client_class(url, verbose=False).predict(question=question, api_name="/ask")
            return
        except Exception:  # not up yet: connection refused, config not served, queue closed
            time.sleep(0.1)
    raise BenchmarkError("web server did not answer /ask within 120 s")


def stop(server: subprocess.Popen) -> None:
    """Stop a server we started: Ctrl+C first, then kill.

    Args:
        server: its process; it has exited when this returns.
    """
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now.

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of a process, from Linux's /proc.

    Args:
        pid: the process id, or "self".

    Returns:
        Its RSS in MB, or None where /proc is unavailable.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _name(cmd: list[str]) -> str:
    """What a command runs, for messages: the module after ``-m``, else the script's file name."""
    if len(cmd) > 2 and cmd[1] == "-m":
        return cmd[2]
    return Path(cmd[1]).name if len(cmd) > 1 else cmd[0]
