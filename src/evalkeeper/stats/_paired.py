"""Paired comparisons of two runs on the same samples: mean difference, McNemar, permutation, TOST.

Convention everywhere: the difference is d = b - a (b is the candidate, a the baseline), and the
`alternative` names the direction of d: "less" means b is worse than a, "greater" means b is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special as _sp

from ._estimate import FloatArray, as_float_array, is_binary

Alternative = Literal["two-sided", "less", "greater"]
PairedTest = Literal["auto", "t", "mcnemar", "permutation"]

_MAX_CHUNK_CELLS = 8_000_000


@dataclass(frozen=True)
class PairedResult:
    """Paired mean difference (b - a) with SE, (1 - alpha) CI and a p-value from `method`."""

    mean_diff: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float
    method: str  # paired_t | mcnemar_exact | permutation
    alternative: str = "two-sided"
    alpha: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: discordant counts and the binomial p-value."""

    n_a_only: int  # a right (1), b wrong (0): regressions when b is the candidate
    n_b_only: int  # a wrong, b right: improvements
    p_value: float
    alternative: str = "two-sided"

    @property
    def statistic(self) -> int:
        """The smaller discordant count, as statsmodels reports it."""
        return min(self.n_a_only, self.n_b_only)


@dataclass(frozen=True)
class TostResult:
    """Paired two one-sided tests: equivalent when the (1 - 2 alpha) CI of b - a lies inside ±margin."""

    mean_diff: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float  # the larger of the two one-sided p-values
    margin: float
    alpha: float
    equivalent: bool


def _pair(a: Any, b: Any) -> tuple[FloatArray, FloatArray]:
    x = as_float_array(a, "a")
    y = as_float_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        raise ValueError("no paired values")
    return x, y


def _t_pvalue(t: float, df: int, alternative: str) -> float:
    if alternative == "two-sided":
        return float(2.0 * _sp.stdtr(df, -abs(t)))
    if alternative == "less":
        return float(_sp.stdtr(df, t))
    if alternative == "greater":
        return float(_sp.stdtr(df, -t))
    raise ValueError(f"unknown alternative {alternative!r}")


def _diff_stats(d: FloatArray) -> tuple[float, float]:
    mean = float(d.mean())
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return mean, se


def paired_t_pvalue(d: FloatArray, alternative: Alternative = "two-sided") -> float:
    """Paired t-test p-value on differences; with zero spread, 1 when the mean is 0 else 0 (exact)."""
    mean, se = _diff_stats(d)
    if d.size < 2:
        return 1.0
    if se == 0.0:
        if mean == 0.0:
            return 1.0
        hit = alternative == "two-sided" or (alternative == "less") == (mean < 0)
        return 0.0 if hit else 1.0
    return _t_pvalue(mean / se, d.size - 1, alternative)


def mcnemar_exact(a: Any, b: Any, alternative: Alternative = "two-sided") -> McNemarResult:
    """Exact McNemar test for paired binary scores (binomial test on the discordant pairs)."""
    x, y = _pair(a, b)
    if not (is_binary(x) and is_binary(y)):
        raise ValueError("mcnemar_exact needs binary (0/1) scores")
    a_only = int(np.count_nonzero((x == 1.0) & (y == 0.0)))
    b_only = int(np.count_nonzero((x == 0.0) & (y == 1.0)))
    m = a_only + b_only
    if m == 0:
        p = 1.0
    elif alternative == "two-sided":
        p = min(1.0, 2.0 * float(_sp.bdtr(min(a_only, b_only), m, 0.5)))
    elif alternative == "less":  # b worse: improvements unusually few
        p = float(_sp.bdtr(b_only, m, 0.5))
    elif alternative == "greater":
        p = float(_sp.bdtr(a_only, m, 0.5))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return McNemarResult(a_only, b_only, p, alternative)


