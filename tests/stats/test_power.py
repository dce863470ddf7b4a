"""Power formulas equal statsmodels' normal power and the closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.power import NormalIndPower

from evalkeeper.stats import (
    minimum_detectable_effect,
    omega2_paired,
    omega2_unpaired,
    power_of_test,
    required_n,
)


def test_required_n_closed_form() -> None:
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert required_n(0.02, 0.3) == math.ceil(z**2 * 0.3 / 0.02**2)
    z1 = st.norm.ppf(0.95) + st.norm.ppf(0.9)
    n1 = required_n(-0.05, 0.2, alpha=0.05, power=0.9, alternative="one-sided")
    assert n1 == math.ceil(z1**2 * 0.2 / 0.0025)


@pytest.mark.parametrize(("delta", "omega2", "n"), [(0.02, 0.3, 5000), (0.05, 0.1, 300), (0.1, 0.5, 80)])
def test_power_equals_statsmodels_one_sample_normal_power(delta: float, omega2: float, n: int) -> None:
    es = delta / math.sqrt(omega2)
    ref = NormalIndPower().power(es, nobs1=n, alpha=0.05, ratio=0, alternative="two-sided")
    assert power_of_test(n, delta, omega2, 0.05) == pytest.approx(ref, abs=1e-9)
    ref1 = NormalIndPower().power(es, nobs1=n, alpha=0.05, ratio=0, alternative="larger")
    assert power_of_test(n, delta, omega2, 0.05, "one-sided") == pytest.approx(ref1, abs=1e-9)


def test_mde_and_required_n_invert_each_other() -> None:
    mde = minimum_detectable_effect(2000, 0.25, alpha=0.05, power=0.8, alternative="one-sided")
    assert power_of_test(2000, mde, 0.25, 0.05, "one-sided") == pytest.approx(0.8, abs=1e-9)
    n = required_n(mde, 0.25, alpha=0.05, power=0.8, alternative="one-sided")
    assert n in (2000, 2001)
    with pytest.raises(ValueError):
        required_n(0.0, 0.3)


def test_omega2_estimates() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0])
    b = np.array([1.0, 1.0, 0.0, 1.0])
    assert omega2_paired(a, b) == pytest.approx(np.var(b - a, ddof=1))
    assert omega2_unpaired(a) == pytest.approx(2 * np.var(a, ddof=1))
