"""Gather everything a run report shows into one `ReportData`: the renderers only format it."""

from __future__ import annotations

import datetime as dt
import math
from importlib import metadata as md
from typing import Any

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import MetricResult, Run
from evalkeeper.store import Workspace

from ._charts import fmt
from ._gates import gate_section
from ._model import (
    Comparison,
    ComparisonRow,
    Direction,
    EnvironmentSummary,
    Estimate,
    ExecutiveSummary,
    GateSummary,
    MetricRow,
    ReportData,
    RunSummary,
    SliceRow,
    WorstSample,
)
from ._queries import Z95, metric_estimates, slice_rows, worst_samples

_FLIP_IDS = 10
_DIRECTIONS: dict[str, Direction] = {"better": "improved", "worse": "regressed"}


def evalkeeper_version() -> str:
    try:
        return md.version("evalkeeper")
    except md.PackageNotFoundError:
        return "unknown"


def _estimate_from_result(m: MetricResult) -> Estimate:
    """The stored metric with its CI; a missing interval is derived from the SE (normal, 95%)."""
    lo, hi = m.ci_low, m.ci_high
    if (lo is None or hi is None) and m.stderr is not None and math.isfinite(m.stderr):
        lo, hi = m.value - Z95 * m.stderr, m.value + Z95 * m.stderr
    return Estimate(value=m.value, stderr=m.stderr, ci_low=lo, ci_high=hi, n=m.n, method=m.method)


def primary_metrics(run: Run, metrics: list[MetricResult]) -> dict[str, str]:
    """task -> its headline metric: the first declared metric, else the first stored one."""
    out: dict[str, str] = {}
    for t in run.tasks:
        if t.metrics:
            out[t.name] = t.metrics[0]
    for m in metrics:
        out.setdefault(m.task, m.metric)
    return out


def _higher_is_better(run: Run, task: str, metric: str, stored: bool | None) -> bool | None:
    info = run.task(task)
    if info is not None and metric in info.higher_is_better:
        return info.higher_is_better[metric]
    return stored


def metric_rows(ws: Workspace, run: Run) -> tuple[list[MetricRow], dict[str, str], list[str]]:
    """Stored metrics with their CIs; CIs missing from the source are recomputed from the samples."""
    stored = ws.get_metrics(run.run_id)
    primary = primary_metrics(run, stored)
    notes: list[str] = []
    computed: dict[tuple[str, str], Estimate] | None = None
    needs_samples = (not stored or any(_estimate_from_result(m).ci_low is None for m in stored)) and run.n_samples
    if needs_samples:
        computed = metric_estimates(ws, run)
    rows: list[MetricRow] = []
    seen: set[tuple[str, str]] = set()
    for m in stored:
        est = _estimate_from_result(m)
        if est.ci_low is None and computed and (m.task, m.metric) in computed:
            c = computed[(m.task, m.metric)]
            est = Estimate(
                value=m.value, stderr=c.stderr, ci_low=c.ci_low, ci_high=c.ci_high, n=m.n or c.n, method="clt"
            )
            if abs(c.value - m.value) > 1e-6:
                notes.append(
                    f"{m.task}/{m.metric}: the source reports {fmt(m.value)} without an interval; "
                    f"the interval shown is the CLT interval of the stored samples (mean {fmt(c.value)})"
                )
        rows.append(
            MetricRow(
                task=m.task,
                metric=m.metric,
                primary=primary.get(m.task) == m.metric,
                higher_is_better=_higher_is_better(run, m.task, m.metric, m.higher_is_better),
                estimate=est,
            )
        )
        seen.add((m.task, m.metric))
    for (task, metric), est in (computed or {}).items():
        if (task, metric) not in seen:
            primary.setdefault(task, metric)
            rows.append(
                MetricRow(
                    task=task,
                    metric=metric,
                    primary=primary[task] == metric,
                    higher_is_better=_higher_is_better(run, task, metric, None),
                    estimate=est,
                )
            )
    # A task whose declared primary metric has no value (e.g. a source that reported other metrics) shows
    # its first available metric as the headline instead of none at all.
    headed = {r.task for r in rows if r.primary}
    for i, r in enumerate(rows):
        if r.task not in headed:
            rows[i] = r.model_copy(update={"primary": True})
            headed.add(r.task)
    order = {t.name: i for i, t in enumerate(run.tasks)}
    rows.sort(key=lambda r: (order.get(r.task, len(order)), r.task, not r.primary, r.metric))
    return rows, primary, notes


