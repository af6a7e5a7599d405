"""Training: deterministic fitting, folds that never see their document, a loadable weights file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bilingual_qa.answering import FEATURES, AnswererModel, load_model, load_model_file
from bilingual_qa.errors import ConfigError, EvaluationError
from bilingual_qa.training import Question, fit_logistic, train

_COLUMN = {name: i for i, name in enumerate(FEATURES)}


def _synthetic(seed: int = 0, documents: int = 4, per_document: int = 30) -> list[Question]:
    """Questions whose answering sentence has a higher similarity z-score and term coverage."""
    rng = np.random.default_rng(seed)
    questions = []
    for d in range(documents):
        for k in range(per_document):
            answerable = k % 5 != 0
            n = 6
            x = rng.normal(size=(n, len(FEATURES)))
            x[:, _COLUMN["unit_rank"]] = np.repeat([0, 1, 2], 2)
            labels = np.zeros(n, dtype=bool)
            if answerable:
                labels[int(rng.integers(n))] = True
                x[labels, _COLUMN["z"]] += 3.0
                x[labels, _COLUMN["cover_sentence"]] += 2.0
            questions.append(
                Question(
                    group=f"{d:064x}",
                    set_name=f"doc-{d}",
                    case_id=f"q{k}",
                    category="fact" if answerable else "unanswerable",
                    answerable=answerable,
                    features=x,
                    labels=labels,
                    twins=tuple(frozenset({(0, i)}) for i in range(n)),
                )
            )
    return questions


PAIRS = [(0.9, True), (0.88, True), (0.7, False), (0.75, False)]


def test_logistic_fit_learns_the_signal_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=400) > 0).astype(float)
    first, second = fit_logistic(x, y), fit_logistic(x, y)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    _, _, coef, _ = first
    assert coef[0] > 0 > coef[1] and abs(coef[2]) < abs(coef[1])


def test_train_is_deterministic_and_keeps_one_fold_per_document():
    questions = _synthetic()
    a = train(collected=(questions, PAIRS), progress=False)
    b = train(collected=(questions, PAIRS), progress=False)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert sorted(a["folds"]) == sorted({q.group for q in questions})
    assert a["features"] == list(FEATURES)
    pooled = a["cross_validation"]["pooled"]
    assert pooled["answerable"] == sum(q.answerable for q in questions)
    # The planted signal is learned: held-out quotes hold the answer far above chance (1 in 6).
    assert pooled["quote_holds_answer"] > 0.6


def test_a_fold_never_sees_its_own_document():
    questions = _synthetic()
    held = questions[0].group
    scrambled = [
        q if q.group != held else dataclasses.replace(q, labels=np.roll(q.labels, 1)) for q in questions
    ]
    a = train(collected=(questions, PAIRS), progress=False)
    b = train(collected=(scrambled, PAIRS), progress=False)
    assert a["folds"][held] == b["folds"][held]  # its labels changed; its fold did not
    assert a["model"] != b["model"]  # the model fitted on everything did see them


def test_nothing_to_fit_on_is_an_error():
    with pytest.raises(EvaluationError, match="no reference case"):
        train(collected=([], PAIRS), progress=False)


def test_weights_file_round_trips_and_folds_load_by_document(tmp_path):
    data = train(collected=(_synthetic(), PAIRS), progress=False)
    path = tmp_path / "answerer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    model = load_model(path=path)
    assert isinstance(model, AnswererModel) and model.to_dict() == data["model"]
    held = sorted(data["folds"])[0]
    assert load_model(holdout=held, path=path).to_dict() == data["folds"][held]
    assert load_model(holdout="not-a-development-document", path=path).to_dict() == data["model"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the answerer's weights"),
        ("{not json", "not valid JSON"),
        ('{"format": 99}', "are not format"),
        ('{"format": 1, "features": ["sim"]}', "fitted for other features"),
        (json.dumps({"format": 1, "features": list(FEATURES), "model": {"gate": {}}}), "malformed"),
    ],
    ids=["missing", "not-json", "format", "features", "malformed"],
)
def test_bad_weights_are_a_config_error(tmp_path, content, message):
    path = tmp_path / f"weights-{abs(hash(str(content)))}.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_model(path=path)


def test_the_packaged_weights_load_and_name_their_data():
    data = load_model_file()
    assert data["features"] == list(FEATURES)
    assert "CC BY-SA 4.0" in data["provenance"]["license"]
    assert set(data["provenance"]["sets"].values()) == set(data["folds"])
    model = load_model()
    assert 0.0 < model.threshold < 1.0
    assert len(model.sentence.coef) == len(FEATURES)


def _two_candidates(paragraph_chars: float | None, n: int = 20) -> tuple[list[Question], list[np.ndarray]]:
    """Questions whose second-best sentence (2/3 as likely) holds the answer half the time."""
    questions, scores = [], []
    for k in range(n):
        labels = np.array([k % 2 == 0, k % 2 == 1])
        chars = None if paragraph_chars is None else np.array([100.0, 100.0]) / paragraph_chars
        whole = None if paragraph_chars is None else np.array([True, True])
        questions.append(
            Question(
                group="0" * 64, set_name="doc", case_id=f"q{k}", category="fact", answerable=True,
                features=np.zeros((2, len(FEATURES))), labels=labels,
                twins=(frozenset({(0, 0)}), frozenset({(0, 1)})), shares=chars, long=whole,
            )
        )  # fmt: skip
        scores.append(np.array([0.6, 0.4]))
    return questions, scores


def test_a_second_sentence_is_quoted_when_it_finds_answers_and_answers_stay_short():
    from bilingual_qa.training import LENGTH_SHARE, _second

    # Two sentences are a fifth of a long paragraph: quote the second whenever it helps
    # (ratio at most 2/3), and among the ratios that do, the strictest.
    questions, scores = _two_candidates(paragraph_chars=1000)
    assert _second(questions, scores) == 0.6
    # In a 300-character paragraph two sentences are 2/3 of it, over the bound: one sentence.
    questions, scores = _two_candidates(paragraph_chars=300)
    assert LENGTH_SHARE < 200 / 300
    assert _second(questions, scores) > 2 / 3
    # Lengths not collected: only answers found count.
    questions, scores = _two_candidates(paragraph_chars=None)
    assert _second(questions, scores) == 0.6


def test_a_sentence_of_another_paragraph_needs_the_stricter_ratio():
    from bilingual_qa.training import _picked

    q, _ = _two_candidates(paragraph_chars=1000, n=1)
    q = q[0]
    elsewhere = dataclasses.replace(q, twins=(frozenset({(0, 0), (1, 0)}), frozenset({(2, 0)})))
    s = np.array([0.6, 0.4])
    # The same paragraph: 2/3 of the best clears 0.5; another paragraph: not against 0.7.
    assert _picked(q, s, second=0.5, elsewhere=0.7) == [0, 1]
    assert _picked(elsewhere, s, second=0.5, elsewhere=0.7) == [0]
    assert _picked(elsewhere, s, second=0.9, elsewhere=0.6) == [0, 1]
    # A sentence of the best one's twin paragraph (position 1) counts as the same paragraph.
    twin = dataclasses.replace(q, twins=(frozenset({(0, 0), (1, 0)}), frozenset({(1, 2)})))
    assert _picked(twin, s, second=0.5, elsewhere=0.7) == [0, 1]


def test_the_length_bound_holds_in_each_answer_language():
    from bilingual_qa.training import LENGTH_SHARE, _second

    # English answers of two sentences take 2/3 of their paragraph; Chinese ones a fifth, and
    # there are more of them, so the median over all answers would stay within the bound.
    english, scores = _two_candidates(paragraph_chars=300, n=10)
    chinese, more = _two_candidates(paragraph_chars=1000, n=30)
    questions = [dataclasses.replace(q, language="en") for q in english]
    questions += [dataclasses.replace(q, language="zh-Hans") for q in chinese]
    pooled = [dataclasses.replace(q, language="") for q in questions]
    assert _second(pooled, scores + more) == 0.6
    assert LENGTH_SHARE < 200 / 300
    assert _second(questions, scores + more) > 2 / 3  # English answers would be too long


def test_a_share_is_measured_in_the_version_the_answer_quotes():
    from types import SimpleNamespace

    from bilingual_qa.evidence import TwinSpan
    from bilingual_qa.training import _quoted_share

    def paragraph(language, lengths):
        starts = np.cumsum([0, *lengths[:-1]])
        sentences = [
            SimpleNamespace(text="x" * n, start=s, end=s + n) for s, n in zip(starts, lengths, strict=True)
        ]
        return SimpleNamespace(language=language, sentences=sentences, text="x" * sum(lengths))

    english, chinese = paragraph("en", [10, 30, 60]), paragraph("zh-Hant", [20, 20])
    evidence = SimpleNamespace(
        paragraph=lambda position: (english, chinese)[position],
        span_text=lambda span: "x" * 20 * (span.last - span.first + 1),
    )
    candidate = SimpleNamespace(position=0, sentence=1, twin=TwinSpan(1, 0, 0))
    asked = lambda language, version=None: SimpleNamespace(language=language, version=version)  # noqa: E731
    # Asked in English, the English sentence is quoted: 30 of 100 characters, a long paragraph.
    assert _quoted_share(evidence, asked("en"), candidate) == (0.3, True, (0, 1, 1))
    # Asked in Chinese, its translation is: 20 of 40 characters, a two-sentence paragraph.
    assert _quoted_share(evidence, asked("zh-Hans"), candidate) == (0.5, False, (1, 0, 0))
    # Asked in Chinese what the English version says: the English sentence again.
    assert _quoted_share(evidence, asked("zh-Hans", version="en"), candidate) == (0.3, True, (0, 1, 1))
    # No translation: the sentence itself, whatever the question's language.
    alone = SimpleNamespace(position=0, sentence=2, twin=None)
    assert _quoted_share(evidence, asked("zh-Hans"), alone) == (0.6, True, (0, 2, 2))


def test_the_sentence_models_shrinkage_is_chosen_on_documents_left_out(monkeypatch):
    from bilingual_qa import training

    # The answer shows in z only once cover_sentence's noise is taken off it: a weak penalty
    # learns that; an overwhelming one keeps only each feature's own correlation with the label.
    rng = np.random.default_rng(2)
    noisy = []
    for q in _synthetic():
        x = q.features.copy()
        noise = rng.normal(scale=3.0, size=len(x))
        x[:, _COLUMN["z"]] = 2.0 * q.labels + noise
        x[:, _COLUMN["cover_sentence"]] = noise
        noisy.append(dataclasses.replace(q, features=x))
    monkeypatch.setattr(training, "SENTENCE_L2_GRID", (1.0, 1e9))
    assert training._sentence_l2(noisy) == 1.0
    questions = _synthetic()
    # Two strengths that both rank it first as often: the stronger.
    monkeypatch.setattr(training, "SENTENCE_L2_GRID", (1.0, 1.5))
    assert training._sentence_l2(questions) == 1.5
    # One document: nothing to leave out.
    one = [q for q in questions if q.group == questions[0].group]
    assert training._sentence_l2(one) == training.L2
    data = train(collected=(questions, PAIRS), progress=False)
    assert set(data["provenance"]["sentence_l2_per_fold"]) == {q.set_name for q in questions}


def test_the_threshold_is_set_on_confidences_from_gates_that_never_saw_the_document():
    from bilingual_qa import training

    questions = _synthetic()
    groups = sorted({q.group for q in questions})
    scores = training._out_of_fold(questions, groups)
    model = training._model(questions, scores, translation=0.8)
    held = groups[0]
    # Whether its questions are answerable is what a gate learns from; flip it for one document.
    flipped = [
        dataclasses.replace(q, answerable=not q.answerable) if q.group == held else q for q in questions
    ]
    a = training._held_out_confidences(model, questions, scores)
    b = training._held_out_confidences(model, flipped, scores)
    mine = np.array([q.group == held for q in questions])
    assert np.array_equal(a[mine], b[mine])  # its own confidences come from gates fitted without it
    assert not np.array_equal(a[~mine], b[~mine])  # the others' gates did learn from it


def test_the_fit_counts_two_sentences_one_translation_covers_as_two_and_their_quote_once():
    from bilingual_qa.training import _picked, _share

    q, _ = _two_candidates(paragraph_chars=1000, n=1)
    # English sentences (0, 0) and (0, 1), both translated by the one Chinese sentence (1, 0).
    shared = dataclasses.replace(
        q[0], twins=(frozenset({(0, 0), (1, 0)}), frozenset({(0, 1), (1, 0)})), own=((0, 0), (0, 1))
    )
    s = np.array([0.6, 0.4])
    assert _picked(shared, s, second=0.5, elsewhere=1.01) == [0, 1]
    # Without their own cells, a shared cell made them one sentence (the rule before).
    assert _picked(dataclasses.replace(shared, own=None), s, second=0.5, elsewhere=1.01) == [0]
    # The translation itself is the same sentence as the one it translates.
    twin = dataclasses.replace(shared, twins=(shared.twins[0], frozenset({(1, 0), (0, 0), (0, 1)})),
                               own=((0, 0), (1, 0)))  # fmt: skip
    assert _picked(twin, s, second=0.5, elsewhere=1.01) == [0]
    # Asked in Chinese, both are quoted through that sentence: one quote, its share counted once.
    once = dataclasses.replace(shared, quotes=((1, 0, 0), (1, 0, 0)))
    assert _share(once, s, 0.5, 1.01) == pytest.approx(shared.shares[0])
    assert _share(shared, s, 0.5, 1.01) == pytest.approx(shared.shares.sum())
