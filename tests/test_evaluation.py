import json
import re
from pathlib import Path

import pytest

from bilingual_qa import Assistant, cli
from bilingual_qa.answering import Answer, Citation
from bilingual_qa.assistant import Retrieved
from bilingual_qa.document import DEFAULT_DOCUMENT, read_document
from bilingual_qa.errors import EvaluationError
from bilingual_qa.evaluation import (
    DEFAULT_BASELINE,
    DEFAULT_SET,
    METRICS,
    NaivePipeline,
    compare_to_baseline,
    evaluate_system,
    language_matches,
    load_baseline,
    load_reference_set,
    run_eval,
    score_case,
    write_baseline,
)

# A tiny bilingual document: P1/P3 and P2/P4 are translations; P5 exists only in English.
DOC = """The Riverside Library opens at 9 am on weekdays.

The library was founded in 1987 by Mayor Ellen Park.

河畔圖書館在平日上午9點開放。

圖書館由市長朴艾倫於1987年創立。

Translation/Ada Lin
"""
TWINS = {"P1": "P3", "P3": "P1", "P2": "P4", "P4": "P2"}


def _case(**overrides):
    case = {
        "id": "c1",
        "question": "When does the Riverside Library open?",
        "language": "en",
        "gold": ["P1", "P3"],
        "preferred": "P1",
        "facts": [["9 am", "9 a.m."]],
        "reference": "It opens at 9 am on weekdays.",
        "category": "fact",
        "answerable": True,
        "history": [],
    }
    return {**case, **overrides}


CASES = [
    _case(),
    _case(
        id="c2",
        question="圖書館是哪一年創立的?",
        language="zh-Hant",
        gold=["P4", "P2"],
        preferred="P4",
        facts=[["1987"]],
        reference="圖書館於1987年創立。",
    ),
    _case(
        id="c3",
        question="图书馆是谁创立的?",
        language="zh-Hans",
        gold=["P4", "P2"],
        preferred="P4",
        facts=[["朴艾伦"]],
        reference="由市长朴艾伦创立。",
    ),
    _case(
        id="c4",
        question="英文版的譯者是誰?",
        language="zh-Hant",
        gold=["P5"],
        preferred="P5",
        facts=[["Ada Lin"]],
        reference="只有英文版有譯者:Ada Lin。",
        category="cross-lingual",
    ),
    _case(
        id="c5",
        question="And who founded it?",
        gold=["P2", "P4"],
        preferred="P2",
        facts=[["Ellen Park"]],
        reference="Mayor Ellen Park founded it.",
        category="follow-up",
        history=[{"question": "When was the library founded?", "answer": "In 1987."}],
    ),
    _case(
        id="c6",
        question="How many books does the library hold?",
        gold=[],
        preferred=None,
        facts=[],
        reference="The document does not say.",
        category="unanswerable",
        answerable=False,
    ),
]


def _write_set(folder: Path, cases, document=None, name="qa.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    if document is not None:
        meta = {"document": document.name, "sha256": document.sha256}
        (folder / name.replace(".jsonl", ".meta.json")).write_text(json.dumps(meta), encoding="utf-8")
    return path


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "library.txt"
    path.write_text(DOC, encoding="utf-8")
    return read_document(path).with_twins(TWINS)


@pytest.fixture
def reference(tmp_path, document):
    return load_reference_set(_write_set(tmp_path, CASES, document), document)


class Oracle:
    """Answers every case perfectly: the reference text citing the preferred paragraph."""

    backend = "oracle"

    def __init__(self, reference, document):
        self.cases = {c.question: c for c in reference.cases}
        self.document = document

    def ask(self, question, history=None):
        case = self.cases[question]
        if not case.answerable:
            return Answer(question, case.reference, case.language, False, (), backend=self.backend)
        p = self.document.paragraph(case.preferred)
        citation = Citation(p.id, p.language, p.text, p.twin_id, 1.0, ((0, len(p.text)),))
        text = f"{case.reference} [{p.id}]"
        return Answer(question, text, case.language, True, (citation,), backend=self.backend)

    def retrieve(self, question, history=None, k=10):
        case = self.cases[question]
        return [Retrieved((g,), 1.0) for g in case.gold][:k]


class Refuser(Oracle):
    """Refuses everything, in the question's language."""

    def ask(self, question, history=None):
        case = self.cases[question]
        return Answer(
            question, "文件中沒有提到。" if case.language != "en" else "No.", case.language, False, ()
        )

    def retrieve(self, question, history=None, k=10):
        return []


# --- reference set schema ----------------------------------------------------------------------


def test_committed_reference_set_matches_the_default_document():
    reference = load_reference_set(DEFAULT_SET, read_document(DEFAULT_DOCUMENT))
    assert len(reference.cases) == 104
    assert {c.language for c in reference.cases} == {"en", "zh-Hant", "zh-Hans"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({k: v for k, v in _case().items() if k != "facts"}), "missing facts"),
        (json.dumps(_case(extra=1)), "unknown extra"),
        (json.dumps(_case(gold="P1")), "gold has the wrong type"),
        (json.dumps(_case(answerable="yes")), "answerable has the wrong type"),
        (json.dumps(_case(language="fr")), "unknown language 'fr'"),
        (json.dumps(_case(preferred="P2")), "preferred 'P2' is not in gold"),
        (json.dumps(_case(gold=[], preferred=None)), "needs gold paragraphs"),
        (json.dumps(_case(gold=["para1"])), "paragraph ids"),
        (json.dumps(_case(facts=[[]])), "facts must be"),
        (json.dumps(_case(history=[{"question": "q"}])), "history items"),
        (json.dumps(_case(answerable=False)), "unanswerable case"),
        (json.dumps(_case(id="c2")), "duplicate id 'c2' (first on line 2)"),
    ],
    ids=lambda v: v if len(v) < 40 else None,
)
def test_schema_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(_case()) + "\n" + json.dumps(_case(id="c2")) + "\n\n" + line + "\n")
    with pytest.raises(EvaluationError, match=f"qa.jsonl:4: .*{re.escape(message)}") as info:
        load_reference_set(path)
    assert "\n" not in str(info.value)


