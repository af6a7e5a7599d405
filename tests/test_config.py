from pathlib import Path

import pytest

from bilingual_qa.config import DEFAULT_MODEL, Settings
from bilingual_qa.errors import ConfigError


def test_defaults():
    s = Settings.from_env({})
    assert s.model == DEFAULT_MODEL
    assert s.threads >= 1
    assert s.document is None


def test_environment_then_overrides():
    env = {"BILINGUAL_QA_TOP_K": "7", "BILINGUAL_QA_MODEL": "some/model", "BILINGUAL_QA_INDEX_DIR": "/tmp/x"}
    s = Settings.from_env(env)
    assert (s.top_k, s.model, s.index_dir) == (7, "some/model", Path("/tmp/x"))
    s = Settings.from_env(env, top_k=3, model=None)
    assert (s.top_k, s.model) == (3, "some/model")


def test_replace_ignores_none_and_coerces():
    s = Settings.from_env({}).replace(threads="3", document="a.txt", model=None)
    assert s.threads == 3 and s.document == Path("a.txt") and s.model == DEFAULT_MODEL


def test_answer_threshold_is_optional_and_read_from_the_environment():
    assert Settings.from_env({}).answer_threshold is None  # the fitted model's own
    s = Settings.from_env({"BILINGUAL_QA_ANSWER_THRESHOLD": "0.35"})
    assert s.answer_threshold == pytest.approx(0.35)
    assert s.replace(answer_threshold=0.8).answer_threshold == pytest.approx(0.8)


@pytest.mark.parametrize(
    "env",
    [
        {"BILINGUAL_QA_TOP_K": "many"},
        {"BILINGUAL_QA_THREADS": "0"},
        {"BILINGUAL_QA_ANSWER_THRESHOLD": "1.5"},
        {"BILINGUAL_QA_ANSWER_THRESHOLD": "-0.1"},
        {"BILINGUAL_QA_ANSWER_THRESHOLD": "high"},
    ],
)
def test_bad_values_raise_config_error(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).top_k = 2  # type: ignore[misc]
