"""Alignment: pair each English paragraph with its Chinese translation.

Bilingual documents keep their versions in order but not in strict
alternation (three English paragraphs, then their three translations, then
pairs...), and some paragraphs have no twin (a translator credit). So the
alignment is monotonic — both sides keep document order — and may skip
paragraphs, like a sentence aligner over paragraphs.

Raw e5 similarities are compressed (unrelated text scores 0.75–0.85), so a
candidate pair is scored by how far its similarity stands out, in standard
deviations, from its two members' similarities to every other candidate (a
z-score, averaged over the row and the column). Shared anchors (numbers,
acronyms such as RCEP) add evidence; an implausible length ratio removes some;
a pair that continues a run of consecutive pairs gets a small bonus, because
translations come in runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import language as lang
from .document import Paragraph

#: A pair is kept when its calibrated score (in standard deviations) exceeds this.
MIN_SCORE = 0.75
_ANCHOR_WEIGHT = 1.0
_LENGTH_WEIGHT = 0.5
_RUN_BONUS = 0.5
# Below this many candidates per side a z-score means nothing; lone candidates
# are paired unless anchors or lengths argue against it.
_MIN_CANDIDATES = 3


@dataclass(frozen=True)
class Pair:
    """An aligned English ↔ Chinese paragraph pair and its score."""

    english_id: str
    chinese_id: str
    score: float


def align(paragraphs: Sequence[Paragraph], vectors: np.ndarray) -> list[Pair]:
    """Align English and Chinese paragraphs monotonically.

    Args:
        paragraphs: the document's paragraphs, in order.
        vectors: one L2-normalized passage vector per paragraph (same order).

    Returns:
        The aligned pairs in document order; paragraphs without a twin are absent.
    """
    english = [i for i, p in enumerate(paragraphs) if p.language == lang.EN]
    chinese = [i for i, p in enumerate(paragraphs) if lang.is_chinese(p.language)]
    if not english or not chinese:
        return []
    scores = pair_scores(
        [paragraphs[i] for i in english], [paragraphs[j] for j in chinese], vectors[english], vectors[chinese]
    )
    matches = monotonic_matches(scores, MIN_SCORE)
    return [
        Pair(paragraphs[english[a]].id, paragraphs[chinese[b]].id, float(scores[a, b])) for a, b in matches
    ]


def twins(pairs: Sequence[Pair]) -> dict[str, str]:
    """Both directions of the pairing, id → twin id."""
    out: dict[str, str] = {}
    for pair in pairs:
        out[pair.english_id] = pair.chinese_id
        out[pair.chinese_id] = pair.english_id
    return out


def pair_scores(
    english: Sequence[Paragraph], chinese: Sequence[Paragraph], ev: np.ndarray, zv: np.ndarray
) -> np.ndarray:
    """Calibrated pair scores (English rows × Chinese columns); above MIN_SCORE means "twins"."""
    sim = (ev @ zv.T).astype(np.float64)
    if min(sim.shape) >= _MIN_CANDIDATES:
        score = (_excluded_z(sim, axis=1) + _excluded_z(sim, axis=0)) / 2
    else:
        score = np.full(sim.shape, MIN_SCORE + 1.0)
    for a, ep in enumerate(english):
        ea = lang.anchors(ep.text)
        for b, zp in enumerate(chinese):
            za = lang.anchors(zp.text)
            if ea and za:
                score[a, b] += _ANCHOR_WEIGHT * (2 * len(ea & za) / (len(ea) + len(za)) - 0.5)
            score[a, b] -= _LENGTH_WEIGHT * _length_mismatch(ep.text, zp.text)
    return score


def _excluded_z(sim: np.ndarray, axis: int) -> np.ndarray:
    """Each entry's z-score against the other entries of its row (axis=1) or column (axis=0)."""
    k = sim.shape[axis] - 1
    total = sim.sum(axis=axis, keepdims=True)
    squares = (sim**2).sum(axis=axis, keepdims=True)
    mean = (total - sim) / k
    var = (squares - sim**2) / k - mean**2
    return (sim - mean) / np.sqrt(np.maximum(var, 1e-8))


def _length_mismatch(english: str, chinese: str) -> float:
    """How far the length ratio is from a typical translation (0 = typical)."""
    # Measured on English↔Chinese press translations: about 1.7 English
    # characters per Chinese character.
    ratio = (len(english) + 10) / (len(chinese) * 1.7 + 10)
    return abs(float(np.log(ratio)))


def monotonic_matches(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Order-preserving matching maximizing the total (score − min_score) of kept pairs.

    A pair directly after another pair (both sides advance by one) earns a run bonus.
    """
    n, m = scores.shape
    gain = scores - min_score
    # best[s, i, j]: best total over the first i rows and j columns; s=1 when (i-1, j-1) is a pair.
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
            after_pair = best[1, i - 1, j - 1] + _RUN_BONUS + gain[i - 1, j - 1]
            after_skip = best[0, i - 1, j - 1] + gain[i - 1, j - 1]
            # A pair must pay for itself: on its own, or as the continuation of a run.
            if gain[i - 1, j - 1] + _RUN_BONUS > 0:
                state = 1 if after_pair > after_skip else 0
                best[1, i, j] = max(after_pair, after_skip)
                back[(1, i, j)] = (state, i - 1, j - 1)
    matches: list[tuple[int, int]] = []
    node = (int(best[1, n, m] > best[0, n, m]), n, m)
    while node[1] > 0 and node[2] > 0:
        if node[0] == 1:
            matches.append((node[1] - 1, node[2] - 1))
        node = back[node]
    return matches[::-1]
