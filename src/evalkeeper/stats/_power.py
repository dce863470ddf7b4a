"""Power of a paired test: samples needed for a given difference, and the smallest detectable one.

n = (z_{alpha/2} + z_beta)^2 * omega^2 / delta^2, where omega^2 is the variance of the per-sample
paired differences (or, with no pair, twice the variance of one run's scores, stated as such by the
caller). One-sided tests (a no-regression gate) use z_alpha instead of z_{alpha/2}.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special as _sp

from ._estimate import as_float_array


def _z_alpha(alpha: float, alternative: str) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if alternative == "two-sided":
        return float(_sp.ndtri(1.0 - alpha / 2.0))
    if alternative in ("one-sided", "less", "greater"):
        return float(_sp.ndtri(1.0 - alpha))
    raise ValueError(f"unknown alternative {alternative!r}")


def _z_beta(power: float) -> float:
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return float(_sp.ndtri(power))


def required_n(
    delta: float, omega2: float, alpha: float = 0.05, power: float = 0.8, alternative: str = "two-sided"
) -> int:
    """Smallest n that detects a true mean difference `delta` with the given power."""
    if delta == 0:
        raise ValueError("delta must be non-zero")
    if omega2 < 0:
        raise ValueError("omega2 (a variance) must be non-negative")
    n = (_z_alpha(alpha, alternative) + _z_beta(power)) ** 2 * omega2 / delta**2
    return max(1, math.ceil(n - 1e-9))


def minimum_detectable_effect(
    n: int, omega2: float, alpha: float = 0.05, power: float = 0.8, alternative: str = "two-sided"
) -> float:
    """Smallest true |difference| detected with the given power at sample size n."""
    if n < 1:
        raise ValueError("n must be at least 1")
    return (_z_alpha(alpha, alternative) + _z_beta(power)) * math.sqrt(max(omega2, 0.0) / n)


def power_of_test(
    n: int, delta: float, omega2: float, alpha: float = 0.05, alternative: str = "two-sided"
) -> float:
    """Normal-approximation power of the paired test of size alpha against a true difference delta."""
    if omega2 <= 0:
        return 1.0 if delta != 0 else alpha
    shift = abs(delta) * math.sqrt(n / omega2)
    za = _z_alpha(alpha, alternative)
    p = float(_sp.ndtr(shift - za))
    if alternative == "two-sided":
        p += float(_sp.ndtr(-za - shift))
    return p


def omega2_paired(a: Any, b: Any) -> float:
    """omega^2 from paired data: the sample variance of b - a."""
    x = as_float_array(a, "a")
    y = as_float_array(b, "b")
    if x.shape != y.shape or x.size < 2:
        raise ValueError("need two equally long arrays of at least 2 values")
    return float(np.var(y - x, ddof=1))


def omega2_unpaired(values: Any) -> float:
    """omega^2 guess from one run only: 2 * Var(score) (the variance of a difference of two
    independent runs). Conservative for paired designs, where correlation shrinks it."""
    x = as_float_array(values)
    if x.size < 2:
        raise ValueError("need at least 2 values")
    return 2.0 * float(np.var(x, ddof=1))
