"""MLflow sink against a real `mlflow server` on loopback, read back with MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import Destination, parse_target, publish_run
from evalkeeper.store import Workspace

pytestmark = pytest.mark.slow


def test_params_metrics_tags_artifacts_and_idempotent_republish(
        workspace: Workspace, run_with_gate: Run, mlflow_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow must not litter the current folder
    bundle = tmp_path / "run.ekb"
    bundle.write_bytes(b"bundle-bytes")
    dest = parse_target(f"mlflow:{mlflow_server}")
    dest.options["experiment"] = "evk-test"
    report = publish_run(workspace, run_with_gate.run_id, [dest], bundles=[bundle], sleep=lambda s: None)
    assert report.ok, report.to_dict()
    out = report.outcomes[0].result
    assert out is not None
    client = MlflowClient(tracking_uri=mlflow_server)
    mlrun = client.get_run(out.ids["run_id"])
    assert out.url == f"{mlflow_server}/#/experiments/{out.ids['experiment_id']}/runs/{out.ids['run_id']}"
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run_with_gate.run_id
    params, metrics, tags = mlrun.data.params, mlrun.data.metrics, mlrun.data.tags
    assert params["model.name"] == "smol-135m" and params["model.backend"] == "test"
    assert params["tasks"] == "arith,mc" and params["seed"] == "3"
    for m in workspace.get_metrics(run_with_gate.run_id):
        assert metrics[f"{m.task}/{m.metric}"] == pytest.approx(m.value)
        assert metrics[f"{m.task}/{m.metric}/ci_low"] == pytest.approx(m.ci_low)
        assert metrics[f"{m.task}/{m.metric}/ci_high"] == pytest.approx(m.ci_high)
        assert metrics[f"{m.task}/{m.metric}/n"] == 40
    assert tags["evalkeeper.run_id"] == run_with_gate.run_id and tags["evalkeeper.gate"] == "fail"
    artifacts = {f.path for d in ("results", "reports", "bundles") for f in client.list_artifacts(mlrun.info.run_id, d)}
    assert artifacts == {f"results/results-{run_with_gate.run_id}.json", "reports/report.md", "bundles/run.ekb"}
    local = client.download_artifacts(mlrun.info.run_id, "bundles/run.ekb", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == b"bundle-bytes"
    assert not (tmp_path / "mlruns").exists()

    # publishing again updates the same MLflow run instead of creating a duplicate
    again = publish_run(workspace, run_with_gate.run_id, [dest], sleep=lambda s: None)
    assert again.ok and again.outcomes[0].result is not None
    assert again.outcomes[0].result.ids["run_id"] == mlrun.info.run_id
    assert again.outcomes[0].result.details["updated"] is True
    runs = client.search_runs([out.ids["experiment_id"]])
    assert len(runs) == 1
    assert [p["sink"] for p in workspace.get_run(run_with_gate.run_id).provenance.published] == ["mlflow", "mlflow"]


def test_tracking_uri_from_environment_and_missing(workspace: Workspace, run_with_gate: Run, mlflow_server: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    report = publish_run(workspace, run_with_gate.run_id, [Destination(sink="mlflow", options={"artifacts": False})],
                         sleep=lambda s: None)
    assert report.ok and report.outcomes[0].target == mlflow_server
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    report = publish_run(workspace, run_with_gate.run_id, [Destination(sink="mlflow")], sleep=lambda s: None)
    assert not report.ok and "no MLflow tracking URI" in (report.outcomes[0].error or "")
    assert report.outcomes[0].attempts == 1


def test_unreachable_server_is_retried_then_reported_and_others_still_publish(
        workspace: Workspace, run_with_gate: Run, tmp_path: Path) -> None:
    from .conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    delays: list[float] = []
    report = publish_run(workspace, run_with_gate.run_id,
                         [Destination(sink="mlflow", options={"tracking_uri": dead, "http_retries": 0}),
                          parse_target(f"tensorboard:{tmp_path / 'tb'}")], retries=1, backoff=0.1,
                         sleep=delays.append)
    failed, ok = report.outcomes
    assert not failed.ok and failed.attempts == 2 and delays == [0.1]
    assert f"MLflow at {dead}" in (failed.error or "") and "Caused by" not in (failed.error or "")
    assert ok.ok
