"""The `.ekb` bundle layout: member names, the manifest, the checksum trailer, and member-name safety rules.

A bundle is one zstd frame holding a tar archive, followed by a 28-byte zstd *skippable* frame that
carries the CRC-32 and the length of every byte before it (standard zstd tools skip it, so
`tar --zstd -xf` works). CRC-32 detects every error burst up to 32 bits for certain, so "a flipped byte
anywhere" is caught even where no member changes (tar padding, zstd frame header), at a third of
sha256's cost; tampering on purpose is caught by the member sha256s, the manifest and the signature,
which name the member concerned.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from evalkeeper.core.ids import canonical_json

FORMAT = "evalkeeper-bundle"
FORMAT_VERSION = 1
EXTENSION = ".ekb"

MARKER = "evalkeeper-bundle.json"  # first member: lets importers detect a bundle from its first bytes
RUN = "run.json"
METRICS = "metrics.json"
ENVIRONMENT = "environment.json"
TASKS_DIR = "tasks/"
SAMPLES_DIR = "samples/"
REPORTS_DIR = "reports/"
REQUIREMENTS = "requirements.lock.txt"
DOCKERFILE = "Dockerfile"
REPRODUCE = "REPRODUCE.md"
MANIFEST = "manifest.json"
STATEMENT = "provenance.intoto.json"
ENVELOPE = "provenance.dsse.json"
# Members the manifest cannot list (it, and what is computed from it).
UNLISTED = frozenset({MANIFEST, STATEMENT, ENVELOPE})

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE_MAGIC = (0x184D2A5E).to_bytes(4, "little")
TRAILER_TAG = b"EKBCRC01"
_TRAILER_PAYLOAD = len(TRAILER_TAG) + 4 + 8
TRAILER_LEN = 4 + 4 + _TRAILER_PAYLOAD

# Only data formats that cannot carry executable code.
ALLOWED_SUFFIXES = frozenset(
    {
        ".json",
        ".jsonl",
        ".parquet",
        ".md",
        ".txt",
        ".html",
        ".pdf",
        ".png",
        ".svg",
        ".csv",
        ".yaml",
        ".yml",
        ".xml",
        ".css",
        ".js",
    }
)
ALLOWED_BARE_NAMES = frozenset({DOCKERFILE})
PICKLE_SUFFIXES = frozenset(
    {
        ".pkl",
        ".pickle",
        ".pck",
        ".pcl",
        ".p",
        ".joblib",
        ".dill",
        ".pt",
        ".pth",
        ".ckpt",
        ".bin",
        ".npy",
        ".npz",
    }
)
_NAME_CHARS = re.compile(r"^[A-Za-z0-9._+@=-]+$")
MAX_NAME_LEN = 255


def trailer_for(crc32: int, length: int) -> bytes:
    """zstd skippable frame: magic, payload length (LE), tag, CRC-32 (BE), body length (BE)."""
    payload = TRAILER_TAG + crc32.to_bytes(4, "big") + length.to_bytes(8, "big")
    return SKIPPABLE_MAGIC + len(payload).to_bytes(4, "little") + payload


def parse_trailer(blob: bytes) -> tuple[int, int] | None:
    """(crc32, length) carried by a trailer, or None if `blob` is not one."""
    if len(blob) != TRAILER_LEN or blob[:4] != SKIPPABLE_MAGIC:
        return None
    if int.from_bytes(blob[4:8], "little") != _TRAILER_PAYLOAD or blob[8:16] != TRAILER_TAG:
        return None
    return int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:28], "big")


def name_problem(name: str) -> str | None:
    """Why a member name is unsafe to extract anywhere, or None when it is fine."""
    if not name:
        return "empty member name"
    if "\x00" in name:
        return "NUL byte in member name"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "drive-letter path"
    if "\\" in name:
        return "backslash in path"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "parent-directory ('..') component"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    if len(name) > MAX_NAME_LEN:
        return f"name longer than {MAX_NAME_LEN} characters"
    if not all(_NAME_CHARS.match(p) for p in parts):
        return "characters outside [A-Za-z0-9._+@=-] in path"
    return None


def suffix_of(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


def content_problem(name: str, head: bytes) -> str | None:
    """Refuse pickles (by extension and by magic bytes) and anything outside the data-format allow-list."""
    suffix = suffix_of(name)
    if suffix in PICKLE_SUFFIXES:
        return f"pickle-capable file type {suffix!r} is refused (bundles never contain pickles)"
    if is_pickle_bytes(head):
        return "content is a Python pickle (refused: unpickling runs arbitrary code)"
    base = name.rsplit("/", 1)[-1]
    if suffix not in ALLOWED_SUFFIXES and base not in ALLOWED_BARE_NAMES:
        return f"file type {suffix or base!r} is not an allowed bundle data format"
    return None


def is_pickle_bytes(head: bytes) -> bool:
    """Pickle protocol 2-5 streams start with PROTO (0x80) and the protocol number; torch zips hold data.pkl."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    return head[:4] == b"PK\x03\x04" and b".pkl" in head[:4096]


@dataclass(frozen=True)
class MemberDigest:
    path: str
    size: int
    sha256: str


def build_manifest(members: list[MemberDigest], run_id: str, created_at: str) -> bytes:
    """Canonical JSON (sorted keys, no whitespace) with a self-digest, so any byte change is detectable."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "created_at": created_at,
        "files": [{"path": m.path, "size": m.size, "sha256": m.sha256} for m in members],
    }
    body["manifest_sha256"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return canonical_json(body).encode()


def parse_manifest(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, problem). A manifest must be exactly its canonical form and match its self-digest."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), list):
        return None, "not an evalkeeper bundle manifest"
    if canonical_json(data).encode() != raw:
        return None, "bytes differ from the manifest's canonical form (edited)"
    claimed = data.get("manifest_sha256")
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    if hashlib.sha256(canonical_json(body).encode()).hexdigest() != claimed:
        return None, "self-digest mismatch (edited)"
    for entry in data["files"]:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            return None, f"malformed file entry {entry!r}"
    return data, None


def marker_bytes(run_id: str) -> bytes:
    return canonical_json({"format": FORMAT, "format_version": FORMAT_VERSION, "run_id": run_id}).encode()


def json_bytes(obj: Any) -> bytes:
    """Human-readable, stable JSON for members people open (run.json, metrics.json ...)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()
