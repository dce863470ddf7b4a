"""The store contract, run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from evalkeeper.core import Decision, EvalkeeperError, MetricResult, ModelInfo, NotFoundError, Provenance, Run, Sample
from evalkeeper.store import Workspace, open_workspace
from evalkeeper.store import tables as T
from helpers import make_run


def test_run_round_trip_and_metrics(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = make_run(ws, tasks=("arith", "mc"), n=50, seed=1, tags=["candidate"])
    got = ws.get_run(run.run_id)
    assert got == run
    assert got.n_samples == 100
    metrics = ws.get_metrics(run.run_id)
    assert [(m.task, m.metric) for m in metrics] == [("arith", "acc"), ("mc", "acc")]
    ids, vals = ws.scores(run.run_id, "arith", "acc")
    assert len(ids) == 50 and metrics[0].value == pytest.approx(vals.mean())
    assert metrics[0].stderr == pytest.approx(vals.std(ddof=1) / np.sqrt(50))


def test_lookup_by_prefix_baseline_and_errors(any_workspace: Workspace) -> None:
    ws = any_workspace
    a = make_run(ws, run_id="run-aaa-1", n=5)
    make_run(ws, run_id="run-aaa-2", n=5)
    assert ws.get_run("run-aaa-1").run_id == a.run_id
    with pytest.raises(NotFoundError, match="ambiguous"):
        ws.get_run("run-aaa")
    with pytest.raises(NotFoundError, match="no run or baseline named 'nope'"):
        ws.get_run("nope")
    ws.set_baseline("prod", "run-aaa-2")
    ws.set_baseline("prod", "run-aaa-1")
    assert ws.get_run("prod").run_id == "run-aaa-1"
    assert [r for r, _ in ws.baseline_history("prod")] == ["run-aaa-2", "run-aaa-1"]
    assert all(isinstance(t, dt.datetime) and t.tzinfo for _, t in ws.baseline_history("prod"))


def test_tags_filter_and_listing_order(any_workspace: Workspace) -> None:
    ws = any_workspace
    a = make_run(ws, n=5, run_id="run-1")
    b = make_run(ws, n=5, run_id="run-2", model="other")
    ws.tag(a.run_id, add=["baseline", "prod"])
    assert [r.run_id for r in ws.list_runs(tag="baseline")] == ["run-1"]
    assert [r.run_id for r in ws.list_runs(model="other")] == [b.run_id]
    ws.tag(a.run_id, remove=["baseline"])
    assert ws.get_run("run-1").tags == ["prod"]
    assert ws.list_runs(tag="baseline") == []


def test_find_by_source_sha(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = Run(run_id="run-src", model=ModelInfo(name="m"),
              provenance=Provenance(producer="lm_eval", source_sha256="ab" * 32))
    ws.add_run(run, [], [])
    assert ws.find_run_by_source("ab" * 32).run_id == "run-src"  # type: ignore[union-attr]
    assert ws.find_run_by_source("cd" * 32) is None


def test_add_run_is_atomic_on_bad_batch(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = Run(run_id="run-bad", model=ModelInfo(name="m"), provenance=Provenance(producer="test"))

    def batches():  # type: ignore[no-untyped-def]
        yield [Sample(run_id="run-bad", task="t", sample_id="1", scores={"acc": 1.0})]
        raise EvalkeeperError("source truncated", path="x.jsonl")

    with pytest.raises(EvalkeeperError, match="source truncated"):
        ws.add_run(run, [], batches())
    assert ws.list_runs() == []
    assert not (ws.artifacts / "runs" / "run-bad").exists()
    assert [p for p in (ws.artifacts / "runs").iterdir()] == []


def test_duplicate_run_rejected(any_workspace: Workspace) -> None:
    ws = any_workspace
    make_run(ws, run_id="run-dup", n=3)
    with pytest.raises(EvalkeeperError, match="already exists"):
        make_run(ws, run_id="run-dup", n=3)


def test_audit_log_chain_detects_edits_and_gaps(any_workspace: Workspace) -> None:
    ws = any_workspace
    entries = [ws.append_decision(Decision(decision_id=f"d{i}", kind="gate", subject="run-x", verdict="pass",
                                           details={"i": i})) for i in range(4)]
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[1].prev_hash == entries[0].hash
    assert ws.verify_audit_log() == (True, None)
    assert [d.decision_id for d in ws.list_decisions(subject="run-x", kind="gate")] == ["d0", "d1", "d2", "d3"]
    with pytest.raises(EvalkeeperError, match="already in the audit log"):
        ws.append_decision(Decision(decision_id="d0", kind="gate", subject="run-x", verdict="pass"))
    # tamper: flip a verdict inside the stored record without fixing the hash
    with ws.store.engine.begin() as c:
        rec = json.loads(c.execute(text("SELECT record FROM decisions WHERE seq = 3")).scalar_one())
        rec["verdict"] = "fail"
        c.execute(text("UPDATE decisions SET record = :r WHERE seq = 3"), {"r": json.dumps(rec)})
    ok, problem = ws.verify_audit_log()
    assert not ok and problem is not None and "entry 3" in problem
    with ws.store.engine.begin() as c:
        c.execute(T.decisions.delete().where(T.decisions.c.seq == 3))
    ok, problem = ws.verify_audit_log()
    assert not ok and "entry 3 is missing" in (problem or "")


def test_sample_queries(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = make_run(ws, tasks=("arith",), n=40, seed=3, groups={"sex": ["f", "m"]},
                   outputs=["<script>alert(1)</script>", "plain"])
    n_wrong = int((ws.scores(run.run_id, "arith", "acc")[1] < 1).sum())
    assert ws.count_samples(run.run_id, where="score < 1") == n_wrong
    assert ws.count_samples(run.run_id, where="\"group\"['sex'] = 'f'") == 20
    assert ws.count_samples(run.run_id, search="script") == 20
    page = ws.query_samples(run.run_id, order_by="latency_ms", descending=True, limit=5, offset=0)
    lat = page.column("latency_ms").to_pylist()
    assert len(lat) == 5 and lat == sorted(lat, reverse=True)
    with pytest.raises(EvalkeeperError, match="not allowed"):
        ws.query_samples(run.run_id, where="1=1) UNION SELECT * FROM read_csv('/etc/passwd') --")
    with pytest.raises(EvalkeeperError, match="nocolumn"):
        ws.query_samples(run.run_id, where="nocolumn = 1")
    with pytest.raises(EvalkeeperError, match="cannot sort"):
        ws.query_samples(run.run_id, order_by="input; drop", limit=1)


def test_epochs_are_averaged_per_sample(workspace: Workspace) -> None:
    run = Run(run_id="run-ep", model=ModelInfo(name="m"), provenance=Provenance(producer="test"))
    rows = [Sample(run_id="run-ep", task="t", sample_id=str(i), epoch=e, scores={"acc": float((i + e) % 2)})
            for i in range(4) for e in range(2)]
    workspace.add_run(run, [], [rows])
    ids, vals = workspace.scores("run-ep", "t", "acc")
    assert list(ids) == ["0", "1", "2", "3"] and list(vals) == [0.5] * 4


def test_parquet_parts_use_schema(workspace: Workspace) -> None:
    run = make_run(workspace, n=10)
    parts = workspace.sample_paths(run.run_id)
    assert parts and all(p.suffix == ".parquet" for p in parts)
    table = pq.read_table(parts[0])
    assert table.schema.field("scores").type.key_type.equals("string")
    assert not list(parts[0].parent.glob(".*tmp"))


def test_env_home_and_db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALKEEPER_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("EVALKEEPER_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    ws = open_workspace()
    make_run(ws, n=2)
    assert ws.home == tmp_path / "h" and (tmp_path / "other.db").exists()
    assert not (tmp_path / "h" / "evalkeeper.db").exists()


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvalkeeperError) as exc:
        open_workspace(tmp_path, db_url="postgresql+psycopg://u:s3cret@127.0.0.1:1/none")
    assert "cannot open the run store" in str(exc.value) and "s3cret" not in str(exc.value)


def test_metric_record_json_round_trip() -> None:
    m = MetricResult(run_id="r", task="t", metric="acc", value=0.5, stderr=0.1, ci_low=0.3, ci_high=0.7, n=10)
    assert MetricResult.model_validate_json(m.to_json()) == m
    assert json.loads(m.to_json())["schema_version"] == 1


def test_migrations_are_alembic_versioned(workspace: Workspace) -> None:
    with workspace.store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0001_initial"


def test_kill_during_import_leaves_nothing(tmp_path: Path) -> None:
    """A process killed mid-import leaves no run row and no visible artifact folder."""
    home = tmp_path / "ws"
    script = textwrap.dedent(f"""
        import os, signal
        from evalkeeper.core import Run, ModelInfo, Provenance, Sample
        from evalkeeper.store import open_workspace
        ws = open_workspace({str(home)!r})
        run = Run(run_id="run-killed", model=ModelInfo(name="m"), provenance=Provenance(producer="t"))
        def batches():
            yield [Sample(run_id="run-killed", task="t", sample_id="1")]
            os.kill(os.getpid(), signal.SIGKILL)
        ws.add_run(run, [], batches())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    ws = open_workspace(home)
    assert ws.list_runs() == []
    visible = [p for p in (home / "artifacts" / "runs").iterdir() if not p.name.startswith(".")]
    assert visible == []


