"""The fast paths of the importers give what the reference paths give, and fail the same way.

inspect: the worker-process reader (used for big logs) vs the in-process reader, the vectorised zip
directory vs `ZipReader.members()`; lm-eval: the DuckDB reader's thread stops when its consumer does;
lighteval: details streamed in small batches vs one batch.
"""

from __future__ import annotations

import json
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest import _inspect_parallel, _lighteval_details, load_path
from evalkeeper.ingest import _lm_eval_samples as lm
from evalkeeper.ingest import inspect as insp
from evalkeeper.ingest._zipindex import read_table, scan_directory
from evalkeeper.ingest._zipread import ZipReader
from evalkeeper.ingest.lm_eval import LmEvalImporter
from ingest._evalzip import read_members, write_zip

FIX = Path(__file__).parent.parent / "fixtures"
NEW_EVAL = FIX / "inspect" / "arith_0.3.285.eval"
OLD_EVAL = FIX / "inspect" / "arith_0.3.160.eval"
LM_RUN = FIX / "lm_eval" / "run1"
LIGHTEVAL_RUNS = [FIX / "lighteval" / "run1", FIX / "lighteval" / "legacy"]


def _inspect_result(path: Path) -> tuple[pa.Table, list[tuple[object, ...]], int | None]:
    r = insp.InspectImporter().load(path)
    assert not isinstance(r, list)
    table = pa.concat_tables(list(r.batches)).drop(["run_id"])
    metrics = [(m.metric, m.value, m.stderr, m.ci_low, m.n, m.method) for m in r.metrics]
    return table, metrics, r.run.tasks[0].n_samples


def _force_workers(monkeypatch: pytest.MonkeyPatch, chunk: int = 3, batch_rows: int = 5) -> None:
    """Worker processes for any log, with small ranges and batches so that several of each occur."""
    monkeypatch.setattr(insp, "worker_count", lambda n, m: 2)
    monkeypatch.setattr(insp, "WORKER_CHUNK", chunk)
    monkeypatch.setattr(insp, "BATCH_ROWS", batch_rows)


