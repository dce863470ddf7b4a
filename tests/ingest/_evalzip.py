"""Test helper: write `.eval`-style zips with stored / deflate / zstd (method 93) members, and tamper with them.

Python 3.11's zipfile cannot write zstd members, so this writes the zip records itself (the same records
inspect_ai's zipfile_zstd patch writes: local header, data, central directory, ZIP64 end records).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import zstandard

from evalkeeper.ingest._zipread import ZipReader


def compress(data: bytes, method: int) -> bytes:
    if method == 93:
        obj = zstandard.ZstdCompressor(level=3).compressobj()
        return obj.compress(data) + obj.flush()
    if method == 8:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    return data


def write_zip(path: Path, members: list[tuple[str, bytes]], method: int = 93,
              size_override: dict[str, int] | None = None) -> Path:
    """Write `members` in order; `size_override` lies about a member's uncompressed size in both headers."""
    size_override = size_override or {}
    central = []
    with open(path, "wb") as f:
        for name, data in members:
            comp = compress(data, method)
            usize = size_override.get(name, len(data))
            raw = name.encode()
            offset = f.tell()
            crc = zlib.crc32(data)
            f.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 63, 0x800, method, 0, 0x5B77, crc, len(comp),
                                usize & 0xFFFFFFFF, len(raw), 0) + raw + comp)
            central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 63, 63, 0x800, method, 0, 0x5B77, crc,
                                       len(comp), usize & 0xFFFFFFFF, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        cd_offset = f.tell()
        for c in central:
            f.write(c)
        cd_size = f.tell() - cd_offset
        n = len(central)
        eocd64 = f.tell()
        f.write(struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_offset))
        f.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64, 1))
        f.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0))
    return path


def read_members(path: Path) -> list[tuple[str, bytes]]:
    with ZipReader(path) as z:
        return [(m.name, z.read(m)) for m in z.members()]


def methods(path: Path) -> set[int]:
    with ZipReader(path) as z:
        return {m.method for m in z.members()}
