from itertools import pairwise

import numpy as np
import pytest

from bilingual_qa.alignment import align, monotonic_matches, twins
from bilingual_qa.document import parse_document, read_document

EXPECTED = {
    ("P1", "P4"), ("P2", "P5"), ("P3", "P6"), ("P7", "P8"),
    ("P9", "P10"), ("P11", "P12"), ("P13", "P16"), ("P14", "P17"),
}  # fmt: skip


def test_monotonic_matching_skips_unpaired_and_keeps_order():
    scores = np.array([
        [3.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],  # no twin
        [0.0, 2.0, 2.5],  # would cross if matched to the last column after row 3
        [0.0, 0.0, 2.0],
    ])  # fmt: skip
    matches = monotonic_matches(scores, min_score=0.75)
    assert matches == [(0, 0), (2, 1), (3, 2)]
    assert all(a1 < a2 and b1 < b2 for (a1, b1), (a2, b2) in pairwise(matches))


def test_monotonic_matching_rejects_weak_pairs():
    assert monotonic_matches(np.array([[0.1, 0.2], [0.3, 0.0]]), min_score=0.75) == []


def test_run_bonus_prefers_continuing_a_run():
    # Row 1 is below the threshold on its own, but it continues the run started by 0→0;
    # rows 2 and 3 are no better and start no run.
    scores = np.array([[3.0, -1.0], [-1.0, 0.6], [-1.0, 0.6], [-1.0, 0.7]])
    assert monotonic_matches(scores, min_score=0.75) == [(0, 0), (1, 1)]


def test_monolingual_document_has_no_twins(fake_embedder):
    doc = parse_document(b"First paragraph.\nSecond paragraph.\nThird.")
    vectors = fake_embedder.embed_passages([p.text for p in doc.paragraphs])
    assert align(doc.paragraphs, vectors) == []


def test_twins_are_symmetric():
    from bilingual_qa.alignment import Pair

    mapping = twins([Pair("P1", "P2", 1.0)])
    assert mapping == {"P1": "P2", "P2": "P1"}


def test_lone_candidates_pair_when_plausible(fake_embedder):
    doc = parse_document("Chongqing will host ten events in 2023.\n重慶將在2023年舉辦十場活動。".encode())
    vectors = fake_embedder.embed_passages([p.text for p in doc.paragraphs])
    assert [(p.english_id, p.chinese_id) for p in align(doc.paragraphs, vectors)] == [("P1", "P2")]


@pytest.mark.integration
def test_default_document_alignment_with_real_model(real_embedder):
    doc = read_document()
    vectors = real_embedder.embed_passages([p.text for p in doc.paragraphs])
    pairs = {(p.english_id, p.chinese_id) for p in align(doc.paragraphs, vectors)}
    assert pairs == EXPECTED


def test_layout_pairs_are_kept_the_alignment_pairs_the_rest_and_says_where_it_disagrees():
    from bilingual_qa.alignment import Pair, with_layout

    aligned = [Pair("P1", "P2", 3.0), Pair("P3", "P6", 2.0), Pair("P7", "P8", 2.5)]
    layout = [("P1", "P2"), ("P3", "P4"), ("P9", "P10")]
    twins, disagreements = with_layout(aligned, layout)
    # The layout's pairs stand; of the alignment's, only those that touch no layout pair join them.
    assert twins == {"P1": "P2", "P2": "P1", "P3": "P4", "P4": "P3", "P9": "P10", "P10": "P9",
                     "P7": "P8", "P8": "P7"}  # fmt: skip
    assert all(twins[twins[k]] == k for k in twins)  # symmetric
    assert disagreements == (
        "P3–P4: the alignment pairs P3 with P6",
        "P9–P10: the alignment leaves them unpaired",
    )


def test_a_layout_the_alignment_agrees_with_is_reported_clean():
    from bilingual_qa.alignment import Pair, with_layout

    aligned = [Pair("P1", "P2", 3.0), Pair("P3", "P4", 2.0)]
    twins, disagreements = with_layout(aligned, [("P1", "P2"), ("P3", "P4")])
    assert disagreements == () and twins == {"P1": "P2", "P2": "P1", "P3": "P4", "P4": "P3"}
