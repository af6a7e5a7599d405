import json
import re
import types
from pathlib import Path

import pytest

from bilingual_qa import Assistant, cli
from bilingual_qa import language as lang
from bilingual_qa.answering import Answer, Citation
from bilingual_qa.assistant import Retrieved
from bilingual_qa.document import DEFAULT_DOCUMENT, read_document
from bilingual_qa.errors import EvaluationError
from bilingual_qa.evaluation import (
    DEFAULT_BASELINE,
    DEFAULT_SET,
    METRICS,
    EvalReport,
    NaivePipeline,
    TopUnitQuote,
    baseline_path,
    compare_to_baseline,
    discover_sets,
    evaluate_system,
    language_matches,
    load_baseline,
    load_reference_set,
    normalize_for_facts,
    pool_reports,
    run_eval,
    score_case,
    write_baseline,
)
from bilingual_qa.evaluation.baseline import one_case
from bilingual_qa.evaluation.metrics import METRIC_BY_KEY

ROOT = Path(__file__).resolve().parent.parent

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
        # Keyed in one script: the mirror asks the same questions in the other one.
        self.cases = {lang.to_simplified(c.question): c for c in reference.cases}
        self.document = document

    def ask(self, question, history=None):
        case = self.cases[lang.to_simplified(question)]
        language = case.language
        if question != case.question:
            language = lang.question_language(question)
        reference = lang.to_script(case.reference, language)
        if not case.answerable:
            return Answer(question, reference, language, False, (), backend=self.backend)
        p = self.document.paragraph(case.preferred)
        citation = Citation(p.id, p.language, p.text, p.twin_id, 1.0, ((0, len(p.text)),))
        text = f"{reference} [{p.id}]"
        return Answer(question, text, language, True, (citation,), backend=self.backend)

    def retrieve(self, question, history=None, k=10):
        case = self.cases[lang.to_simplified(question)]
        return [Retrieved((g,), 1.0) for g in case.gold][:k]


class Refuser(Oracle):
    """Refuses everything, in the question's language."""

    def ask(self, question, history=None):
        language = lang.question_language(question)
        return Answer(question, "文件中沒有提到。" if language != "en" else "No.", language, False, ())

    def retrieve(self, question, history=None, k=10):
        return []


# --- reference set schema ----------------------------------------------------------------------


def test_committed_reference_set_matches_the_default_document():
    reference = load_reference_set(DEFAULT_SET, read_document(DEFAULT_DOCUMENT))
    assert len(reference.cases) >= 104
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
    # A Simplified paragraph converted for a Traditional asker: 亞里士多德 keeps 里 (its phrase), which
    # s2t alone would turn into 裏 outside the phrase; a Simplified character left is still caught.
    aristotle = Citation("P9", "zh-Hans", "亚里士多德对力的概念进行了哲学上的讨论。", None, 1.0, ((0, 20),))
    converted = "亞里士多德對力的概念進行了哲學上的討論。 [P9]"
    assert language_matches(answer(converted, [aristotle]), "zh-Hant") == (True, True)
    assert language_matches(
        answer("亞里士多德对力的概念進行了哲學上的討論。 [P9]", [aristotle]), "zh-Hant"
    ) == (True, False)
    # A Chinese sentence of Latin names is Chinese: quoted whole, or converted (支援 kept, not
    # read as the mainland's 支持), its language is its paragraph's.
    latin = Citation(
        "P21", "zh-Hant", "mlterm 支援 ISO-8859-1、KOI8-R、Shift_JIS、Big5、UTF-8 及 GB18030。", None, 1.0, ()
    )
    for text, expected in ((latin.text, "zh-Hant"), (lang.to_script(latin.text, "zh-Hans"), "zh-Hans")):
        assert language_matches(answer(f"{text} [P21]", [latin]), expected) == (True, True)
        assert language_matches(answer(f"{text} [P21]", [latin]), "en") == (False, False)
    english = Citation("P1", "en", "mlterm supports ISO-8859-1, KOI8-R and Big5.", None, 1.0, ())
    assert language_matches(answer(f"{english.text} [P1]", [english]), "zh-Hant")[0] is False


