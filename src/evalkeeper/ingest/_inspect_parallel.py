"""Read the samples of a big `.eval` log in worker processes, one per core.

Per sample, parsing the JSON and picking out the stored fields is Python work that holds the GIL (tens of
microseconds), so threads cannot spread it over cores; processes can. Each worker is a plain
`python -m evalkeeper.ingest._inspect_parallel` child (no multiprocessing: nothing of the caller's
`__main__` is re-run, no fork of a threaded process). It is sent the member table once, then ranges of
members; for each range it reads, decompresses, CRC-checks and parses the members and sends back one Arrow
table of rows. The parent hands the ranges out round-robin with two in flight per worker and reads the
results back in order, so rows keep archive order.

A bad sample makes the worker send the `ImportFormatError` text, which the parent raises naming the file.
A worker that cannot start or dies raises `WorkersFailed`, carrying how many members were delivered, so
the caller can read the rest in-process.

Nothing crosses the pipes as pickle: a message is a JSON header plus binary parts, and tables (the member
table, the rows) travel as Arrow IPC streams, which carry data only.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest._zipindex import MemberTable

_LEN = struct.Struct("<Q")
IN_FLIGHT = 2  # ranges queued per worker
_MAX_HEADER = 1 << 20
_MEMBER_COLUMNS = ("method", "flags", "crc", "compressed_size", "file_size", "header_offset", "name_end", "utf8")


class WorkersFailed(Exception):
    """A worker could not start or stopped without an answer; `done` members were delivered before."""

    def __init__(self, done: int, why: str) -> None:
        super().__init__(why)
        self.done = done


class _Garbled(Exception):
    """A message on a worker pipe is not in the expected framing."""


def _send(f: IO[bytes], header: dict[str, Any], *parts: bytes) -> None:
    """One message: the JSON header, then each binary part, all length-prefixed."""
    head = json.dumps({**header, "parts": len(parts)}).encode()
    f.write(_LEN.pack(len(head)))
    f.write(head)
    for part in parts:
        f.write(_LEN.pack(len(part)))
        f.write(part)
    f.flush()


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _recv(f: IO[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    (n,) = _LEN.unpack(_read_exact(f, _LEN.size))
    if n > _MAX_HEADER:
        raise _Garbled(f"message header of {n} bytes")
    header = json.loads(_read_exact(f, n))
    if not isinstance(header, dict) or not isinstance(header.get("parts"), int):
        raise _Garbled("message header is not an object with 'parts'")
    parts = []
    for _ in range(header["parts"]):
        (size,) = _LEN.unpack(_read_exact(f, _LEN.size))
        parts.append(_read_exact(f, size))
    return header, parts


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _bytes_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _members_bytes(members: MemberTable) -> tuple[bytes, bytes]:
    """The member table as (Arrow IPC of its columns, the names they end in)."""
    return _table_bytes(pa.table({c: pa.array(getattr(members, c)) for c in _MEMBER_COLUMNS})), members.names


def _bytes_members(columns: bytes, names: bytes) -> MemberTable:
    table = _bytes_table(columns)
    cols = {c: table.column(c).to_numpy() for c in _MEMBER_COLUMNS}
    if len(cols["name_end"]) and int(cols["name_end"][-1]) != len(names):
        raise _Garbled("member names do not match the member table")
    return MemberTable(names=names, **cols)


def worker_count(n_members: int, min_members: int) -> int:
    """How many worker processes to use for a log of `n_members` samples (0: read in-process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < 2 or n_members < min_members:
        return 0
    return min(cpus, 8)


def parallel_tables(path: Path, members: MemberTable, task: str, run_id: str, schema: pa.Schema, *,
                    workers: int, chunk: int) -> Iterator[tuple[int, pa.Table]]:
    """(members done so far, table of their rows) for consecutive ranges of `chunk` members."""
    ranges = [(lo, min(lo + chunk, len(members))) for lo in range(0, len(members), chunk)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the evalkeeper package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs: list[subprocess.Popen[bytes]] = []
    member_data = _members_bytes(members)
    done = 0
    finished = False
    try:
        try:
            for _ in range(min(workers, len(ranges))):
                p = subprocess.Popen([sys.executable, "-m", "evalkeeper.ingest._inspect_parallel"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env)
                procs.append(p)
                _send(p.stdin, {"op": "init", "path": str(path), "task": task,  # type: ignore[arg-type]
                                "run_id": run_id}, schema.serialize().to_pybytes(), *member_data)
            for i in range(min(len(ranges), IN_FLIGHT * len(procs))):
                lo, hi = ranges[i]
                _send(procs[i % len(procs)].stdin, {"op": "range", "lo": lo, "hi": hi})  # type: ignore[arg-type]
        except OSError as e:
            raise WorkersFailed(0, f"cannot start worker processes: {e}") from None
        for i, (_lo, hi) in enumerate(ranges):
            p = procs[i % len(procs)]
            try:
                reply, parts = _recv(p.stdout)  # type: ignore[arg-type]
                kind = reply.get("status")
                table = _bytes_table(parts[0]) if kind == "ok" and len(parts) == 1 else None
            except (EOFError, OSError, ValueError, _Garbled, pa.ArrowException) as e:
                raise WorkersFailed(done, f"a worker stopped ({type(e).__name__})") from None
            if kind == "error":
                raise ImportFormatError(str(reply.get("message")), path=str(path), hint=reply.get("hint"))
            if table is None:
                raise WorkersFailed(done, f"a worker failed: {reply.get('trace', reply)}")
            nxt = i + IN_FLIGHT * len(procs)
            if nxt < len(ranges):
                lo, nxt_hi = ranges[nxt]
                try:
                    _send(p.stdin, {"op": "range", "lo": lo, "hi": nxt_hi})  # type: ignore[arg-type]
                except OSError as e:
                    raise WorkersFailed(done, f"a worker stopped ({e})") from None
            done = hi
            yield done, table
        finished = True
    finally:
        for p in procs:
            if finished:
                try:
                    p.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass
            else:
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()


# -- the worker side ------------------------------------------------------------------------------------

def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from evalkeeper.ingest._inspect_rows import RowBuilder, member_samples, sample_tables
    from evalkeeper.ingest._zipindex import read_table
    from evalkeeper.ingest._zipread import ZipReader

    init, (schema_data, member_columns, member_names) = _recv(inp)
    path, task, run_id = init["path"], init["task"], init["run_id"]
    schema = pa.ipc.read_schema(pa.py_buffer(schema_data))
    members = _bytes_members(member_columns, member_names)
    with ZipReader(path) as z:
        while True:
            try:
                msg, _ = _recv(inp)
            except EOFError:
                return
            lo, hi = int(msg["lo"]), int(msg["hi"])
            try:
                rows = RowBuilder(task, schema)
                chunks = read_table(z, members, start=lo, stop=hi)
                tables = list(sample_tables(member_samples(chunks, path), rows, run_id, hi - lo + 1, path))
                table = tables[0] if tables else rows.take(run_id)
                _send(out, {"status": "ok"}, _table_bytes(table))
            except ImportFormatError as e:
                _send(out, {"status": "error", "message": e.message, "hint": e.hint})
            except Exception:  # noqa: BLE001 - reported to the parent, which reads the rest itself
                _send(out, {"status": "crash", "trace": traceback.format_exc(limit=5)[-2000:]})


if __name__ == "__main__":
    _out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the result stream
    _serve(sys.stdin.buffer, _out)
