"""The central directory of a big zip as columns: what a million-member `.eval` log needs, fast and compact.

`ZipReader.members()` makes one `Member` per entry, which is fine for the few header members but costs
seconds for a million samples. `scan_directory` walks the directory in chunks with one `struct` call per
entry (the entries have variable length, so their positions must be found one by one) and takes every
field at once with numpy; the members of interest land in a `MemberTable` (about 60 bytes each), the
rest come back as ordinary `Member`s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from evalkeeper.ingest._zipread import Member, ZipReader

_SIZES = struct.Struct("<3H")  # name, extra and comment lengths at offset 28 of a central entry
_CHUNK = 4 << 20


@dataclass
class MemberTable:
    """Columns of the kept members, in archive order (a name given twice keeps only its last entry,
    which is what name lookup in a zip resolves to and how inspect re-logs a sample)."""

    method: np.ndarray
    flags: np.ndarray
    crc: np.ndarray
    compressed_size: np.ndarray
    file_size: np.ndarray
    header_offset: np.ndarray
    name_end: np.ndarray  # end of each name in `names`
    names: bytes
    utf8: np.ndarray

    def __len__(self) -> int:
        return len(self.method)

    def name(self, k: int) -> str:
        start = int(self.name_end[k - 1]) if k else 0
        raw = self.names[start : int(self.name_end[k])]
        return raw.decode("utf-8" if self.utf8[k] else "cp437", errors="replace")

    def member(self, k: int) -> Member:
        return Member(self.name(k), int(self.method[k]), int(self.flags[k]), int(self.crc[k]),
                      int(self.compressed_size[k]), int(self.file_size[k]), int(self.header_offset[k]))

    def __iter__(self) -> Iterator[Member]:
        for k in range(len(self)):
            yield self.member(k)

    def take(self, keep: np.ndarray) -> MemberTable:
        starts = np.concatenate([[0], self.name_end[:-1]]) if len(self.name_end) else self.name_end
        lens = self.name_end - starts
        arr = np.frombuffer(self.names, dtype=np.uint8)
        names = _ragged(arr, starts[keep], lens[keep])
        return MemberTable(self.method[keep], self.flags[keep], self.crc[keep], self.compressed_size[keep],
                           self.file_size[keep], self.header_offset[keep], np.cumsum(lens[keep]),
                           names, self.utf8[keep])


def _ragged(arr: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> bytes:
    """The byte ranges [starts, starts + lens) of `arr`, concatenated."""
    total = int(lens.sum())
    if not total:
        return b""
    before = np.concatenate([[0], np.cumsum(lens)[:-1]])
    idx = np.arange(total, dtype=np.int64) + np.repeat(starts.astype(np.int64) - before, lens)
    return bytes(arr[idx].tobytes())


def _field(arr: np.ndarray, pos: np.ndarray, offset: int, dtype: str) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    raw = arr[(pos + offset)[:, None] + np.arange(width)]
    return raw.copy().view(dtype).ravel()


def scan_directory(z: ZipReader, prefix: bytes, suffix: bytes) -> tuple[MemberTable, list[Member]]:
    """Entries whose raw name is `prefix` + at least one byte + `suffix` as a table; all others as Members."""
    f = z._f
    pos_in_file = z._cd_offset
    end = z._cd_offset + z._cd_size
    buf = b""
    seen = 0
    tables: list[MemberTable] = []
    others: list[Member] = []
    while seen < z.count:
        f.seek(pos_in_file)
        more = f.read(min(_CHUNK, end - pos_in_file))
        pos_in_file += len(more)
        buf += more
        positions, used = _walk(buf, z.count - seen)
        if not positions:
            if not more or pos_in_file >= end:
                raise z._fail("central directory truncated")
            continue
        table, rest = _chunk(z, buf, np.asarray(positions, dtype=np.int64), seen, prefix, suffix)
        tables.append(table)
        others.extend(rest)
        seen += len(positions)
        buf = buf[used:]
        if seen < z.count and pos_in_file >= end and len(buf) < 46:
            raise z._fail("central directory truncated")
    return _dedupe(_concat(tables)), others


def _walk(buf: bytes, limit: int) -> tuple[list[int], int]:
    """Start positions of the complete entries in `buf` (at most `limit`) and the bytes they span."""
    positions: list[int] = []
    p = 0
    n = len(buf)
    unpack = _SIZES.unpack_from
    while len(positions) < limit and p + 46 <= n:
        nl, el, cl = unpack(buf, p + 28)
        nxt = p + 46 + nl + el + cl
        if nxt > n:
            break
        positions.append(p)
        p = nxt
    return positions, p


def _chunk(z: ZipReader, buf: bytes, pos: np.ndarray, seen: int, prefix: bytes,
           suffix: bytes) -> tuple[MemberTable, list[Member]]:
    arr = np.frombuffer(buf, dtype=np.uint8)
    sig = _field(arr, pos, 0, "<u4")
    bad = np.flatnonzero(sig != 0x02014B50)
    if bad.size:
        raise z._fail(f"bad central directory entry #{seen + int(bad[0])}")
    flags = _field(arr, pos, 8, "<u2").astype(np.int64)
    method = _field(arr, pos, 10, "<u2").astype(np.int64)
    crc = _field(arr, pos, 16, "<u4").astype(np.int64)
    csize = _field(arr, pos, 20, "<u4").astype(np.int64)
    usize = _field(arr, pos, 24, "<u4").astype(np.int64)
    nlen = _field(arr, pos, 28, "<u2").astype(np.int64)
    elen = _field(arr, pos, 30, "<u2").astype(np.int64)
    offset = _field(arr, pos, 42, "<u4").astype(np.int64)
    big = np.flatnonzero((usize == 0xFFFFFFFF) | (csize == 0xFFFFFFFF) | (offset == 0xFFFFFFFF))
    for k in big.tolist():  # ZIP64: the real sizes / offset sit in the extra field
        start = int(pos[k]) + 46 + int(nlen[k])
        usize[k], csize[k], offset[k] = z._zip64_extra(buf[start : start + int(elen[k])], int(usize[k]),
                                                       int(csize[k]), int(offset[k]))
    name_start = pos + 46
    want = nlen >= len(prefix) + len(suffix) + 1
    if prefix:
        cand = np.flatnonzero(want)
        head = arr[name_start[cand][:, None] + np.arange(len(prefix))]
        want[cand] = (head == np.frombuffer(prefix, dtype=np.uint8)).all(axis=1)
    if suffix:
        cand = np.flatnonzero(want)
        tail = arr[(name_start[cand] + nlen[cand] - len(suffix))[:, None] + np.arange(len(suffix))]
        want[cand] = (tail == np.frombuffer(suffix, dtype=np.uint8)).all(axis=1)
    keep = np.flatnonzero(want)
    utf8 = (flags & 0x800) != 0
    table = MemberTable(method[keep], flags[keep], crc[keep], csize[keep], usize[keep], offset[keep],
                        np.cumsum(nlen[keep]), _ragged(arr, name_start[keep], nlen[keep]), utf8[keep])
    others = []
    for k in np.flatnonzero(~want).tolist():
        raw = buf[int(name_start[k]) : int(name_start[k]) + int(nlen[k])]
        name = raw.decode("utf-8" if utf8[k] else "cp437", errors="replace")
        others.append(Member(name, int(method[k]), int(flags[k]), int(crc[k]), int(csize[k]), int(usize[k]),
                             int(offset[k])))
    return table, others


def _concat(tables: list[MemberTable]) -> MemberTable:
    if not tables:
        e = np.zeros(0, dtype=np.int64)
        return MemberTable(e, e, e, e, e, e, e, b"", np.zeros(0, dtype=bool))
    if len(tables) == 1:
        return tables[0]
    shift = np.cumsum([0] + [len(t.names) for t in tables[:-1]])

    def cat(field: str) -> np.ndarray:
        return np.concatenate([getattr(t, field) for t in tables])

    return MemberTable(cat("method"), cat("flags"), cat("crc"), cat("compressed_size"), cat("file_size"),
                       cat("header_offset"),
                       np.concatenate([t.name_end + s for t, s in zip(tables, shift, strict=True)]),
                       b"".join(t.names for t in tables), cat("utf8"))


def _dedupe(t: MemberTable) -> MemberTable:
    """Keep only the last entry of a name given more than once (rare: a sample logged again)."""
    n = len(t)
    if n < 2:
        return t
    offsets = np.concatenate([[0], t.name_end]).astype(np.int64)
    names = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(t.names)])
    if len(names.unique()) == n:
        return t
    last = {name: k for k, name in enumerate(names.to_pylist())}
    return t.take(np.array(sorted(last.values()), dtype=np.int64))


def read_table(z: ZipReader, t: MemberTable, *, start: int = 0, stop: int | None = None,
               window: int = 16 << 20, chunk: int = 256) -> Iterator[list[tuple[str, bytes]]]:
    """(name, decompressed bytes) of members `start:stop` of `t`, in lists of up to `chunk`, reading the file in
    windows of `window` bytes: members stored one after another cost no seek or read call of their own.
    Decompression and the CRC check release the GIL, so this is meant to run in a background thread."""
    f = z._f
    buf = memoryview(b"")
    buf_at = 0  # file offset of buf[0]
    out: list[tuple[str, bytes]] = []
    stop = len(t) if stop is None else min(stop, len(t))
    for lo_k in range(start, stop, chunk):
        hi_k = min(stop, lo_k + chunk)
        cols = zip(range(lo_k, hi_k), t.method[lo_k:hi_k].tolist(), t.flags[lo_k:hi_k].tolist(),
                   t.crc[lo_k:hi_k].tolist(), t.compressed_size[lo_k:hi_k].tolist(),
                   t.file_size[lo_k:hi_k].tolist(), t.header_offset[lo_k:hi_k].tolist(), strict=True)
        for k, method, flags, crc, csize, usize, lo in cols:
            name = t.name(k)
            z._check_claims(name, flags, csize, usize, lo)
            if lo < buf_at or lo + 30 > buf_at + len(buf):
                f.seek(lo)
                buf, buf_at = memoryview(f.read(max(window, 30 + 2 * 65535 + csize))), lo
            at = lo - buf_at
            skip = z._local_skip(name, bytes(buf[at : at + 30]))
            at += 30 + skip
            if at + csize > len(buf):
                f.seek(lo)
                buf, buf_at = memoryview(f.read(max(window, 30 + skip + csize))), lo
                at = 30 + skip
                if at + csize > len(buf):
                    raise z._fail(f"member {name!r} truncated")
            out.append((name, z._inflate(name, method, crc, usize, buf[at : at + csize])))
        yield out
        out = []
