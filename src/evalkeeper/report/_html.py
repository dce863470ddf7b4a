"""HTML rendering: one self-contained page (inline CSS, inline SVG, a hashed inline script, strict CSP).

Autoescaping is on for every template, so model outputs, task names and gate messages render as text;
only the SVG charts (built with escaped labels in `_charts`) are inserted as markup.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from ._charts import Bar, bar_chart, fmt
from ._model import Estimate, ReportData


@lru_cache(maxsize=8)
def asset(name: str) -> str:
    return resources.files("evalkeeper.report").joinpath("templates", name).read_text(encoding="utf-8")


def _sha256_b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def content_security_policy(css: str, script: str | None) -> str:
    """Nothing may load from anywhere; only this page's own style block and script (by hash) run."""
    scripts = f"'sha256-{_sha256_b64(script)}'" if script else "'none'"
    return (
        f"default-src 'none'; style-src 'sha256-{_sha256_b64(css)}'; script-src {scripts}; "
        "img-src data:; font-src data:; base-uri 'none'; form-action 'none'; object-src 'none'"
    )


def _num(value: float | None, digits: int = 3) -> str:
    return fmt(value, digits)


def _signed(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if round(value, 3) == 0:
        return "0.000"  # neither "+0.000" nor "-0.000": the sign of a rounded zero is noise
    return f"{value:+.3f}"


def _halfwidth(e: Estimate, raw: bool = False) -> str:
    if e.ci_low is None or e.ci_high is None:
        return "" if raw else "n/a"
    half = (e.ci_high - e.ci_low) / 2
    return repr(half) if raw else f"± {fmt(half)}"


def _ci(e: Estimate, signed: bool = False) -> str:
    if e.ci_low is None or e.ci_high is None:
        return "n/a"
    f = _signed if signed else fmt
    return f"[{f(e.ci_low)}, {f(e.ci_high)}]"


def _pval(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _count(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "n/a"


def _badge_class(kind: str) -> str:
    k = kind.lower()
    if k in {"pass", "passed", "ok", "improved", "approved"}:
        return "pass"
    if k in {"fail", "failed", "regressed", "error"}:
        return "fail"
    if k in {"warn", "warning", "skip", "skipped"}:
        return "warn"
    return "neutral"


def _is_p_value(key: str) -> bool:
    k = key.lower()
    return k in {"p", "p_value", "pvalue", "p_adjusted", "p_corrected", "p_raw"} or k.startswith("p_")


def _evidence(ev: dict[str, Any]) -> str:
    """Gate evidence as `key=value; ...`, p-values printed as p-values, other floats to 3 decimals."""
    parts = []
    for k, v in ev.items():
        if isinstance(v, float):
            v = _pval(v) if _is_p_value(k) else fmt(v)
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, default=str)[:160]
        parts.append(f"{k} {v}" if isinstance(v, str) and v.startswith("<") else f"{k}={v}")
    return "; ".join(parts)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("evalkeeper.report", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=_num,
        signed=_signed,
        halfwidth=_halfwidth,
        ci=_ci,
        pval=_pval,
        count=_count,
        when=_when,
        badge_class=_badge_class,
        evidence=_evidence,
    )
    return env


def render_page(
    template: str,
    *,
    title: str,
    generated_at: dt.datetime,
    version: str,
    schema_note: str,
    sortable: bool = True,
    **context: Any,
) -> str:
    css = asset("report.css")
    script = asset("sortable.js") if sortable else None
    return (
        environment()
        .get_template(template)
        .render(
            title=title,
            css=Markup(css),
            script=Markup(script) if script else None,
            csp=content_security_policy(css, script),
            generated_at=_when(generated_at),
            version=version,
            schema_note=schema_note,
            **context,
        )
    )


def _bar(label: str, e: Estimate, kind: str = "bar") -> Bar:
    return Bar(label=label, value=e.value, lo=e.ci_low, hi=e.ci_high, kind=kind)


def report_charts(r: ReportData) -> dict[str, Any]:
    """Inline SVGs: primary metrics per task, comparison differences, one slice chart per task × attribute."""
    primary = [m for m in r.metrics if m.primary]
    charts: dict[str, Any] = {"metrics": Markup(""), "comparison": Markup(""), "slices": []}
    if primary:
        charts["metrics"] = bar_chart(
            [_bar(f"{m.task} · {m.metric}", m.estimate) for m in primary],
            title="Primary metric per task (95% CI)",
        )
    if r.comparison and r.comparison.rows:
        charts["comparison"] = bar_chart(
            [
                _bar(f"{c.task} · {c.metric}", c.diff, c.direction if c.significant else "unchanged")
                for c in r.comparison.rows
            ],
            title="Candidate − baseline (paired 95% CI; colored when significant)",
            points=True,
            zero_line=True,
            symmetric=True,
        )
    groups: dict[tuple[str, str], list[Bar]] = {}
    for s in r.slices:
        groups.setdefault((s.task, s.attribute), []).append(_bar(f"{s.attribute} = {s.value}", s.estimate))
    for (task, attr), bars in groups.items():
        metric = next((s.metric for s in r.slices if s.task == task), "score")
        charts["slices"].append(
            bar_chart(bars, title=f"{task} · {metric} by {attr}", width=520, label_width=120)
        )
    return charts


def render_report_html(r: ReportData) -> str:
    summary_class = ""
    if r.summary.gate_verdict and _badge_class(r.summary.gate_verdict) == "fail" or r.summary.n_regressed:
        summary_class = "regressed"
    elif r.summary.n_improved or (r.summary.gate_verdict and _badge_class(r.summary.gate_verdict) == "pass"):
        summary_class = "improved"
    return render_page(
        "report.html.j2",
        title=f"evalkeeper report: {r.run.model} ({r.run.run_id})",
        generated_at=r.generated_at,
        version=r.evalkeeper_version,
        schema_note=f"report schema v{r.report_schema_version}",
        r=r,
        charts=report_charts(r),
        summary_class=summary_class,
    )
