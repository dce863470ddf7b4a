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
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from evalkeeper.bundle import _layout as L
from evalkeeper.core.errors import EvalkeeperError

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
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
    body_crc32: int  # of every byte before the trailer
    trailer: tuple[int, int] | None  # (crc32, length) the trailer claims; None when there is no valid trailer
    file_sha256: str | None = None  # of the whole file, as `sha256sum` prints it (when asked for)
    members: dict[str, ScannedMember] = field(default_factory=dict)
    meta: dict[str, bytes] = field(default_factory=dict)
    stream_error: str | None = None
    stream_error_member: str | None = None
    gaps: list[tuple[int, str]] = field(default_factory=list)  # unparseable tar data: (offset, after member)
    uncompressed_bytes: int = 0


class _RawReader:
    """The compressed bytes before the trailer (zstd must not see the trailer)."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self.f, self.left = f, limit

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


class _FileHasher(threading.Thread):
    """CRC-32 of the file's first `limit` bytes (and the whole file's sha256 when asked), computed on a
    second thread while the main thread decompresses: zlib, hashlib and file reads release the GIL."""

    def __init__(self, path: Path, limit: int, want_sha256: bool) -> None:
        super().__init__(daemon=True)
        self.path, self.limit = path, limit
        self.crc = 0
        self.sha = hashlib.sha256() if want_sha256 else None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with open(self.path, "rb") as f:
                left = self.limit
                while left > 0 and not self._stop_event.is_set():
                    block = f.read(min(4 * CHUNK, left))
                    if not block:
                        break
                    self.crc = zlib.crc32(block, self.crc)
                    if self.sha is not None:
                        self.sha.update(block)
                    left -= len(block)
                if self.sha is not None:
                    self.sha.update(f.read())  # the trailer too: the digest of the whole file
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller via .error
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()


class _Inflater:
    """Decompressed bytes with exact-size reads, the consumed offset, and the bomb caps."""

    def __init__(self, inner: IO[bytes], limits: Limits, compressed: int) -> None:
        self.inner, self.n = inner, 0
        self.cap = min(limits.max_total_bytes, int(limits.max_ratio * compressed) + limits.ratio_slack_bytes)

    def read(self, n: int) -> bytes:
        """Exactly `n` bytes, or fewer only at the end of the stream."""
        data = self.inner.read(n)
        if len(data) < n and data:
            parts = [data]
            got = len(data)
            while got < n:
                more = self.inner.read(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
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


def scan_bundle(
    path: str | os.PathLike[str],
    *,
    limits: Limits = Limits(),
    dest: Path | None = None,
    file_sha256: bool = False,
) -> Scan:
    """Stream through the bundle once; raise UnsafeBundle / BundleUnreadable, record damage in the Scan.
    `file_sha256` also computes the whole file's sha256 (on the side thread)."""
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
        if size >= L.TRAILER_LEN + 4:
            f.seek(size - L.TRAILER_LEN)
            claimed = L.parse_trailer(f.read(L.TRAILER_LEN))
        f.seek(0)
        body = size - L.TRAILER_LEN if claimed else size
        hasher = _FileHasher(p, body, file_sha256)
        hasher.start()
        scan = Scan(p, size, 0, claimed)
        dctx = zstandard.ZstdDecompressor()
        raw = _RawReader(f, body)
        inflater = _Inflater(
            dctx.stream_reader(raw, read_across_frames=True, read_size=CHUNK),  # type: ignore[arg-type]
            limits,
            size,
        )
        try:
            _walk(scan, inflater, limits, dest)
        except BaseException:
            hasher.stop()
            raise
        finally:
            hasher.join()
            scan.uncompressed_bytes = inflater.n
        if hasher.error is not None:
            raise BundleUnreadable(f"cannot read bundle ({hasher.error})", path=str(p))
        scan.body_crc32 = hasher.crc
        scan.file_sha256 = hasher.sha.hexdigest() if hasher.sha is not None else None
    return scan


