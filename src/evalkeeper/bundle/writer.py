"""Write a run into one `.ekb` bundle: members are hashed while they stream into tar+zstd, and the file
appears at its final name only when complete (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.env import capture_environment
from evalkeeper.bundle.provenance import build_statement
from evalkeeper.bundle.repro import BaselineLineage, dockerfile, reproduce_markdown, requirements_lock
from evalkeeper.bundle.signing import key_id, load_private_key, sign_envelope
from evalkeeper.core.atomic import atomic_open
from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.ids import canonical_json
from evalkeeper.core.records import Run, utcnow
from evalkeeper.store import Workspace

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


@dataclass
class BundleResult:
    path: Path
    sha256: str  # of the whole .ekb file, as `sha256sum` prints it
    size: int
    manifest_sha256: str
    data_sha256: str
    members: list[L.MemberDigest] = field(default_factory=list)
    key_id: str | None = None
    uncompressed_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


class _HashingFile:
    """File-like sink that hashes and counts every byte written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.crc = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.sha.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.raw.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class TarZstdWriter:
    """Minimal streaming tar writer (regular files only, PAX headers when a name needs them)."""

    def __init__(self, sink: _HashingFile, level: int, threads: int, mtime: float) -> None:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads)
        self.z = cctx.stream_writer(sink, closefd=False, write_size=CHUNK)  # type: ignore[arg-type]
        self.mtime = int(mtime)
        self.offset = 0
        self.members: list[L.MemberDigest] = []
        self._names: set[str] = set()

    def _header(self, name: str, size: int) -> None:
        problem = L.name_problem(name)
        if problem or name.lower() in self._names:
            raise EvalkeeperError(f"internal: refusing bundle member {name!r}: {problem or 'duplicate'}")
        self._names.add(name.lower())
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.type = size, self.mtime, 0o644, tarfile.REGTYPE
        info.uname = info.gname = ""
        buf = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
        self.z.write(buf)
        self.offset += len(buf)

    def _pad(self, size: int) -> None:
        rem = size % BLOCK
        if rem:
            self.z.write(b"\0" * (BLOCK - rem))
            self.offset += BLOCK - rem
        # End the zstd block at each member boundary: a corrupt block then belongs to one member, so a
        # decompression error can be blamed on the right member (costs a few bytes per member).
        self.z.flush(zstandard.FLUSH_BLOCK)

    def add_bytes(self, name: str, data: bytes) -> L.MemberDigest:
        self._header(name, len(data))
        self.z.write(data)
        self.offset += len(data)
        self._pad(len(data))
        digest = L.MemberDigest(name, len(data), hashlib.sha256(data).hexdigest())
        self.members.append(digest)
        return digest

    def add_file(self, name: str, path: Path) -> L.MemberDigest:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4096)
            problem = L.content_problem(name, head)
            if problem:
                raise EvalkeeperError(f"cannot bundle {name}: {problem}", path=str(path))
            f.seek(0)
            self._header(name, size)
            sha = hashlib.sha256()
            left = size
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while left:
                n = f.readinto(view[: min(CHUNK, left)])
                if not n:
                    raise EvalkeeperError("file shrank while it was being bundled", path=str(path))
                sha.update(view[:n])
                self.z.write(view[:n])
                left -= n
        self.offset += size
        self._pad(size)
        digest = L.MemberDigest(name, size, sha.hexdigest())
        self.members.append(digest)
        return digest

    def close(self) -> None:
        end = 2 * BLOCK
        total = self.offset + end
        end += (-total) % RECORD
        self.z.write(b"\0" * end)
        self.offset += end
        self.z.close()  # type: ignore[no-untyped-call]  # ends the frame (with its checksum); the sink stays open (closefd=False)


def _safe_task_name(i: int, name: str) -> str:
    return f"{L.TASKS_DIR}{i:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}.json"


def _run_files(ws: Workspace, run_id: str) -> Iterable[tuple[str, Path]]:
    """Reports and other artifacts in the run folder (samples excluded, only allowed data formats)."""
    root = ws.run_dir(run_id)
    if not root.is_dir():
        return
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or not p.is_file() or rel.startswith("samples/") or "/." in f"/{rel}":
            continue
        name = rel if rel.startswith(L.REPORTS_DIR) else f"{L.REPORTS_DIR}{rel}"
        if L.name_problem(name) is None and L.content_problem(name, b"") is None:
            yield name, p


def baseline_lineage(ws: Workspace, run_id: str) -> list[BaselineLineage]:
    """Every named baseline whose history includes this run, with its whole history."""
    names_fn = getattr(ws.store, "baseline_names", None)
    out: list[BaselineLineage] = []
    for name in names_fn() if names_fn else []:
        hist = [
            (rid, at.isoformat() if hasattr(at, "isoformat") else str(at))
            for rid, at in ws.baseline_history(name)
        ]
        if any(rid == run_id for rid, _ in hist):
            out.append(BaselineLineage(name, hist))
    return out


