"""The no-regression decision as pure functions, so simulations can check its false-alarm rate.

A rule fails only when the drop is significant (one-sided paired test, corrected across the gate run)
AND larger than the tolerance `max_drop`; the reason text says which of the two held.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import stdtrit

from evalkeeper.stats import adjust_pvalues, is_binary, paired_difference

from ._models import Verdict


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def regression_evidence(v: Verdict, baseline: Any, candidate: Any, *, alpha: float, max_drop: float,
                        test: str = "auto", higher_is_better: bool = True, n_perm: int = 10_000) -> None:
    """Fill `v` with the paired comparison of candidate vs baseline (p-value raw, not yet corrected)."""
    va = np.asarray(baseline, dtype=np.float64)
    vb = np.asarray(candidate, dtype=np.float64)
    res = paired_difference(va, vb, alpha=alpha, test=test,  # type: ignore[arg-type]
                            alternative="less" if higher_is_better else "greater", n_perm=n_perm, seed=0)
    # the CI shown is two-sided at 1 - 2 alpha: its bound is the one-sided test's bound at alpha
    ci_alpha = min(2 * alpha, 0.5)
    half = float(stdtrit(res.n - 1, 1.0 - ci_alpha / 2.0)) * res.se if res.n > 1 else math.nan
    v.alpha = alpha
    v.estimate, v.baseline_estimate, v.diff = float(vb.mean()), float(va.mean()), res.mean_diff
    v.n_paired, v.test, v.p_value = res.n, res.method, res.p_value
    v.se, v.ci_level = _f(res.se), 1.0 - ci_alpha
    v.ci_low, v.ci_high = _f(res.mean_diff - half), _f(res.mean_diff + half)
    v.max_drop = float(max_drop)
    v.details["higher_is_better"] = higher_is_better
    v.details["drop"] = -res.mean_diff if higher_is_better else res.mean_diff
    if is_binary(va) and is_binary(vb):
        v.details["n_right_to_wrong"] = int(np.count_nonzero((va == 1) & (vb == 0)))
        v.details["n_wrong_to_right"] = int(np.count_nonzero((va == 0) & (vb == 1)))


def decide_regression(v: Verdict) -> None:
    """Set status and reason from the corrected p-value and the tolerance."""
    alpha = v.alpha or 0.05
    drop = float(v.details.get("drop", 0.0))
    tol = v.max_drop or 0.0
    p_corr = v.p_corrected if v.p_corrected is not None else v.p_value
    v.significant = (p_corr if p_corr is not None else 1.0) < alpha
    exceeds = drop > tol
    p = f"p_corr={p_corr:.3g}, {v.test}"
    v.status = "pass"
    if drop <= 0:
        v.reason = f"no drop: candidate is {-drop:+.4f} vs baseline ({p})"
    elif v.significant and exceeds:
        v.status = "fail"
        v.reason = f"drop {drop:.4f} is significant ({p}) and larger than the tolerance {tol:.4f}"
    elif v.significant:
        v.reason = f"drop {drop:.4f} is significant ({p}) but within the tolerance {tol:.4f}"
    elif exceeds:
        v.reason = f"drop {drop:.4f} exceeds the tolerance {tol:.4f} but is not significant ({p})"
    else:
        v.reason = f"drop {drop:.4f} is within the tolerance {tol:.4f} and not significant ({p})"


def no_regression_family(pairs: list[tuple[Any, Any]], *, alpha: float = 0.05, max_drop: float = 0.0,
                         correction: str = "holm", test: str = "auto") -> list[Verdict]:
    """Several no-regression checks decided together, exactly as a gate run decides them."""
    verdicts = []
    for i, (va, vb) in enumerate(pairs):
        v = Verdict(rule_id=f"no_regression:{i}", kind="no_regression")
        regression_evidence(v, va, vb, alpha=alpha, max_drop=max_drop, test=test)
        verdicts.append(v)
    for v, p in zip(verdicts, adjust_pvalues([v.p_value for v in verdicts], correction), strict=True):
        v.p_corrected = float(p)
        decide_regression(v)
    return verdicts
