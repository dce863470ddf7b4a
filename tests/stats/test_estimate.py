"""Means with error bars: equal to closed forms and statsmodels; bootstrap shortcuts are exact."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as st

from evalkeeper.stats import (
    bootstrap_ci,
    bootstrap_means,
    bootstrap_se,
    clt_ci,
    clt_se,
    clustered_ci,
    clustered_se,
    mean_over_epochs,
)


def test_clt_ci_matches_closed_form_and_scipy_sem() -> None:
    x = np.random.default_rng(0).normal(0.3, 2.0, size=777)
    est = clt_ci(x, alpha=0.1)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert est.se == pytest.approx(float(st.sem(x)), rel=1e-12)
    assert est.se == pytest.approx(se, rel=1e-12)
    z = st.norm.ppf(0.95)
    assert est.ci_low == pytest.approx(x.mean() - z * se, abs=1e-12)
    assert est.ci_high == pytest.approx(x.mean() + z * se, abs=1e-12)
    assert (est.n, est.method) == (777, "clt")


def test_clt_binary_is_the_binomial_se_with_ddof1() -> None:
    x = np.array([1.0] * 70 + [0.0] * 30)
    assert clt_se(x) == pytest.approx(np.sqrt(0.7 * 0.3 / 99), rel=1e-12)


def test_clt_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError):
        clt_ci([])
    with pytest.raises(ValueError, match="NaN"):
        clt_ci([1.0, float("nan")])
    assert np.isnan(clt_se([1.0]))


def test_clustered_se_equals_statsmodels_cluster_robust_ols() -> None:
    rng = np.random.default_rng(3)
    clusters = rng.integers(0, 40, size=600)
    effect = rng.normal(0, 0.2, size=40)[clusters]
    y = ((rng.random(600) + effect) > 0.4).astype(float)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    assert clustered_se(y, clusters) == pytest.approx(float(fit.bse[0]), rel=1e-9)
    est = clustered_ci(y, [f"c{c}" for c in clusters])  # string cluster keys work the same
    assert est.se == pytest.approx(float(fit.bse[0]), rel=1e-9)
    assert est.method == "clustered"


def test_clustered_se_with_singleton_clusters_is_the_clt_se() -> None:
    x = np.random.default_rng(5).random(300)
    assert clustered_se(x, np.arange(300)) == pytest.approx(clt_se(x), rel=1e-12)


def test_clustered_se_grows_with_within_cluster_correlation() -> None:
    rng = np.random.default_rng(9)
    clusters = np.repeat(np.arange(50), 10)
    y = (rng.normal(size=50)[clusters] + 0.3 * rng.normal(size=500) > 0).astype(float)
    assert clustered_se(y, clusters) > 2.0 * clt_se(y)
    assert np.isnan(clustered_se(y, np.zeros(500)))  # one cluster: undefined, not zero


def test_mean_over_epochs_averages_per_id_sorted() -> None:
    ids, means = mean_over_epochs(["b", "a", "b", "a", "c"], [1, 0, 0, 0, 1])
    assert list(ids) == ["a", "b", "c"]
    assert list(means) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        mean_over_epochs(["a"], [1.0, 2.0])


def test_binary_bootstrap_shortcut_has_the_exact_binomial_distribution() -> None:
    x = np.r_[np.ones(300), np.zeros(700)]
    means = bootstrap_means(x, n_boot=200_000, seed=1)
    # resampled mean of n Bernoulli(p) draws: E = p, Var = p(1-p)/n exactly
    assert means.mean() == pytest.approx(0.3, abs=3e-4)
    assert means.var() == pytest.approx(0.3 * 0.7 / 1000, rel=0.01)
    assert bootstrap_se(x, 1000, seed=4) == bootstrap_se(x, 1000, seed=4)  # seeded
    assert bootstrap_se(x, 1000, seed=4) == pytest.approx(np.sqrt(0.21 / 1000), rel=0.06)


def test_multinomial_and_index_bootstrap_agree_with_plugin_se() -> None:
    rng = np.random.default_rng(2)
    levels = rng.choice([0.0, 0.25, 0.5, 1.0], size=2000)  # few levels: multinomial path
    cont = rng.exponential(size=2000)  # continuous: chunked index path
    for x in (levels, cont):
        plugin = x.std(ddof=0) / np.sqrt(x.size)
        assert bootstrap_se(x, n_boot=4000, seed=0, chunk=500) == pytest.approx(plugin, rel=0.05)


def test_index_bootstrap_resamples_the_data() -> None:
    x = np.arange(100, dtype=float) ** 1.5
    means = bootstrap_means(x, n_boot=50, seed=0, chunk=7)
    assert means.shape == (50,)
    assert np.all((means >= x.min()) & (means <= x.max()))
    assert len(np.unique(means)) > 45


def test_bootstrap_ci_percentile_interval_covers_the_mean() -> None:
    x = np.random.default_rng(8).exponential(size=500)
    est = bootstrap_ci(x, n_boot=2000, seed=0)
    assert est.ci_low < x.mean() < est.ci_high
    assert est.method == "bootstrap"
    assert bootstrap_ci(np.r_[np.ones(10), np.zeros(10)]).method == "binomial"