def test_empty_set_is_an_error(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(EvaluationError, match="empty"):
        load_reference_set(path)


def test_unknown_paragraph_ids_are_rejected(tmp_path, document):
    path = _write_set(tmp_path, [*CASES, _case(id="c9", gold=["P1", "P42"])], document)
    with pytest.raises(EvaluationError, match=r"qa.jsonl:7: case c9: paragraph P42 is not in library.txt"):
        load_reference_set(path, document)


def test_a_set_for_another_document_is_detected(tmp_path, document):
    path = _write_set(tmp_path, CASES)
    (tmp_path / "qa.meta.json").write_text(json.dumps({"document": "other.txt", "sha256": "ab" * 32}))
    with pytest.raises(EvaluationError, match="written for another document"):
        load_reference_set(path, document)
    (tmp_path / "qa.meta.json").unlink()
    with pytest.raises(EvaluationError, match=f"qa.meta.json is missing: .*{document.sha256}"):
        load_reference_set(path, document)


# --- metrics -----------------------------------------------------------------------------------


def test_a_perfect_answerer_scores_one(reference, document):
    report = evaluate_system(Oracle(reference, document), reference, document)
    overall = report.cells["all"]
    for key in ("hit@1", "hit@3", "mrr", "cite_hit@1", "cite_mrr", "fact_recall", "cite_precision"):
        assert overall[key] == 1.0, key
    assert overall["cite_validity"] == overall["lang_match"] == overall["script_match"] == 1.0
    assert overall["refusal_acc"] == 1.0 and overall["false_refusal"] == 0.0
    assert overall["chrf"] == pytest.approx(100.0)
    assert not report.failures
    assert list(report.cells) == ["en→en", "zh-Hant→zh", "zh-Hant→en", "zh-Hans→zh", "en→none", "all"]
    assert report.counts["all"] == len(CASES)


def test_a_refusing_answerer_refuses_well_and_answers_nothing(reference, document):
    report = evaluate_system(Refuser(reference, document), reference, document)
    overall = report.cells["all"]
    assert overall["refusal_acc"] == 1.0
    assert overall["fact_recall"] == 0.0
    assert overall["false_refusal"] == 1.0
    assert overall["hit@1"] == overall["cite_hit@1"] == 0.0
    assert overall["cite_precision"] is None and overall["cite_validity"] is None
    assert all("refused an answerable question" in c.problems for c in report.cases if c.answerable)


def test_citing_the_twin_is_a_pair_level_hit(reference, document):
    class TwinCiter(Oracle):
        def ask(self, question, history=None):
            answer = super().ask(question, history)
            if (
                not answer.citations
                or self.document.paragraph(answer.citations[0].paragraph_id).twin_id is None
            ):
                return answer
            twin = self.document.paragraph(answer.citations[0].paragraph_id).twin_id
            p = self.document.paragraph(twin)
            text = answer.text.replace(f"[{answer.citations[0].paragraph_id}]", f"[{twin}]")
            citation = Citation(p.id, p.language, p.text, p.twin_id, 1.0)
            return Answer(question, text, answer.language, True, (citation,))

    overall = evaluate_system(TwinCiter(reference, document), reference, document).cells["all"]
    assert overall["cite_hit@1"] == overall["cite_precision"] == overall["cite_validity"] == 1.0


def test_facts_match_across_scripts_and_case(reference, document):
    class Shouter(Oracle):
        def ask(self, question, history=None):
            answer = super().ask(question, history)
            return Answer(question, answer.text.upper(), answer.language, answer.answered, answer.citations)

    case = next(c for c in reference.cases if c.id == "c3")  # facts in Simplified
    citations = Oracle(reference, document).ask(case.question).citations
    traditional = Answer(case.question, "由市長朴艾倫創立。 [P4]", "zh-Hans", True, citations)
    assert score_case(case, traditional, document).metrics["fact_recall"] == 1.0
    overall = evaluate_system(Shouter(reference, document), reference, document).cells["all"]
    assert overall["fact_recall"] == 1.0


def test_language_and_script_matching():
    p4 = Citation("P4", "zh-Hant", "圖書館由市長朴艾倫於1987年創立。", "P2", 1.0, ((0, 17),))
    p1 = Citation("P1", "en", "The Riverside Library opens at 9 am on weekdays.", "P3", 1.0, ((0, 49),))

    def answer(text, citations=()):
        return Answer("q", text, "en", True, tuple(citations))

    quote = f"{p4.text} [P4]"
    # An English frame around a Chinese quote is an English answer; a bare Chinese quote is not.
    assert language_matches(answer(f"Only in the Chinese version: {quote}", [p4]), "en") == (True, True)
    assert language_matches(answer(quote, [p4]), "en") == (False, False)
    # Verbatim Traditional text suits a zh-Hant asker, not a zh-Hans one.
    assert language_matches(answer(quote, [p4]), "zh-Hant") == (True, True)
    assert language_matches(answer(quote, [p4]), "zh-Hans") == (True, False)
    assert language_matches(answer("图书馆由市长朴艾伦于1987年创立。 [P4]", [p4]), "zh-Hans") == (True, True)
    # Clipped clauses (…) of several sentences are quotes too, in either script.
    clipped = "Only in the Chinese version: 圖書館由市長朴艾倫…於1987年創立。 [P4]"
    assert language_matches(answer(clipped, [p4]), "en") == (True, True)
    assert language_matches(answer("图书馆由市长朴艾伦… [P4]", [p4]), "zh-Hans") == (True, True)
    # A Chinese frame around an English quote is a Chinese answer.
    assert language_matches(answer(f"此内容仅见于英文版本：{p1.text} [P1]", [p1]), "zh-Hans") == (True, True)


# --- baseline gate -----------------------------------------------------------------------------


@pytest.fixture
def report(reference, document, fake_embedder):
    class Bot(Oracle):
        settings = None

    from bilingual_qa.config import Settings

    bot = Bot(reference, document)
    bot.settings = Settings()
    bot.embedder = fake_embedder
    return run_eval(bot, reference, naive=False)


def test_baseline_trips_beyond_tolerance_only(tmp_path, report):
    path = write_baseline(report, tmp_path / "baseline.json")
    data = load_baseline(path)
    assert compare_to_baseline(report, data) == ()
    tolerance = data["tolerances"]["hit@1"]
    data["cells"]["en→en"]["hit@1"] = 1.0 + tolerance * 0.9  # within tolerance
    assert compare_to_baseline(report, data) == ()
    data["cells"]["en→en"]["hit@1"] = 1.0 + tolerance * 1.5
    (regression,) = compare_to_baseline(report, data)
    assert (regression.metric, regression.cell) == ("hit@1", "en→en")
    assert "hit@1 in en→en fell" in str(regression)
    data["cells"]["all"]["false_refusal"] = -0.5  # lower is better: a rise trips
    assert {r.metric for r in compare_to_baseline(report, data)} == {"hit@1", "false_refusal"}
    data["cells"]["all"]["latency_p95"] = 0.0  # not gated by default
    assert len(compare_to_baseline(report, data)) == 2


def test_a_baseline_for_another_set_is_an_error(tmp_path, report):
    data = load_baseline(write_baseline(report, tmp_path / "baseline.json"))
    data["reference_sha256"] = "0" * 64
    with pytest.raises(EvaluationError, match="another reference set"):
        compare_to_baseline(report, data)


def test_write_baseline_keeps_tolerances_and_leaves_no_temp_files(tmp_path, report):
    path = tmp_path / "baseline.json"
    write_baseline(report, path, tolerances={"hit@1": 0.5})
    write_baseline(report, path)
    assert load_baseline(path)["tolerances"]["hit@1"] == 0.5
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- naive pipeline and CLI --------------------------------------------------------------------


def test_naive_pipeline_quotes_the_top_paragraph_and_leaves_llama_settings_alone(document, fake_embedder):
    from llama_index.core import Settings as LlamaSettings

    before = LlamaSettings._embed_model
    naive = NaivePipeline(document, fake_embedder)
    answer = naive.ask("When does the Riverside Library open on weekdays?")
    assert answer.citations[0].paragraph_id == "P1"
    assert answer.text.endswith("[P1]") and answer.answered
    assert naive.retrieve("library founded 1987 Ellen Park", k=2)[0].paragraph_ids == ("P2",)
    assert LlamaSettings._embed_model is before


@pytest.fixture
def cli_env(tmp_path, settings, fake_embedder, monkeypatch):
    """`bilingual-qa eval` over the tiny document with the fake embedder."""
    doc = tmp_path / "library.txt"
    doc.write_text(DOC, encoding="utf-8")
    bot = Assistant(document=doc, settings=settings, embedder=fake_embedder)
    monkeypatch.setattr(cli, "_assistant", lambda args, document=None: bot)
    set_path = _write_set(tmp_path, CASES, bot.document)
    return tmp_path, set_path, bot


def _eval(tmp_path, set_path, *extra):
    args = ["eval", "--set", str(set_path), "--report", str(tmp_path / "reports")]
    return cli.main([*args, "--baseline", str(tmp_path / "baseline.json"), *extra])


def test_cli_records_a_baseline_then_gates_on_it(cli_env, capsys):
    tmp_path, set_path, _ = cli_env
    assert _eval(tmp_path, set_path, "--update-baseline") == 0
    out = capsys.readouterr().out
    assert "all" in out and "naive" in out and "hit@1" in out
    html = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "Failing cases" in html
    report = json.loads((tmp_path / "reports" / "report.json").read_text(encoding="utf-8"))
    assert set(report["engine"]["cells"]["all"]) == {m.key for m in METRICS}
    assert _eval(tmp_path, set_path) == 0

    baseline = json.loads((tmp_path / "baseline.json").read_text(encoding="utf-8"))
    baseline["cells"]["zh-Hant→zh"]["lang_match"] = 2.0
    (tmp_path / "baseline.json").write_text(json.dumps(baseline), encoding="utf-8")
    capsys.readouterr()
    assert _eval(tmp_path, set_path, "--json") == 1
    assert "lang_match in zh-Hant→zh fell from 2" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["malformed", "other-document", "unknown-id"])