def sign_flip_null(d: Any, n_perm: int, seed: int) -> FloatArray:
    """Sums of the differences under random sign flips (the paired permutation null), vectorized.

    Differences with few distinct magnitudes are flipped exactly through binomial counts per magnitude,
    so a million binary pairs cost O(n_perm); otherwise sign matrices are drawn in chunks.
    """
    diffs = as_float_array(d)
    mags = np.abs(diffs[diffs != 0.0])
    rng = np.random.default_rng(seed)
    if mags.size == 0:
        return np.zeros(n_perm)
    levels, counts = np.unique(mags, return_counts=True)
    if levels.size <= 64:
        pos = rng.binomial(counts[None, :], 0.5, size=(n_perm, levels.size))
        return np.asarray((2 * pos - counts[None, :]) @ levels, dtype=np.float64)
    out = np.empty(n_perm)
    chunk = max(1, _MAX_CHUNK_CELLS // mags.size)
    for start in range(0, n_perm, chunk):
        stop = min(n_perm, start + chunk)
        signs = rng.integers(0, 2, size=(stop - start, mags.size), dtype=np.int8) * 2 - 1
        out[start:stop] = signs @ mags
    return out


def paired_permutation_test(
    a: Any, b: Any, n_perm: int = 10_000, seed: int = 0, alternative: Alternative = "two-sided"
) -> float:
    """P-value of a paired sign-flip permutation test on sum(b - a), with the +1 correction."""
    x, y = _pair(a, b)
    d = y - x
    observed = float(d.sum())
    null = sign_flip_null(d, n_perm, seed)
    tol = 1e-9 * max(1.0, abs(observed))
    if alternative == "two-sided":
        hits = np.count_nonzero(np.abs(null) >= abs(observed) - tol)
    elif alternative == "less":
        hits = np.count_nonzero(null <= observed + tol)
    elif alternative == "greater":
        hits = np.count_nonzero(null >= observed - tol)
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return float((hits + 1) / (n_perm + 1))


def paired_difference(
    a: Any,
    b: Any,
    alpha: float = 0.05,
    test: PairedTest = "auto",
    alternative: Alternative = "two-sided",
    n_perm: int = 10_000,
    seed: int = 0,
) -> PairedResult:
    """Mean of b - a with the paired SE and a t-based (1 - alpha) CI, and a p-value.

    `test="auto"` uses the exact McNemar test when both arrays are binary and the paired t-test
    otherwise. The CI is always two-sided and t-based (the paired SE is what makes it narrow: the shared
    per-sample difficulty cancels).
    """
    x, y = _pair(a, b)
    d = y - x
    n = int(d.size)
    mean, se = _diff_stats(d)
    if n > 1:
        half = float(_sp.stdtrit(n - 1, 1.0 - alpha / 2.0)) * se
        lo, hi = mean - half, mean + half
    else:
        lo = hi = float("nan")
    chosen = test
    if chosen == "auto":
        chosen = "mcnemar" if is_binary(x) and is_binary(y) else "t"
    if chosen == "mcnemar":
        p = mcnemar_exact(x, y, alternative).p_value
        method = "mcnemar_exact"
    elif chosen == "permutation":
        p = paired_permutation_test(x, y, n_perm, seed, alternative)
        method = "permutation"
    elif chosen == "t":
        p = paired_t_pvalue(d, alternative)
        method = "paired_t"
    else:
        raise ValueError(f"unknown paired test {test!r}")
    return PairedResult(mean, se, lo, hi, n, p, method, alternative, alpha)


def tost_equivalence(a: Any, b: Any, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired TOST: is |mean(b - a)| < margin, shown at level alpha? (used to judge a reproduction)."""
    if margin <= 0:
        raise ValueError("margin must be positive")
    x, y = _pair(a, b)
    d = y - x
    n = int(d.size)
    mean, se = _diff_stats(d)
    if n < 2:
        return TostResult(mean, se, float("nan"), float("nan"), n, 1.0, margin, alpha, False)
    df = n - 1
    if se == 0.0:
        inside = abs(mean) < margin
        p = 0.0 if inside else 1.0
        return TostResult(mean, se, mean, mean, n, p, margin, alpha, inside)
    p_lower = float(_sp.stdtr(df, -((mean + margin) / se)))  # H0: d <= -margin
    p_upper = float(_sp.stdtr(df, (mean - margin) / se))  # H0: d >= +margin
    p = max(p_lower, p_upper)
    half = float(_sp.stdtrit(df, 1.0 - alpha)) * se
    return TostResult(mean, se, mean - half, mean + half, n, p, margin, alpha, p < alpha)