_ZERO_BLOCK = bytes(BLOCK)
_PAX_KEYS = frozenset(
    {"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment", "hdrcharset"}
)
MAX_PAX_BYTES = 1 << 20


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _parse_pax(raw: bytes) -> dict[str, str]:
    """POSIX pax records `LEN KEY=VALUE\n`; only keys a plain regular file can need are accepted."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        sp = raw.find(b" ", pos)
        if sp < 0 or not raw[pos:sp].isdigit():
            raise UnsafeBundle("<pax header>", "malformed pax extended header")
        length = int(raw[pos:sp])
        record = raw[sp + 1 : pos + length]
        if length <= 0 or pos + length > len(raw) or not record.endswith(b"\n") or b"=" not in record:
            raise UnsafeBundle("<pax header>", "malformed pax extended header")
        key, _, value = record[:-1].partition(b"=")
        k = key.decode("utf-8", "replace")
        if k not in _PAX_KEYS:
            raise UnsafeBundle("<pax header>", f"unsupported pax header key {k!r}")
        out[k] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _walk(scan: Scan, inf: _Inflater, limits: Limits, dest: Path | None) -> None:
    """A strict tar reader: regular files with ustar/pax headers only; damaged header blocks are skipped
    (and reported) so that later members can still be checked and named."""
    seen: set[str] = set()
    declared = 0
    offset = 0
    prev = "<start>"
    junk_at: int | None = None  # first unparseable block since the previous member
    pax: dict[str, str] = {}
    header_at: int | None = None
    current = "<archive start>"
    try:
        while True:
            current = f"<tar header after {prev}>" if seen else "<archive start>"
            block = inf.read(BLOCK)
            at, offset = offset, offset + len(block)
            if not block:
                break
            if len(block) < BLOCK:
                raise EOFError("archive ends inside a tar header block")
            if block == _ZERO_BLOCK:
                continue
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                junk_at = at if junk_at is None else junk_at
                continue
            if header_at is None:
                header_at = at
            if info.type == tarfile.XHDTYPE:
                if info.size > MAX_PAX_BYTES:
                    raise UnsafeBundle("<pax header>", "oversized pax extended header")
                raw = inf.read(_padded(info.size))
                offset += len(raw)
                pax = _parse_pax(raw[: info.size])
                continue
            if "path" in pax:
                info.name = pax["path"]
            if "size" in pax:
                if not pax["size"].isdigit():
                    raise UnsafeBundle(info.name, "malformed pax size")
                info.size = int(pax["size"])
            pax = {}
            if junk_at is not None:
                scan.gaps.append((junk_at, prev))
                junk_at = None
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
            _read_member(scan, inf, name, info.size, header_at, limits, dest)
            offset += _padded(info.size)
            header_at = None
            prev = name
        if junk_at is not None:
            scan.gaps.append((junk_at, prev))
    except (zstandard.ZstdError, EOFError, OSError) as exc:
        scan.stream_error = f"{type(exc).__name__}: {exc}"
        scan.stream_error_member = current


def _read_member(
    scan: Scan, inf: _Inflater, name: str, size: int, header_at: int, limits: Limits, dest: Path | None
) -> None:
    sha = hashlib.sha256()
    keep = name in _KEEP_IN_MEMORY or name.startswith(L.TASKS_DIR)
    if keep and size > limits.max_meta_bytes:
        raise UnsafeBundle(name, f"metadata member larger than {limits.max_meta_bytes} bytes")
    kept: list[bytes] | None = [] if keep else None
    out = None
    left = size
    try:
        block = inf.read(min(CHUNK, left))
        problem = L.content_problem(name, block[:4096])
        if problem:
            raise UnsafeBundle(name, problem)
        if dest is not None:
            out = _open_member_file(dest, name)
        while True:
            if len(block) < min(CHUNK, left):
                raise EOFError(f"member {name!r} truncated ({size - left + len(block)} of {size} bytes)")
            sha.update(block)
            if kept is not None:
                kept.append(block)
            if out is not None:
                out.write(block)
            left -= len(block)
            if not left:
                break
            block = inf.read(min(CHUNK, left))
    finally:
        if out is not None:
            out.close()
    pad = _padded(size) - size
    if pad and len(inf.read(pad)) != pad:
        raise EOFError(f"member {name!r} truncated (padding)")
    scan.members[name] = ScannedMember(name, size, sha.hexdigest(), header_at)
    if kept is not None:
        scan.meta[name] = b"".join(kept)


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
        scan = scan_bundle(path, limits=limits, dest=root, file_sha256=True)
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