def test_cli_writes_no_baseline_when_the_run_fails(cli_env, capsys, problem):
    tmp_path, set_path, bot = cli_env
    if problem == "malformed":
        set_path.write_text(set_path.read_text(encoding="utf-8") + "{oops\n", encoding="utf-8")
    elif problem == "other-document":
        (tmp_path / "qa.meta.json").write_text(json.dumps({"document": "x.txt", "sha256": "f" * 64}))
    else:
        _write_set(tmp_path, [*CASES, _case(id="c9", gold=["P99"], preferred="P99")], bot.document)
    assert _eval(tmp_path, set_path, "--update-baseline") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bilingual-qa: error:")
    assert not (tmp_path / "baseline.json").exists()


def test_a_missing_explicit_baseline_is_an_error(cli_env, capsys):
    tmp_path, set_path, _ = cli_env
    assert _eval(tmp_path, set_path) != 0
    assert "no baseline at" in capsys.readouterr().err


# --- integration: the default set, the real model, the committed baseline ----------------------


@pytest.mark.integration
def test_default_set_meets_the_committed_baseline(real_assistant):
    report = run_eval(real_assistant)
    regressions = compare_to_baseline(report, DEFAULT_BASELINE)
    assert not regressions, "\n".join(map(str, regressions))
    engine, naive = report.engine.cells["all"], report.naive.cells["all"]
    assert engine["cite_validity"] == 1.0 and engine["lang_match"] == 1.0
    # The engine must stay ahead of the plain llama-index pipeline where it is designed to be.
    for key in ("hit@1", "mrr", "cite_precision", "script_match", "refusal_acc"):
        assert engine[key] > naive[key], key
