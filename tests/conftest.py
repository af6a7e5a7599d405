"""Shared fixtures: a deterministic fake embedder for fast tests, the real one for integration."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from bilingual_qa import language as lang
from bilingual_qa.config import Settings

ROOT = Path(__file__).resolve().parent.parent


class FakeEmbedder:
    """Hashed bag of lexical tokens: deterministic, instant, monolingual-only similarity."""

    model_id = "fake-hashing-384"
    dimension = 384

    def __init__(self) -> None:
        self.calls = 0

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        v[0] = 1.0  # a shared component, like a real model's compressed similarities
        for token in lang.lexical_tokens(text):
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            v[1 + h % (self.dimension - 1)] += 1.0 if (h >> 40) & 1 else -1.0
        return v / np.linalg.norm(v)

    def embed_queries(self, texts):
        self.calls += 1
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def embed_passages(self, texts):
        self.calls += 1
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, 384), np.float32)


class RecordingEmbedder:
    """The fake embedder's vectors through the real plumbing (windows, batches, turns), recorded.

    A token is a lexical token (a word, a Han character) plus two for the prefix and specials,
    so budgets can be checked in tests without the model. ``batches`` holds every forward
    pass: (is_query, texts, tokens per text).
    """

    def __new__(cls, window_tokens: int = 64, batch_tokens: int = 64):
        from bilingual_qa.embedding import _CachingEmbedder

        fake = FakeEmbedder()

        class _Recording(_CachingEmbedder):
            model_id = "fake-recording-384"
            dimension = 384

            def __init__(self) -> None:
                super().__init__()
                self.window_tokens, self.batch_tokens = window_tokens, batch_tokens
                self.batches: list[tuple[bool, list[str], list[int]]] = []
                self.busy_inside: list[bool] = []

            def token_counts(self, texts, is_query=False):
                return [len(lang.lexical_tokens(t)) + 2 for t in texts]

            def _forward(self, texts, is_query):
                self.busy_inside.append(self.model_turns.busy)
                self.batches.append((is_query, list(texts), self.token_counts(texts, is_query)))
                return np.stack([fake._vector(t) for t in texts])

            @property
            def embedded(self) -> list[str]:
                return [t for _, texts, _ in self.batches for t in texts]

        return _Recording()


@pytest.fixture
def recording_embedder():
    return RecordingEmbedder()


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the user's environment, indexes under tmp_path.

    The answerer's refusal threshold is fitted on the real model's similarities, which the
    fake embedder does not reproduce; fast tests therefore answer from the best evidence
    (threshold 0) and check what an answer is made of, and refusals are asked for with
    ``answer_threshold=1.0``. Whether the real model refuses the right questions is measured
    by the evaluation's integration test.
    """
    return Settings(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", answer_threshold=0.0)


@pytest.fixture
def fake_assistant(settings: Settings, fake_embedder: FakeEmbedder):
    from bilingual_qa import Assistant

    return Assistant(settings=settings, embedder=fake_embedder)


def real_settings(tmp_path: Path) -> Settings:
    """Settings for the real model: the shared model cache, a private index folder."""
    base = Settings.from_env()
    return base.replace(index_dir=tmp_path / "index", threads=min(2, base.threads))


@pytest.fixture(scope="session")
def real_embedder():
    """The real default model, loaded once per test session."""
    from bilingual_qa.embedding import load_embedder

    return load_embedder(Settings.from_env().replace(threads=min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def real_assistant(real_embedder, tmp_path_factory):
    from bilingual_qa import Assistant

    settings = real_settings(tmp_path_factory.mktemp("real"))
    return Assistant(settings=settings, embedder=real_embedder)
