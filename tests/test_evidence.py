"""Evidence: what the answerer weighs, described the same way for every candidate sentence."""

import numpy as np
import pytest

from bilingual_qa.evidence import FEATURES, expected_type, has_type, numbers

QUESTIONS = [
    "How many promotional events will Chongqing host?",
    "重慶將與哪些國家的駐華使領館搭建溝通協調機制?",
    "智库联盟重点围绕哪些方面开展工作?",
    "What is the boiling point of mercury?",
]


@pytest.mark.parametrize("question", QUESTIONS)
def test_one_finite_feature_row_per_candidate(fake_assistant, question):
    weighing, retrieval = fake_assistant.weigh(question)
    assert weighing.features.shape == (len(weighing.candidates), len(FEATURES))
    assert np.isfinite(weighing.features).all()
    # candidates are exactly the sentences of the retrieved units, each once
    expected = {
        (position, s)
        for hit in retrieval.hits
        for position in hit.members
        for s in range(len(fake_assistant.paragraphs[position].sentences))
    }
    assert {(c.position, c.sentence) for c in weighing.candidates} == expected
    assert len(weighing.candidates) == len(expected)


@pytest.mark.parametrize("question", QUESTIONS)
def test_features_agree_with_their_candidates(fake_assistant, question):
    weighing, retrieval = fake_assistant.weigh(question)
    column = {name: weighing.features[:, i] for i, name in enumerate(FEATURES)}
    paragraphs = fake_assistant.paragraphs
    for row, c in enumerate(weighing.candidates):
        assert column["has_twin"][row] == float(paragraphs[c.position].twin_id is not None)
        assert column["unit_rank"][row] == c.rank < len(retrieval.hits)
        assert column["first_sentence"][row] == float(c.sentence == 0)
        if c.twin is not None:
            twin = paragraphs[c.twin.position]
            assert twin.id == paragraphs[c.position].twin_id
            assert 0 <= c.twin.first <= c.twin.last < len(twin.sentences)
    # shares are shares; the best candidate has no gap to itself
    for name in ("cover_sentence", "cover_own", "cover_unit", "checkable", "unknown", "novel"):
        assert ((column[name] >= 0) & (column[name] <= 1)).all(), name
    assert column["gap"].max() == pytest.approx(0.0)
    assert (column["gap"] <= 0).all()


def test_top_k_sets_how_many_units_are_weighed(settings, fake_embedder):
    from bilingual_qa import Assistant

    question = "How many promotional events will Chongqing host?"
    for k in (1, 3):
        bot = Assistant(settings=settings.replace(top_k=k), embedder=fake_embedder)
        weighing, retrieval = bot.weigh(question)
        assert len(retrieval.hits) == k
        assert {c.rank for c in weighing.candidates} == set(range(k))


def test_a_sentence_with_every_key_term_is_fully_covered(fake_assistant):
    paragraph = next(p for p in fake_assistant.paragraphs if p.language == "en" and len(p.sentences) > 1)
    sentence = paragraph.sentences[0].text
    weighing, _ = fake_assistant.weigh(sentence)
    column = FEATURES.index("cover_own")
    rows = [
        i
        for i, c in enumerate(weighing.candidates)
        if fake_assistant.paragraphs[c.position].id == paragraph.id and c.sentence == 0
    ]
    assert rows, "asking a sentence verbatim retrieves its paragraph"
    assert weighing.features[rows[0], column] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How many events will be held?", "quantity"),
        ("重庆将举办多少场推介活动?", "quantity"),
        ("On what day was the plan released?", "date"),
        ("计划是哪一天发布的?", "date"),
        ("Who translated the press release?", None),
        ("How many events?", "quantity"),
        ("重庆将建设多少个海外仓?", "quantity"),
        ("On what exact date will the forum be held?", "date"),
        ("论坛将在哪一天举行?", "date"),
        ("Who translated it?", None),
    ],
)
def test_expected_answer_type(question, kind):
    assert expected_type(question) == kind


def test_answer_types_and_numbers_found_in_text():
    assert has_type("It will host 20 events.", "quantity")
    assert has_type("舉辦二十場活動", "quantity")
    assert has_type("released on March 3", "date")
    assert not has_type("the plan was released", "date")
    assert numbers("1,200 trains and 3.5 million tonnes") == {"1200", "3.5"}
    assert has_type("more than ten promotional events", "quantity")
    assert has_type("舉辦10場以上專場推介活動", "quantity")
    assert has_type("閱覽室可容納兩百人", "quantity")
    assert has_type("On October 10, a press conference was held", "date")
    assert has_type("在10月10日舉行", "date")
    assert not has_type("in the 2023 forum", "date")
    assert not has_type("a mechanism of communication", "quantity")
