"""Static SVG charts drawn here, so reports work offline and print identically in HTML and PDF.

Every label passes through `markupsafe.escape`: task names, group values and model names are user data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

_FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
_COLORS = {"bar": "#4C78A8", "improved": "#2E7D32", "regressed": "#C62828", "unchanged": "#757575"}


@dataclass(frozen=True)
class Bar:
    """One horizontal bar (or point) with a confidence interval; lo/hi may be None when unknown."""

    label: str
    value: float
    lo: float | None = None
    hi: float | None = None
    kind: str = "bar"  # bar | improved | regressed | unchanged


def fmt(value: float | None, digits: int = 3) -> str:
    """Format a number for humans: fixed decimals for small magnitudes, thousands separators for big ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if round(value, digits) == 0:
        value = 0.0  # no "-0.000"
    return f"{value:.{digits}f}"


def _nice_step(span: float, target_ticks: int = 5) -> float:
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_digits(step: float) -> int:
    """Enough decimals that neighbouring ticks differ (0.002 steps need 3, 0.25 steps need 2)."""
    digits = 0
    while digits < 8 and abs(round(step, digits) - step) > step * 1e-6:
        digits += 1
    return digits


def _domain(bars: list[Bar], include_zero: bool, symmetric: bool) -> tuple[float, float]:
    vals = [v for b in bars for v in (b.value, b.lo, b.hi) if v is not None and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        m = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -m, m
    if not symmetric and lo >= 0 and hi <= 1 and hi > 0.05:
        return 0.0, 1.0  # proportions read best on their natural scale
    if hi == lo:
        hi = lo + 1.0
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _ticks(lo: float, hi: float) -> list[float]:
    step = _nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9) * step
    out: list[float] = []
    t = first
    while t <= hi + step * 1e-6 and len(out) < 20:
        out.append(round(t, 10))
        t += step
    return out


def bar_chart(
    bars: list[Bar],
    *,
    title: str = "",
    points: bool = False,
    zero_line: bool = False,
    symmetric: bool = False,
    width: int = 640,
    label_width: int = 210,
) -> Markup:
    """Horizontal bars (or points for differences) with 95% CI whiskers and the value printed beside each."""
    row_h, top, bottom = 22, 26 if title else 8, 28
    value_w = 150
    plot_w = width - label_width - value_w - 10
    height = top + bottom + row_h * max(len(bars), 1)
    lo_d, hi_d = _domain(bars, include_zero=not points or zero_line, symmetric=symmetric)

    def x(v: float) -> float:
        v = min(max(v, lo_d), hi_d)
        return label_width + (v - lo_d) / (hi_d - lo_d) * plot_w

    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {_FONT} font-size="11">'
    ]
    if title:
        parts.append(f'<text x="4" y="16" font-size="12" font-weight="bold">{escape(title)}</text>')
    plot_bottom = top + row_h * len(bars)
    tick_digits = _tick_digits(_nice_step(hi_d - lo_d))
    for t in _ticks(lo_d, hi_d):
        xt = x(t)
        parts.append(
            f'<line x1="{xt:.1f}" y1="{top - 2}" x2="{xt:.1f}" y2="{plot_bottom}" stroke="#e3e3e3"/>'
        )
        parts.append(
            f'<text x="{xt:.1f}" y="{plot_bottom + 14}" text-anchor="middle" fill="#555">'
            f"{escape(fmt(t, tick_digits))}</text>"
        )
    if zero_line or points:
        if lo_d <= 0 <= hi_d:
            parts.append(
                f'<line x1="{x(0):.1f}" y1="{top - 2}" x2="{x(0):.1f}" y2="{plot_bottom}" '
                'stroke="#333" stroke-dasharray="3,2"/>'
            )
    for i, b in enumerate(bars):
        y0 = top + i * row_h
        yc = y0 + row_h / 2
        color = _COLORS.get(b.kind, _COLORS["bar"])
        label = b.label if len(b.label) <= 34 else b.label[:33] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{yc + 4:.1f}" text-anchor="end"><title>{escape(b.label)}'
            f"</title>{escape(label)}</text>"
        )
        if not math.isfinite(b.value):
            continue
        if points:
            parts.append(f'<circle cx="{x(b.value):.1f}" cy="{yc:.1f}" r="4" fill="{color}"/>')
        else:
            x0, x1 = sorted((x(max(lo_d, 0.0) if lo_d <= 0 else lo_d), x(b.value)))
            parts.append(
                f'<rect x="{x0:.1f}" y="{y0 + 4}" width="{max(x1 - x0, 0.5):.1f}" height="{row_h - 8}" '
                f'fill="{color}" fill-opacity="0.85"/>'
            )
        if b.lo is not None and b.hi is not None and math.isfinite(b.lo) and math.isfinite(b.hi):
            xl, xh = x(b.lo), x(b.hi)
            parts.append(
                f'<line x1="{xl:.1f}" y1="{yc:.1f}" x2="{xh:.1f}" y2="{yc:.1f}" stroke="#222" '
                'stroke-width="1.4"/>'
            )
            for xe in (xl, xh):
                parts.append(
                    f'<line x1="{xe:.1f}" y1="{yc - 5:.1f}" x2="{xe:.1f}" y2="{yc + 5:.1f}" '
                    'stroke="#222" stroke-width="1.4"/>'
                )
            text = f"{fmt(b.value)} [{fmt(b.lo)}, {fmt(b.hi)}]"
        else:
            text = fmt(b.value)
        parts.append(
            f'<text x="{label_width + plot_w + 8}" y="{yc + 4:.1f}" fill="#333">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
