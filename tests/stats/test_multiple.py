"""Holm and Benjamini–Hochberg equal statsmodels' multipletests."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from evalkeeper.stats import adjust_pvalues, benjamini_hochberg, holm


@pytest.mark.parametrize("seed", range(5))
def test_holm_and_bh_equal_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random(37) ** 4
    p[:3] = p[3]  # ties
    assert np.max(np.abs(holm(p) - multipletests(p, method="holm")[1])) < 1e-12
    assert np.max(np.abs(benjamini_hochberg(p) - multipletests(p, method="fdr_bh")[1])) < 1e-12


def test_nan_pvalues_pass_through_and_do_not_count() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03])
    h = holm(p)
    assert np.isnan(h[1])
    assert np.allclose(h[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])
    assert np.allclose(adjust_pvalues(p, "bh")[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="fdr_bh")[1])
    assert adjust_pvalues([], "holm").size == 0


def test_holm_known_values_and_errors() -> None:
    assert list(holm([0.01, 0.02, 0.03])) == pytest.approx([0.03, 0.04, 0.04])
    assert list(benjamini_hochberg([0.01, 0.02, 0.03])) == pytest.approx([0.03, 0.03, 0.03])
    assert list(adjust_pvalues([0.2, 0.5], "none")) == [0.2, 0.5]
    with pytest.raises(ValueError):
        holm([1.5])
    with pytest.raises(ValueError):
        adjust_pvalues([0.1], "bonferroni-ish")
