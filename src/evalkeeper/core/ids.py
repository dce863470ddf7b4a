"""Identifiers and fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from evalkeeper.core.records import utcnow


def new_run_id(prefix: str = "run") -> str:
    """Sortable, unique run id: `run-20261123-081500-1a2b3c`."""
    return f"{prefix}-{utcnow().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One digest over several files (sorted by name, each name and digest folded in)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (datasets rows, prompt templates, configs)."""
    return sha256_text(canonical_json(obj))


def stable_sample_id(*parts: Any) -> str:
    """A short stable id from the parts that identify a doc (used when the source has no id)."""
    return sha256_text(canonical_json(list(parts)))[:16]
