"""build_report: the numbers behind every format (metrics, slices, worst samples, comparison, gates)."""

from __future__ import annotations

import math
import re
import uuid

import numpy as np
import pytest

from evalkeeper.analysis import compare_runs
from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.core.records import Decision, MetricResult, ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.report import build_report
from evalkeeper.store import Workspace
from helpers import Z95, make_run

GROUPS = {"lang": ["en", "fr", "de"], "len": ["short", "long"]}


def test_metrics_carry_stored_cis_and_primary_flags(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith", "mc"), n=120, seed=3)
    data = build_report(workspace, run.run_id)
    stored = {(m.task, m.metric): m for m in workspace.get_metrics(run.run_id)}
    assert [(m.task, m.metric) for m in data.metrics] == [("arith", "acc"), ("mc", "acc")]
    for row in data.metrics:
        m = stored[(row.task, row.metric)]
        assert row.primary and row.estimate.value == m.value
        assert (row.estimate.ci_low, row.estimate.ci_high, row.estimate.n) == (m.ci_low, m.ci_high, 120)
    assert data.summary.n_samples == 240 and data.summary.n_tasks == 2
    assert data.comparison is None and data.gate is None


def test_missing_cis_are_recomputed_from_samples(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=80, seed=4)
    m = workspace.get_metrics(run.run_id)[0]
    workspace.save_metrics(run.run_id, [m.model_copy(update={"stderr": None, "ci_low": None, "ci_high": None})])
    data = build_report(workspace, run.run_id)
    _, vals = workspace.scores(run.run_id, "arith", "acc")
    se = vals.std(ddof=1) / math.sqrt(vals.size)
    est = data.metrics[0].estimate
    assert est.method == "clt" and est.stderr == pytest.approx(se, rel=1e-12)
    assert est.ci_low == pytest.approx(vals.mean() - Z95 * se) and est.ci_high == pytest.approx(vals.mean() + Z95 * se)


def test_slices_match_numpy_per_group(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=150, seed=5, groups=GROUPS)
    data = build_report(workspace, run.run_id)
    ids, vals = workspace.scores(run.run_id, "arith", "acc")
    index = np.array([int(s.split("-")[1]) for s in ids])
    got = {(s.attribute, s.value): s.estimate for s in data.slices}
    assert set(got) == {("lang", v) for v in GROUPS["lang"]} | {("len", v) for v in GROUPS["len"]}
    for attr, values in GROUPS.items():
        for k, v in enumerate(values):
            x = vals[index % len(values) == k]
            est = got[(attr, v)]
            se = x.std(ddof=1) / math.sqrt(x.size)
            assert est.n == x.size and est.value == pytest.approx(x.mean(), abs=1e-12)
            assert est.ci_low == pytest.approx(x.mean() - Z95 * se) and est.ci_high == pytest.approx(x.mean() + Z95 * se)


def test_slices_average_epochs_per_item(workspace: Workspace) -> None:
    """Two epochs of the same item count once (mean of the epochs), as the CLT over items requires."""
    rid = "run-epochs"
    samples = []
    for i in range(10):
        for epoch, score in enumerate((1.0, 0.0) if i < 4 else (1.0, 1.0)):
            samples.append(Sample(run_id=rid, task="t", sample_id=f"t-{i}", epoch=epoch, input="q",
                                  scores={"acc": score}, group={"g": "a" if i < 5 else "b"}))
    run = Run(run_id=rid, model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    workspace.add_run(run, [], [samples])
    data = build_report(workspace, rid)
    a = next(s for s in data.slices if s.value == "a").estimate
    assert a.n == 5 and a.value == pytest.approx((4 * 0.5 + 1.0) / 5)
    # the metric itself was not stored: it is computed from the samples, also over items
    assert data.metrics[0].estimate.n == 10 and data.metrics[0].estimate.value == pytest.approx(0.8)


def test_worst_samples_are_the_lowest_scores(workspace: Workspace) -> None:
    rid = "run-worst"
    rng = np.random.default_rng(0)
    scores = rng.random(60)
    samples = [Sample(run_id=rid, task="t", sample_id=f"s{i:02d}", input=f"in {i}", prediction=f"out {i}",
                      scores={"f1": float(scores[i]), "loss": float(1 - scores[i])}) for i in range(60)]
    run = Run(run_id=rid, model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["f1", "loss"])])
    workspace.add_run(run, [], [samples])
    worst = build_report(workspace, rid, worst_per_task=4).worst_samples
    expected = [f"s{i:02d}" for i in np.argsort(scores)[:4]]
    assert [w.sample_id for w in worst] == expected
    assert [w.score for w in worst] == sorted(float(scores[int(s[1:])]) for s in expected)
    assert worst[0].prediction == f"out {int(expected[0][1:])}"

    # where lower is better, the worst samples are the highest scores
    run2 = run.model_copy(update={"run_id": "run-worst2",
                                  "tasks": [TaskInfo(name="t", metrics=["loss"], higher_is_better={"loss": False})]})
    workspace.add_run(run2, [], [[s.model_copy(update={"run_id": "run-worst2"}) for s in samples]])
    worst2 = build_report(workspace, "run-worst2", worst_per_task=3).worst_samples
    assert [w.sample_id for w in worst2] == [f"s{i:02d}" for i in np.argsort(scores)[:3]]