# --- baseline gate -----------------------------------------------------------------------------


@pytest.fixture
def report(reference, document, fake_embedder):
    class Bot(Oracle):
        settings = None

    from bilingual_qa.config import Settings

    bot = Bot(reference, document)
    bot.settings = Settings()
    bot.embedder = fake_embedder
    return run_eval(bot, reference, naive=False, rules=False)


def test_baseline_trips_beyond_tolerance_only(tmp_path, report):
    path = write_baseline(report, tmp_path / "baseline.json")
    data = load_baseline(path)
    assert compare_to_baseline(report, data) == ()
    tolerance = data["tolerances"]["hit@1"]
    value = report.engine.cells["en→en"]["hit@1"]
    allowed = max(tolerance, 1 / report.engine.counts["en→en"])  # the tolerance, or one case
    data["cells"]["en→en"]["hit@1"] = value + allowed * 0.9
    assert compare_to_baseline(report, data) == ()
    data["cells"]["en→en"]["hit@1"] = value + allowed * 1.5
    (regression,) = compare_to_baseline(report, data)
    assert (regression.metric, regression.cell) == ("hit@1", "en→en")
    assert "hit@1 in en→en fell" in str(regression)
    data["cells"]["all"]["false_refusal"] = -1.5  # lower is better: a rise trips
    assert {r.metric for r in compare_to_baseline(report, data)} == {"hit@1", "false_refusal"}
    data["cells"]["all"]["latency_p95"] = 0.0  # not gated by default
    assert len(compare_to_baseline(report, data)) == 2


def test_a_cell_may_move_by_one_case_but_not_by_two(tmp_path, report):
    # Another CPU's kernels flip a case on a boundary: one case is noise, two are a change.
    data = load_baseline(write_baseline(report, tmp_path / "baseline.json"))
    counts = report.engine.counts
    cell = min((c for c in counts if c != "all" and counts[c] > 0), key=counts.get)
    n = counts[cell]
    assert 1 / n > data["tolerances"]["fact_recall"]  # a small cell: one case exceeds the tolerance
    value = report.engine.cells[cell]["fact_recall"]
    data["cells"][cell]["fact_recall"] = round(value + 1 / n, 4) + 0.00005  # as rounded cells can be
    assert compare_to_baseline(report, data) == ()
    data["cells"][cell]["fact_recall"] = value + 2 / n
    (regression,) = compare_to_baseline(report, data)
    assert (regression.metric, regression.cell) == ("fact_recall", cell)
    # chrF runs 0-100, so one case is worth 100 / n there; a median has no such slack.
    chrf = report.engine.cells[cell]["chrf"]
    data["cells"][cell]["fact_recall"] = value
    data["cells"][cell]["chrf"] = chrf + 100 / n
    assert compare_to_baseline(report, data) == ()
    assert one_case(METRIC_BY_KEY["answer_length"], n) == 0.0


def test_a_conditional_metric_missing_from_a_run_is_not_a_regression(tmp_path, report):
    data = load_baseline(write_baseline(report, tmp_path / "baseline.json"))
    cell = report.engine.cells["all"]
    data["cells"]["all"]["other_right"] = 0.9  # a case type this run happens not to have
    data["cells"]["all"]["hit@1"] = cell["hit@1"]
    cell_without = {k: v for k, v in cell.items() if k != "other_right"}
    report.engine.cells["all"] = cell_without
    try:
        assert compare_to_baseline(report, data) == ()
        del cell_without["hit@1"]  # an unconditional metric gone missing is one
        (regression,) = compare_to_baseline(report, data)
        assert (regression.metric, regression.current) == ("hit@1", None)
    finally:
        report.engine.cells["all"] = cell


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
    baseline["cells"]["zh-Hant→zh"]["lang_match"] = 3.0  # two cases' worth, whatever the cell's size
    (tmp_path / "baseline.json").write_text(json.dumps(baseline), encoding="utf-8")
    capsys.readouterr()
    assert _eval(tmp_path, set_path, "--json") == 1
    assert "lang_match in zh-Hant→zh fell from 3" in capsys.readouterr().err


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


