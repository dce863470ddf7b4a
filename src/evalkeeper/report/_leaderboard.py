"""Leaderboard: runs × tasks, each cell the task's primary metric with its 95% CI."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Run
from evalkeeper.store import Workspace

from ._build import _estimate_from_result, evalkeeper_version, primary_metrics
from ._charts import Bar, bar_chart
from ._html import render_page
from ._model import Estimate, Leaderboard, LeaderboardCell, LeaderboardRow
from ._queries import Z95, metric_estimates


def _mean_of(cells: list[LeaderboardCell], n_tasks: int) -> Estimate | None:
    """Unweighted mean over tasks; SE = sqrt(sum se²)/k assumes the tasks' errors are independent."""
    if n_tasks == 0 or len(cells) != n_tasks:
        return None
    k = len(cells)
    value = sum(c.estimate.value for c in cells) / k
    ses = [c.estimate.stderr for c in cells]
    if any(se is None or not math.isfinite(se) for se in ses):
        return Estimate(value=value, n=None, method="mean of tasks")
    se = math.sqrt(sum(s * s for s in ses if s is not None)) / k
    return Estimate(
        value=value,
        stderr=se,
        ci_low=value - Z95 * se,
        ci_high=value + Z95 * se,
        n=sum(c.estimate.n or 0 for c in cells) or None,
        method="mean of tasks",
    )


def leaderboard(
    ws: Workspace, tasks: list[str] | None = None, runs: list[str] | None = None, tag: str | None = None
) -> Leaderboard:
    """Build the board from stored metrics (CIs recomputed from samples where the source gave none)."""
    chosen: list[Run] = [ws.get_run(r) for r in runs] if runs else ws.list_runs(tag=tag)
    if tag and runs:
        chosen = [r for r in chosen if tag in r.tags]
    if not chosen:
        raise EvalkeeperError(
            "no runs to put on a leaderboard", hint="import or run something first, or check --runs/--tag"
        )
    per_run = {}
    primary_votes: dict[str, Counter[str]] = {}
    order: list[str] = []
    for run in chosen:
        stored = ws.get_metrics(run.run_id)
        prim = primary_metrics(run, stored)
        per_run[run.run_id] = (run, stored)
        for task, metric in prim.items():
            primary_votes.setdefault(task, Counter())[metric] += 1
            if task not in order:
                order.append(task)
    if tasks:
        missing = [t for t in tasks if t not in primary_votes]
        if missing:
            raise EvalkeeperError(
                f"no run has task(s) {', '.join(missing)}",
                hint=f"tasks present: {', '.join(order) or 'none'}",
            )
        order = list(tasks)
    metric_of = {t: primary_votes[t].most_common(1)[0][0] for t in order}
    rows: list[LeaderboardRow] = []
    for run_id, (run, stored) in per_run.items():
        cells: list[LeaderboardCell] = []
        computed: dict[tuple[str, str], Estimate] | None = None
        for task in order:
            metric = metric_of[task]
            m = next((x for x in stored if x.task == task and x.metric == metric), None)
            est = _estimate_from_result(m) if m else None
            if (
                (est is None or est.ci_low is None)
                and run.n_samples
                and any(t.name == task for t in run.tasks)
            ):
                if computed is None:
                    computed = metric_estimates(ws, run)
                fresh = computed.get((task, metric))
                if fresh is not None:
                    est = (
                        fresh
                        if est is None
                        else est.model_copy(
                            update={
                                "stderr": fresh.stderr,
                                "ci_low": fresh.ci_low,
                                "ci_high": fresh.ci_high,
                                "n": est.n or fresh.n,
                                "method": "clt",
                            }
                        )
                    )
            if est is not None:
                cells.append(LeaderboardCell(task=task, metric=metric, estimate=est))
        if not cells:
            continue
        rows.append(
            LeaderboardRow(
                run_id=run_id,
                model=run.model.name,
                created_at=run.created_at,
                tags=list(run.tags),
                cells=cells,
                mean=_mean_of(cells, len(order)),
            )
        )
    rows.sort(key=lambda r: (r.mean is None, -(r.mean.value if r.mean else 0.0), r.model, r.run_id))
    return Leaderboard(generated_at=dt.datetime.now(dt.UTC), tasks=order, metrics=metric_of, rows=rows)


def render_leaderboard_html(board: Leaderboard) -> str:
    charts = []
    for task in board.tasks:
        bars = []
        for row in board.rows:
            c = board.cell(row, task)
            if c:
                bars.append(
                    Bar(
                        label=f"{row.model} ({row.run_id[-6:]})",
                        value=c.estimate.value,
                        lo=c.estimate.ci_low,
                        hi=c.estimate.ci_high,
                    )
                )
        if bars:
            charts.append(bar_chart(bars, title=f"{task} · {board.metrics[task]} (95% CI)"))
    return render_page(
        "leaderboard.html.j2",
        title="evalkeeper leaderboard",
        generated_at=board.generated_at,
        version=evalkeeper_version(),
        schema_note=f"leaderboard schema v{board.leaderboard_schema_version}",
        b=board,
        charts=charts,
    )
