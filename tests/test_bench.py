"""Benchmark suite: synthetic data, processes and reports (fast), and a --quick smoke run (integration).

Times are never asserted: the machine is shared. The smoke run checks that every
stage ran and produced finite, non-negative numbers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bilingual_qa.bench import cli as bench_cli
from bilingual_qa.bench import processes
from bilingual_qa.bench import report as bench_report
from bilingual_qa.bench.measure import run_benchmark
from bilingual_qa.bench.report import format_table, write_report
from bilingual_qa.bench.results import BenchReport, Measurement, ScalePoint, Target
from bilingual_qa.bench.scenarios import (
    ReplayEmbedder,
    clustered_vectors,
    question_stream,
    synthetic_document,
    synthetic_text,
)
from bilingual_qa.document import read_document
from bilingual_qa.errors import BenchmarkError


def test_synthetic_document_numbers_each_copy_in_both_languages():
    base = read_document()
    doc = synthetic_document(base, 3)
    assert len(doc.paragraphs) == 3 * len(base.paragraphs)
    assert [p.language for p in doc.paragraphs] == [p.language for p in base.paragraphs] * 3
    third = doc.paragraphs[2 * len(base.paragraphs)]
    assert (
        third.text.startswith("(Part 3) ") if third.language == "en" else third.text.startswith("（第3部分）")
    )
    assert synthetic_document(base, 3).sha256 == doc.sha256  # deterministic


def test_a_synthetic_file_reopens_the_index_built_for_it(fake_embedder, settings, tmp_path):
    from bilingual_qa import Assistant
    from bilingual_qa.index import open_index

    base = read_document()
    doc = synthetic_document(base, 2)
    path = tmp_path / doc.name
    path.write_bytes(synthetic_text(base, 2)[0].encode("utf-8"))
    settings = settings.replace(document=path)
    open_index(doc, fake_embedder, settings)
    calls = fake_embedder.calls
    bot = Assistant(settings=settings, embedder=fake_embedder)
    assert fake_embedder.calls == calls  # neither rebuilt nor re-detected
    assert bot.index.document.sha256 == doc.sha256


def test_clustered_vectors_are_deterministic_unit_vectors():
    a = clustered_vectors(500, 32, seed=0)
    assert a.shape == (500, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, clustered_vectors(500, 32, seed=0))
    assert not np.array_equal(a, clustered_vectors(500, 32, seed=1))


def test_replay_embedder_perturbs_base_vectors_and_encodes_queries_for_real(fake_embedder, settings):
    from bilingual_qa.index import build_index

    base = read_document()
    index = build_index(base, fake_embedder)
    replay = ReplayEmbedder(fake_embedder, index)
    doc = synthetic_document(base, 2)
    vectors = replay.embed_passages([p.text for p in doc.paragraphs])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    n = len(base.paragraphs)
    # Copies are near-duplicates of the base paragraph, not identical to each other.
    assert np.all(np.sum(vectors[:n] * index.paragraph_vectors, axis=1) > 0.99)
    assert not np.array_equal(vectors[:n], vectors[n:])
    calls = fake_embedder.calls
    replay.embed_queries(["question"])
    assert fake_embedder.calls == calls + 1


def test_one_paragraph_upload_is_one_line_of_distinct_sentences():
    from bilingual_qa.bench.fairness import one_paragraph_upload

    text = one_paragraph_upload(read_document(), 20_000)
    assert "\n" not in text and len(text.encode()) >= 20_000
    assert "(0)" in text and "(1)" in text


def test_keep_alive_llm_never_sends_a_token():
    import urllib.request

    from bilingual_qa.bench.fairness import KeepAliveLLM

    server = KeepAliveLLM(interval=0.05)
    try:
        request = urllib.request.Request(server.url + "/chat/completions", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            lines = [response.readline() for _ in range(6)]
    finally:
        server.close()
    assert all(line in (b": keep-alive\n", b"\n") for line in lines) and b": keep-alive\n" in lines


def test_background_load_failures_fail_the_stage():
    from bilingual_qa.bench.fairness import running

    def broken():
        raise RuntimeError("boom")

    failed = pytest.raises(BenchmarkError, match="background load failed: RuntimeError: boom")
    with failed, running(broken, repeat=True) as alive:
        while alive():
            pass


def test_questions_never_repeat():
    stream = question_stream()
    questions = [next(stream) for _ in range(2000)]
    assert len(set(questions)) == 2000
    assert {lang for lang, _ in questions} == {"en", "zh"}


def test_processes_are_named_by_module_and_ask_the_cli_for_serve(settings, monkeypatch):
    import importlib.util
    import sys

    env = processes.child_env(settings)
    assert env["BILINGUAL_QA_INDEX_DIR"] == str(settings.index_dir)
    with pytest.raises(BenchmarkError, match=r"^bilingual_qa\.evaluation\.naive exited 2: "):
        processes.run([*processes.NAIVE, "--no-such-option"], env)
    if all(importlib.util.find_spec(m) for m in ("bilingual_qa.web", "gradio", "gradio_client")):
        assert processes.web_unavailable(env) is None
        # A CLI without a serve command exits 2 on `serve --help`, as argparse does.
        monkeypatch.setattr(processes, "CLI", (sys.executable, "-c", "raise SystemExit(2)"))
        assert processes.web_unavailable(env) == "the CLI has no serve command yet"


def test_a_timed_run_says_when_its_first_output_came_and_all_of_it(settings):
    import sys

    env = processes.child_env(settings)
    code = "import sys, time; print('answer', flush=True); time.sleep(0.5); print('saved')"
    ran = processes.run_timed([sys.executable, "-c", code], env)
    assert ran.out.split() == ["answer", "saved"]
    assert ran.first_output is not None and ran.first_output < ran.seconds - 0.3  # before the sleep
    assert processes.run_timed([sys.executable, "-c", "pass"], env).first_output is None


def test_a_timed_runs_peak_memory_is_its_own_not_the_bench_process_it_was_forked_from(settings):
    import sys

    import numpy as np

    ballast = np.ones(64 * 2**20)  # 512 MB in this process, which the child is forked from
    grows = "import numpy as np; a = np.ones(16 * 2**20); print(a.sum())"  # 128 MB of its own
    ran = processes.run_timed([sys.executable, "-c", grows], processes.child_env(settings))
    assert 128 < ran.rss_mb < 512, ran.rss_mb
    del ballast


def _report() -> BenchReport:
    return BenchReport(
        quick=True,
        started="2025-01-01T00:00:00+0000",
        seconds=1.0,
        machine={"cores": 2, "load_average_before": [1.0, 1.0, 1.0], "load_average_after": None},
        measurements=(Measurement("answer_en", "warm answer (en)", "ms", (30.0, 40.0, 50.0)),),
        targets=(
            Target("warm_p50_en", "warm answer p50 ÷ encoding p50 (en) ≤ 1.3", 1.1, 1.3, True),
            Target("web_ready", "web server ready ≤ 8 s", None, 8.0, None, "no web module"),
        ),
        scale=(
            ScalePoint(17, 53, 40.0, 60.0, 0.01, 8.0),
            ScalePoint(1700, 5300, 45.0, 70.0, 2.0, 800.0),
        ),
    )


@pytest.mark.parametrize("matplotlib", [True, False])
def test_report_files_with_png_or_svg_fallback(tmp_path, monkeypatch, matplotlib):
    if not matplotlib:
        monkeypatch.setattr(bench_report, "_plot_png", lambda report: None)
    paths = write_report(_report(), tmp_path / "bench")
    assert json.loads(paths["json"].read_text())["targets"][1]["met"] is None
    page = paths["html"].read_text()
    assert ("data:image/png;base64," in page) == (paths["plot"].suffix == ".png")
    assert "<svg" in page or paths["plot"].suffix == ".png"
    assert "skipped" in page and "no web module" in page


def test_table_shows_medians_ratios_and_skips():
    table = format_table(_report())
    assert "warm answer (en)" in table and "40" in table
    assert "met" in table and "skipped" in table and "no web module" in table


def test_cli_bench_prints_json_and_writes_the_report(tmp_path, monkeypatch, capsys):
    from bilingual_qa import cli

    seen = {}

    def fake_run(settings, quick=False, progress=None):
        seen["quick"] = quick
        return _report()

    monkeypatch.setattr(bench_cli, "run_benchmark", fake_run)
    assert cli.main(["bench", "--quick", "--json", "--report", str(tmp_path)]) == 0
    assert seen["quick"] is True
    assert json.loads(capsys.readouterr().out)["quick"] is True
    assert (tmp_path / "report.html").is_file()


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from bilingual_qa.config import Settings

    base = Settings.from_env()
    return run_benchmark(base.replace(threads=min(2, base.threads)), quick=True)


@pytest.mark.integration
def test_quick_benchmark_measures_every_stage(quick_report, tmp_path):
    names = {m.name for m in quick_report.measurements}
    for name in ("cold_cli_answer", "index_cold_cli", "warm_process_rss", "answer_en", "encode_zh",
                 "encode_rate", "build_rate", "search_latency", "search_recall", "fair_idle", "fair_history",
                 "fair_upload", "fair_llm", "llm_deadline", "upload_rss_one", "upload_rss_all",
                 "upload_rss_expired", "reindex_one_edit"):  # fmt: skip
        assert name in names
    for m in quick_report.measurements:
        assert m.samples and all(math.isfinite(s) and s >= 0 for s in m.samples), m.name
        if m.unit != "":  # recall is a fraction; every time, size and rate is positive
            assert m.median > 0, m.name
    assert len(quick_report.targets) >= 10
    for t in quick_report.targets:
        assert (t.value is None and t.met is None and t.note) or (math.isfinite(t.value) and t.value >= 0), t
    assert len(quick_report.scale) == 2
    for p in quick_report.scale:
        assert all(math.isfinite(x) and x > 0 for x in (p.answer_p50_ms, p.answer_p95_ms, p.encode_seconds))
    paths = write_report(quick_report, tmp_path)
    assert paths["plot"].stat().st_size > 0
    json.loads(quick_report.to_json())


def test_late_chunking_pools_each_sentence_over_its_own_tokens():
    from bilingual_qa.bench.engines import pool_spans, span_token_ranges, token_batches, window_ranges

    # "<s> ▁One ▁two . ▁Three . </s>": sentences "One two." (0-8) and "Three." (9-15)
    offsets = [(0, 0), (0, 3), (3, 7), (7, 8), (8, 14), (14, 15), (0, 0)]
    spans = [(0, 8), (9, 15), (20, 25)]
    assert span_token_ranges(offsets, spans) == [(1, 4), (4, 6), (0, 0)]
    states = np.arange(14, dtype=np.float32).reshape(7, 2)
    means, covered = pool_spans(states, offsets, spans)
    assert means.tolist() == [[4.0, 5.0], [9.0, 10.0], [0.0, 0.0]]
    assert covered.tolist() == [True, True, False]
    # Windows end at a sentence start when one fits; a sentence longer than a window is cut.
    assert window_ranges(10, 4, cuts=[0, 3, 5, 9]) == [(0, 3), (3, 5), (5, 9), (9, 10)]
    assert window_ranges(10, 4, cuts=[0]) == [(0, 4), (4, 8), (8, 10)]
    assert window_ranges(3, 512) == [(0, 3)]
    # Longest first, at most 8 padded tokens a batch; a text over the budget alone.
    assert token_batches([2, 9, 4, 3, 1, 1, 1], budget=8, most=3) == [[1], [2, 3], [0, 4, 5], [6]]
