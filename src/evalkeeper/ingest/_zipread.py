"""A small streaming zip reader for inspect_ai `.eval` logs.

Python < 3.14's `zipfile` cannot open members compressed with zstd (zip method 93), which is what current
inspect_ai writes, and its `ZipFile` keeps one `ZipInfo` object per member (hundreds of MB for a
million-sample log). This reader parses the central directory itself (ZIP64 included), keeps only the
offsets it needs, and decompresses one member at a time (stored, deflate or zstd) with size limits, so a
corrupted or hostile archive fails with `ImportFormatError` instead of exhausting memory.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from evalkeeper.core.errors import ImportFormatError

METHOD_STORED = 0
METHOD_DEFLATE = 8
METHOD_ZSTD = 93

# One log member (a sample with all its events) larger than this is treated as a zip bomb.
MAX_MEMBER_BYTES = 512 * 1024 * 1024

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_ZSTD_UNKNOWN_SIZE = 2**64 - 1
_CENTRAL_FMT = struct.Struct("<4s6H3I5H2I")  # 46 bytes
_LOCAL_FMT = struct.Struct("<4s5H3I2H")  # 30 bytes


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of the central directory."""

    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    file_size: int
    header_offset: int


class ZipReader:
    """Random and sequential access to members of one zip file; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
        self.path = str(path)
        self.max_member_bytes = max_member_bytes
        try:
            self._f: BinaryIO = open(self.path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise ImportFormatError(f"cannot read file: {e.strerror or e}", path=self.path) from None
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            self._cd_offset, self._cd_size, self.count = self._find_central_directory()
        except BaseException:
            self._f.close()
            raise
        self._zstd = zstandard.ZstdDecompressor()

    # -- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def _fail(self, what: str) -> ImportFormatError:
        return ImportFormatError(f"not a readable .eval zip: {what}", path=self.path,
                                 hint="the file may be truncated or corrupted; re-copy it from the source")

    # -- central directory -----------------------------------------------------------------------------
    def _find_central_directory(self) -> tuple[int, int, int]:
        tail_len = min(self.size, 22 + 65535)
        if tail_len < 22:
            raise self._fail("file too short for a zip end record")
        self._f.seek(self.size - tail_len)
        tail = self._f.read(tail_len)
        pos = tail.rfind(_EOCD)
        if pos < 0 or pos + 22 > len(tail):
            raise self._fail("no zip end-of-central-directory record (truncated?)")
        (_, _disk, _cd_disk, _n_here, count, cd_size, cd_offset, _clen) = struct.unpack_from(
            "<4s4H2IH", tail, pos
        )
        eocd_abs = self.size - tail_len + pos
        if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            loc = eocd_abs - 20
            if loc < 0:
                raise self._fail("ZIP64 locator missing")
            self._f.seek(loc)
            locator = self._f.read(20)
            if len(locator) != 20 or locator[:4] != _EOCD64_LOCATOR:
                raise self._fail("ZIP64 locator missing")
            (eocd64_off,) = struct.unpack_from("<Q", locator, 8)
            if eocd64_off + 56 > self.size:
                raise self._fail("ZIP64 end record points past end of file")
            self._f.seek(eocd64_off)
            rec = self._f.read(56)
            if rec[:4] != _EOCD64:
                raise self._fail("ZIP64 end record missing")
            count, cd_size, cd_offset = struct.unpack_from("<QQQ", rec, 32)
        if cd_offset + cd_size > self.size:
            raise self._fail("central directory points past end of file (truncated?)")
        if count * 46 > cd_size:
            raise self._fail("central directory smaller than its member count")
        return cd_offset, cd_size, count

    def members(self) -> Iterator[Member]:
        """Central-directory entries in archive order, read in chunks (never all at once)."""
        f = self._f
        pos = self._cd_offset
        end = self._cd_offset + self._cd_size
        buf = b""
        bpos = 0
        chunk = 4 << 20
        seen = 0
        while seen < self.count:
            if len(buf) - bpos < 46:
                f.seek(pos)
                buf = buf[bpos:] + f.read(min(chunk, end - pos))
                pos = min(end, pos + chunk)
                bpos = 0
                if len(buf) < 46:
                    raise self._fail("central directory truncated")
            (sig, _vmade, _vneed, flags, method, _t, _d, crc, csize, usize, nlen, elen, clen, _disk, _iattr,
             _eattr, offset) = _CENTRAL_FMT.unpack_from(buf, bpos)
            if sig != _CENTRAL:
                raise self._fail(f"bad central directory entry #{seen}")
            need = 46 + nlen + elen + clen
            while len(buf) - bpos < need:
                if pos >= end:
                    raise self._fail("central directory truncated")
                f.seek(pos)
                buf = buf[bpos:] + f.read(min(chunk, end - pos))
                pos = min(end, pos + chunk)
                bpos = 0
            raw_name = buf[bpos + 46 : bpos + 46 + nlen]
            if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or offset == 0xFFFFFFFF:
                usize, csize, offset = self._zip64_extra(
                    buf[bpos + 46 + nlen : bpos + 46 + nlen + elen], usize, csize, offset
                )
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
            bpos += need
            seen += 1
            yield Member(name, method, flags, crc, csize, usize, offset)

    def _zip64_extra(self, extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
        i = 0
        while i + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, i)
            if tag == 1:
                data = extra[i + 4 : i + 4 + size]
                vals = [struct.unpack_from("<Q", data, k)[0] for k in range(0, len(data) - 7, 8)]
                it = iter(vals)
                try:
                    if usize == 0xFFFFFFFF:
                        usize = next(it)
                    if csize == 0xFFFFFFFF:
                        csize = next(it)
                    if offset == 0xFFFFFFFF:
                        offset = next(it)
                except StopIteration:
                    raise self._fail("ZIP64 extra field too short") from None
                return usize, csize, offset
            i += 4 + size
        raise self._fail("ZIP64 sizes missing from central directory entry")

    # -- member data -----------------------------------------------------------------------------------
    def read(self, m: Member) -> bytes:
        """The decompressed bytes of member `m`, checked against its size and CRC."""
        self._check_claims(m.name, m.flags, m.compressed_size, m.file_size, m.header_offset)
        f = self._f
        f.seek(m.header_offset)
        head = f.read(30)
        skip = self._local_skip(m.name, head)
        if skip:
            f.seek(skip, os.SEEK_CUR)
        data = f.read(m.compressed_size)
        if len(data) != m.compressed_size:
            raise self._fail(f"member {m.name!r} truncated")
        return self._inflate(m.name, m.method, m.crc, m.file_size, data)

    def _check_claims(self, name: str, flags: int, compressed_size: int, file_size: int, offset: int) -> None:
        if file_size > self.max_member_bytes:
            raise self._fail(
                f"member {name!r} claims {file_size} bytes uncompressed "
                f"(limit {self.max_member_bytes}); refusing to inflate it"
            )
        if offset + 30 + compressed_size > self.size:
            raise self._fail(f"member {name!r} extends past end of file (truncated?)")
        if flags & 0x1:
            raise self._fail(f"member {name!r} is encrypted")

    def _local_skip(self, name: str, head: bytes) -> int:
        """Bytes of name and extra field after the 30-byte local header."""
        if len(head) != 30 or head[:4] != _LOCAL:
            raise self._fail(f"bad local header for member {name!r}")
        nlen, elen = _LOCAL_FMT.unpack_from(head)[9:11]
        return int(nlen + elen)

    def _inflate(self, name: str, method: int, crc: int, file_size: int, data: bytes | memoryview) -> bytes:
        """Decompress one member's data and check it against the directory's size and CRC."""
        try:
            if method == METHOD_ZSTD:
                # A frame that states its size is inflated to that size whatever max_output_size says,
                # so check the claim before trusting it.
                claimed = zstandard.get_frame_parameters(data).content_size
                if claimed != _ZSTD_UNKNOWN_SIZE and claimed != file_size:
                    raise self._fail(f"member {name!r}: zstd frame claims {claimed} bytes, "
                                     f"directory says {file_size}")
                out = self._zstd.decompress(data, max_output_size=file_size + 1)
            elif method == METHOD_DEFLATE:
                d = zlib.decompressobj(-15)
                out = d.decompress(data, file_size + 1)
                if not d.eof:
                    raise self._fail(f"member {name!r}: deflate stream incomplete or larger than declared")
            elif method == METHOD_STORED:
                out = bytes(data)
            else:
                raise self._fail(f"member {name!r} uses unsupported compression method {method}")
        except (zstandard.ZstdError, zlib.error) as e:
            raise self._fail(f"member {name!r} does not decompress: {e}") from None
        if len(out) != file_size:
            raise self._fail(f"member {name!r} is {len(out)} bytes, directory says {file_size}")
        if zlib.crc32(out) != crc:
            raise self._fail(f"member {name!r} fails its CRC check")
        return out