def test_comparison_comes_from_compare_runs(workspace: Workspace) -> None:
    base = make_run(workspace, tasks=("arith", "mc"), n=300, seed=1, p=0.75)
    cand = make_run(workspace, tasks=("arith", "mc"), n=300, seed=2, p={"arith": 0.55, "mc": 0.76})
    workspace.set_baseline("prod", base.run_id)
    data = build_report(workspace, cand.run_id, compare="prod")
    ref = compare_runs(workspace, base.run_id, cand.run_id)
    c = data.comparison
    assert c is not None and c.baseline_run_id == base.run_id and c.baseline_ref == "prod"
    assert c.correction == ref.correction and len(c.rows) == len(ref.rows) == 2
    for got, want in zip(c.rows, ref.rows, strict=True):
        assert (got.task, got.metric) == (want.task, want.metric)
        assert got.diff.value == want.diff and got.diff.ci_low == want.ci_low and got.diff.ci_high == want.ci_high
        assert got.p_value == want.p_value and got.p_adjusted == want.p_corrected
        assert got.n_paired == want.n_paired == 300
        assert (got.flips_to_wrong, got.flips_to_right) == (want.n_right_to_wrong, want.n_wrong_to_right)
    arith = c.rows[0]
    assert arith.significant and arith.direction == "regressed" and arith.diff.value < 0
    assert data.summary.n_regressed == 1 and data.summary.n_improved == 0 and data.summary.n_unchanged == 1
    assert "1 significant regression" in data.summary.headline
    assert any(b.startswith("Regressed: arith/acc") for b in data.summary.bullets)


def test_compare_errors(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=20, seed=1)
    with pytest.raises(NotFoundError):
        build_report(workspace, run.run_id, compare="no-such-baseline")
    with pytest.raises(EvalkeeperError, match="own run"):
        build_report(workspace, run.run_id, compare=run.run_id)


def _gate(ws: Workspace, run_id: str, verdict: str, failed_rule: str | None) -> Decision:
    rules = [{"name": "arith-min", "verdict": "pass", "message": "acc 0.71 >= 0.6",
              "evidence": {"estimate": 0.71, "ci_low": 0.66, "n": 300}}]
    if failed_rule:
        rules.append({"name": failed_rule, "verdict": "fail", "message": "dropped 0.13 (p_corrected 0.002)",
                      "evidence": {"diff": -0.13, "p_corrected": 0.002}})
    return ws.append_decision(Decision(decision_id=uuid.uuid4().hex, kind="gate", subject=run_id, verdict=verdict,
                                       details={"policy": "gates.yaml", "policy_sha256": "ab" * 32,
                                                "rules": rules}))