def comparison_section(ws: Workspace, run: Run, compare: str, comparison: Any = None) -> tuple[Comparison, list[str]]:
    """Paired comparison candidate (this run) vs the baseline, from `evalkeeper.analysis.compare_runs`."""
    from evalkeeper.analysis import compare_runs

    base = ws.get_run(compare)
    if base.run_id == run.run_id:
        raise EvalkeeperError(
            f"--compare {compare!r} is the report's own run {run.run_id}",
            hint="compare against a different run or baseline name",
        )
    result = comparison or compare_runs(ws, base.run_id, run.run_id, max_flip_ids=_FLIP_IDS)
    rows = []
    for r in result.rows:
        # compare_runs counts flips for binary metrics only (0 otherwise); for a binary metric, no flips at
        # all means a zero difference, so zero flips with a non-zero difference marks a non-binary metric.
        binary = bool(r.n_right_to_wrong or r.n_wrong_to_right or r.diff == 0)
        direction: Direction = _DIRECTIONS.get(r.direction, "unchanged")
        rows.append(
            ComparisonRow(
                task=r.task,
                metric=r.metric,
                baseline=r.mean_a,
                candidate=r.mean_b,
                diff=Estimate(
                    value=r.diff,
                    stderr=r.se,
                    ci_low=r.ci_low,
                    ci_high=r.ci_high,
                    n=r.n_paired,
                    method="paired",
                ),
                n_paired=r.n_paired,
                p_value=r.p_value,
                p_adjusted=r.p_corrected,
                significant=r.significant,
                direction=direction,
                flips_to_wrong=r.n_right_to_wrong if binary else None,
                flips_to_right=r.n_wrong_to_right if binary else None,
                flip_ids_to_wrong=list(r.right_to_wrong[:_FLIP_IDS]),
                test=r.test,
            )
        )
    notes = [f"not compared: {s.get('task')}/{s.get('metric')} ({s.get('reason')})" for s in result.skipped]
    return Comparison(
        baseline_ref=compare,
        baseline_run_id=base.run_id,
        baseline_model=base.model.name,
        correction=result.correction,
        alpha=result.alpha,
        rows=rows,
    ), notes


def environment_section(run: Run) -> EnvironmentSummary | None:
    if not run.environment:
        return None
    from evalkeeper.bundle.env import SCORE_RELEVANT_PACKAGES, summarize_environment

    items: dict[str, str | int | float | bool | None] = {
        k: v
        for k, v in summarize_environment(run.environment).items()
        if isinstance(v, (str, int, float, bool)) and v not in ("", 0) and "None" not in str(v)
    }  # sparse snapshots (imports) summarize to "None xNone" and 0 packages: not worth a line
    pk = run.environment.get("packages") or {}
    packages = {name: str(pk[name]) for name in SCORE_RELEVANT_PACKAGES if isinstance(pk, dict) and name in pk}
    return EnvironmentSummary(items=items, packages=packages)


def _diff_text(r: ComparisonRow) -> str:
    d = r.diff
    ci = f" [{fmt(d.ci_low)}, {fmt(d.ci_high)}]" if d.ci_low is not None else ""
    p = f", p_adj = {r.p_adjusted:.3g}" if r.p_adjusted is not None else ""
    return f"{r.task}/{r.metric} {d.value:+.3f}{ci}{p}"


