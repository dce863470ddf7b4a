"""Means with error bars: CLT, clustered (Miller 2024) and bootstrap standard errors.

Everything here is pure numpy/scipy and takes plain arrays, so the same code serves the store, the
gates, the reports and the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special as _sp

FloatArray = npt.NDArray[np.float64]

# Bootstrap resampling is chunked so that one chunk holds at most this many drawn indices (~64 MB int64).
_MAX_CHUNK_CELLS = 8_000_000
# Values with at most this many distinct levels are bootstrapped exactly through a multinomial draw.
_MAX_LEVELS_FOR_MULTINOMIAL = 64


@dataclass(frozen=True)
class MeanEstimate:
    """A mean with its standard error and a (1 - alpha) confidence interval."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    method: str  # clt | clustered | bootstrap | binomial
    alpha: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "method": self.method,
            "alpha": self.alpha,
        }


def as_float_array(values: Any, name: str = "values") -> FloatArray:
    """Coerce to a 1-D float array and reject NaN/inf, which would silently poison every statistic."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def z_value(alpha: float) -> float:
    """Two-sided normal critical value z_{1-alpha/2}."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(_sp.ndtri(1.0 - alpha / 2.0))


def _ci(mean: float, se: float, n: int, alpha: float, method: str) -> MeanEstimate:
    half = z_value(alpha) * se
    return MeanEstimate(mean, se, mean - half, mean + half, n, method, alpha)


def clt_se(values: Any) -> float:
    """Standard error of the mean, sample standard deviation (ddof=1) over sqrt(n); NaN for n < 2."""
    x = as_float_array(values)
    if x.size < 2:
        return float("nan")
    return float(np.std(x, ddof=1) / np.sqrt(x.size))


def clt_ci(values: Any, alpha: float = 0.05) -> MeanEstimate:
    """Mean with the CLT standard error and a normal (1 - alpha) interval, as recommended by Miller (2024)."""
    x = as_float_array(values)
    if x.size == 0:
        raise ValueError("cannot estimate a mean from zero values")
    return _ci(float(x.mean()), clt_se(x), int(x.size), alpha, "clt")


def clustered_se(values: Any, clusters: Any) -> float:
    """Cluster-robust SE of the mean (Miller 2024, eq. 4) with the finite-cluster correction C/(C-1).

    Questions drawn in groups (same passage, same template) are not independent; summing residuals
    within each cluster before squaring accounts for that. With one item per cluster this reduces to the
    CLT SE with 1/n variance times n/(n-1), i.e. exactly `clt_se`.
    """
    x = as_float_array(values)
    c = np.asarray(clusters).ravel()
    if c.shape[0] != x.shape[0]:
        raise ValueError(f"values ({x.size}) and clusters ({c.size}) differ in length")
    n = x.size
    if n < 2:
        return float("nan")
    _, inverse = np.unique(c, return_inverse=True)
    n_clusters = int(inverse.max()) + 1
    if n_clusters < 2:
        return float("nan")
    resid = x - x.mean()
    sums = np.bincount(inverse, weights=resid, minlength=n_clusters)
    var = n_clusters / (n_clusters - 1) * float(np.sum(sums**2)) / n**2
    return float(np.sqrt(var))


def clustered_ci(values: Any, clusters: Any, alpha: float = 0.05) -> MeanEstimate:
    """Mean with the clustered SE and a normal (1 - alpha) interval."""
    x = as_float_array(values)
    if x.size == 0:
        raise ValueError("cannot estimate a mean from zero values")
    return _ci(float(x.mean()), clustered_se(x, clusters), int(x.size), alpha, "clustered")


def mean_over_epochs(ids: Any, values: Any) -> tuple[npt.NDArray[Any], FloatArray]:
    """Average repeated scores (epochs, resamples) per item id before any SE; returns ids sorted."""
    x = as_float_array(values)
    keys = np.asarray(ids).ravel()
    if keys.shape[0] != x.shape[0]:
        raise ValueError(f"ids ({keys.size}) and values ({x.size}) differ in length")
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=x, minlength=uniq.size)
    return uniq, sums / counts


def is_binary(values: Any) -> bool:
    """True when every value is exactly 0 or 1 (accuracy-style scores)."""
    x = np.asarray(values, dtype=np.float64)
    return bool(x.size > 0 and np.all((x == 0.0) | (x == 1.0)))


def bootstrap_means(values: Any, n_boot: int = 1000, seed: int = 0, chunk: int | None = None) -> FloatArray:
    """Means of `n_boot` bootstrap resamples, drawn without materialising an n × n_boot index matrix.

    Binary scores: the resampled sum is exactly Binomial(n, p), so we draw that directly (O(n_boot)).
    Few distinct levels: the resampled level counts are exactly Multinomial(n, freqs).
    Otherwise: chunked index resampling, `chunk` resamples at a time.
    """
    x = as_float_array(values)
    n = x.size
    if n == 0:
        raise ValueError("cannot bootstrap zero values")
    if n_boot < 2:
        raise ValueError("n_boot must be at least 2")
    rng = np.random.default_rng(seed)
    if is_binary(x):
        return rng.binomial(n, float(x.mean()), size=n_boot).astype(np.float64) / n
    levels, counts = np.unique(x, return_counts=True)
    if levels.size <= _MAX_LEVELS_FOR_MULTINOMIAL:
        draws = rng.multinomial(n, counts / n, size=n_boot)
        return np.asarray(draws @ levels / n, dtype=np.float64)
    if chunk is None:
        chunk = max(1, _MAX_CHUNK_CELLS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_se(values: Any, n_boot: int = 1000, seed: int = 0, chunk: int | None = None) -> float:
    """Bootstrap standard error of the mean (sample SD of the resampled means, like lm-eval's)."""
    return float(np.std(bootstrap_means(values, n_boot, seed, chunk), ddof=1))


def bootstrap_ci(
    values: Any, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0, chunk: int | None = None
) -> MeanEstimate:
    """Mean with bootstrap SE and a percentile (1 - alpha) interval."""
    x = as_float_array(values)
    means = bootstrap_means(x, n_boot, seed, chunk)
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    method = "binomial" if is_binary(x) else "bootstrap"
    se = float(np.std(means, ddof=1))
    return MeanEstimate(float(x.mean()), se, float(lo), float(hi), int(x.size), method, alpha)
