"""Benchmark scenarios: the questions asked, and the synthetic documents and vectors measured on.

The scale documents are the default document repeated with numbered variations, so
each copy differs while a paragraph's translation keeps its number (an alignment
anchor). Encoding their tens of thousands of passages would dominate the run, so
:class:`ReplayEmbedder` replays the default document's real passage vectors, slightly
perturbed per copy, while questions are encoded for real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

import numpy as np

from ..files import sha256_bytes

EN_QUESTIONS = (
    "What mechanism will Chongqing set up with the diplomatic missions?",
    "When was the press conference held?",
    "Which forum did the Chongqing FAO hold in 2023?",
    "What will the Center for ILSTC International Exchanges and Cooperation do?",
    "Who translated the press release?",
    "What is the role of the ILSTC Think Tank Alliance?",
    "Which countries' consulates are mentioned?",
    "How will Chongqing support international exchanges along the corridor?",
)
ZH_QUESTIONS = (
    "重慶將與哪些國家的駐華使領館搭建溝通協調機制？",
    "新闻发布会是哪天举行的？",
    "重慶市政府外辦今年舉辦了哪些外事活動？",
    "陆海新通道国际交流合作中心有什么作用？",
    "西部陸海新通道智庫聯盟將圍繞什麼開展研究？",
    "外办将从哪几个方面支持陆海新通道建设？",
    "這篇新聞的來源是哪裡？",
    "重庆如何深度参与中国—东盟合作？",
)
# Variations that keep each question's meaning but make every string distinct, so
# the embedder's query cache never hides an encoding.
_EN_PREFIXES = ("", "Please tell me: ", "According to the document, ", "In the press release, ", "Q: ")
_ZH_PREFIXES = ("", "請問", "请问", "根據文件，", "根据新闻稿，")
_EN_SUFFIXES = ("", " Thanks.", " Briefly.", " Please cite.")
_ZH_SUFFIXES = ("", "謝謝。", "简单说。", "請引用。")


def synthetic_text(base: object, copies: int) -> tuple[str, list[str]]:
    """A larger bilingual document: ``copies`` numbered variations of ``base``, paragraph for paragraph.

    English paragraphs get "(Part N) " and Chinese ones "（第N部分）", so each copy
    differs and a paragraph's translation still shares its number (an alignment anchor).

    Args:
        base: a parsed :class:`~bilingual_qa.document.Document`.
        copies: how many variations to concatenate.

    Returns:
        The document text (one paragraph per line) and each paragraph's language.
    """
    lines, languages = [], []
    for n in range(1, copies + 1):
        for p in base.paragraphs:  # type: ignore[attr-defined]
            lines.append(f"(Part {n}) {p.text}" if p.language == "en" else f"（第{n}部分）{p.text}")
            languages.append(p.language)
    return "\n".join(lines) + "\n", languages


def synthetic_document(base: object, copies: int) -> object:
    """:func:`synthetic_text` parsed as ``synthetic-<copies>.txt`` (languages carried over, no detection).

    Args:
        base: a parsed :class:`~bilingual_qa.document.Document`.
        copies: how many variations to concatenate.

    Returns:
        The :class:`~bilingual_qa.document.Document`; the same bytes give the same sha256.
    """
    from ..document import parse_document

    text, languages = synthetic_text(base, copies)
    return parse_document(text.encode("utf-8"), name=f"synthetic-{copies}.txt", languages=languages)


_VARIATION = re.compile(r"^(?:\(Part \d+\) |（第\d+部分）)")


class ReplayEmbedder:
    """Queries through the real embedder; passage vectors replayed from an index of the base document.

    A synthetic paragraph or sentence maps back to its base text (the "(Part N)"
    marker removed); its vector is the base vector nudged by a small deterministic
    perturbation, so copies are near-duplicates, not identical. Texts without a
    base vector get a deterministic random one.

    Args:
        embedder: the real embedder (queries, model id, dimension).
        index: an index of the base document, whose vectors are replayed.
    """

    def __init__(self, embedder: object, index: object) -> None:
        self._embedder = embedder
        # Its own id: replayed vectors must never be taken for the real model's (vector cache).
        self.model_id = f"{embedder.model_id}+replay"  # type: ignore[attr-defined]
        self.dimension = embedder.dimension  # type: ignore[attr-defined]
        doc = index.document  # type: ignore[attr-defined]
        self._vectors = {p.text: index.paragraph_vectors[i] for i, p in enumerate(doc.paragraphs)}  # type: ignore[attr-defined]
        sentences = [s.text for p in doc.paragraphs for s in p.sentences]
        self._vectors.update(zip(sentences, index.sentence_vectors, strict=True))  # type: ignore[attr-defined]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors from the real engine."""
        return self._embedder.embed_queries(texts)  # type: ignore[attr-defined]

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Replayed, perturbed passage vectors (no model call)."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            rng = np.random.default_rng(int(sha256_bytes(text.encode())[:16], 16))
            base = self._vectors.get(_VARIATION.sub("", text))
            noise = rng.standard_normal(self.dimension).astype(np.float32)
            v = noise if base is None else base + 0.05 * noise / math.sqrt(self.dimension)
            out[i] = v / np.linalg.norm(v)
        return out


def clustered_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """``n`` deterministic unit vectors in two-level clusters (topics → subtopics → points).

    1,000 topics of 100 subtopics each; a point's cosine to its subtopic is about
    0.86 and a subtopic's to its topic about 0.78. Sentence embeddings are
    similarly clumped, unlike uniform noise, which no approximate index searches well.

    Args:
        n: how many vectors.
        dim: their dimension.
        seed: 0 for the corpus, another value for queries from the same clusters.

    Returns:
        A C-contiguous float32 array of shape (n, dim), rows L2-normalized.
    """
    base = np.random.default_rng(12345)  # the clusters are shared by every seed
    topics = base.standard_normal((1000, dim), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    subtopics = np.repeat(topics, 100, axis=0)
    subtopics += 0.8 * base.standard_normal(subtopics.shape, dtype=np.float32) / math.sqrt(dim)
    subtopics /= np.linalg.norm(subtopics, axis=1, keepdims=True)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        x = subtopics[rng.integers(0, len(subtopics), m)]
        x += 0.6 * rng.standard_normal((m, dim), dtype=np.float32) / math.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def question_stream() -> Iterator[tuple[str, str]]:
    """Distinct (language, question) pairs, alternating en and zh, never repeating.

    Each is a question about the default document with a prefix and suffix that keep its
    meaning, so the embedder's query cache never hides an encoding.

    Returns:
        An iterator of ("en" or "zh", question), longer than any run asks for.
    """
    en = [p + q + s for s in _EN_SUFFIXES for p in _EN_PREFIXES for q in EN_QUESTIONS]
    zh = [p + q + s for s in _ZH_SUFFIXES for p in _ZH_PREFIXES for q in ZH_QUESTIONS]
    for round_ in range(10_000):
        tag = "" if round_ == 0 else f" ({round_})"  # only once the variations run out
        for a, b in zip(en, zh, strict=True):
            yield "en", a + tag
            yield "zh", b + tag