def _environment_for(run: Run) -> dict[str, Any]:
    if run.environment:
        return run.environment
    env = capture_environment()
    env["note"] = (
        "The run recorded no environment snapshot; this one was captured when the bundle was "
        "created and may differ from the machine that produced the scores."
    )
    return env


def _bundler_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("evalkeeper")
    except md.PackageNotFoundError:
        return None


def create_bundle(
    ws: Workspace,
    run_ref: str,
    out: str | os.PathLike[str],
    *,
    sign_key: str | os.PathLike[str] | None = None,
    level: int = 3,
    threads: int = 0,
    record_in_workspace: bool = True,
) -> BundleResult:
    """Bundle run `run_ref` into `out`. Records the bundle's sha256 in the run's provenance."""
    run = ws.get_run(run_ref)
    key = load_private_key(sign_key) if sign_key else None  # fail before writing anything
    out_path = Path(out)
    if out_path.is_dir():
        out_path = out_path / f"{run.run_id}{L.EXTENSION}"
    metrics = ws.get_metrics(run.run_id)
    env = _environment_for(run)
    created_at = utcnow().isoformat()
    mtime = (run.finished_at or run.created_at).timestamp()

    with atomic_open(out_path, "wb") as raw:
        sink = _HashingFile(raw)
        tw = TarZstdWriter(sink, level, threads, mtime)
        tw.add_bytes(L.MARKER, L.marker_bytes(run.run_id))
        tw.add_bytes(L.RUN, L.json_bytes(run.model_dump(mode="json")))
        tw.add_bytes(L.METRICS, L.json_bytes([m.model_dump(mode="json") for m in metrics]))
        tw.add_bytes(L.ENVIRONMENT, L.json_bytes(env))
        for i, t in enumerate(run.tasks):
            tw.add_bytes(_safe_task_name(i, t.name), L.json_bytes(t.model_dump(mode="json")))
        for part in ws.sample_paths(run.run_id):
            tw.add_file(f"{L.SAMPLES_DIR}{part.name}", part)
        for name, path in _run_files(ws, run.run_id):
            tw.add_file(name, path)
        data_sha = hashlib.sha256(
            canonical_json([[m.path, m.sha256] for m in tw.members]).encode()
        ).hexdigest()
        tw.add_bytes(L.REQUIREMENTS, requirements_lock(env).encode())
        tw.add_bytes(L.DOCKERFILE, dockerfile(run, env).encode())
        tw.add_bytes(
            L.REPRODUCE,
            reproduce_markdown(
                run,
                env,
                content_digest=data_sha,
                lineage=baseline_lineage(ws, run.run_id),
                previous_bundle=run.provenance.bundle_sha256,
            ).encode(),
        )
        listed = list(tw.members)
        manifest = L.build_manifest(listed, run.run_id, created_at)
        manifest_sha = hashlib.sha256(manifest).hexdigest()
        manifest_digest = tw.add_bytes(L.MANIFEST, manifest)
        statement = build_statement(
            run,
            [*listed, manifest_digest],
            manifest_sha256=manifest_sha,
            bundled_by=_bundler_version(),
            created_at=created_at,
        )
        tw.add_bytes(L.STATEMENT, statement)
        if key is not None:
            tw.add_bytes(L.ENVELOPE, sign_envelope(statement, key))
        uncompressed = tw.offset
        tw.close()
        trailer = L.trailer_for(sink.crc, sink.size)
        raw.write(trailer)
        whole = sink.sha.copy()
        whole.update(trailer)
        size = sink.size + L.TRAILER_LEN

    result = BundleResult(
        out_path,
        whole.hexdigest(),
        size,
        manifest_sha,
        data_sha,
        listed,
        key_id(key.public_key()) if key else None,
        uncompressed,
    )
    if run.status != "complete":
        result.warnings.append(
            f"run {run.run_id} is {run.status!r}, not complete: the bundle holds the samples stored so far"
        )
    if record_in_workspace:
        prov = run.provenance.model_copy(update={"bundle_sha256": result.sha256})
        ws.save_run(run.model_copy(update={"provenance": prov}))
    return result


def describe_result(result: BundleResult) -> dict[str, Any]:
    return {
        "path": str(result.path),
        "sha256": result.sha256,
        "size": result.size,
        "manifest_sha256": result.manifest_sha256,
        "data_sha256": result.data_sha256,
        "members": len(result.members) + 2 + (1 if result.key_id else 0),
        "signed_by": result.key_id,
        "uncompressed_bytes": result.uncompressed_bytes,
        "warnings": result.warnings,
    }
