"""W&B sink in offline mode: the run folder is read back with wandb's own protobuf records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import parse_target, publish_run
from evalkeeper.store import Workspace

from .wandb_reader import read_records


def test_offline_run_has_config_summary_table_and_artifacts(workspace: Workspace, run_with_gate: Run,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    dest = parse_target("wandb:evk-project")
    dest.options["max_rows"] = 50  # the run has 80 samples: the table is capped
    rid = run_with_gate.run_id
    report = publish_run(workspace, rid, [dest], sleep=lambda s: None)
    assert report.ok, report.to_dict()
    out = report.outcomes[0].result
    assert out is not None and out.details["mode"] == "offline" and out.details["table_rows"] == 50
    assert report.outcomes[0].target == "evk-project (offline)"
    (run_dir,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert out.url == run_dir.resolve().as_uri() and out.details["sync"] == f"wandb sync {run_dir}"
    (run_file,) = run_dir.glob("run-*.wandb")
    records = read_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[0] == "header" and kinds[-1] == "exit" and records[-1].exit.exit_code == 0

    run_rec = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_rec.project == "evk-project" and run_rec.display_name == rid
    config = {u.key: json.loads(u.value_json) for u in run_rec.config.update}
    assert config["evalkeeper_run_id"] == rid and config["model"]["name"] == "smol-135m" and config["seed"] == 3

    summary: dict[str, object] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                summary[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
    for m in workspace.get_metrics(rid):
        assert summary[f"{m.task}/{m.metric}"] == pytest.approx(m.value)
        assert summary[f"{m.task}/{m.metric}/ci_low"] == pytest.approx(m.ci_low)
    assert summary["gate"] == "fail"

    # the samples table: 50 rows, evalkeeper's columns, real sample ids
    (table_file,) = run_dir.glob("files/media/table/samples_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["task", "sample_id", "epoch", "input", "target", "prediction", "score"]
    assert len(table["data"]) == 50
    assert [row[0] for row in table["data"]] == ["arith"] * 25 + ["mc"] * 25  # the cap is shared by the tasks
    assert all(row[1].startswith(f"{row[0]}-") for row in table["data"])
    assert {row[6] for row in table["data"]} <= {0.0, 1.0}

    # the evaluation artifact holds the results JSON and the report
    arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    ours = next(a for a in arts if a.type == "evaluation")
    assert ours.name == f"evalkeeper-{rid}"
    assert {c.path for c in ours.manifest.contents} == {f"results/results-{rid}.json", "reports/report.md"}
    assert not (tmp_path / "wandb").exists()  # nothing written outside WANDB_DIR
