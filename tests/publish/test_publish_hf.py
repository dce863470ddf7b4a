"""Hugging Face sink through real `huggingface_hub`, pointed (HF_ENDPOINT) at a local fake Hub that records calls."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import parse_target, publish_run
from evalkeeper.store import Workspace

from .fakehub import FakeHub, start_fake_hub

TOKEN = "hf_FakeTokenForTests0123456789abcdef"


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    gen = start_fake_hub(TOKEN)
    fake = next(gen)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # never the developer's own login
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield fake
    next(gen, None)


def test_dataset_repo_with_card_results_samples_bundle(workspace: Workspace, run_with_gate: Run, hub: FakeHub,
                                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from huggingface_hub import DatasetCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    caplog.set_level(logging.DEBUG)
    bundle = tmp_path / "run.ekb"
    bundle.write_bytes(b"\x28\xb5\x2f\xfd bundle")
    rid = run_with_gate.run_id
    report = publish_run(workspace, rid, [parse_target("hf:my-org/evals")], bundles=[bundle],
                         link="https://dash.example/runs/1", sleep=lambda s: None)
    assert report.ok, report.to_dict()
    assert hub.repos["my-org/evals"]["type"] == "dataset" and hub.repos["my-org/evals"]["visibility"] == "private"
    files = hub.files["my-org/evals"]
    parts = workspace.sample_paths(rid)
    assert set(files) == {"README.md", f"results/{rid}.json", "bundles/run.ekb",
                          *(f"samples/{rid}/{p.name}" for p in parts)}
    assert files["bundles/run.ekb"] == bundle.read_bytes()
    table = pq.read_table(io.BytesIO(files[f"samples/{rid}/{parts[0].name}"]))
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 80 and table.num_rows > 0
    # the dataset card parses with huggingface_hub's own card classes; model-index carries every metric
    card = DatasetCard(files["README.md"].decode())
    meta = card.data.to_dict()
    assert meta["tags"] == ["evaluation", "evalkeeper"]
    assert meta["configs"][0]["data_files"][0]["path"] == f"samples/{rid}/*.parquet"
    model_name, results = model_index_to_eval_results(meta["model-index"])
    assert model_name == "smol-135m"
    got = {(r.task_name, r.metric_type): r.metric_value for r in results}
    for m in workspace.get_metrics(rid):
        assert got[(m.task, m.metric)] == pytest.approx(m.value, abs=1e-6)
    arith = next(r for r in results if r.task_name == "arith")
    assert arith.dataset_name == "arith" and arith.verified is False and arith.source_url == "https://dash.example/runs/1"
    assert arith.metric_args is not None and arith.metric_args["n"] == 40
    assert "Quality gate: **fail** - FAIL (policy release): 1 of 3 rule checks failed - min-acc/arith." in card.text
    # every write call was authenticated with the token; the token appears nowhere else
    assert all(c["auth"] == f"Bearer {TOKEN}" for c in hub.calls)
    assert [c["path"].split("/")[-2] if "/datasets/" in c["path"] else c["path"] for c in hub.calls] == [
        "/api/repos/create", "/api/validate-yaml", "preupload", "commit"]
    out = report.outcomes[0].result
    assert out is not None and out.url == f"{hub.url}/datasets/my-org/evals"
    assert out.ids["commit"] == hub.commits[0]["oid"]
    assert TOKEN not in caplog.text and TOKEN not in str(report.to_dict())
    assert TOKEN not in workspace.get_run(rid).model_dump_json()


def test_public_repo_existing_repo_and_retry_on_503(workspace: Workspace, run_with_gate: Run, hub: FakeHub) -> None:
    dest = parse_target("hf:my-org/public-evals")
    dest.options["private"] = False
    hub.fail_next.append(("commit", 503))
    delays: list[float] = []
    report = publish_run(workspace, run_with_gate.run_id, [dest], sleep=delays.append, backoff=0.25)
    assert report.ok and report.outcomes[0].attempts == 2 and delays == [0.25]
    assert hub.repos["my-org/public-evals"]["visibility"] == "public"
    # the retry re-created the repo (409 = exists, accepted) and committed once
    assert len(hub.commits) == 1 and len([c for c in hub.calls if c["path"] == "/api/repos/create"]) == 2


def test_bad_token_fails_without_retry_or_leak(workspace: Workspace, run_with_gate: Run, hub: FakeHub,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    wrong = "hf_WrongTokenWrongToken0123456789"
    monkeypatch.setenv("HF_TOKEN", wrong)
    caplog.set_level(logging.DEBUG)
    report = publish_run(workspace, run_with_gate.run_id, [parse_target("hf:my-org/evals")], sleep=lambda s: None)
    outcome = report.outcomes[0]
    assert not outcome.ok and outcome.attempts == 1 and "401" in (outcome.error or "")
    assert wrong not in (outcome.error or "") and wrong not in caplog.text
    assert hub.commits == []


def test_no_token_is_a_clear_error(workspace: Workspace, run_with_gate: Run, hub: FakeHub,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    report = publish_run(workspace, run_with_gate.run_id, [parse_target("hf:my-org/evals")], sleep=lambda s: None)
    assert not report.ok and "no Hugging Face token" in (report.outcomes[0].error or "")
    assert hub.calls == []
