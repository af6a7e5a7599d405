"""The plain llama-index pipeline every report compares the engine with, and its embedding adapter.

One TextNode per paragraph, a VectorStoreIndex, dense top-k only, the top paragraph
quoted as the answer: the approach a llama-index tutorial would take. The eval scores
it in process with the engine's own embedder (:class:`NaivePipeline`); the benchmark
times it cold, in a fresh process over sentence-transformers, through this module's
entry point::

    python -m bilingual_qa.evaluation.naive MODEL DOCUMENT QUESTION [--top-k K]

which prints the ids of the paragraphs retrieved, best first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .metrics import RETRIEVAL_DEPTH


@lru_cache(maxsize=1)
def _embedding_class() -> type:
    """A llama-index BaseEmbedding over our Embedder (defined lazily: llama-index is heavy)."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr

    class EmbedderAdapter(BaseEmbedding):
        """Serves llama-index from an already loaded :class:`~bilingual_qa.embedding.Embedder`."""

        _embedder: Any = PrivateAttr()

        def __init__(self, embedder: Any, **kwargs: Any) -> None:
            super().__init__(model_name=str(embedder.model_id), **kwargs)
            self._embedder = embedder

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._embedder.embed_queries([query])[0].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._embedder.embed_passages([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._embedder.embed_passages(texts).tolist()

    return EmbedderAdapter


def llama_embedding(embedder: Any) -> Any:
    """A llama-index ``BaseEmbedding`` that embeds with ``embedder`` (downloads nothing).

    Args:
        embedder: a :class:`~bilingual_qa.embedding.Embedder`.

    Returns:
        The adapter, to pass as ``embed_model=`` (llama-index's global Settings stay untouched).
    """
    return _embedding_class()(embedder)


class NaivePipeline:
    """The plain llama-index approach, for comparison: one TextNode per paragraph,
    a VectorStoreIndex, dense top-k only, and the top paragraph quoted as the answer.

    No pairing, no BM25, no script conversion, no refusal, no follow-up condensing.

    Args:
        document: the document (its twins are used only for scoring, not here).
        embedder: the same embedder the engine uses.
        vectors: the paragraphs' passage vectors, if already computed by that embedder.
    """

    backend = "naive-llama-index"

    def __init__(self, document: Any, embedder: Any, vectors: Any = None) -> None:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        self._paragraphs = {p.id: p for p in document.paragraphs}
        # The paragraph vectors the engine's index already holds are the ones the adapter would
        # compute (the same embedder, "passage: " + text): reusing them spares encoding them again.
        given = [None] * len(document.paragraphs) if vectors is None else [v.tolist() for v in vectors]
        nodes = [
            TextNode(id_=p.id, text=p.text, embedding=v)
            for p, v in zip(document.paragraphs, given, strict=True)
        ]
        self._index = VectorStoreIndex(nodes, embed_model=llama_embedding(embedder), show_progress=False)

    def retrieve(self, question: str, history: object = None, k: int = RETRIEVAL_DEPTH) -> list[Any]:
        """Paragraphs by dense similarity, best first (``history`` is ignored: no condensing)."""
        from ..assistant import Retrieved

        hits = self._index.as_retriever(similarity_top_k=k).retrieve(question)
        return [Retrieved((h.node.node_id,), float(h.score or 0.0)) for h in hits]

    def ask(self, question: str, history: object = None) -> Any:
        """The top paragraph, verbatim, cited as [P#]."""
        from ..answer import Answer, Citation

        started = time.perf_counter()
        top = self.retrieve(question, k=1)[0]
        p = self._paragraphs[top.paragraph_ids[0]]
        return Answer(
            question=question,
            text=f"{p.text} [{p.id}]",
            language=p.language,
            answered=True,
            citations=(Citation(p.id, p.language, p.text, p.twin_id, top.score, ((0, len(p.text)),)),),
            backend=self.backend,
            evidence_language=p.language,
            seconds=round(time.perf_counter() - started, 4),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Build the naive pipeline over sentence-transformers and print what it retrieves for a question.

    Args:
        argv: MODEL (a sentence-transformers name or folder), DOCUMENT (a .txt/.md file),
            QUESTION and an optional ``--top-k``; default: the process's arguments.

    Returns:
        0; the ids of the retrieved paragraphs, best first, are printed on one line.

    Raises:
        BilingualQAError: the model or the document cannot be loaded.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bilingual_qa.evaluation.naive",
        description="The plain llama-index pipeline, cold: one node per paragraph, dense top-k.",
    )
    parser.add_argument("model", help="sentence-transformers model name or folder")
    parser.add_argument("document", help="UTF-8 .txt/.md document")
    parser.add_argument("question")
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="paragraphs retrieved (3)")
    args = parser.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"  # nothing may download
    from ..config import Settings
    from ..document import read_document
    from ..embedding import load_embedder

    settings = Settings.from_env(model=args.model, engine="sentence-transformers")
    pipeline = NaivePipeline(
        read_document(args.document, seed=settings.langdetect_seed), load_embedder(settings)
    )
    hits = pipeline.retrieve(args.question, k=args.top_k)
    print(" ".join(h.paragraph_ids[0] for h in hits), flush=True)
    return 0


if __name__ == "__main__":
    from ..errors import BilingualQAError

    try:
        sys.exit(main())
    except BilingualQAError as exc:
        print(f"naive: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
