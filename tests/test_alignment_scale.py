"""The vectorized alignment gives exactly what the straightforward pair-by-pair version gave."""

from __future__ import annotations

import numpy as np
import pytest

from bilingual_qa import alignment
from bilingual_qa import language as lang
from bilingual_qa.alignment import MIN_SCORE, monotonic_matches, pair_scores
from bilingual_qa.document import read_document


def reference_matches(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """The original O(n·m) Python dynamic programme, kept as the specification."""
    n, m = scores.shape
    gain = scores - min_score
    best = np.full((2, n + 1, m + 1), -np.inf)
    best[0, :, 0] = 0.0
    best[0, 0, :] = 0.0
    back: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            skips = [(best[s, i - 1, j], (s, i - 1, j)) for s in (0, 1)]
            skips += [(best[s, i, j - 1], (s, i, j - 1)) for s in (0, 1)]
            value, origin = max(skips, key=lambda t: t[0])
            best[0, i, j] = value
            back[(0, i, j)] = origin
            after_pair = best[1, i - 1, j - 1] + alignment._RUN_BONUS + gain[i - 1, j - 1]
            after_skip = best[0, i - 1, j - 1] + gain[i - 1, j - 1]
            if gain[i - 1, j - 1] + alignment._RUN_BONUS > 0:
                best[1, i, j] = max(after_pair, after_skip)
                back[(1, i, j)] = (1 if after_pair > after_skip else 0, i - 1, j - 1)
    matches: list[tuple[int, int]] = []
    node = (int(best[1, n, m] > best[0, n, m]), n, m)
    while node[1] > 0 and node[2] > 0:
        if node[0] == 1:
            matches.append((node[1] - 1, node[2] - 1))
        node = back[node]
    return matches[::-1]


@pytest.mark.parametrize("seed", range(40))
def test_matches_equal_the_reference_including_ties(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 14, size=2)
    # Coarse values make ties common; ties decide which of several equal matchings wins.
    scores = rng.choice([-1.0, 0.0, 0.25, 0.75, 1.0, 1.25, 2.0, 3.0], size=(n, m))
    assert monotonic_matches(scores, MIN_SCORE) == reference_matches(scores, MIN_SCORE)


def test_matches_equal_the_reference_on_continuous_scores():
    rng = np.random.default_rng(7)
    scores = rng.normal(0.5, 1.0, size=(60, 45))
    assert monotonic_matches(scores, MIN_SCORE) == reference_matches(scores, MIN_SCORE)


def test_pair_scores_equal_the_pair_by_pair_formula(fake_embedder):
    doc = read_document()
    english = [p for p in doc.paragraphs if p.language == lang.EN]
    chinese = [p for p in doc.paragraphs if lang.is_chinese(p.language)]
    ev = fake_embedder.embed_passages([p.text for p in english])
    zv = fake_embedder.embed_passages([p.text for p in chinese])
    sim = (ev @ zv.T).astype(np.float64)
    expected = np.zeros(sim.shape)
    for a, ep in enumerate(english):
        for b, zp in enumerate(chinese):
            row, column = np.delete(sim[a], b), np.delete(sim[:, b], a)  # the pair's rivals
            expected[a, b] = (
                (sim[a, b] - row.mean()) / row.std() + (sim[a, b] - column.mean()) / column.std()
            ) / 2
            ea, za = lang.anchors(ep.text), lang.anchors(zp.text)
            if ea and za:
                expected[a, b] += 2 * len(ea & za) / (len(ea) + len(za)) - 0.5
            ratio = (len(ep.text) + 10) / (len(zp.text) * 1.7 + 10)
            expected[a, b] -= 0.5 * abs(float(np.log(ratio)))
    np.testing.assert_allclose(pair_scores(english, chinese, ev, zv), expected, rtol=0, atol=1e-12)


def test_a_thousand_paragraph_document_aligns_copy_by_copy(fake_embedder):
    from bilingual_qa.bench.scenarios import synthetic_document

    doc = synthetic_document(read_document(), 60)  # 1,020 paragraphs: 540 × 480 candidates
    vectors = fake_embedder.embed_passages([p.text for p in doc.paragraphs])
    pairs = alignment.align(doc.paragraphs, vectors)
    assert len(pairs) > 100  # the fake embedder is monolingual: anchors carry these
    # Twins come from the same numbered copy: 17 paragraphs per copy.
    same_copy = [(int(p.english_id[1:]) - 1) // 17 == (int(p.chinese_id[1:]) - 1) // 17 for p in pairs]
    assert np.mean(same_copy) > 0.95


def test_scoring_a_block_of_rows_at_a_time_changes_nothing(fake_embedder, monkeypatch):
    from bilingual_qa.bench.scenarios import synthetic_document

    doc = synthetic_document(read_document(), 12)  # 204 paragraphs
    vectors = fake_embedder.embed_passages([p.text for p in doc.paragraphs])
    whole = alignment.align(doc.paragraphs, vectors)
    monkeypatch.setattr(alignment.PairScores, "BLOCK_CELLS", 500)  # blocks of 5 rows
    blocks = alignment.align(doc.paragraphs, vectors)
    assert [(p.english_id, p.chinese_id) for p in blocks] == [(p.english_id, p.chinese_id) for p in whole]
    # float32 products summed in other blocks: equal to float32 precision
    np.testing.assert_allclose([p.score for p in blocks], [p.score for p in whole], rtol=0, atol=1e-5)