@pytest.mark.parametrize("path", [NEW_EVAL, OLD_EVAL], ids=lambda p: p.name)
def test_worker_processes_give_the_same_rows_and_metrics(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _inspect_result(path)
    _force_workers(monkeypatch)
    from_workers: list[int] = []
    real = insp.parallel_tables

    def spy(*a: object, **k: object):  # type: ignore[no-untyped-def]
        for done, table in real(*a, **k):  # type: ignore[arg-type]
            from_workers.append(table.num_rows)
            yield done, table

    monkeypatch.setattr(insp, "parallel_tables", spy)
    workers = _inspect_result(path)
    assert workers[0].equals(here[0]) and workers[0].num_rows == here[0].num_rows > 0
    assert sum(from_workers) == here[0].num_rows and len(from_workers) > 2  # all rows came from workers
    assert workers[1:] == here[1:]


def test_worker_reports_a_bad_sample_with_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = read_members(NEW_EVAL)
    bad = [(n, b'{"id": "q02", "epoch": 1, "broken' if n == "samples/q02_epoch_1.json" else d) for n, d in members]
    path = write_zip(tmp_path / "bad.eval", bad)
    with pytest.raises(ImportFormatError) as here:
        _inspect_result(path)
    _force_workers(monkeypatch)
    with pytest.raises(ImportFormatError) as there:
        _inspect_result(path)
    assert there.value.render() == here.value.render()
    assert str(path) in there.value.render() and "samples/q02_epoch_1.json" in there.value.render()


def test_workers_that_cannot_start_fall_back_to_reading_here(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    here = _inspect_result(NEW_EVAL)
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")  # starts, then dies before answering
    fake.chmod(0o755)
    monkeypatch.setattr(_inspect_parallel.sys, "executable", str(fake))
    _force_workers(monkeypatch)
    got = _inspect_result(NEW_EVAL)
    assert got[0].equals(here[0]) and got[1:] == here[1:]


def test_a_worker_answering_garbage_is_not_trusted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The pipe carries JSON headers and Arrow IPC only: a reply in any other framing (here a pickle,
    which the parent must never load) counts as a failed worker, and the log is read in-process."""
    here = _inspect_result(NEW_EVAL)
    fake = tmp_path / "python"
    reply = tmp_path / "reply.bin"
    reply.write_bytes(pickle.dumps(("ok", "not a table")))
    fake.write_text(f"#!/bin/sh\ncat {reply}\ncat > /dev/null\n")
    fake.chmod(0o755)
    monkeypatch.setattr(_inspect_parallel.sys, "executable", str(fake))
    _force_workers(monkeypatch)
    loads = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: loads.append(a))
    got = _inspect_result(NEW_EVAL)
    assert got[0].equals(here[0]) and got[1:] == here[1:] and loads == []


def test_member_table_survives_the_pipe_encoding() -> None:
    with ZipReader(NEW_EVAL) as z:
        table, _ = scan_directory(z, b"samples/", b".json")
    back = _inspect_parallel._bytes_members(*_inspect_parallel._members_bytes(table))
    assert list(back) == list(table) and len(back) == len(table) > 0
    empty = table.take(np.zeros(0, dtype=np.int64))
    assert len(_inspect_parallel._bytes_members(*_inspect_parallel._members_bytes(empty))) == 0


def test_closing_early_stops_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    _force_workers(monkeypatch, chunk=2, batch_rows=2)
    r = insp.InspectImporter().load(NEW_EVAL)
    assert not isinstance(r, list)
    it = iter(r.batches)
    assert next(it).num_rows >= 2
    it.close()  # type: ignore[attr-defined]  # the generator: kills and reaps the workers


def _relog(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The first sample logged a second time (inspect re-logs retried samples under the same name)."""
    name, data = next((n, d) for n, d in members if n.startswith("samples/"))
    return [*members, (name, data)]


@pytest.mark.parametrize("path", [NEW_EVAL, OLD_EVAL], ids=lambda p: p.name)
def test_directory_table_matches_members(path: Path, tmp_path: Path) -> None:
    for zpath in (path, write_zip(tmp_path / "relog.eval", _relog(read_members(path)))):
        with ZipReader(zpath) as z:
            every = list(z.members())
            table, others = scan_directory(z, b"samples/", b".json")
            last = {m.name: m for m in every if m.name.startswith("samples/")}
            kept = [m for m in every if m.name.startswith("samples/") and last[m.name] is m]
            assert list(table) == kept
            assert others == [m for m in every if not m.name.startswith("samples/")]
            got = [(n, d) for chunk in read_table(z, table, window=4096, chunk=3) for n, d in chunk]
            assert got == [(m.name, z.read(m)) for m in kept]
            part = [n for chunk in read_table(z, table, start=2, stop=5) for n, _ in chunk]
            assert part == [m.name for m in kept[2:5]]


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "evalkeeper-lm-eval-reader"]


def test_lm_eval_fast_path_is_used_and_its_thread_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    monkeypatch.setattr(lm.SamplesStream, "_python_batches",
                        lambda self, *a, **k: used.append(self.path.name) or iter(()))
    r = LmEvalImporter().load(LM_RUN)
    names = [p.name for p in r.source_files if "samples_" in p.name]
    n = sum(b.num_rows for b in r.batches)
    # the generation task with two filters is the line reader's; the others are read by DuckDB
    assert used == [x for x in names if "ek_echo" in x] and n == 24 + 12
    monkeypatch.setattr(lm, "BATCH_ROWS", 5)
    r = LmEvalImporter().load(LM_RUN)
    it = iter(r.batches)
    assert next(it).num_rows == 5
    it.close()  # type: ignore[attr-defined]
    assert _reader_threads() == []


def test_lm_eval_odd_doc_ids_go_to_the_line_reader(tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(LM_RUN, out)
    samples = next(out.rglob("samples_ek_capitals_*.jsonl"))
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    lines[3]["doc_id"] = 3.0  # str() gives "3.0": only the line reader writes that
    samples.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = LmEvalImporter().load(out)
    rows = [row for b in r.batches for row in b.to_pylist() if row["task"] == "ek_capitals"]
    assert [row["sample_id"] for row in rows][:5] == ["0", "1", "2", "3.0", "4"]


@pytest.mark.parametrize("run", LIGHTEVAL_RUNS, ids=lambda p: p.name)
def test_lighteval_details_stream_in_batches(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def result() -> tuple[list[dict[str, object]], list[tuple[object, ...]], list[int | None]]:
        r = load_path(run)
        batches = list(r.batches)
        rows = [s.model_dump(exclude={"run_id"}) for b in batches for s in b]  # type: ignore[union-attr]
        metrics = [(m.task, m.metric, m.value, m.stderr, m.n, m.method) for m in r.metrics]
        return rows, metrics, [t.n_samples for t in r.run.tasks]

    whole = result()
    monkeypatch.setattr(_lighteval_details.DetailsFile.samples, "__defaults__", (3,))
    small = result()
    assert small[0] == whole[0] and len(whole[0]) > 3
    assert [m[:2] + m[4:] for m in small[1]] == [m[:2] + m[4:] for m in whole[1]]
    for a, b in zip(small[1], whole[1], strict=True):
        assert a[2] == pytest.approx(b[2], rel=1e-12) and (a[3] == b[3] or a[3] == pytest.approx(b[3], rel=1e-9))
    assert small[2] == whole[2]
