"""Build bundles by hand (valid, edited or malicious) for the bundle tests."""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import zstandard

from evalkeeper.bundle import _layout as L


def compress_with_trailer(tar_bytes: bytes) -> bytes:
    body = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(tar_bytes)
    return body + L.trailer_for(zlib.crc32(body), len(body))


def read_tar(ekb: Path) -> bytes:
    raw = ekb.read_bytes()[: -L.TRAILER_LEN]
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()


def members(ekb: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(read_tar(ekb)), mode="r:") as tf:
        for info in tf.getmembers():
            f = tf.extractfile(info) if info.isreg() else None
            out.append((info, f.read() if f else b""))
    return out


def build_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def regular(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def rewrite(src: Path, dst: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A bundle made of `entries`, with a correct trailer (as a forger with no key would make it)."""
    dst.write_bytes(compress_with_trailer(build_tar(entries)))
    return dst


def with_prefix(src: Path, dst: Path, extra: list[tuple[tarfile.TarInfo, bytes]], *, at: int = 1) -> Path:
    """The bundle's own members with `extra` inserted at position `at` (default: right after the marker)."""
    ms = members(src)
    return rewrite(src, dst, ms[:at] + extra + ms[at:])
