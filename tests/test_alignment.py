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
