"""Verdicts and their numbers on synthetic runs with known score distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from evalkeeper.core.errors import ConfigError, EvalkeeperError, NotFoundError
from evalkeeper.gates import evaluate_policy, parse_policy, run_gate, set_baseline
from evalkeeper.stats import benjamini_hochberg, holm, mcnemar_exact, required_n
from evalkeeper.store import Workspace
from helpers import make_run

Z = st.norm.ppf(0.975)


def _policy(body: str, **top: str) -> object:
    head = "".join(f"{k}: {v}\n" for k, v in top.items())
    return parse_policy(head + "rules:\n" + body, "gates.yaml")


def test_threshold_modes_use_the_clt_interval(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=400, seed=3, p=0.62)
    _, v = workspace.scores(run.run_id, "arith", "acc")
    mean, se = v.mean(), v.std(ddof=1) / np.sqrt(v.size)
    floor = round(mean - Z * se / 2, 4)  # between the lower CI bound and the estimate
    pol = _policy(
        f"  - {{id: est, kind: threshold, task: arith, min: {floor}}}\n"
        f"  - {{id: ci, kind: threshold, task: arith, min: {floor}, on: ci}}\n"
        f"  - {{id: test-ok, kind: threshold, task: arith, min: {floor}, on: test}}\n"
        f"  - {{id: test-bad, kind: threshold, task: arith, min: {mean + 4 * se:.4f}, on: test}}\n"
    )
    rep = evaluate_policy(workspace, run.run_id, pol)  # type: ignore[arg-type]
    by = {v.rule_id: v for v in rep.verdicts}
    assert by["est"].status == "pass" and by["ci"].status == "fail"
    assert by["est"].estimate == pytest.approx(mean) and by["est"].se == pytest.approx(se)
    assert by["ci"].ci_low == pytest.approx(mean - Z * se) and by["ci"].ci_high == pytest.approx(mean + Z * se)
    assert by["test-ok"].status == "pass"
    assert by["test-bad"].status == "fail"
    bound = by["test-bad"].bound_min
    assert bound is not None
    assert by["test-bad"].p_value == pytest.approx(st.norm.cdf((mean - bound) / se), rel=1e-9)
    tested = [by["test-ok"].p_value, by["test-bad"].p_value]
    assert [by["test-ok"].p_corrected, by["test-bad"].p_corrected] == pytest.approx(list(holm(tested)))
    assert by["est"].p_corrected is None  # not in the corrected family
    assert not rep.passed and rep.n_failed == 2 and rep.exit_code == 1


def test_no_regression_fails_only_when_significant_and_beyond_tolerance(workspace: Workspace) -> None:
    base = make_run(workspace, n=1500, seed=1, p=0.75)
    cand = make_run(workspace, n=1500, seed=2, p={"arith": 0.65, "mc": 0.75})
    set_baseline(workspace, base.run_id, "prod")
    strict = evaluate_policy(workspace, cand.run_id, _policy(
        "  - {id: nr, kind: no_regression, task: '*', max_drop: 0.02}\n", baseline="prod"))  # type: ignore[arg-type]
    arith, mc = strict.verdicts
    _, va = workspace.scores(base.run_id, "arith", "acc")
    _, vb = workspace.scores(cand.run_id, "arith", "acc")
    assert arith.diff == pytest.approx(vb.mean() - va.mean())
    assert arith.p_value == pytest.approx(mcnemar_exact(va, vb, alternative="less").p_value)
    assert arith.status == "fail" and "significant" in arith.reason and "larger than the tolerance" in arith.reason
    assert arith.baseline_run == base.run_id and arith.n_paired == 1500 and arith.test == "mcnemar_exact"
    assert arith.ci_high is not None and arith.ci_high < 0 and arith.ci_level == pytest.approx(0.9)
    assert mc.status == "pass"
    assert [arith.p_corrected, mc.p_corrected] == pytest.approx(list(holm([arith.p_value, mc.p_value])))
    # the same drop within a generous tolerance: significant but passes, and says so
    lenient = evaluate_policy(workspace, cand.run_id, _policy(
        "  - {id: nr, kind: no_regression, task: arith, max_drop: 0.2}\n", baseline="prod"))  # type: ignore[arg-type]
    v = lenient.verdicts[0]
    assert v.status == "pass" and v.significant and "but within the tolerance" in v.reason


def test_no_regression_large_but_not_significant_passes_and_warns_underpowered(workspace: Workspace) -> None:
    base = make_run(workspace, tasks=("arith",), n=40, seed=1, p=0.8)
    cand = make_run(workspace, tasks=("arith",), n=40, seed=2, p=0.7)
    rep = evaluate_policy(workspace, cand.run_id, _policy(
        f"  - {{kind: no_regression, task: arith, max_drop: 0.01, baseline: {base.run_id}}}\n"))  # type: ignore[arg-type]
    v = rep.verdicts[0]
    _, va = workspace.scores(base.run_id, "arith", "acc")
    _, vb = workspace.scores(cand.run_id, "arith", "acc")
    drop = va.mean() - vb.mean()
    assert drop > 0.01 and not v.significant and v.status == "pass"
    assert "exceeds the tolerance" in v.reason and "not significant" in v.reason
    omega2 = np.var(vb - va, ddof=1)
    assert v.details["power"]["required_n"] == required_n(0.01, omega2, 0.05, 0.8, "one-sided")
    assert any(w.startswith("underpowered") for w in v.warnings)


def test_bh_correction_across_rules(workspace: Workspace) -> None:
    base = make_run(workspace, tasks=("a", "b", "c"), n=300, seed=1, p=0.7)
    cand = make_run(workspace, tasks=("a", "b", "c"), n=300, seed=2, p={"a": 0.6, "b": 0.66, "c": 0.7})
    rep = evaluate_policy(workspace, cand.run_id, _policy(
        "  - {kind: no_regression, task: '*'}\n", correction="bh", baseline=base.run_id))  # type: ignore[arg-type]
    raw = [v.p_value for v in rep.verdicts]
    assert [v.p_corrected for v in rep.verdicts] == pytest.approx(list(benjamini_hochberg(raw)))


def test_rate_on_a_group_subset(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("safety",), n=300, seed=4, p=0.8, metric="refused",
                   groups={"category": ["harmful", "benign", "benign"]})
    table = workspace.query_samples(run.run_id, where="\"group\"['category'] = 'harmful'")
    harmful = np.array([dict(s)["refused"] for s in table.column("scores").to_pylist()], dtype=float)
    pol = _policy(
        "  - {id: harm, kind: rate, task: safety, metric: refused, group: {category: harmful}, min: 0.99}\n"
        "  - id: benign\n    kind: rate\n    task: safety\n    where: \"\\\"group\\\"['category'] = 'benign'\"\n"
        "    max: 0.9\n")
    rep = evaluate_policy(workspace, run.run_id, pol)  # type: ignore[arg-type]
    harm, benign = rep.verdicts
    assert harm.n == harmful.size == 100 and harm.estimate == pytest.approx(harmful.mean())
    assert harm.status == "fail" and harm.subset == "group.category = 'harmful'"
    assert benign.n == 200 and benign.metric == "refused"
    with pytest.raises(EvalkeeperError, match="no 'refused' scores for the subset"):
        evaluate_policy(workspace, run.run_id, _policy(
            "  - {kind: rate, task: safety, group: {category: nope}, max: 0.1}\n"))  # type: ignore[arg-type]


def test_clustered_se_rule(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=200, seed=5, groups={"passage": [str(i) for i in range(20)]})
    rep = evaluate_policy(workspace, run.run_id, _policy(
        "  - {kind: threshold, task: arith, min: 0.1, se: clustered, cluster_by: group.passage}\n"))  # type: ignore[arg-type]
    v = rep.verdicts[0]
    assert v.se_method == "clustered" and v.details["n_clusters"] == 20 and v.se is not None and v.se > 0


def test_min_samples_required_tasks_and_severity(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith", "mc"), n=50, seed=6)
    rep = evaluate_policy(workspace, run.run_id, _policy(
        "  - {id: n, kind: min_samples, task: '*', min: 60, detect: 0.05}\n"
        "  - {id: req, kind: required_tasks, tasks: [arith, code]}\n"
        "  - {id: soft, kind: required_tasks, tasks: [gsm8k], severity: warning}\n"))  # type: ignore[arg-type]
    statuses = {(v.rule_id, v.task): v.status for v in rep.verdicts}
    assert statuses == {("n", "arith"): "fail", ("n", "mc"): "fail", ("req", None): "fail", ("soft", None): "warn"}
    n_arith = rep.verdicts[0]
    assert n_arith.n == 50 and "one run only" in n_arith.details["power"]["omega2_from"]
    assert rep.verdicts[2].details["missing"] == ["code"]
    ok = evaluate_policy(workspace, run.run_id, _policy(
        "  - {kind: required_tasks, tasks: [gsm8k], severity: warning}\n"))  # type: ignore[arg-type]
    assert ok.passed and ok.verdicts[0].status == "warn"


def test_bad_input_is_an_error_never_a_pass(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=30, seed=1)
    other = make_run(workspace, tasks=("mc",), n=30, seed=2)
    cases = [
        ("  - {kind: threshold, task: nope, min: 0.5}\n", NotFoundError, "gates.yaml:2 rules[0].task"),
        ("  - {kind: threshold, task: arith, metric: f1, min: 0.5}\n", NotFoundError, "metric 'f1'"),
        ("  - {kind: no_regression, task: arith}\n", ConfigError, "needs a baseline"),
        ("  - {kind: no_regression, task: arith, baseline: ghost}\n", NotFoundError, "'ghost' is neither"),
        (f"  - {{kind: no_regression, task: arith, baseline: {other.run_id}}}\n", NotFoundError, "has no task"),
    ]
    for body, exc, text in cases:
        with pytest.raises(exc) as info:
            evaluate_policy(workspace, run.run_id, _policy(body))  # type: ignore[arg-type]
        assert text in info.value.render()
        assert info.value.exit_code == 2


def test_gate_runs_are_recorded_in_the_audit_log(workspace: Workspace) -> None:
    base = make_run(workspace, tasks=("arith",), n=100, seed=1)
    cand = make_run(workspace, tasks=("arith",), n=100, seed=2)
    decision = set_baseline(workspace, base.run_id, "prod")
    assert decision.kind == "baseline" and decision.details == {"name": "prod", "previous": None}
    pol = _policy("  - {kind: no_regression, task: arith, max_drop: 0.5}\n", baseline="prod")
    rep = run_gate(workspace, cand.run_id, pol)  # type: ignore[arg-type]
    gates = workspace.list_decisions(kind="gate")
    assert len(gates) == 1 and gates[0].decision_id == rep.decision_id
    assert gates[0].verdict == "pass" and gates[0].details["policy_sha256"] == pol.sha256  # type: ignore[attr-defined]
    assert gates[0].details["baselines"] == {"prod": base.run_id}
    bad = _policy("  - {kind: threshold, task: missing, min: 0.5}\n")
    with pytest.raises(NotFoundError):
        run_gate(workspace, cand.run_id, bad)  # type: ignore[arg-type]
    last = workspace.list_decisions(kind="gate")[-1]
    assert last.verdict == "error" and "missing" in last.details["error"]
    assert workspace.verify_audit_log() == (True, None)


def test_lower_is_better_metrics_regress_upwards(workspace: Workspace) -> None:
    base = make_run(workspace, tasks=("tox",), n=600, seed=1, p=0.2, metric="toxic")
    cand = make_run(workspace, tasks=("tox",), n=600, seed=2, p=0.32, metric="toxic")
    for run in (base, cand):
        stored = workspace.get_run(run.run_id)
        stored.tasks[0].higher_is_better = {"toxic": False}
        workspace.save_run(stored)
    rep = evaluate_policy(workspace, cand.run_id, _policy(
        f"  - {{kind: no_regression, task: tox, max_drop: 0.02, baseline: {base.run_id}}}\n"))  # type: ignore[arg-type]
    v = rep.verdicts[0]
    assert v.diff is not None and v.diff > 0.05  # more toxic
    assert v.details["drop"] == pytest.approx(v.diff) and v.status == "fail"
    _, va = workspace.scores(base.run_id, "tox", "toxic")
    _, vb = workspace.scores(cand.run_id, "tox", "toxic")
    assert v.p_value == pytest.approx(mcnemar_exact(va, vb, alternative="greater").p_value)
