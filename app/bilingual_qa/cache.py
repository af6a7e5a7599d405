"""Cache: passage vectors kept across builds, so re-indexing encodes only what changed.

Encoding is nearly all of a build's cost. Every passage vector (a paragraph's, a sentence's)
is kept on disk under the hash of (model id, vector scheme, text): an edited document
re-encodes only its changed paragraphs and their sentences, a document seen before (an
upload sent again, an index folder pruned or damaged) costs no encoding at all.

One SQLite database per index folder: transactions make every write atomic (a killed
build leaves what it committed and nothing half-written), and a busy timeout makes readers
and writers in other threads and processes wait their turn (writes are a chunk of vectors,
milliseconds). Bounded: beyond ``max_bytes`` the least recently used vectors are dropped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .files import sha256_bytes

log = logging.getLogger(__name__)

FILENAME = "vectors.sqlite"
#: Bytes a row costs beside its vector: key, timestamp, SQLite's own bookkeeping.
ROW_OVERHEAD = 120
#: Rows looked up or written per statement (SQLite's parameter limit is 32,766).
CHUNK = 500


#: Tries at opening the database before building without it.
OPEN_ATTEMPTS = 20


def _open(path: Path) -> sqlite3.Connection:
    """The cache database, its table created (in a write transaction taken up front)."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB, used REAL)")
        db.execute("CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used)")
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


class VectorCache:
    """Passage vectors by (model id, scheme, text), on disk, shared by threads and processes.

    Args:
        path: the database file (created with its folder).
        model_id: the model whose vectors these are.
        scheme: how vectors are made (windows, pooling): a change makes a new key space.
        max_bytes: the budget; the least recently used rows are dropped beyond it.

    A cache that cannot be opened or written is no cache: every lookup misses, every write
    is skipped with a warning, and the build goes on (it only gets slower).
    """

    def __init__(self, path: Path, model_id: str, scheme: str, max_bytes: int) -> None:
        self.path = path
        self._prefix = f"{model_id}\x00{scheme}\x00".encode()
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        for attempt in range(OPEN_ATTEMPTS):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = _open(path)
                break
            except sqlite3.OperationalError as exc:
                # Two processes creating a new cache together can meet "database is locked" at
                # once, before the busy timeout applies: a fresh connection a moment later works.
                if "locked" in str(exc) and attempt + 1 < OPEN_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                log.warning("vector cache %s unavailable (%s): building without it", path, exc)
                break
            except (OSError, sqlite3.Error) as exc:
                log.warning("vector cache %s unavailable (%s): building without it", path, exc)
                break

    def _key(self, text: str) -> bytes:
        return bytes.fromhex(sha256_bytes(self._prefix + text.encode("utf-8", "surrogatepass")))

    def get(self, texts: Sequence[str], dimension: int) -> dict[str, np.ndarray]:
        """The cached vectors of those ``texts`` that have one (and marks them used)."""
        if self._db is None or not texts:
            return {}
        keys = {self._key(t): t for t in dict.fromkeys(texts)}
        found: dict[str, np.ndarray] = {}
        try:
            with self._lock:
                rows = []
                for start in range(0, len(keys), CHUNK):
                    batch = list(keys)[start : start + CHUNK]
                    marks = ",".join("?" * len(batch))
                    rows += self._db.execute(
                        f"SELECT key, vector FROM vectors WHERE key IN ({marks})", batch
                    ).fetchall()
                now = time.time()
                self._db.executemany("UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k, _ in rows])
        except sqlite3.Error as exc:
            log.warning("vector cache %s unreadable (%s): encoding instead", self.path, exc)
            return {}
        for key, blob in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape == (dimension,) and np.isfinite(vector).all():  # a damaged row is a miss
                found[keys[key]] = vector
        return found

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Keep ``vectors`` (one row per text), then drop the least recently used beyond the budget."""
        if self._db is None or not len(texts):
            return
        now = time.time()
        rows = [
            (self._key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes(), now)
            for t, v in zip(texts, vectors, strict=True)
        ]
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
                    self._trim(len(rows[0][1]))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            log.warning("vector cache %s not written (%s)", self.path, exc)

    def _trim(self, vector_bytes: int) -> None:
        """Drop the least recently used rows beyond ``max_bytes`` (inside the caller's transaction)."""
        limit = max(1, self.max_bytes // (vector_bytes + ROW_OVERHEAD))
        (count,) = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()  # type: ignore[union-attr]
        if count > limit:
            self._db.execute(  # type: ignore[union-attr]
                "DELETE FROM vectors WHERE key IN (SELECT key FROM vectors ORDER BY used LIMIT ?)",
                (count - limit,),
            )

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        """Close the database (also done when the cache is garbage-collected)."""
        if self._db is not None:
            with self._lock:
                self._db.close()
                self._db = None
