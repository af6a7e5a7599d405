"""Retrieval: hybrid dense (FAISS) + BM25 search over aligned paragraph pairs.

A paragraph and its translation form one *unit*: the unit is found when
either member is, so a question in one language surfaces its evidence in the
other too. Dense and lexical rankings of units are fused by reciprocal rank.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from . import language as lang
from .index import Index

_RRF_K = 60
_DENSE_WIDTH = 4  # dense candidates fetched per requested unit


@dataclass(frozen=True)
class Hit:
    """A retrieved unit: a paragraph and its twin (if any), with its scores."""

    members: tuple[int, ...]
    score: float
    dense: float
    lexical: float


@dataclass(frozen=True)
class Retrieval:
    """What one search found: the best units, and every sentence's and paragraph's scores.

    The extractive and generative answerers both take this one result, so a question is
    searched once.
    """

    question: str
    query_vector: np.ndarray
    hits: tuple[Hit, ...]
    sentence_scores: np.ndarray  # cosine similarity of the query to every sentence
    lexical: np.ndarray  # BM25 score of every paragraph


class Retriever:
    """Hybrid retriever over one :class:`Index`."""

    def __init__(self, index: Index) -> None:
        self.index = index
        paragraphs = index.document.paragraphs
        self.units = index.document.units
        self.unit_of = np.asarray(index.document.unit_of, dtype=np.int64)
        self.tokens = [lang.lexical_tokens(p.text) for p in paragraphs]
        self._bm25_index = None
        self._bm25_lock = threading.Lock()

    @property
    def _bm25(self):
        """The BM25 index, built at the first question (bm25s imports scipy: not at start-up)."""
        if self._bm25_index is None:
            with self._bm25_lock:
                if self._bm25_index is None:
                    import bm25s

                    # bm25s logs every index build at DEBUG on its own handler.
                    logging.getLogger("bm25s").setLevel(logging.WARNING)
                    bm25 = bm25s.BM25()
                    # bm25s wants every document to have a token; an empty list breaks its matrix.
                    bm25.index([t or ["\u2205"] for t in self.tokens], show_progress=False)
                    self._bm25_index = bm25
        return self._bm25_index

    def sentence_scores(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to every sentence of the document (read-only)."""
        # Not `@`: BLAS runs this pass on every core and leaves its threads spinning after
        # it, which slows the next query encoding; einsum stays on this thread, and the pass
        # is memory-bound either way.
        index = self.index
        scores = np.einsum("ij,j->i", index.sentence_vectors, query_vector)
        if index.pending is not None:
            # Not encoded yet (a progressive build): a sentence stands in as its paragraph,
            # which neither lifts its paragraph in search nor skews the spread of scores much.
            paragraph = np.einsum("ij,j->i", index.paragraph_vectors, query_vector)
            scores[index.pending] = paragraph[index.sentence_paragraph[index.pending]]
        scores.flags.writeable = False
        return scores

    def lexical_scores(self, question: str) -> np.ndarray:
        """BM25 score of every paragraph for the question's tokens."""
        if self.index.lexical is not None:  # a shared store keeps the BM25 weights
            return self.index.lexical.scores(lang.lexical_tokens(question))  # type: ignore[attr-defined]
        tokens = [t for t in lang.lexical_tokens(question) if t in self._bm25.vocab_dict]
        if not tokens:
            return np.zeros(len(self.index.document.paragraphs), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def search(self, question: str, query_vector: np.ndarray, k: int) -> Retrieval:
        """The ``k`` best units for a question, best first, with the scores behind them.

        Args:
            question: the question text (for BM25).
            query_vector: its normalized query embedding.
            k: how many units to return.

        Returns:
            The :class:`Retrieval`.
        """
        n = len(self.index.document.paragraphs)
        dense = np.full(n, -1.0, dtype=np.float32)
        for i, score in self.index.dense_search(query_vector, k * _DENSE_WIDTH):
            dense[i] = score
        sentences = self.sentence_scores(query_vector)
        # A long paragraph's vector blurs its sentences; its best sentence speaks for it.
        np.maximum.at(dense, self.index.sentence_paragraph, sentences)
        lexical = self.lexical_scores(question)

        unit_dense = np.full(len(self.units), -1.0, dtype=np.float32)
        unit_lexical = np.zeros(len(self.units), dtype=np.float32)
        np.maximum.at(unit_dense, self.unit_of, dense)
        np.maximum.at(unit_lexical, self.unit_of, lexical)

        fused = 1.0 / (_RRF_K + _ranks(-unit_dense))
        has_lexical = unit_lexical > 0
        fused[has_lexical] += 1.0 / (_RRF_K + _ranks(-unit_lexical)[has_lexical])
        order = np.lexsort((-unit_dense, -fused))[:k]
        hits = tuple(
            Hit(self.units[u], float(fused[u]), float(unit_dense[u]), float(unit_lexical[u])) for u in order
        )
        return Retrieval(question, query_vector, hits, sentences, lexical)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` in ascending order (ties share the best rank)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    first = np.searchsorted(sorted_values, sorted_values, side="left")
    ranks[order] = first + 1
    return ranks
