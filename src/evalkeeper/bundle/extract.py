"""Read a bundle defensively: one streaming pass that hashes every member and refuses unsafe content.

Refused before anything is written outside a fresh temp folder: `..`, absolute and drive-letter paths,
backslashes, links, devices, FIFOs, directories, duplicate names (case-insensitive), pickles, unknown file
types, and size / entry-count / compression-ratio bombs. Members are only ever written inside that temp
folder, with O_EXCL|O_NOFOLLOW; members the manifest does not list are caught before the folder is handed
over (`safe_extract` deletes it on any problem).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from evalkeeper.bundle import _layout as L
from evalkeeper.core.errors import EvalkeeperError

CHUNK = 1 << 20
_KEEP_IN_MEMORY = (L.MARKER, L.RUN, L.METRICS, L.ENVIRONMENT, L.MANIFEST, L.STATEMENT, L.ENVELOPE)


@dataclass(frozen=True)
class Limits:
    """Caps against decompression bombs; generous for real runs (Parquet barely compresses further)."""

    max_entries: int = 100_000
    max_member_bytes: int = 64 << 30
    max_total_bytes: int = 256 << 30
    max_ratio: float = 200.0  # decompressed / compressed
    ratio_slack_bytes: int = 64 << 20  # small JSON-only bundles compress far better than 200x allows
    max_meta_bytes: int = 256 << 20  # JSON members held in memory (run, metrics, manifest, statement)


class BundleUnreadable(EvalkeeperError):
    """Not a bundle at all (missing file, not zstd, not tar): `verify` exits 2."""

    exit_code = 2


class UnsafeBundle(EvalkeeperError):
    """A bundle that is malicious or damaged in a way that makes reading it unsafe: `verify` exits 1."""

    exit_code = 1

    def __init__(self, member: str, message: str) -> None:
        self.member = member
        super().__init__(
            f"unsafe bundle member {member!r}: {message}",
            hint="the bundle was refused as a whole; nothing was extracted",
        )


@dataclass
class ScannedMember:
    name: str
    size: int
    sha256: str
    offset: int  # of its header in the tar stream


@dataclass
class Scan:
    path: Path
    file_size: int
    body_sha256: str  # of every byte before the trailer (what the trailer must claim)
    trailer_sha256: str | None  # what the trailer claims; None when there is no valid trailer
    file_sha256: str = ""  # of the whole file, as `sha256sum` prints it
    members: dict[str, ScannedMember] = field(default_factory=dict)
    meta: dict[str, bytes] = field(default_factory=dict)
    stream_error: str | None = None
    stream_error_member: str | None = None
    gaps: list[tuple[int, str]] = field(default_factory=list)  # unparseable tar data: (offset, after member)
    uncompressed_bytes: int = 0


class _RawReader:
    """The compressed bytes before the trailer, hashed as zstd consumes them."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self.f, self.left, self.sha = f, limit, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _BoundedReader:
    """Decompressed bytes, with the total and ratio caps enforced as they are produced."""

    def __init__(self, inner: IO[bytes], limits: Limits, compressed: int) -> None:
        self.inner, self.limits, self.n = inner, limits, 0
        self.cap = min(limits.max_total_bytes, int(limits.max_ratio * compressed) + limits.ratio_slack_bytes)

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n if n >= 0 else CHUNK)
        self.n += len(data)
        if self.n > self.cap:
            raise UnsafeBundle(
                "<archive>",
                f"decompresses to more than {self.cap} bytes (ratio or size cap; a decompression bomb?)",
            )
        return data


def _type_problem(info: tarfile.TarInfo) -> str | None:
    if info.islnk():
        return "hard link"
    if info.issym():
        return "symbolic link"
    if info.ischr() or info.isblk():
        return "device file"
    if info.isfifo():
        return "FIFO"
    if info.isdir():
        return "directory entry"
    if info.issparse() or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"unsupported tar member type {info.type!r}"
    return None


