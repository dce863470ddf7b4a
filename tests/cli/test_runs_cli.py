"""`runs list/show/tag` and `samples` through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from evalkeeper.store import Workspace
from helpers import make_run, run_cli


def test_runs_list_show_tag_json(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith", "mc"), n=30, seed=2, model="smol")
    code, out, _ = run_cli("runs", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [r["run_id"] for r in listed] == [run.run_id] and listed[0]["n_samples"] == 60

    code, out, _ = run_cli("runs", "show", run.run_id[:12], "--json")
    assert code == 0
    shown = json.loads(out)
    metrics = {m["task"]: m for m in shown["metrics"]}
    ids, vals = workspace.scores(run.run_id, "arith", "acc")
    assert metrics["arith"]["value"] == vals.mean() and metrics["arith"]["n"] == 30
    assert metrics["arith"]["ci_low"] < metrics["arith"]["value"] < metrics["arith"]["ci_high"]

    code, out, _ = run_cli("runs", "show", run.run_id)
    assert code == 0 and "arith" in out and "95% CI" in out and "clt" in out

    code, out, _ = run_cli("runs", "tag", run.run_id, "baseline")
    assert code == 0 and workspace.get_run(run.run_id).tags == ["baseline"]
    code, out, _ = run_cli("runs", "list", "--tag", "baseline")
    assert code == 0 and run.run_id in out


def test_samples_where_and_json(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=50, seed=5)
    wrong = int((workspace.scores(run.run_id, "arith", "acc")[1] < 1).sum())
    code, out, _ = run_cli("samples", run.run_id, "--task", "arith", "--where", "score < 1", "--limit", "7",
                           "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total"] == wrong and len(data["rows"]) == min(7, wrong)
    assert all(r["scores"]["acc"] == 0.0 for r in data["rows"])
    code, out, _ = run_cli("samples", run.run_id, "--limit", "3")
    assert code == 0 and "of 50 matching" in out


def test_user_errors_exit_2_without_traceback(workspace: Workspace) -> None:
    run = make_run(workspace, n=5)
    for args in (("runs", "show", "does-not-exist"), ("samples", run.run_id, "--task", "nope"),
                 ("samples", run.run_id, "--where", "bogus_col = 1"), ("import", "/no/such/path")):
        code, out, err = run_cli(*args)
        assert code == 2, args
        assert "Traceback" not in out + err and "error:" in err, (args, err)


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    probe = ("import sys, time; t=time.perf_counter(); sys.argv=['evalkeeper','--help']\n"
             "from evalkeeper.cli.main import main\n"
             "try: main()\nexcept SystemExit: pass\n"
             "heavy=[m for m in ('torch','transformers','mlflow','wandb','weasyprint','fastapi','duckdb','pandas',"
             "'sqlalchemy') if m in sys.modules]\n"
             "print('HEAVY', heavy, time.perf_counter()-t, file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("HEAVY")][0]
    assert line.startswith("HEAVY []"), line
    assert "import" in proc.stdout and "runs" in proc.stdout
    assert wall < 5  # generous for a loaded CI box; the in-process figure is printed for the closing note


def test_typer_exit_codes_reach_the_shell(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import typer

    from evalkeeper.cli import main as cli_main

    @cli_main.app.command("exit-probe", hidden=True)
    def _probe() -> None:
        raise typer.Exit(3)

    try:
        code, _, _ = run_cli("exit-probe")
    finally:
        cli_main.app.registered_commands = [c for c in cli_main.app.registered_commands
                                            if c.name != "exit-probe"]
    assert code == 3
