"""Multiple-comparison control across the rules of one gate run (or the tasks of one comparison).

NaN p-values (rules without a test) are passed through untouched and do not count towards m.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._estimate import FloatArray


def _prepare(pvals: Any) -> tuple[FloatArray, FloatArray, np.ndarray[Any, np.dtype[np.intp]]]:
    p = np.asarray(pvals, dtype=np.float64).ravel()
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p, p[finite], np.flatnonzero(finite)


def holm(pvals: Any) -> FloatArray:
    """Holm step-down adjusted p-values (family-wise error control); same as statsmodels 'holm'."""
    p, q, where = _prepare(pvals)
    out = p.copy()
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    res = np.empty(m)
    res[order] = adj
    out[where] = res
    return out


def benjamini_hochberg(pvals: Any) -> FloatArray:
    """Benjamini–Hochberg step-up adjusted p-values (false discovery rate); same as statsmodels 'fdr_bh'."""
    p, q, where = _prepare(pvals)
    out = p.copy()
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")[::-1]
    ranks = np.arange(m, 0, -1)
    adj = np.minimum(1.0, np.minimum.accumulate(q[order] * m / ranks))
    res = np.empty(m)
    res[order] = adj
    out[where] = res
    return out


def adjust_pvalues(pvals: Any, method: str = "holm") -> FloatArray:
    """Dispatch by name: 'holm', 'bh' (alias 'fdr_bh', 'benjamini_hochberg') or 'none'."""
    key = method.lower()
    if key == "holm":
        return holm(pvals)
    if key in ("bh", "fdr_bh", "benjamini_hochberg", "benjamini-hochberg"):
        return benjamini_hochberg(pvals)
    if key == "none":
        return np.asarray(pvals, dtype=np.float64).ravel().copy()
    raise ValueError(f"unknown correction {method!r}: use holm, bh or none")