def executive_summary(
    run: Run, metrics: list[MetricRow], comparison: Comparison | None, gate: GateSummary | None
) -> ExecutiveSummary:
    tasks = sorted({m.task for m in metrics} | {t.name for t in run.tasks})
    bullets = []
    headline = f"{run.model.name}: {len(tasks)} task(s), {run.n_samples:,} samples"
    n_imp = n_reg = n_same = None
    if comparison is not None:
        n_imp = sum(r.direction == "improved" for r in comparison.rows)
        n_reg = sum(r.direction == "regressed" for r in comparison.rows)
        n_same = len(comparison.rows) - n_imp - n_reg
        c = comparison
        base = (
            f"baseline run {c.baseline_run_id} ({c.baseline_model})"
            if c.baseline_ref == c.baseline_run_id
            else f"baseline {c.baseline_ref} (run {c.baseline_run_id}, {c.baseline_model})"
        )
        if n_reg:
            headline += f"; {n_reg} significant regression(s) vs {comparison.baseline_ref}"
        elif n_imp:
            headline += f"; {n_imp} significant improvement(s), no regression vs {comparison.baseline_ref}"
        else:
            headline += f"; no significant change vs {comparison.baseline_ref}"
        bullets.append(
            f"Compared with {base} on paired samples, {comparison.correction}-corrected at "
            f"alpha = {comparison.alpha:g}: {n_reg} regressed, {n_imp} improved, "
            f"{n_same} without a significant change."
        )
        for r in comparison.rows:
            if r.direction == "regressed":
                bullets.append(f"Regressed: {_diff_text(r)} (n = {r.n_paired:,}).")
        for r in comparison.rows:
            if r.direction == "improved":
                bullets.append(f"Improved: {_diff_text(r)} (n = {r.n_paired:,}).")
    if gate is not None:
        failed = [r.name for r in gate.rules if r.verdict.lower() in {"fail", "failed", "error"}]
        headline += f"; gate {gate.verdict.upper()}"
        detail = (
            f" ({len(failed)} of {len(gate.rules)} rules failed: {', '.join(failed)})"
            if failed
            else (f" ({len(gate.rules)} rules)" if gate.rules else "")
        )
        bullets.append(f"Quality gate: {gate.verdict.upper()}{detail}.")
    for m in metrics:
        if m.primary:
            e = m.estimate
            ci = f" [{fmt(e.ci_low)}, {fmt(e.ci_high)}]" if e.ci_low is not None else " (no CI available)"
            n = f", n = {e.n:,}" if e.n is not None else ""
            bullets.append(f"{m.task}: {m.metric} = {fmt(e.value)}{ci}{n}.")
    return ExecutiveSummary(
        headline=headline,
        bullets=bullets,
        n_tasks=len(tasks),
        n_samples=run.n_samples,
        n_improved=n_imp,
        n_regressed=n_reg,
        n_unchanged=n_same,
        gate_verdict=gate.verdict if gate else None,
    )


def build_report(
    ws: Workspace,
    run_ref: str,
    compare: str | None = None,
    gate_report: Any = None,
    *,
    worst_per_task: int = 5,
    comparison: Any = None,
    include_gate: bool = True,
) -> ReportData:
    """Collect a run's report: metrics with CIs, slices, worst samples, comparison, gates, environment.

    `compare` is a baseline name or run id; `gate_report` a gate result (pydantic/dict/Decision) that
    overrides the latest gate Decision stored for the run; `comparison` a precomputed RunComparison.
    """
    run = ws.get_run(run_ref)
    metrics, primary, notes = metric_rows(ws, run)
    slices: list[SliceRow] = []
    worst: list[WorstSample] = []
    if run.n_samples:
        slices, slice_notes = slice_rows(ws, run, primary)
        notes.extend(slice_notes)
        lower = {t for t, m in primary.items() if _higher_is_better(run, t, m, True) is False}
        worst = worst_samples(ws, run, lower, per_task=worst_per_task) if worst_per_task else []
    else:
        notes.append("the run has no stored samples: slices and worst samples are unavailable")
    comp = None
    if compare:
        comp, comp_notes = comparison_section(ws, run, compare, comparison)
        notes.extend(comp_notes)
    gate = gate_section(ws, run, gate_report) if include_gate or gate_report is not None else None
    summary = executive_summary(run, metrics, comp, gate)
    run_summary = RunSummary(
        run_id=run.run_id,
        model=run.model.name,
        backend=run.model.backend,
        revision=run.model.revision,
        created_at=run.created_at,
        status=run.status,
        producer=run.provenance.producer,
        tags=list(run.tags),
        n_samples=run.n_samples,
        tasks=[t.name for t in run.tasks],
    )
    return ReportData(
        generated_at=dt.datetime.now(dt.UTC),
        evalkeeper_version=evalkeeper_version(),
        run=run_summary,
        summary=summary,
        metrics=metrics,
        slices=slices,
        worst_samples=worst,
        comparison=comp,
        gate=gate,
        environment=environment_section(run),
        notes=notes,
    )
