"""`baseline`, `compare`, `gate`, `power` through the real entry point: exit codes and files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkeeper.stats import required_n
from evalkeeper.store import Workspace
from helpers import make_run, run_cli

POLICY = """name: ci
baseline: prod
rules:
  - id: nr
    kind: no_regression
    task: "*"
    max_drop: 0.02
  - id: floor
    kind: threshold
    task: arith
    min: 0.3
"""


@pytest.fixture()
def runs(workspace: Workspace, tmp_path: Path) -> dict[str, str]:
    base = make_run(workspace, n=800, seed=1, p=0.75, run_id="run-base")
    good = make_run(workspace, n=800, seed=1, p=0.75, run_id="run-good")  # same scores as the baseline
    bad = make_run(workspace, n=800, seed=2, p={"arith": 0.6, "mc": 0.75}, run_id="run-bad")
    (tmp_path / "gates.yaml").write_text(POLICY)
    return {"base": base.run_id, "good": good.run_id, "bad": bad.run_id, "policy": str(tmp_path / "gates.yaml")}


def test_baseline_set_and_show(workspace: Workspace, runs: dict[str, str]) -> None:
    code, out, _ = run_cli("baseline", "set", runs["base"], "--name", "prod")
    assert code == 0 and "prod" in out
    code, _, _ = run_cli("baseline", "set", runs["good"], "--name", "prod")
    assert code == 0 and workspace.resolve_baseline("prod") == runs["good"]
    code, out, _ = run_cli("baseline", "show", "prod", "--json")
    shown = json.loads(out)
    assert code == 0 and shown[0]["run_id"] == runs["good"]
    assert [h["run_id"] for h in shown[0]["history"]] == [runs["base"], runs["good"]]
    decisions = workspace.list_decisions(kind="baseline")
    assert [d.details["previous"] for d in decisions] == [None, runs["base"]]
    code, _, err = run_cli("baseline", "show", "nope")
    assert code == 2 and "no baseline named 'nope'" in err


def test_gate_exit_codes_and_outputs(workspace: Workspace, runs: dict[str, str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("baseline", "set", runs["base"], "--name", "prod")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, _ = run_cli("gate", runs["good"], "--policy", runs["policy"])
    assert code == 0 and "PASS" in out
    junit, js = tmp_path / "gate.xml", tmp_path / "gate.json"
    code, out, _ = run_cli("gate", runs["bad"], "--policy", runs["policy"], "--junit", str(junit),
                           "--json", str(js), "--quiet")
    assert code == 1 and out == ""
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    failure = cases["nr[arith]"].find("failure")
    assert failure is not None and "larger than the tolerance" in (failure.get("message") or "")
    assert cases["nr[mc]"].find("failure") is None and cases["floor[arith]"].find("failure") is None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["prod"] == runs["base"] and len(props["policy_sha256"] or "") == 64
    report = json.loads(js.read_text())
    arith = next(v for v in report["verdicts"] if v["rule_id"] == "nr" and v["task"] == "arith")
    assert arith["status"] == "fail" and arith["n_paired"] == 800 and arith["p_corrected"] < 0.05
    assert arith["diff"] == pytest.approx(arith["estimate"] - arith["baseline_estimate"])
    md = summary.read_text()
    assert md.count("## Gate `ci`") == 2 and "❌ **FAIL**" in md and "✅ **PASS**" in md
    gates = workspace.list_decisions(kind="gate")
    assert [d.verdict for d in gates] == ["pass", "fail"]
    # stdout JSON
    code, out, _ = run_cli("gate", runs["bad"], "--policy", runs["policy"], "--json", "-")
    assert code == 1 and json.loads(out)["passed"] is False


def test_gate_bad_input_exits_2(workspace: Workspace, runs: dict[str, str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # no baseline named prod yet
    code, _, err = run_cli("gate", runs["bad"], "--policy", runs["policy"])
    assert code == 2 and "'prod' is neither a baseline name nor a run" in err
    assert "could not be evaluated (exit 2)" in summary.read_text()
    assert workspace.list_decisions(kind="gate")[-1].verdict == "error"
    code, _, err = run_cli("gate", runs["bad"], "--policy", runs["policy"], "--baseline", "run-ghost")
    assert code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - kind: threshold\n    task: arith\n    min: 0.5\n    on: ci\n    tresh: 1\n")
    code, _, err = run_cli("gate", runs["bad"], "--policy", str(bad))
    assert code == 2 and "bad.yaml:6: rules[0].tresh: unknown field" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rules:\n  - kind: threshold\n    task: code\n    min: 0.5\n")
    code, _, err = run_cli("gate", runs["bad"], "--policy", str(unknown))
    assert code == 2 and "task 'code' is not in run" in err
    code, _, _ = run_cli("gate", "run-nope", "--policy", str(unknown))
    assert code == 2


def test_compare_and_power_json(workspace: Workspace, runs: dict[str, str]) -> None:
    code, out, _ = run_cli("compare", runs["base"], runs["bad"], "--json")
    assert code == 0
    res = json.loads(out)
    arith = next(r for r in res["rows"] if r["task"] == "arith")
    assert arith["direction"] == "worse" and arith["n_paired"] == 800
    code, out, _ = run_cli("compare", runs["base"], runs["bad"])
    assert code == 0 and "arith" in out
    code, _, err = run_cli("compare", runs["base"], runs["bad"], "--task", "nope")
    assert code == 2 and "'nope' is not in run" in err
    code, out, _ = run_cli("power", "--task", "arith", "--run", runs["bad"], "--delta", "0.02",
                           "--baseline", runs["base"], "--json")
    plan = json.loads(out)
    assert code == 0 and plan["required_n"] == required_n(0.02, plan["omega2"], 0.05, 0.8, "one-sided")
    code, out, _ = run_cli("power", "--task", "arith", "--run", runs["bad"], "--delta", "0.02")
    assert code == 0 and "samples" in out and "minimum detectable difference" in out