def test_paired_scores_join_matches_numpy(any_workspace: Workspace) -> None:
    ws = any_workspace
    a = make_run(ws, tasks=("arith",), n=60, seed=1, run_id="run-pa")
    b = make_run(ws, tasks=("arith",), n=40, seed=2, run_id="run-pb")  # ids arith-0..39 shared
    ids, va, vb, na, nb = ws.paired_scores(a.run_id, b.run_id, "arith", "acc")
    ida, sa = ws.scores(a.run_id, "arith", "acc")
    idb, sb = ws.scores(b.run_id, "arith", "acc")
    shared, ia, ib = np.intersect1d(ida.astype(str), idb.astype(str), return_indices=True)
    assert (na, nb) == (60, 40) and list(ids) == list(shared)
    assert np.array_equal(va, sa[ia]) and np.array_equal(vb, sb[ib])
    ids, va, vb, na, nb = ws.paired_scores(a.run_id, b.run_id, "nope", "acc")
    assert len(ids) == 0 and (na, nb) == (0, 0)


def test_search_with_wildcard_characters_and_literal_keywords(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("t",), n=6, outputs=["grew 50% in 2024", "snake_case name", "plain"],
                   groups={"split": ["test set", "other"]})
    assert workspace.count_samples(run.run_id, search="50%") == 2
    assert workspace.count_samples(run.run_id, search="e_c") == 2
    assert workspace.count_samples(run.run_id, search="%") == 2
    assert workspace.count_samples(run.run_id, where="\"group\"['split'] = 'test set'") == 3
    with pytest.raises(EvalkeeperError, match="not allowed"):
        workspace.count_samples(run.run_id, where="'a' = 'a' or load('x')")
    with pytest.raises(EvalkeeperError, match="unterminated"):
        workspace.count_samples(run.run_id, where="task = 'x")
