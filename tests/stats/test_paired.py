"""Paired tests equal scipy/statsmodels where they compute the same thing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.weightstats import ttost_paired

from evalkeeper.stats import (
    mcnemar_exact,
    paired_difference,
    paired_permutation_test,
    tost_equivalence,
)


def _binary_pair(seed: int, n: int, pa: float, pb: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.random(n)  # shared difficulty makes the pair correlated, as real runs are
    a = (u + 0.3 * rng.random(n) < pa + 0.15).astype(float)
    b = (u + 0.3 * rng.random(n) < pb + 0.15).astype(float)
    return a, b


@pytest.mark.parametrize("seed", range(8))
def test_mcnemar_exact_equals_statsmodels(seed: int) -> None:
    a, b = _binary_pair(seed, 40 + 60 * seed, 0.6, 0.55)
    table = [[np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))],
             [np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))]]
    ref = mcnemar(table, exact=True)
    ours = mcnemar_exact(a, b)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert ours.statistic == ref.statistic
    assert ours.n_a_only == table[0][1] and ours.n_b_only == table[1][0]


def test_mcnemar_one_sided_is_the_binomial_test_on_discordant_pairs() -> None:
    a, b = _binary_pair(11, 800, 0.7, 0.64)
    r = mcnemar_exact(a, b, alternative="less")
    m = r.n_a_only + r.n_b_only
    assert r.p_value == pytest.approx(st.binomtest(r.n_b_only, m, 0.5, alternative="less").pvalue, abs=1e-12)
    g = mcnemar_exact(a, b, alternative="greater")
    ref = st.binomtest(r.n_b_only, m, 0.5, alternative="greater").pvalue
    assert g.p_value == pytest.approx(ref, abs=1e-12)
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([0.5], [1.0])


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_paired_t_equals_scipy_ttest_rel(alternative: str) -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=300)
    b = a + rng.normal(0.08, 0.5, size=300)
    res = paired_difference(a, b, alpha=0.1, alternative=alternative)  # type: ignore[arg-type]
    ref = st.ttest_rel(b, a, alternative=alternative)
    assert res.method == "paired_t"
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.mean_diff == pytest.approx(float(np.mean(b - a)), abs=1e-12)
    ci = st.ttest_rel(b, a).confidence_interval(confidence_level=0.9)
    assert res.ci_low == pytest.approx(ci.low, abs=1e-9)
    assert res.ci_high == pytest.approx(ci.high, abs=1e-9)
    assert res.se == pytest.approx(float(st.sem(b - a)), rel=1e-12)


def test_paired_difference_auto_picks_mcnemar_for_binary() -> None:
    a, b = _binary_pair(1, 500, 0.7, 0.6)
    res = paired_difference(a, b)
    assert res.method == "mcnemar_exact"
    assert res.p_value == mcnemar_exact(a, b).p_value
    assert res.mean_diff == pytest.approx(b.mean() - a.mean(), abs=1e-12)
    # paired SE is smaller than the unpaired one when runs share difficulty
    unpaired = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert res.se < unpaired
    assert paired_difference(a, b, test="t").method == "paired_t"


def test_paired_difference_degenerate_cases() -> None:
    same = paired_difference([1, 0, 1], [1, 0, 1], test="t")
    assert (same.mean_diff, same.se, same.p_value) == (0.0, 0.0, 1.0)
    shift = paired_difference([0.0, 0.0, 0.0], [0.5, 0.5, 0.5], test="t")
    assert shift.p_value == 0.0
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        paired_difference([], [])


def test_permutation_test_matches_exact_enumeration() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=12)
    b = a + rng.normal(0.4, 1.0, size=12)
    d = b - a
    signs = np.array(list(itertools.product([-1, 1], repeat=12)))
    null = signs @ np.abs(d)
    exact = np.mean(np.abs(null) >= abs(d.sum()) - 1e-12)
    mc = paired_permutation_test(a, b, n_perm=200_000, seed=0)
    assert mc == pytest.approx(exact, abs=0.004)
    exact_less = np.mean(null <= d.sum() + 1e-12)
    assert paired_permutation_test(a, b, 200_000, 0, "less") == pytest.approx(exact_less, abs=0.004)


def test_permutation_test_binary_fast_path_close_to_mcnemar() -> None:
    a, b = _binary_pair(3, 100_000, 0.7, 0.695)
    p_perm = paired_permutation_test(a, b, n_perm=20_000, seed=1)
    assert p_perm == pytest.approx(mcnemar_exact(a, b).p_value, abs=0.02)
    assert paired_permutation_test(a, a) == 1.0


def test_tost_equals_statsmodels_ttost_paired() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=400)
    b = a + rng.normal(0.01, 0.2, size=400)
    res = tost_equivalence(a, b, margin=0.05, alpha=0.05)
    ref_p, _, _ = ttost_paired(b, a, -0.05, 0.05)
    assert res.p_value == pytest.approx(float(ref_p), rel=1e-9)
    assert res.equivalent == (ref_p < 0.05)
    assert res.equivalent
    far = tost_equivalence(a, a + 0.2, margin=0.05)
    assert not far.equivalent and far.p_value == 1.0
    near = tost_equivalence(a, a, margin=0.01)
    assert near.equivalent and near.p_value == 0.0
    # the 1 - 2 alpha CI is inside the margin exactly when TOST says equivalent
    assert (-0.05 < res.ci_low and res.ci_high < 0.05) == res.equivalent
