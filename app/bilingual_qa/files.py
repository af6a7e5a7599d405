"""Files: the one atomic writer, sha256 helper and cross-process lock every module uses."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    A reader sees the old file or the new one, never half of one; a failed write leaves no
    temporary file behind.

    Args:
        path: the file to (re)place; its folder is created.
        data: text (written as UTF-8) or bytes.
        mode: the file's permissions (``mkstemp`` would leave it private).

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the folder or file cannot be written; callers say which of their files it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path, error: type[Exception], what: str) -> object:
    """The JSON in a file, or ``error`` with one line naming ``what`` it was and why it failed.

    Args:
        path: the file.
        error: the exception to raise (one of the :mod:`bilingual_qa.errors` family).
        what: how the message names the file ("baseline", "the answerer's weights").
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (a folder, or a lock file created if missing).

    Excludes other processes and other threads alike (each call opens its own descriptor);
    the kernel releases it if the holder dies. Yields False where locking is unavailable
    (no flock, a read-only folder): callers must then cope with racing writers themselves.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone must do
        yield False
        return
    try:
        fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a filesystem without locks
            locked = False
        yield locked
    finally:
        os.close(fd)  # closing the descriptor releases the lock
