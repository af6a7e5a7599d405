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
    scores = PairScores(
        [paragraphs[i] for i in english], [paragraphs[j] for j in chinese], vectors[english], vectors[chinese]
    )
    matches = monotonic_matches(scores, MIN_SCORE)
    return [
        Pair(paragraphs[english[a]].id, paragraphs[chinese[b]].id, score)
        for (a, b), score in zip(matches, scores.at(matches), strict=True)
    ]


def twins(pairs: Sequence[Pair]) -> dict[str, str]:
    """Both directions of the pairing, id → twin id."""
    out: dict[str, str] = {}
    for pair in pairs:
        out[pair.english_id] = pair.chinese_id
        out[pair.chinese_id] = pair.english_id
    return out


def with_layout(
    pairs: Sequence[Pair], layout: Sequence[tuple[str, str]]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Twins of a file whose layout already pairs paragraphs (parallel columns, table rows).

    The layout's pairs are kept as they are; the alignment pairs the other paragraphs and
    checks the layout's: every layout pair it does not make the same way is reported.

    Args:
        pairs: the alignment of the whole document (:func:`align`).
        layout: (id, id) pairs the file set side by side (``Document.layout_pairs``).

    Returns:
        id → twin id (both directions), and one line per disagreement, e.g.
        "P3–P4: the alignment pairs P3 with P6".
    """
    aligned = twins(pairs)
    out: dict[str, str] = {}
    disagreements = []
    for a, b in layout:
        out[a], out[b] = b, a
        if aligned.get(a) == b:
            continue
        others = [f"{x} with {aligned[x]}" for x in (a, b) if x in aligned]
        how = f"pairs {' and '.join(others)}" if others else "leaves them unpaired"
        disagreements.append(f"{a}–{b}: the alignment {how}")
    for pair in pairs:
        if pair.english_id not in out and pair.chinese_id not in out:
            out[pair.english_id], out[pair.chinese_id] = pair.chinese_id, pair.english_id
    return out, tuple(disagreements)


class PairScores:
    """Calibrated pair scores (English rows × Chinese columns), computed a block of rows at a time.

    The whole matrix of a 10,000-paragraph document holds 25M pairs: 200 MB a copy in
    float64, and the z-scores need several copies (1.6 GB measured). Only each row's and
    each column's sums are kept; a block of rows is scored when asked for, so memory
    stays near ``BLOCK_CELLS`` cells whatever the document's size.
    """

    #: Cells scored at once (about 16 MB per float64 temporary).
    BLOCK_CELLS = 2_000_000

    def __init__(
        self, english: Sequence[Paragraph], chinese: Sequence[Paragraph], ev: np.ndarray, zv: np.ndarray
    ) -> None:
        self.english, self.chinese = list(english), list(chinese)
        self.ev, self.zv = ev, zv
        self.shape = (len(self.english), len(self.chinese))
        self.block_rows = max(1, self.BLOCK_CELLS // max(1, self.shape[1]))
        n, m = self.shape
        self._calibrated = min(n, m) >= _MIN_CANDIDATES
        self._row_sums, self._row_squares = np.zeros(n), np.zeros(n)
        self._column_sums, self._column_squares = np.zeros(m), np.zeros(m)
        if self._calibrated:
            for start in range(0, n, self.block_rows):
                sim = self._similarity(start, min(n, start + self.block_rows))
                self._row_sums[start : start + len(sim)] = sim.sum(axis=1)
                self._row_squares[start : start + len(sim)] = (sim**2).sum(axis=1)
                self._column_sums += sim.sum(axis=0)
                self._column_squares += (sim**2).sum(axis=0)
        self._english_length = np.array([len(p.text) for p in self.english], dtype=np.float64)
        self._chinese_length = np.array([len(p.text) for p in self.chinese], dtype=np.float64)
        self._chinese_anchors = [lang.anchors(p.text) for p in self.chinese]

    def _similarity(self, start: int, stop: int) -> np.ndarray:
        return (self.ev[start:stop] @ self.zv.T).astype(np.float64)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Scores of English rows ``start:stop`` against every Chinese column."""
        rows = slice(start, stop)
        anchors = _anchor_agreement([lang.anchors(p.text) for p in self.english[rows]], self._chinese_anchors)
        sim = self._similarity(start, stop) if self._calibrated else None
        return self._combine(sim, (rows, None), (None, slice(None)), anchors)

    def at(self, cells: Sequence[tuple[int, int]]) -> list[float]:
        """The scores of the given (row, column) cells, in order (without scoring whole rows)."""
        if not cells:
            return []
        a, b = (np.array(side) for side in zip(*cells, strict=True))
        anchors = np.array(
            [
                _anchor_agreement([lang.anchors(self.english[i].text)], [self._chinese_anchors[j]])[0, 0]
                for i, j in cells
            ]
        )
        sim = np.einsum("ij,ij->i", self.ev[a], self.zv[b]).astype(np.float64) if self._calibrated else None
        return self._combine(sim, a, b, anchors).tolist()

    def _combine(
        self, sim: np.ndarray | None, rows: object, columns: object, anchors: np.ndarray
    ) -> np.ndarray:
        """Scores from similarities, anchor agreement and lengths; ``rows``/``columns`` index the stats."""
        if sim is None:
            score = np.full(anchors.shape, MIN_SCORE + 1.0)
        else:
            n, m = self.shape
            z_row = _excluded_z(sim, self._row_sums[rows], self._row_squares[rows], m)
            z_column = _excluded_z(sim, self._column_sums[columns], self._column_squares[columns], n)
            score = (z_row + z_column) / 2
        score += _ANCHOR_WEIGHT * anchors
        mismatch = _length_mismatch(self._english_length[rows], self._chinese_length[columns])
        return score - _LENGTH_WEIGHT * mismatch

    def matrix(self) -> np.ndarray:
        """Every score at once (small documents and tests)."""
        return self.rows(0, self.shape[0])


def pair_scores(
    english: Sequence[Paragraph], chinese: Sequence[Paragraph], ev: np.ndarray, zv: np.ndarray
) -> np.ndarray:
    """Calibrated pair scores (English rows × Chinese columns); above MIN_SCORE means "twins"."""
    return PairScores(english, chinese, ev, zv).matrix()


def _anchor_agreement(english_anchors: Sequence[set[str]], chinese_anchors: Sequence[set[str]]) -> np.ndarray:
    """Dice overlap of each pair's anchors minus 0.5, or 0 where either side has none."""
    # Shared anchors counted through an inverted index: only pairs that share one are touched.
    rows: dict[str, list[int]] = {}
    for a, found in enumerate(english_anchors):
        for anchor in found:
            rows.setdefault(anchor, []).append(a)
    shared = np.zeros((len(english_anchors), len(chinese_anchors)), dtype=np.float64)
    for b, found in enumerate(chinese_anchors):
        for anchor in found:
            if anchor in rows:
                shared[rows[anchor], b] += 1
    english_count = np.array([len(x) for x in english_anchors], dtype=np.float64)[:, None]
    chinese_count = np.array([len(x) for x in chinese_anchors], dtype=np.float64)[None, :]
    both = (english_count > 0) & (chinese_count > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = 2 * shared / (english_count + chinese_count) - 0.5
    return np.where(both, dice, 0.0)


def _excluded_z(sim: np.ndarray, total: np.ndarray, squares: np.ndarray, count: int) -> np.ndarray:
    """Each entry's z-score against the other entries of its row or column.

    ``total`` and ``squares`` are the sums over each entry's whole row or column (broadcast
    against ``sim``), ``count`` that row's or column's length.
    """
    k = count - 1
    mean = (total - sim) / k
    var = (squares - sim**2) / k - mean**2
    return (sim - mean) / np.sqrt(np.maximum(var, 1e-8))


def _length_mismatch(english_length: np.ndarray, chinese_length: np.ndarray) -> np.ndarray:
    """How far each length ratio is from a typical translation (0 = typical)."""
    # Measured on English↔Chinese press translations: about 1.7 English
    # characters per Chinese character.
    ratio = (english_length + 10) / (chinese_length * 1.7 + 10)
    return np.abs(np.log(ratio))


def monotonic_matches(scores: np.ndarray | PairScores, min_score: float) -> list[tuple[int, int]]:
    """Order-preserving matching maximizing the total (score − min_score) of kept pairs.

    ``scores`` is a matrix, or :class:`PairScores` read a block of rows at a time.

    A pair directly after another pair (both sides advance by one) earns a run bonus.
    Ties go, in this order, to: skipping the row after a non-pair, after a pair,
    skipping the column after a non-pair, after a pair.
    """
    n, m = scores.shape
    rows = scores.rows if isinstance(scores, PairScores) else (lambda start, stop: scores[start:stop])
    block_rows = scores.block_rows if isinstance(scores, PairScores) else n
    block: tuple[int, np.ndarray] = (0, np.zeros((0, m)))
    # best0/best1[i, j]: best total over the first i rows and j columns, where best1 means
    # (i-1, j-1) is a pair. Row by row, each a handful of vector operations (O(n) Python
    # steps, not O(n·m)); back pointers are one byte per cell.
    best0 = np.zeros(m + 1)
    best1 = np.full(m + 1, -np.inf)
    came0 = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0/1: from (0/1, i-1, j); 2/3: from (0/1, i, j-1)
    came1 = np.zeros((n + 1, m + 1), dtype=np.int8)  # the state of (i-1, j-1)
    for i in range(1, n + 1):
        if i - 1 >= block[0] + len(block[1]):
            block = (i - 1, rows(i - 1, min(n, i - 1 + block_rows)))
        gain = block[1][i - 1 - block[0]] - min_score
        after_pair = best1[:-1] + _RUN_BONUS + gain
        after_skip = best0[:-1] + gain
        row1 = np.full(m + 1, -np.inf)
        # A pair must pay for itself: on its own, or as the continuation of a run.
        row1[1:] = np.where(gain + _RUN_BONUS > 0, np.maximum(after_pair, after_skip), -np.inf)
        came1[i, 1:] = after_pair > after_skip
        up = np.maximum(best0, best1)  # skip row i-1
        up_state = (best1 > best0).astype(np.int8)  # ties go to the non-pair state
        candidate = up.copy()
        candidate[1:] = np.maximum(up[1:], row1[:-1])  # or skip column j-1 after a pair
        candidate[0] = 0.0
        row0 = np.maximum.accumulate(candidate)  # or skip column j-1 after a non-pair
        came0[i, 1:] = np.where(up[1:] == row0[1:], up_state[1:], np.where(row0[:-1] == row0[1:], 2, 3))
        best0, best1 = row0, row1
    matches: list[tuple[int, int]] = []
    state, i, j = int(best1[m] > best0[m]), n, m
    while i > 0 and j > 0:
        if state == 1:
            matches.append((i - 1, j - 1))
            state, i, j = int(came1[i, j]), i - 1, j - 1
        else:
            step = int(came0[i, j])
            state, i, j = (step, i - 1, j) if step < 2 else (step - 2, i, j - 1)
    return matches[::-1]
