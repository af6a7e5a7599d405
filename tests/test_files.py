"""Files: the atomic writer never leaves half a file or a temporary one; sha256 agrees with hashlib."""

import hashlib
import os

import pytest

from bilingual_qa.files import atomic_write, sha256_bytes, sha256_file


def test_atomic_write_replaces_text_and_bytes_and_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    atomic_write(path, "重慶 first")
    assert path.read_text(encoding="utf-8") == "重慶 first"
    atomic_write(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    atomic_write(path, "old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]


def test_sha256_helpers_agree_with_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # more than one read block
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_bytes(data) == expected == sha256_file(path)


def test_read_json_errors_name_the_file_in_the_callers_family(tmp_path):
    from bilingual_qa.errors import ConfigError
    from bilingual_qa.files import read_json

    good = tmp_path / "ok.json"
    good.write_text('{"a": [1, "重慶"]}', encoding="utf-8")
    assert read_json(good, ConfigError, "weights") == {"a": [1, "重慶"]}
    with pytest.raises(ConfigError, match=r"cannot read weights .*missing\.json"):
        read_json(tmp_path / "missing.json", ConfigError, "weights")
    (tmp_path / "bad.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"weights .*bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json", ConfigError, "weights")
