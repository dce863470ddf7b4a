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
"""

from __future__ import annotations

import os
import pickle
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


class WorkersFailed(Exception):
    """A worker could not start or stopped without an answer; `done` members were delivered before."""

    def __init__(self, done: int, why: str) -> None:
        super().__init__(why)
        self.done = done


def _send(f: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    f.write(_LEN.pack(len(data)))
    f.write(data)
    f.flush()


def _recv(f: IO[bytes]) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over its own pipe


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
    done = 0
    finished = False
    try:
        try:
            for _ in range(min(workers, len(ranges))):
                p = subprocess.Popen([sys.executable, "-m", "evalkeeper.ingest._inspect_parallel"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env)
                procs.append(p)
                _send(p.stdin, ("init", str(path), task, run_id, schema, members))  # type: ignore[arg-type]
            for i in range(min(len(ranges), IN_FLIGHT * len(procs))):
                _send(procs[i % len(procs)].stdin, ranges[i])  # type: ignore[arg-type]
        except OSError as e:
            raise WorkersFailed(0, f"cannot start worker processes: {e}") from None
        for i, (_lo, hi) in enumerate(ranges):
            p = procs[i % len(procs)]
            try:
                reply = _recv(p.stdout)  # type: ignore[arg-type]
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                raise WorkersFailed(done, f"a worker stopped ({type(e).__name__})") from None
            kind = reply[0]
            if kind == "error":
                raise ImportFormatError(reply[1], path=str(path), hint=reply[2])
            if kind != "ok":
                raise WorkersFailed(done, f"a worker failed: {reply[1]}")
            nxt = i + IN_FLIGHT * len(procs)
            if nxt < len(ranges):
                try:
                    _send(p.stdin, ranges[nxt])  # type: ignore[arg-type]
                except OSError as e:
                    raise WorkersFailed(done, f"a worker stopped ({e})") from None
            done = hi
            yield done, reply[1]
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

    _, path, task, run_id, schema, members = _recv(inp)
    with ZipReader(path) as z:
        while True:
            try:
                lo, hi = _recv(inp)
            except EOFError:
                return
            try:
                rows = RowBuilder(task, schema)
                chunks = read_table(z, members, start=lo, stop=hi)
                tables = list(sample_tables(member_samples(chunks, path), rows, run_id, hi - lo + 1, path))
                table = tables[0] if tables else rows.take(run_id)
                reply: tuple[Any, ...] = ("ok", table)
            except ImportFormatError as e:
                reply = ("error", e.message, e.hint)
            except Exception:  # noqa: BLE001 - reported to the parent, which reads the rest itself
                reply = ("crash", traceback.format_exc(limit=5)[-2000:])
            _send(out, reply)


if __name__ == "__main__":
    _out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the result stream
    _serve(sys.stdin.buffer, _out)
