"""compare_runs: paired numbers equal the stats functions on the joined scores."""

from __future__ import annotations

import numpy as np
import pytest

from evalkeeper.analysis import compare_runs, power_plan
from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.stats import holm, mcnemar_exact, required_n
from evalkeeper.store import Workspace
from helpers import make_run


def test_compare_runs_numbers_match_the_paired_statistics(workspace: Workspace) -> None:
    a = make_run(workspace, n=600, seed=1, p=0.7)
    b = make_run(workspace, n=600, seed=2, p={"arith": 0.55, "mc": 0.7})
    res = compare_runs(workspace, a.run_id, b.run_id)
    assert [r.task for r in res.rows] == ["arith", "mc"]
    raw = []
    for row in res.rows:
        ids_a, va = workspace.scores(a.run_id, row.task, "acc")
        ids_b, vb = workspace.scores(b.run_id, row.task, "acc")
        assert list(ids_a) == list(ids_b)
        assert row.mean_a == pytest.approx(va.mean()) and row.mean_b == pytest.approx(vb.mean())
        assert row.diff == pytest.approx(vb.mean() - va.mean(), abs=1e-12)
        mc = mcnemar_exact(va, vb)
        assert row.test == "mcnemar_exact" and row.p_value == pytest.approx(mc.p_value, abs=1e-12)
        assert (row.n_right_to_wrong, row.n_wrong_to_right) == (mc.n_a_only, mc.n_b_only)
        assert set(row.right_to_wrong) == set(ids_a[(va == 1) & (vb == 0)])
        assert row.n_paired == 600 and row.ci_low < row.diff < row.ci_high
        raw.append(row.p_value)
    assert [r.p_corrected for r in res.rows] == pytest.approx(list(holm(raw)))
    arith = res.row("arith")
    assert arith.significant and arith.direction == "worse"


def test_compare_joins_on_shared_ids_only(workspace: Workspace) -> None:
    a = make_run(workspace, tasks=("arith",), n=100, seed=1)
    b = make_run(workspace, tasks=("arith",), n=150, seed=2)
    row = compare_runs(workspace, a.run_id, b.run_id, correction="bh").rows[0]
    assert (row.n_a, row.n_b, row.n_paired) == (100, 150, 100)
    _, vb = workspace.scores(b.run_id, "arith", "acc")
    ids_b, _ = workspace.scores(b.run_id, "arith", "acc")
    keep = np.isin(ids_b, [f"arith-{i}" for i in range(100)])
    assert row.mean_b == pytest.approx(vb[keep].mean())


def test_compare_errors_on_bad_input(workspace: Workspace) -> None:
    a = make_run(workspace, tasks=("arith",), n=20, seed=1)
    b = make_run(workspace, tasks=("mc",), n=20, seed=2)
    with pytest.raises(EvalkeeperError, match="no task in common"):
        compare_runs(workspace, a.run_id, b.run_id)
    with pytest.raises(NotFoundError, match="'mc' is not in run"):
        compare_runs(workspace, a.run_id, b.run_id, tasks=["mc"])


def test_compare_errors_when_no_sample_ids_are_shared(workspace: Workspace) -> None:
    a = make_run(workspace, tasks=("arith",), n=20, seed=1)
    b = make_run(workspace, tasks=("arith",), n=20, seed=2)
    # rewrite b's sample ids so nothing pairs
    table = workspace.query_samples(b.run_id)
    import pyarrow as pa

    ids = pa.array([f"other-{i}" for i in range(table.num_rows)])
    c = make_run(workspace, tasks=("arith",), n=1, seed=3)
    run = workspace.get_run(c.run_id).model_copy(update={"run_id": "run-renamed"})
    workspace.add_run(run, [], [table.set_column(table.column_names.index("sample_id"), "sample_id", ids)])
    with pytest.raises(EvalkeeperError, match="share no scored samples"):
        compare_runs(workspace, a.run_id, "run-renamed")


def test_power_plan_paired_and_unpaired(workspace: Workspace) -> None:
    a = make_run(workspace, tasks=("arith",), n=400, seed=1)
    b = make_run(workspace, tasks=("arith",), n=400, seed=2)
    _, va = workspace.scores(a.run_id, "arith", "acc")
    _, vb = workspace.scores(b.run_id, "arith", "acc")
    plan = power_plan(workspace, b.run_id, "arith", 0.02, baseline=a.run_id)
    assert plan["omega2"] == pytest.approx(np.var(vb - va, ddof=1))
    assert plan["required_n"] == required_n(0.02, plan["omega2"], 0.05, 0.8, "one-sided")
    solo = power_plan(workspace, b.run_id, "arith", 0.02, alternative="two-sided")
    assert solo["omega2"] == pytest.approx(2 * np.var(vb, ddof=1))
    assert "one run only" in solo["omega2_from"]
    with pytest.raises(NotFoundError):
        power_plan(workspace, b.run_id, "nope", 0.02)
