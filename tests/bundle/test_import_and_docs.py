"""Bundle -> import round trip, and the generated reproducibility files (lock, Dockerfile, REPRODUCE.md)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.importer import BundleImporter, load_bundle_for_import
from evalkeeper.bundle.repro import requirements_lock
from evalkeeper.bundle.writer import create_bundle
from evalkeeper.core.errors import EvalkeeperError, ImportFormatError
from evalkeeper.core.records import Run
from evalkeeper.store import Workspace, open_workspace
from helpers import make_run

from ._tarkit import members, regular, with_prefix


def _docs(path: Path) -> dict[str, bytes]:
    return {i.name: d for i, d in members(path)}


def test_import_round_trip_keeps_scores_metrics_and_identity(workspace: Workspace, stored_run: Run,
                                                             tmp_path: Path) -> None:
    res = create_bundle(workspace, stored_run.run_id, tmp_path / "r.ekb")
    other = open_workspace(tmp_path / "other")
    from evalkeeper.ingest import detect_importer
    from evalkeeper.ingest.service import import_path

    assert detect_importer(res.path).name == "bundle"
    [result] = import_path(other, res.path)
    run = result.run
    assert run.run_id == stored_run.run_id and run.n_samples == stored_run.n_samples == 600
    assert run.provenance.producer == "evalkeeper"
    assert run.provenance.bundle_sha256 == res.sha256 == hashlib.sha256(res.path.read_bytes()).hexdigest()
    for task in ("arith", "mc"):
        a_ids, a = workspace.scores(stored_run.run_id, task, "acc")
        b_ids, b = other.scores(run.run_id, task, "acc")
        assert list(a_ids) == list(b_ids) and np.array_equal(a, b)
    m1 = {(m.task, m.metric): m for m in workspace.get_metrics(stored_run.run_id)}
    m2 = {(m.task, m.metric): m for m in other.get_metrics(run.run_id)}
    assert m1.keys() == m2.keys()
    for k in m1:
        assert m1[k].value == m2[k].value and m1[k].stderr == m2[k].stderr
    again = import_path(other, res.path)  # same file: recognised by its sha256, nothing written
    assert again[0].already


def test_import_refuses_tampered_bundle_without_writing(bundle_path: Path, tmp_path: Path) -> None:
    bad = with_prefix(bundle_path, tmp_path / "bad.ekb", [regular("reports/x.json", b"{}")], at=2)
    other = open_workspace(tmp_path / "other")
    with pytest.raises(ImportFormatError, match="not listed in manifest"):
        load_bundle_for_import(bad)
    assert other.list_runs() == []
    assert BundleImporter().detect(bundle_path)
    assert not BundleImporter().detect(Path(__file__))


def test_workspace_records_bundle_sha_and_lineage(workspace: Workspace, stored_run: Run, tmp_path: Path) -> None:
    first = create_bundle(workspace, stored_run.run_id, tmp_path / "a.ekb")
    assert workspace.get_run(stored_run.run_id).provenance.bundle_sha256 == first.sha256
    workspace.set_baseline("prod", stored_run.run_id)
    later = make_run(workspace, tasks=("arith", "mc"), n=50, seed=9)
    workspace.set_baseline("prod", later.run_id)
    second = create_bundle(workspace, stored_run.run_id, tmp_path / "b.ekb")
    doc = _docs(second.path)[L.REPRODUCE].decode()
    assert f"Previous bundle of this run: `{first.sha256}`" in doc
    assert "baseline **prod**" in doc and stored_run.run_id in doc and later.run_id in doc
    assert doc.index(stored_run.run_id, doc.index("baseline **prod**")) < doc.index(later.run_id)


def test_reproduce_md_has_command_versions_fingerprints_seeds_and_digest(workspace: Workspace,
                                                                         tmp_path: Path) -> None:
    run = make_run(workspace, tasks=("arith",), n=20, seed=5)
    t = run.tasks[0].model_copy(update={"dataset_fingerprint": "d" * 64, "prompt_fingerprint": "p" * 64,
                                        "n_shot": 3, "seed": 77})
    env = {"python": {"version": "3.11.7"}, "packages": {"torch": "2.13.0+cpu", "numpy": "2.1.0"},
           "captured_at": "2026-01-01T00:00:00+00:00"}
    prov = run.provenance.model_copy(update={"command": "evalkeeper run --model fake --tasks arith"})
    workspace.save_run(run.model_copy(update={"tasks": [t], "environment": env, "provenance": prov}))
    res = create_bundle(workspace, run.run_id, tmp_path / "r.ekb")
    docs = _docs(res.path)
    md = docs[L.REPRODUCE].decode()
    assert "evalkeeper reproduce run.ekb" in md
    assert "evalkeeper run --model fake --tasks arith" in md
    assert "d" * 64 in md and "p" * 64 in md and "| 3 | 77 |" in md
    assert f"`{res.data_sha256}`" in md
    assert "`torch==2.13.0+cpu`" in md and "Python 3.11.7" in md
    data_members = [m for m in res.members if m.path not in (L.REQUIREMENTS, L.DOCKERFILE, L.REPRODUCE)]
    recomputed = hashlib.sha256(json.dumps([[m.path, m.sha256] for m in data_members],
                                           separators=(",", ":")).encode()).hexdigest()
    assert recomputed == res.data_sha256
    lock = docs[L.REQUIREMENTS].decode()
    assert "torch==2.13.0+cpu" in lock and "numpy==2.1.0" in lock
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lock
    dockerfile = docs[L.DOCKERFILE].decode()
    assert "FROM python:3.11.7-slim" in dockerfile
    assert "pip install --no-deps -r /bundle/requirements.lock.txt" in dockerfile
    assert 'CMD ["evalkeeper", "reproduce", "/bundle/run.ekb"]' in dockerfile
    assert json.loads(docs[L.ENVIRONMENT]) == env  # the run's own snapshot, not the bundler's


def test_run_without_snapshot_gets_a_labelled_bundle_time_one(bundle_path: Path) -> None:
    env = json.loads(_docs(bundle_path)[L.ENVIRONMENT])
    assert "captured when the bundle was created" in env["note"]
    assert env["python"]["version"] == platform.python_version()
    lock = _docs(bundle_path)[L.REQUIREMENTS].decode()
    assert "pyarrow==" in lock and "zstandard==" in lock


def test_imported_run_docs_point_to_the_original_tool(workspace: Workspace, tmp_path: Path) -> None:
    run = make_run(workspace, tasks=("arith",), n=10)
    prov = run.provenance.model_copy(update={"producer": "lighteval", "producer_version": "0.8.0",
                                             "source_sha256": "a" * 64, "command": "lighteval accelerate ..."})
    workspace.save_run(run.model_copy(update={"provenance": prov}))
    docs = _docs(create_bundle(workspace, run.run_id, tmp_path / "l.ekb").path)
    md = docs[L.REPRODUCE].decode()
    assert "produced by **lighteval**" in md and "needs that tool" in md and "a" * 64 in md
    assert "inspect-bundle" in docs[L.DOCKERFILE].decode()
    st = json.loads(docs[L.STATEMENT])
    assert st["predicate"]["runDetails"]["builder"]["id"].endswith("/lighteval")
    deps = {d["name"]: d["digest"]["sha256"] for d in st["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert "a" * 64 in deps.values()


def test_incomplete_run_is_bundled_with_a_warning(workspace: Workspace, tmp_path: Path) -> None:
    run = make_run(workspace, tasks=("arith",), n=10)
    workspace.save_run(run.model_copy(update={"status": "failed"}))
    res = create_bundle(workspace, run.run_id, tmp_path / "f.ekb")
    assert res.warnings and "'failed'" in res.warnings[0]
    assert json.loads(_docs(res.path)[L.RUN])["status"] == "failed"


def test_requirements_lock_without_packages_says_so() -> None:
    assert "nothing to pin" in requirements_lock(None)


def test_bundle_of_unknown_run_and_bad_key_fail_cleanly(workspace: Workspace, stored_run: Run,
                                                        tmp_path: Path) -> None:
    with pytest.raises(EvalkeeperError):
        create_bundle(workspace, "no-such-run", tmp_path / "x.ekb")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(EvalkeeperError, match="PEM"):
        create_bundle(workspace, stored_run.run_id, tmp_path / "y.ekb", sign_key=tmp_path / "bad.pem")
    assert not (tmp_path / "y.ekb").exists() and not (tmp_path / "x.ekb").exists()


def test_reports_in_run_folder_are_bundled(workspace: Workspace, stored_run: Run, tmp_path: Path) -> None:
    rd = workspace.run_dir(stored_run.run_id)
    (rd / "reports").mkdir(parents=True, exist_ok=True)
    (rd / "reports" / "report.html").write_text("<html>ok</html>")
    (rd / "reports" / "model.pkl").write_bytes(b"\x80\x04x")  # never bundled
    names = set(_docs(create_bundle(workspace, stored_run.run_id, tmp_path / "r.ekb").path))
    assert "reports/report.html" in names and not any(n.endswith(".pkl") for n in names)


def test_peer_tool_run_keeps_its_source_identity_through_a_bundle(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.ingest.service import import_path

    run = make_run(workspace, tasks=("arith",), n=10)
    prov = run.provenance.model_copy(update={"producer": "lighteval", "source_sha256": "c" * 64,
                                             "source_path": "/data/results.json"})
    workspace.save_run(run.model_copy(update={"provenance": prov}))
    res = create_bundle(workspace, run.run_id, tmp_path / "l.ekb")
    other = open_workspace(tmp_path / "other")
    [first] = import_path(other, res.path)
    assert first.run.provenance.source_sha256 == "c" * 64 and first.run.provenance.bundle_sha256 == res.sha256
    assert first.run.provenance.source_path == "/data/results.json"
    assert import_path(other, res.path)[0].already
