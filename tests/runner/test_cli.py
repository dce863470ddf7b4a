"""CLI: quickstart/run/rescore/tasks list, bad input -> one clear message and exit 2, kill -9 then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkeeper.cli.main import main
from evalkeeper.store import Workspace, open_workspace


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["evalkeeper", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_json_then_rescore_and_tasks_list(workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["run", "--model", "fake", "--tasks", "arith,capitals", "--limit", "5", "--no-progress",
                        "--json"], monkeypatch, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "complete" and data["n_samples"] == 10 and data["model_calls"] == 10
    assert {(m["task"], m["metric"]) for m in data["metrics"]} == {
        ("arith", "exact_match"), ("capitals", "exact_match"), ("capitals", "token_f1")}
    code, out, _ = cli(["rescore", data["run_id"], "--task", "capitals", "--json"], monkeypatch, capsys)
    assert code == 0 and {m["metric"] for m in json.loads(out)} == {"exact_match", "token_f1"}
    code, out, _ = cli(["tasks", "list", "--json"], monkeypatch, capsys)
    sizes = {t["name"]: t["size"] for t in json.loads(out)}
    assert sizes == {"arith": 200, "bbq": 144, "capitals": 127, "general_knowledge": 104, "safety": 119}


def test_quickstart_table_with_fake_model(workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["quickstart", "--model", "fake", "--limit", "8", "--no-progress"], monkeypatch, capsys)
    assert code == 0
    for text in ("task", "metric", "95% CI", "general_knowledge", "bias_score_ambig", "samples stored"):
        assert text in out
    [run] = workspace.list_runs()
    assert run.tags == ["quickstart"] and run.status == "complete"


def _bad_task(tmp: Path, prompt: str = "{{ q }}", target: str = "a") -> str:
    (tmp / "d.jsonl").write_text('{"q": "1+1", "a": "2"}\n')
    (tmp / "t.yaml").write_text(f"name: t\ndataset: {{path: d.jsonl}}\nprompt: |\n  Q:\n  {prompt}\n"
                                f"target: {target}\nmetrics: [exact_match]\n")
    return str(tmp / "t.yaml")


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nosuch", "--tasks", "arith"], "unknown model 'nosuch'"),
    (["--model", "fake", "--tasks", "nosuch"], "unknown task 'nosuch'"),
    (["--model", "fake", "--suite", "nosuch"], "unknown suite 'nosuch'"),
    (["--model", "fake"], "no tasks given"),
    (["--model", "openai:m", "--base-url", "ftp://x", "--tasks", "arith"], "invalid --base-url"),
])
def test_bad_input_exit_2(workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                          args: list[str], message: str) -> None:
    code, _, err = cli(["run", *args, "--no-progress"], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert workspace.list_runs() == []


def test_template_error_and_missing_target_exit_2(workspace: Workspace, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(["run", "--model", "fake", "--tasks", _bad_task(tmp_path, prompt="{{ q }"), "--no-progress"],
                       monkeypatch, capsys)
    assert code == 2 and "template error at line 5" in " ".join(err.split())
    code, _, err = cli(["run", "--model", "fake", "--tasks", _bad_task(tmp_path, target="answer"), "--no-progress"],
                       monkeypatch, capsys)
    assert code == 2 and "target field 'answer' is missing" in err
    assert workspace.list_runs() == []


def test_endpoint_down_exit_2_and_run_not_complete(workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli(["run", "--model", "openai:m", "--base-url", f"http://127.0.0.1:{port}/v1", "--tasks",
                        "arith", "--no-progress"], monkeypatch, capsys)
    assert code == 2 and "cannot reach the endpoint" in err
    assert all(r.status != "complete" for r in workspace.list_runs())


def test_kill_9_mid_run_then_resume(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    env = {**os.environ, "EVALKEEPER_HOME": str(home)}
    cmd = [sys.executable, "-m", "evalkeeper.cli.main", "run", "--model", "fake:delay=0.02", "--tasks", "arith",
           "--flush-every", "10", "--no-progress", "--no-cache", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    parts: list[Path] = []
    while time.monotonic() < deadline:
        parts = list((home / "artifacts" / "runs").glob("*/samples/part-*.parquet"))
        if len(parts) >= 3:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ws = open_workspace(home)
    [run] = ws.list_runs()
    assert run.status == "running" and ws.get_metrics(run.run_id) == []
    stored = ws.count_samples(run.run_id)
    assert 30 <= stored < 200 and stored % 10 == 0  # whole parts only; nothing half-written

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["resumed"] and data["run_id"] == run.run_id and data["model_calls"] == 200 - stored
    ids = ws.query_samples(run.run_id, columns=["sample_id"]).column("sample_id").to_pylist()
    assert len(ids) == 200 and len(set(ids)) == 200
    assert ws.get_run(run.run_id).status == "complete"
