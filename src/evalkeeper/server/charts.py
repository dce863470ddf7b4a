"""Inline SVG charts (estimates with CI whiskers), so pages need no chart library and no inline script.

All text goes through markupsafe.escape; colours come from CSS classes in static/dashboard.css.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

_ROW_H = 26
_LABEL_W = 210
_PLOT_W = 420
_VALUE_W = 150


@dataclass(frozen=True)
class Interval:
    label: str
    value: float
    low: float | None = None
    high: float | None = None
    css: str = "bar"  # bar | better | worse | same
    title: str = ""


def _fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.4g}"


def _domain(rows: list[Interval], include_zero: bool) -> tuple[float, float]:
    vals = [v for r in rows for v in (r.value, r.low, r.high) if v is not None and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if 0.0 <= lo and hi <= 1.0 and not include_zero:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    return lo - (pad if lo < 0 else 0), hi + pad


def interval_chart(rows: list[Interval], *, bars: bool = True, title: str = "") -> Markup:
    """Horizontal chart: one row per estimate, a bar (from 0) or a dot, and its CI as a whisker."""
    if not rows:
        return Markup("")
    lo, hi = _domain(rows, include_zero=True)
    width = _LABEL_W + _PLOT_W + _VALUE_W
    height = _ROW_H * len(rows) + 30

    def x(v: float) -> float:
        return _LABEL_W + (v - lo) / (hi - lo) * _PLOT_W

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">'
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    zero = x(0.0)
    for i, r in enumerate(rows):
        y = 10 + i * _ROW_H
        mid = y + _ROW_H / 2
        label = r.label if len(r.label) <= 32 else r.label[:31] + "…"
        parts.append(f'<g class="row {escape(r.css)}"><title>{escape(r.title or r.label)}</title>')
        parts.append(
            f'<text class="label" x="{_LABEL_W - 8}" y="{mid + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        if bars:
            x0, x1 = sorted((zero, x(r.value)))
            parts.append(
                f'<rect class="fill" x="{x0:.1f}" y="{y + 5}" width="{max(x1 - x0, 1):.1f}" '
                f'height="{_ROW_H - 10}" rx="2"/>'
            )
        else:
            parts.append(f'<circle class="fill" cx="{x(r.value):.1f}" cy="{mid:.1f}" r="5"/>')
        if r.low is not None and r.high is not None and math.isfinite(r.low) and math.isfinite(r.high):
            a, b = x(r.low), x(r.high)
            parts.append(
                f'<path class="whisker" d="M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 6:.1f}V{mid + 6:.1f}'
                f'M{b:.1f} {mid - 6:.1f}V{mid + 6:.1f}"/>'
            )
            text = f"{_fmt(r.value)} [{_fmt(r.low)}, {_fmt(r.high)}]"
        else:
            text = _fmt(r.value)
        parts.append(
            f'<text class="value" x="{_LABEL_W + _PLOT_W + 8}" y="{mid + 4:.1f}">{escape(text)}</text></g>'
        )
    axis_y = 10 + len(rows) * _ROW_H
    parts.append(f'<path class="axis" d="M{zero:.1f} 6V{axis_y}"/>')
    placed: list[float] = []
    for v in (0.0, lo, hi) if lo < 0 < hi else (lo, hi):
        if all(abs(x(v) - p) >= 48 for p in placed):  # no overlapping tick labels
            placed.append(x(v))
            parts.append(f'<text class="tick" x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle">{_fmt(v)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
