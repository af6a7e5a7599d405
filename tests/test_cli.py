import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bilingual_qa.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_is_fast_and_light():
    heavy = "('torch', 'numpy', 'llama_index', 'sentence_transformers', 'gradio')"
    code = (
        "import sys; from bilingual_qa.cli import _parser; _parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "app")},
    )
    assert out.stdout.strip() == "[]"


def test_no_module_of_the_package_imports_the_cli():
    # The CLI imports the tools lazily; a tool importing the CLI back would make a cycle.
    import ast

    package = ROOT / "app" / "bilingual_qa"
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = ["bilingual_qa", *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__main__" or parts == ["bilingual_qa", "cli"]:
            continue
        where = parts[:-1]  # the package relative imports start from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = where[: len(where) - node.level + 1] if node.level else []
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            if "bilingual_qa.cli" in targets:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "hello", "--document", "/nonexistent/doc.txt"], "document not found"),
        (["index", "/"], "is a directory"),
        (["ask", "hi", "--threads", "0"], "threads must be at least 1"),
    ],
)
def test_errors_are_one_line_and_non_zero(capsys, args, message):
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_binary_document_is_rejected(tmp_path, capsys):
    doc = tmp_path / "x.md"
    doc.write_bytes(b"\x00\xff\xfe")
    assert main(["index", str(doc)]) != 0
    assert "binary" in capsys.readouterr().err


# --- integration: the real CLI in a subprocess --------------------------------------------------


def _run(args, tmp_path, stdin=None):
    env = {**os.environ, "BILINGUAL_QA_INDEX_DIR": str(tmp_path / "index"), "PYTHONPATH": str(ROOT / "app")}
    return subprocess.run(
        [sys.executable, "-m", "bilingual_qa.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.integration
def test_ask_json_is_the_answer_with_readable_chinese(tmp_path):
    out = _run(["ask", "重庆将举办多少场专场推介活动?", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["language"] == "zh-Hans" and answer["answered"] is True
    assert "\\u" not in out.stdout
    assert {"text", "citations", "language", "answered"} <= set(answer)
    # Answered during a progressive build, which the process then finished and saved.
    assert len(list((tmp_path / "index").glob("*/manifest.json"))) == 1


@pytest.mark.integration
def test_stdin_questions_one_process_and_bad_lines_lose_nothing(tmp_path):
    stdin = "Who translated the article?\n" + "x" * 2500 + "\n重慶的國際友城有哪些?\n"
    out = _run(["ask", "--json"], tmp_path, stdin=stdin)
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [a["language"] for a in answers] == ["en", "zh-Hant"]
    assert out.returncode != 0 and "too long" in out.stderr


@pytest.mark.integration
def test_undecodable_input_is_reported_line_by_line_and_a_closed_pipe_ends_quietly(tmp_path):
    env = {**os.environ, "BILINGUAL_QA_INDEX_DIR": str(tmp_path / "index"), "PYTHONPATH": str(ROOT / "app")}
    cli = [sys.executable, "-m", "bilingual_qa.cli", "ask"]
    stdin = b"Who translated the article?\n" + b"\xff\xfe bad\n" + "重慶的國際友城有哪些?\n".encode()
    out = subprocess.run([*cli, "--json"], input=stdin, capture_output=True, env=env, timeout=600)
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [a["language"] for a in answers] == ["en", "zh-Hant"]
    assert out.returncode == 2 and out.stderr.decode().strip() == (
        "bilingual-qa: error: line 2 is not valid UTF-8 (byte 0xFF at 0)"
    )
    bad = subprocess.run([*cli, os.fsdecode(b"What is \xff?")], capture_output=True, env=env, timeout=600)
    assert bad.returncode == 2 and bad.stderr.decode().strip() == (
        "bilingual-qa: error: the question contains an invalid UTF-8 byte (0xFF)"
    )
    # The reader has gone (`| head -1` after its line): no traceback, the conventional SIGPIPE status.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        asker = subprocess.run(
            cli, input=b"Who translated the article?\n", stdout=write_end, stderr=subprocess.PIPE, env=env
        )
    finally:
        os.close(write_end)
    assert asker.returncode == 141 and asker.stderr == b"", asker.stderr


@pytest.mark.integration
def test_index_prints_stats(tmp_path):
    out = _run(["index", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["paragraphs"] == 17 and stats["pairs"] == 8 and stats["unpaired"] == ["P15"]


def test_the_terminal_progress_bar_counts_passages(capsys):
    from bilingual_qa.cli import _Bar

    bar = _Bar()
    bar.start(40)
    for share in (0.25, 0.5, 1.0):
        bar(share)
    assert bar._bar.n == 40
    bar.close()
    assert "passage" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, "model"),  # baselines never depend on whether the fast engine was made yet
        (["--build-engine", "fast"], None, "fast"),
        (["--build-engine", "onnx"], None, "fast"),  # its earlier name
        ([], "fast", None),  # the variable is read by Settings.from_env, not overridden
        (["--build-engine", "auto"], None, "auto"),
    ],
)
def test_eval_builds_with_the_model_unless_told_otherwise(monkeypatch, argv, env, expected):
    from bilingual_qa.evaluation import cli as eval_cli

    seen = []
    monkeypatch.setattr(eval_cli, "run_cli", lambda args, make: seen.append(args.build_engine) or 0)
    if env is None:
        monkeypatch.delenv("BILINGUAL_QA_BUILD_ENGINE", raising=False)
    else:
        monkeypatch.setenv("BILINGUAL_QA_BUILD_ENGINE", env)
    assert main(["eval", *argv]) == 0
    assert seen == [expected]


def test_eval_asks_about_the_documents_in_the_other_script_only_when_told(monkeypatch):
    from bilingual_qa.cli import _parser
    from bilingual_qa.evaluation import cli as eval_cli

    class Stop(Exception):
        pass

    seen = []

    def run_eval(assistant, reference, **options):
        seen.append(options.get("reverse"))
        raise Stop

    monkeypatch.setattr(eval_cli, "run_eval", run_eval)
    reference = ROOT / "eval" / "reference_qa.jsonl"
    for argv in (["eval"], ["eval", "--reverse-scripts"]):
        args = _parser().parse_args([*argv, "--set", str(reference)])
        with pytest.raises(Stop):
            eval_cli.run_cli(args, lambda args, document: object())
    assert seen == [False, True]