# --- several sets: discovery, sidecars, new columns, rule baselines, pooled report -------------


def test_a_follow_up_names_its_full_question_in_the_same_set(tmp_path, document):
    full = _case(id="c9", question="Who founded the library?", gold=["P2", "P4"], preferred="P2",
                 facts=[["Ellen Park"]])  # fmt: skip
    follow = {**CASES[4], "full": "c9"}
    reference = load_reference_set(_write_set(tmp_path, [full, follow], document), document)
    assert reference.cases[1].full == "c9"
    for bad, message in (
        ({**CASES[4], "full": "nope"}, "is not a case without history"),
        ({**CASES[0], "full": "c9"}, "only a case with history"),
        ({**CASES[4], "full": 3}, "full has the wrong type"),
    ):
        path = _write_set(tmp_path, [full, bad], document, name="bad.jsonl")
        with pytest.raises(EvaluationError, match=message):
            load_reference_set(path)


def test_a_sidecar_names_the_document_file_and_marks_development_data(tmp_path, document):
    path = _write_set(tmp_path, CASES, document)
    meta = {"document": document.name, "sha256": document.sha256, "path": "library.txt", "development": True}
    (tmp_path / "qa.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    reference = load_reference_set(path, document)
    assert reference.document_path == tmp_path / "library.txt" and reference.development
    assert reference.name == "qa"
    (tmp_path / "qa.meta.json").write_text(json.dumps({**meta, "development": "yes"}), encoding="utf-8")
    with pytest.raises(EvaluationError, match="development"):
        load_reference_set(path)


def test_discovery_finds_sets_with_sidecars_and_puts_the_default_first(tmp_path, document):
    (tmp_path / "a").mkdir()
    _write_set(tmp_path / "a", CASES, document, name="x.jsonl")
    _write_set(tmp_path, CASES, document, name="b.jsonl")
    _write_set(tmp_path, CASES, None, name="b.hand.jsonl")  # no sidecar: merged by a build script
    (tmp_path / "reports" / "x").mkdir(parents=True)
    _write_set(tmp_path / "reports" / "x", CASES, document, name="r.jsonl")
    assert discover_sets(tmp_path) == [tmp_path / "a" / "x.jsonl", tmp_path / "b.jsonl"]
    committed = discover_sets()
    assert committed[0] == DEFAULT_SET and len(committed) >= 6
    assert baseline_path(DEFAULT_SET) == DEFAULT_BASELINE
    assert baseline_path(tmp_path / "b.jsonl") == tmp_path / "b.baseline.json"


def _answer(text, cited, language="en", answered=True):
    citations = tuple(Citation(p.id, p.language, p.text, p.twin_id, 1.0, ()) for p in cited)
    return Answer("q", text, language, answered, citations)


def test_only_in_the_other_version_is_counted_and_judged(reference, document):
    cases = {c.id: c for c in reference.cases}
    p1, p5 = document.paragraph("P1"), document.paragraph("P5")
    # c4 asks in Chinese about the English-only translator credit: the message is right.
    right = _answer("此內容僅見於文件的英文版本：Translation/Ada Lin [P5]", [p5], "zh-Hant")
    scored = score_case(cases["c4"], right, document)
    assert scored.metrics["other_said"] == 1.0 and scored.metrics["other_right"] == 1.0
    # c1's fact is in both versions: saying "only in the Chinese version" is wrong.
    wrong = _answer("This is stated only in the Chinese version of the document: 河畔 [P3]", [p1])
    scored = score_case(cases["c1"], wrong, document)
    assert scored.metrics["other_said"] == 1.0 and scored.metrics["other_right"] == 0.0
    assert any("only in the other version" in p for p in scored.problems)
    plain = score_case(cases["c1"], _answer("It opens at 9 am. [P1]", [p1]), document)
    assert plain.metrics["other_said"] == 0.0 and plain.metrics["other_right"] is None


def test_answer_length_is_measured_on_paragraphs_of_three_or_more_sentences(tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text("One fact here. Another fact there. A third fact too.\n\nShort line.\n", encoding="utf-8")
    document = read_document(doc)
    long, short = document.paragraph("P1"), document.paragraph("P2")
    case = load_reference_set(
        _write_set(tmp_path, [_case(gold=["P1", "P2"], facts=[["fact"]])], document), document
    ).cases[0]
    scored = score_case(case, _answer("Another fact there. [P1]", [long]), document)
    assert scored.metrics["answer_length"] == round(len("Another fact there.") / len(long.text), 4)
    assert score_case(case, _answer("Short line. [P2]", [short]), document).metrics["answer_length"] is None


def test_top_unit_rule_quotes_the_best_sentences_of_the_question_language_side(fake_assistant):
    bot = fake_assistant
    for n in (1, 2):
        rule = TopUnitQuote(bot, n)
        answer = rule.ask("重慶將與哪些國家的駐華使領館搭建溝通協調機制？")
        top = bot.retrieve("重慶將與哪些國家的駐華使領館搭建溝通協調機制？", k=1)[0]
        (citation,) = answer.citations
        assert citation.paragraph_id in top.paragraph_ids and citation.language == "zh-Hant"
        assert len(citation.spans) == min(n, len(bot.document.paragraph(citation.paragraph_id).sentences))
        assert answer.answered and answer.text.endswith(f"[{citation.paragraph_id}]")
    simplified = TopUnitQuote(bot, 1).ask("重庆将与哪些国家的驻华使领馆搭建沟通协调机制？")
    assert simplified.language == "zh-Hans" and language_matches(simplified, "zh-Hans") == (True, True)


def test_the_cli_runs_every_set_then_gates_each_on_its_own_baseline(cli_env, capsys):
    tmp_path, _, bot = cli_env
    meta = {"document": bot.document.name, "sha256": bot.document.sha256, "path": "library.txt"}
    paths = []
    for name, cases in (("one", CASES[:3]), ("two", CASES[3:])):
        paths.append(_write_set(tmp_path, cases, None, name=f"{name}.jsonl"))
        (tmp_path / f"{name}.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    args = ["eval", "--set", str(paths[0]), "--set", str(paths[1]), "--report", str(tmp_path / "r")]
    assert cli.main([*args, "--update-baseline"]) == 0
    out = capsys.readouterr().out
    assert "one.jsonl" in out and "two.jsonl" in out and "2 sets pooled: 6 cases" in out
    assert "top1" in out and "top2" in out and "naive" in out
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "All sets pooled (6 cases)" in page and "id='one'" in page and "id='two'" in page
    assert (tmp_path / "r" / "two" / "report.html").exists()
    summary = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert [s["cases"] for s in summary["sets"]] == [3, 3] and summary["pooled"]["cases"] == 6
    assert cli.main(args) == 0
    baseline = json.loads((tmp_path / "two.baseline.json").read_text(encoding="utf-8"))
    baseline["cells"]["all"]["lang_match"] = 2.0
    (tmp_path / "two.baseline.json").write_text(json.dumps(baseline), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "regression: two.jsonl: lang_match in all" in err and "one.jsonl" not in err
    assert cli.main([*args, "--baseline", str(tmp_path / "two.baseline.json")]) != 0


def test_pooling_keeps_every_case_of_every_system(reference, document):
    a = evaluate_system(Oracle(reference, document), reference, document)
    b = evaluate_system(Refuser(reference, document), reference, document)
    make = lambda engine: EvalReport("s", "0" * 64, 6, "d", "1" * 64, "m", {}, "now", 1.0, engine)  # noqa: E731
    pooled = pool_reports([make(a), make(b)])
    assert pooled.engine.counts["all"] == 12 and pooled.cases == 12
    assert pooled.engine.cells["all"]["false_refusal"] == pytest.approx(0.5)
    assert pooled.engine.backend == "oracle+unknown" or "oracle" in pooled.engine.backend


# --- the committed development data ------------------------------------------------------------


def _committed_sets():
    out = []
    for path in discover_sets():
        reference = load_reference_set(path)
        document = read_document(reference.document_path) if reference.document_path else read_document()
        out.append((load_reference_set(path, document), document))
    return out


def test_every_committed_set_fits_its_document_and_the_development_targets():
    sets = _committed_sets()
    development = [c for r, _ in sets if r.development for c in r.cases]
    answerable = [c for c in development if c.answerable]
    assert len(answerable) >= 600
    for script in ("en", "zh-Hant", "zh-Hans"):
        assert sum(c.language == script for c in answerable) >= 150, script
    assert sum(c.category == "unanswerable" for c in development) >= 100
    assert sum(c.category == "near-miss" for c in development) >= 100
    every = [c for r, _ in sets for c in r.cases]
    assert sum(bool(c.history) for c in every) >= 30
    paragraph_level = [r for r, _ in sets if r.name == "packages"]
    assert paragraph_level and sum(c.answerable for c in paragraph_level[0].cases) >= 40
    for reference, document in sets:
        by_id = {c.id: c for c in reference.cases}
        for case in reference.cases:
            # Every fact is found in the case's preferred paragraph, in the form facts are matched.
            if case.answerable:
                text = normalize_for_facts(document.paragraph(case.preferred).text)
                for fact in case.facts:
                    assert any(normalize_for_facts(a) in text for a in fact), (reference.name, case.id, fact)
            if case.full is not None:
                assert by_id[case.full].answerable == case.answerable


def test_the_xquad_build_is_deterministic(tmp_path):
    source = ROOT.parent / "shared" / "datasets" / "xquad-dev"
    if not source.exists():
        pytest.skip("xquad-dev is not beside the checkout")
    import subprocess
    import sys

    subprocess.run([sys.executable, str(ROOT / "eval" / "xquad" / "build.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    for built in sorted(tmp_path.iterdir()):
        assert built.read_bytes() == (ROOT / "eval" / "xquad" / built.name).read_bytes(), built.name


@pytest.mark.integration
def test_every_committed_set_meets_its_baseline(tmp_path, capsys):
    # The whole `bilingual-qa eval`, as a maintainer runs it: every set, indexes cached in index/.
    code = cli.main(["eval", "--report", str(tmp_path / "reports")])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "sets pooled" in out


# --- the naive pipeline as the benchmark runs it: a module entry point ----------------------


def test_the_naive_entry_point_builds_the_same_pipeline_over_sentence_transformers(
    tmp_path, fake_embedder, monkeypatch, capsys
):
    from bilingual_qa import embedding
    from bilingual_qa.evaluation import naive

    doc = tmp_path / "library.txt"
    doc.write_text(DOC, encoding="utf-8")
    engines = []

    def load(settings):
        engines.append((settings.engine, settings.model))
        return fake_embedder

    monkeypatch.setattr(embedding, "load_embedder", load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    question = "When does the Riverside Library open on weekdays?"
    assert naive.main(["/models/e5", str(doc), question, "--top-k", "2"]) == 0
    assert engines == [("sentence-transformers", "/models/e5")]
    expected = NaivePipeline(read_document(doc), fake_embedder).retrieve(question, k=2)
    assert capsys.readouterr().out.split() == [r.paragraph_ids[0] for r in expected]


def test_the_naive_module_runs_once_as_a_script():
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "bilingual_qa.evaluation.naive", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "app")},
    )
    assert done.returncode == 0, done.stderr
    assert "MODEL" in done.stdout.upper() and not done.stderr


def test_conversation_summary_counts_condensing_and_pairs_follow_ups_with_their_full_question():
    from bilingual_qa.evaluation import CaseResult, conversation_summary

    def case(id_, category, history, condensed, facts, full=None):
        return CaseResult(
            id=id_, line=1, cell="en→en", category=category, question="q", language="en", answerable=True,
            gold=("P1",), reference="r", answer="a", answered=True, answer_language="en", citations=(),
            ranking=(), metrics={"fact_recall": facts}, problems=(), seconds=0.0, has_history=history,
            full=full, condensed=condensed if history else None,
        )  # fmt: skip

    cases = [
        case("f1", "follow-up", True, True, 0.5, full="q1"),
        case("f2", "follow-up", True, False, 0.0, full="q2"),
        case("t1", "topic-switch", True, False, 1.0),
        case("q1", "fact", False, None, 1.0),
        case("q2", "fact", False, None, 0.5),
    ]
    s = conversation_summary(cases)
    assert (s["follow_ups"], s["follow_ups_condensed"]) == (2, 0.5)
    assert (s["topic_switches"], s["topic_switches_merged"]) == (1, 0.0)
    assert (s["paired"], s["follow_up_facts"], s["full_question_facts"]) == (2, 0.25, 0.75)
    assert conversation_summary(cases[3:])["follow_ups_condensed"] is None


def test_the_mirror_asks_the_same_chinese_questions_in_the_other_script():
    from bilingual_qa.evaluation import load_reference_set, mirrored, script_summary

    reference = load_reference_set()
    mirror = mirrored(reference)
    originals = {c.id: c for c in reference.cases}
    chinese = [c for c in reference.cases if lang.is_chinese(c.language) and not c.history]
    assert len(mirror.cases) == len(chinese) > 0
    for case in mirror.cases:
        first = originals[case.id.rsplit("~", 1)[0]]
        assert {case.language, first.language} == {lang.HANT, lang.HANS}
        assert lang.to_script(first.question, case.language) == case.question
        assert (case.facts, case.gold, case.answerable) == (first.facts, first.gold, first.answerable)

    def result(case, answered, recall):
        return types.SimpleNamespace(
            id=case.id, language=case.language, answerable=case.answerable, answered=answered,
            metrics={"fact_recall": recall if case.answerable else None},
        )  # fmt: skip

    answerable = [c for c in chinese if c.answerable]
    # Every question answered as written, every converted one refused: the gap is all the script's.
    summary = script_summary(
        [result(c, True, 1.0) for c in chinese], [result(c, False, 0.0) for c in mirror.cases]
    )
    assert sum(s["n"] for s in summary.values()) == 2 * len(answerable)
    as_written = {c.language for c in answerable}
    for script, s in summary.items():
        share = sum(c.language == script for c in answerable) / s["n"]
        assert s["facts"] == pytest.approx(share, abs=1e-4)
        assert s["false_refusal"] == pytest.approx(1 - share, abs=1e-4)
    assert set(summary) == {lang.HANT, lang.HANS} and as_written


def test_a_run_asks_its_chinese_questions_in_both_scripts(report, reference):
    from bilingual_qa.evaluation import script_lines

    chinese = [c for c in reference.cases if lang.is_chinese(c.language) and not c.history]
    assert chinese and len(report.mirror.cases) == len(chinese)
    # The oracle answers as well in either script: the line shows no gap.
    (line,) = script_lines(report)
    assert "Traditional facts 1.000, false refusals 0.000" in line
    assert "Simplified facts 1.000, false refusals 0.000" in line
    assert report.summary()["scripts"][lang.HANT]["facts"] == 1.0
    assert "mirror" in report.to_dict() and "mirror" not in {s.name for s in report.systems}


def test_a_reversed_run_asks_both_scripts_about_the_document_in_the_other_script(
    tmp_path, reference, document, settings, fake_embedder
):
    from bilingual_qa.evaluation import script_lines

    bot = Assistant(document=tmp_path / "library.txt", settings=settings, embedder=fake_embedder)
    report = run_eval(bot, reference, naive=False, rules=False, reverse=True)
    chinese = [c for c in reference.cases if lang.is_chinese(c.language) and not c.history]
    assert len(report.reverse.cases) == 2 * len(chinese) and report.reverse_script == lang.HANS
    # The mirrored document: the same paragraphs, its Chinese now Simplified, beside the indexes.
    (mirrored,) = (Path(settings.index_dir) / "mirrored").glob("mirror-*-zh-Hans.txt")
    again = read_document(mirrored)
    assert [p.id for p in again.paragraphs] == [p.id for p in document.paragraphs]
    assert "图书馆由市长朴艾伦于1987年创立。" in mirrored.read_text(encoding="utf-8")
    assert any(line.startswith("scripts, the document in Simplified:") for line in script_lines(report))
    assert "scripts_reversed" in report.summary()
