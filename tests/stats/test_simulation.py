"""Seeded simulations: CIs cover at their nominal rate and the power formula predicts real power.

Each simulation draws all replications at once (or loops over our real functions on small arrays),
so the file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as st

from evalkeeper.stats import (
    clt_ci,
    mcnemar_exact,
    paired_difference,
    power_of_test,
    required_n,
)

# Probabilities of (a right, b right), (a right, b wrong), (a wrong, b right), (a wrong, b wrong).
CELLS = np.array([0.55, 0.10, 0.05, 0.30])
A_VALUES = np.array([1.0, 1.0, 0.0, 0.0])
B_VALUES = np.array([1.0, 0.0, 1.0, 0.0])
TRUE_DIFF = CELLS[2] - CELLS[1]  # mean(b - a) = -0.05
OMEGA2 = CELLS[1] + CELLS[2] - TRUE_DIFF**2  # Var(b - a)


def _paired_binary(rng: np.random.Generator, reps: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    cells = rng.choice(4, size=(reps, n), p=CELLS)
    return A_VALUES[cells], B_VALUES[cells]


def test_clt_ci_coverage_vectorized_binary() -> None:
    rng = np.random.default_rng(2024)
    reps, n, p = 40_000, 400, 0.7
    x = (rng.random((reps, n)) < p).astype(float)
    mean = x.mean(axis=1)
    se = x.std(axis=1, ddof=1) / np.sqrt(n)
    z = st.norm.ppf(0.975)
    coverage = np.mean((mean - z * se <= p) & (p <= mean + z * se))
    assert 0.94 <= coverage <= 0.96
    # the vectorized formula is the one clt_ci implements
    est = clt_ci(x[0])
    assert est.ci_low == np.float64(mean[0] - z * se[0])


def test_clt_ci_coverage_through_the_function() -> None:
    rng = np.random.default_rng(7)
    x = rng.exponential(size=(4000, 300))
    hits = [est.ci_low <= 1.0 <= est.ci_high for est in map(clt_ci, x)]
    assert 0.94 <= np.mean(hits) <= 0.96


def test_paired_ci_coverage_on_correlated_binary_runs() -> None:
    rng = np.random.default_rng(11)
    a, b = _paired_binary(rng, 4000, 300)
    hits = []
    for ra, rb in zip(a, b, strict=True):
        res = paired_difference(ra, rb)
        hits.append(res.ci_low <= TRUE_DIFF <= res.ci_high)
    assert 0.94 <= np.mean(hits) <= 0.96


def test_mcnemar_power_matches_the_formula_within_3_points() -> None:
    # a 2-point regression on a suite sized by the formula (~2,000 items, ~300 discordant pairs)
    cells = np.array([0.60, 0.08, 0.06, 0.26])
    delta = cells[2] - cells[1]
    omega2 = cells[1] + cells[2] - delta**2
    n = required_n(delta, omega2, alpha=0.05, power=0.8, alternative="one-sided")
    predicted = power_of_test(n, delta, omega2, 0.05, "one-sided")
    assert 0.8 <= predicted < 0.81
    rng = np.random.default_rng(5)
    draws = rng.choice(4, size=(3000, n), p=cells)
    a, b = A_VALUES[draws], B_VALUES[draws]
    rejections = [mcnemar_exact(ra, rb, alternative="less").p_value < 0.05
                  for ra, rb in zip(a, b, strict=True)]
    assert abs(np.mean(rejections) - predicted) <= 0.03


def test_paired_t_power_matches_the_formula_within_3_points() -> None:
    rng = np.random.default_rng(9)
    delta, omega2 = 0.1, 0.5
    for n in (100, 400):
        d = rng.normal(delta, np.sqrt(omega2), size=(20_000, n))
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
        simulated = np.mean(2 * st.t.sf(np.abs(t), n - 1) < 0.05)
        assert abs(simulated - power_of_test(n, delta, omega2, 0.05)) <= 0.03


def test_paired_test_false_alarm_rate_under_the_null_is_at_most_alpha() -> None:
    rng = np.random.default_rng(13)
    cells = np.array([0.55, 0.075, 0.075, 0.30])  # same accuracy, correlated
    draws = rng.choice(4, size=(4000, 500), p=cells)
    a, b = A_VALUES[draws], B_VALUES[draws]
    alarms = [paired_difference(ra, rb, alternative="less").p_value < 0.05
                  for ra, rb in zip(a, b, strict=True)]
    assert np.mean(alarms) <= 0.05
    assert np.mean(alarms) > 0.02  # not vacuous: the exact test is only mildly conservative