def _open_member_file(dest: Path, name: str) -> IO[bytes]:
    """Create dest/name exclusively, never following links (dest is a fresh folder we own)."""
    target = dest.joinpath(*name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.resolve() != dest.resolve().joinpath(*name.split("/")[:-1]):
        raise UnsafeBundle(name, "path escapes the extraction folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(target, flags, 0o644), "wb")


def scan_bundle(path: str | os.PathLike[str], *, limits: Limits = Limits(), dest: Path | None = None) -> Scan:
    """Stream through the bundle once; raise UnsafeBundle / BundleUnreadable, record damage in the Scan."""
    p = Path(path)
    try:
        f = open(p, "rb")
    except OSError as exc:
        raise BundleUnreadable(f"cannot open bundle ({exc.strerror})", path=str(p)) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != L.ZSTD_MAGIC:
            raise BundleUnreadable(
                "not an evalkeeper bundle (no zstd frame at the start)",
                path=str(p),
                hint="bundles are made by `evalkeeper bundle RUN -o run.ekb`",
            )
        claimed = None
        tail = b""
        if size >= L.TRAILER_LEN + 4:
            f.seek(size - L.TRAILER_LEN)
            tail = f.read(L.TRAILER_LEN)
            digest = L.parse_trailer(tail)
            claimed = digest.hex() if digest is not None else None
        f.seek(0)
        raw = _RawReader(f, size - L.TRAILER_LEN if claimed else size)
        scan = Scan(p, size, "", claimed)
        dctx = zstandard.ZstdDecompressor()
        reader = _BoundedReader(
            dctx.stream_reader(raw, read_across_frames=True, read_size=CHUNK),  # type: ignore[arg-type]
            limits,
            size,
        )
        try:
            _walk(scan, reader, limits, dest)
            raw.drain()
        finally:
            scan.uncompressed_bytes = reader.n
        scan.body_sha256 = raw.sha.hexdigest()
        whole = raw.sha.copy()
        if claimed:
            whole.update(tail)
        scan.file_sha256 = whole.hexdigest()
    return scan


def _walk(scan: Scan, reader: _BoundedReader, limits: Limits, dest: Path | None) -> None:
    try:
        tf = tarfile.open(fileobj=reader, mode="r|", ignore_zeros=True)  # type: ignore[call-overload]
    except zstandard.ZstdError as exc:  # damaged right at the start: nothing can be decompressed
        scan.stream_error, scan.stream_error_member = f"ZstdError: {exc}", "<archive start>"
        return
    except tarfile.TarError as exc:
        raise BundleUnreadable(f"zstd data that is not a tar archive ({exc})", path=str(scan.path)) from None
    seen: set[str] = set()
    declared = 0
    expected_offset = 0
    prev = "<start>"
    current = f"<tar header after {prev}>"
    entries = iter(tf)  # TarFile's own iteration knows when the stream has ended
    try:
        while True:
            current = f"<tar header after {prev}>"
            info = next(entries, None)
            if info is None:
                break
            if info.offset != expected_offset:
                scan.gaps.append((expected_offset, prev))
            name = info.name
            if len(seen) >= limits.max_entries:
                raise UnsafeBundle(name, f"more than {limits.max_entries} entries")
            why = _type_problem(info) or L.name_problem(name)
            if why:
                raise UnsafeBundle(name, why)
            if name.lower() in seen:
                raise UnsafeBundle(name, "duplicate member name")
            seen.add(name.lower())
            if info.size > limits.max_member_bytes:
                raise UnsafeBundle(
                    name, f"member of {info.size} bytes exceeds the {limits.max_member_bytes} cap"
                )
            declared += info.size
            if declared > limits.max_total_bytes:
                raise UnsafeBundle(name, f"members total more than {limits.max_total_bytes} bytes")
            current = name
            _read_member(scan, tf, info, limits, dest)
            prev = name
            expected_offset = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        scan.stream_error = f"{type(exc).__name__}: {exc}"
        scan.stream_error_member = current


def _read_member(
    scan: Scan, tf: tarfile.TarFile, info: tarfile.TarInfo, limits: Limits, dest: Path | None
) -> None:
    name = info.name
    src = tf.extractfile(info)
    assert src is not None  # regular file, checked by the caller
    sha = hashlib.sha256()
    keep = name in _KEEP_IN_MEMORY or name.startswith(L.TASKS_DIR)
    if keep and info.size > limits.max_meta_bytes:
        raise UnsafeBundle(name, f"metadata member larger than {limits.max_meta_bytes} bytes")
    kept = bytearray() if keep else None
    out = None
    first = True
    n = 0
    try:
        while True:
            block = src.read(CHUNK)
            if first:
                problem = L.content_problem(name, block[:4096])
                if problem:
                    raise UnsafeBundle(name, problem)
                first = False
                if dest is not None:
                    out = _open_member_file(dest, name)
            if not block:
                break
            n += len(block)
            sha.update(block)
            if kept is not None:
                kept += block
            if out is not None:
                out.write(block)
    finally:
        if out is not None:
            out.close()
    if n != info.size:
        raise EOFError(f"member {name!r} truncated ({n} of {info.size} bytes)")
    scan.members[name] = ScannedMember(name, info.size, sha.hexdigest(), info.offset)
    if kept is not None:
        scan.meta[name] = bytes(kept)


class ExtractedBundle:
    """A fully verified bundle extracted into a private temp folder; removed on close()."""

    def __init__(self, root: Path, scan: Scan) -> None:
        self.root, self.scan = root, scan

    def path(self, member: str) -> Path:
        if member not in self.scan.members:
            raise KeyError(member)
        return self.root.joinpath(*member.split("/"))

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ExtractedBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def safe_extract(
    path: str | os.PathLike[str],
    *,
    limits: Limits = Limits(),
    public_key_path: str | None = None,
    tmp_parent: str | os.PathLike[str] | None = None,
) -> ExtractedBundle:
    """Extract into a fresh temp folder only after every check passed; on any problem nothing remains."""
    from evalkeeper.bundle.verify import check_scan

    root = Path(tempfile.mkdtemp(prefix="ekb-extract-", dir=tmp_parent))
    try:
        scan = scan_bundle(path, limits=limits, dest=root)
        problems = check_scan(scan, public_key_path=public_key_path)
        if problems:
            first = problems[0]
            raise UnsafeBundle(
                first.member,
                first.message + (f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""),
            )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return ExtractedBundle(root, scan)


def extract_to(
    path: str | os.PathLike[str], dest: str | os.PathLike[str], *, limits: Limits = Limits()
) -> Path:
    """Verify and extract into `dest`, which must not exist yet (the temp folder is renamed into place)."""
    target = Path(dest)
    if target.exists():
        raise EvalkeeperError("destination already exists", path=str(target), hint="choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    ex = safe_extract(path, limits=limits, tmp_parent=target.parent)
    os.replace(ex.root, target)
    return target