def test_latest_gate_decision_is_reported(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=30, seed=1)
    _gate(workspace, run.run_id, "pass", None)
    latest = _gate(workspace, run.run_id, "fail", "no-regression-arith")
    g = build_report(workspace, run.run_id).gate
    assert g is not None and g.decision_id == latest.decision_id and g.verdict == "fail"
    assert [r.name for r in g.rules] == ["arith-min", "no-regression-arith"]
    assert g.rules[1].evidence == {"diff": -0.13, "p_corrected": 0.002} and g.policy_sha256 == "ab" * 32
    data = build_report(workspace, run.run_id)
    assert data.summary.gate_verdict == "fail" and "gate FAIL" in data.summary.headline
    assert any("1 of 2 rules failed: no-regression-arith" in b for b in data.summary.bullets)
    assert build_report(workspace, run.run_id, include_gate=False).gate is None
    # an explicit gate report wins over the audit log
    given = build_report(workspace, run.run_id, gate_report={"verdict": "pass", "rules": []}).gate
    assert given is not None and given.verdict == "pass" and given.decision_id is None


def test_run_without_samples_still_reports(workspace: Workspace) -> None:
    run = Run(run_id="run-nosamples", model=ModelInfo(name="m"), provenance=Provenance(producer="lighteval"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    metric = MetricResult(run_id=run.run_id, task="t", metric="acc", value=0.5, stderr=0.05, n=100)
    workspace.add_run(run, [metric], [])
    data = build_report(workspace, run.run_id)
    est = data.metrics[0].estimate
    assert est.ci_low == pytest.approx(0.5 - Z95 * 0.05) and est.ci_high == pytest.approx(0.5 + Z95 * 0.05)
    assert data.slices == [] and data.worst_samples == [] and any("no stored samples" in n for n in data.notes)


def test_environment_summary(workspace: Workspace) -> None:
    run = make_run(workspace, tasks=("arith",), n=10, seed=1)
    env = {"python": {"version": "3.11.9"}, "os": {"platform": "Linux-6.1"}, "packages": {"torch": "2.13.0",
           "numpy": "2.1.0", "left-pad": "1.0"}, "git": {"commit": "0123456789abcdef", "dirty": True,
                                                         "branch": "main"}}
    workspace.save_run(workspace.get_run(run.run_id).model_copy(update={"environment": env}))
    e = build_report(workspace, run.run_id).environment
    assert e is not None and e.items["python"] == "3.11.9" and e.items["packages"] == 3
    assert e.packages == {"torch": "2.13.0", "numpy": "2.1.0"} and "dirty" in str(e.items["git"])


def test_chart_ticks_and_labels() -> None:
    from evalkeeper.report._charts import Bar, bar_chart

    svg = str(bar_chart([Bar("a<script>", -0.0013, -0.004, 0.0012), Bar("b", 0.001, -0.001, 0.003)],
                        points=True, zero_line=True, symmetric=True, title="t&t"))
    ticks = re.findall(r'text-anchor="middle" fill="#555">([^<]+)<', svg)
    assert len(ticks) == len(set(ticks)) >= 3 and "0.000" in ticks  # distinct labels at fine scales
    assert "a&lt;script&gt;" in svg and "<script>" not in svg and "t&amp;t" in svg
    assert "-0.001 [-0.004, 0.001]" in svg


POLICY = """
version: 1
name: release
baseline: prod
rules:
  - id: no-regression
    kind: no_regression
    task: "*"
    max_drop: 0.02
  - id: arith-floor
    kind: threshold
    task: arith
    metric: acc
    min: 0.5
    on: ci
"""


def test_real_gate_run_in_report(workspace: Workspace) -> None:
    from evalkeeper.gates import parse_policy, run_gate

    base = make_run(workspace, tasks=("arith", "mc"), n=300, seed=1, p=0.8)
    cand = make_run(workspace, tasks=("arith", "mc"), n=300, seed=2, p={"arith": 0.6, "mc": 0.8})
    workspace.set_baseline("prod", base.run_id)
    live = run_gate(workspace, cand.run_id, parse_policy(POLICY, "gates.yaml"))
    assert not live.passed
    stored = build_report(workspace, cand.run_id).gate  # from the audit log
    given = build_report(workspace, cand.run_id, gate_report=live).gate  # from the live GateReport
    for g in (stored, given):
        assert g is not None and g.verdict == "fail" and g.decision_id == live.decision_id
        assert g.policy_sha256 == live.policy_sha256
        by_name = {r.name: r for r in g.rules}
        failed = by_name["no-regression (arith/acc)"]
        want = next(v for v in live.verdicts if v.rule_id == "no-regression" and v.task == "arith")
        assert failed.verdict == "fail" and failed.evidence["diff"] == want.diff
        assert failed.evidence["p_corrected"] == want.p_corrected
        assert by_name["arith-floor (arith/acc)"].verdict == want_status(live, "arith-floor")
    assert given is not None and given.rules[0].message  # the live report carries each rule's reason


def want_status(report: object, rule_id: str) -> str:
    return next(v.status for v in report.verdicts if v.rule_id == rule_id)  # type: ignore[attr-defined]


def test_headline_metric_falls_back_when_declared_one_is_missing(workspace: Workspace) -> None:
    run = Run(run_id="run-mc2", model=ModelInfo(name="m"), provenance=Provenance(producer="lighteval"),
              tasks=[TaskInfo(name="truthfulqa", metrics=["mc1"])])
    workspace.add_run(run, [MetricResult(run_id="run-mc2", task="truthfulqa", metric="mc2", value=0.41,
                                         stderr=0.03)], [])
    data = build_report(workspace, "run-mc2")
    assert [(m.metric, m.primary) for m in data.metrics] == [("mc2", True)]
    assert any(b.startswith("truthfulqa: mc2 = 0.410 [0.351, 0.469]") for b in data.summary.bullets)
    assert data.environment is None


def test_worst_samples_leave_out_best_scores(workspace: Workspace) -> None:
    rid = "run-two-wrong"
    samples = [Sample(run_id=rid, task="t", sample_id=f"s{i}", scores={"acc": 0.0 if i in (3, 7) else 1.0})
               for i in range(10)]
    run = Run(run_id=rid, model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    workspace.add_run(run, [], [samples])
    assert [w.sample_id for w in build_report(workspace, rid).worst_samples] == ["s3", "s7"]


def test_report_aggregates_in_duckdb_without_loading_samples(workspace: Workspace,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The performance contract: without --compare no per-sample array or table reaches Python, and the
    only rows fetched are aggregates and the few worst samples."""
    run = make_run(workspace, tasks=("arith", "mc"), n=400, seed=1, groups=GROUPS)
    fetched: list[int] = []
    real_sql = workspace.sql

    def counting_sql(sql: str, params: list[object] | None = None):  # type: ignore[no-untyped-def]
        table = real_sql(sql, params)  # type: ignore[arg-type]
        fetched.append(table.num_rows)
        return table

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a report must not load samples into Python")

    monkeypatch.setattr(workspace, "sql", counting_sql)
    monkeypatch.setattr(workspace, "query_samples", refuse)
    monkeypatch.setattr(workspace, "scores", refuse)
    data = build_report(workspace, run.run_id)
    assert len(data.slices) == 2 * 5 and len(data.worst_samples) == 10
    assert max(fetched) <= 10 and sum(fetched) < 40  # 800 samples stored, a few dozen rows read back
