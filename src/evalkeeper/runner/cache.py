"""Response cache: SQLite in the workspace, keyed by sha256(model identity, request kind, full request).

A re-run of the same model on the same prompts with the same generation parameters costs no model
calls. Values are JSON (never pickle), so a cache file from someone else cannot execute code.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from evalkeeper.runner.backends.base import Result


class ResponseCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                         "created REAL NOT NULL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Result]:
        out: dict[str, Result] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(
                        f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                    out[key] = Result.from_json_dict(json.loads(value))
        return out

    def put_many(self, items: Iterable[tuple[str, Result]]) -> None:
        now = time.time()
        rows = [(k, json.dumps(r.to_json_dict()), now) for k, r in items]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)", rows)
            self._db.commit()

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
