"""Aggregates for reports, computed in DuckDB over the run's Parquet so a million samples never reach Python.

Means are taken per item first (epochs averaged per sample id), then the CLT standard error over items,
as in Miller (2024); the same estimator the stats package uses on arrays.
"""

from __future__ import annotations

import math
from typing import Any

from evalkeeper.core.records import Run
from evalkeeper.store import Workspace

from ._model import Estimate, SliceRow, WorstSample

Z95 = 1.959963984540054
MAX_SLICE_VALUES = 25  # per task × attribute; attributes with more values show the largest groups
TEXT_CHARS = 400


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def clt_estimate(mean: float | None, sd: float | None, n: int) -> Estimate:
    """Mean ± z·sd/√n; no interval for n < 2 (a single item says nothing about spread)."""
    value = float(mean) if mean is not None else math.nan
    if n >= 2 and sd is not None and math.isfinite(sd):
        se = float(sd) / math.sqrt(n)
        return Estimate(
            value=value, stderr=se, ci_low=value - Z95 * se, ci_high=value + Z95 * se, n=n, method="clt"
        )
    return Estimate(value=value, n=n, method="clt")


def _one_epoch(ws: Workspace, rel: str) -> bool:
    """True when every row is epoch 0: rows are then items already, and the per-item GROUP BY (the costly
    part over a million string ids) can be skipped. Reading one int column costs ~0.1 s per million rows."""
    row = ws.sql(f"SELECT max(epoch) AS e FROM {rel} AS s").to_pylist()[0]
    return not row["e"]


def metric_estimates(ws: Workspace, run: Run) -> dict[tuple[str, str], Estimate]:
    """CLT estimate of every task × metric found in the samples' `scores` maps."""
    rel = ws.samples_relation_sql(run.run_id)
    items = (
        "SELECT task, metric, v FROM long WHERE v IS NOT NULL AND isfinite(v)"
        if _one_epoch(ws, rel)
        else "SELECT task, metric, sample_id, avg(v) AS v FROM long "
        "WHERE v IS NOT NULL AND isfinite(v) GROUP BY task, metric, sample_id"
    )
    sql = f"""
        WITH long AS (
            SELECT task, sample_id, unnest(map_keys(scores)) AS metric, unnest(map_values(scores)) AS v
            FROM {rel} AS s),
        items AS ({items})
        SELECT task, metric, count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd
        FROM items GROUP BY task, metric ORDER BY task, metric"""
    out: dict[tuple[str, str], Estimate] = {}
    for row in ws.sql(sql).to_pylist():
        out[(row["task"], row["metric"])] = clt_estimate(row["mean"], row["sd"], int(row["n"]))
    return out


def slice_rows(ws: Workspace, run: Run, primary: dict[str, str]) -> tuple[list[SliceRow], list[str]]:
    """Primary metric per task × group attribute × value, with CLT CIs; also notes about truncation."""
    rel = ws.samples_relation_sql(run.run_id)
    where = 'WHERE score IS NOT NULL AND isfinite(score) AND cardinality("group") > 0'
    items = (
        f'SELECT task, score AS v, "group" AS g FROM {rel} AS s {where}'
        if _one_epoch(ws, rel)
        else f'SELECT task, sample_id, avg(score) AS v, any_value("group") AS g FROM {rel} AS s {where} '
        "GROUP BY task, sample_id"
    )
    sql = f"""
        WITH items AS ({items}),
        kv AS (SELECT task, v, unnest(map_keys(g)) AS attr, unnest(map_values(g)) AS val FROM items),
        agg AS (SELECT task, attr, val, count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd
                FROM kv WHERE val IS NOT NULL GROUP BY task, attr, val)
        SELECT *, count(*) OVER (PARTITION BY task, attr) AS n_values FROM agg
        QUALIFY row_number() OVER (PARTITION BY task, attr ORDER BY n DESC, val) <= {MAX_SLICE_VALUES}
        ORDER BY task, attr, val"""
    rows: list[SliceRow] = []
    notes: set[str] = set()
    for r in ws.sql(sql).to_pylist():
        if r["n_values"] > MAX_SLICE_VALUES:
            notes.add(
                f"slices of {r['task']} by {r['attr']!r}: {r['n_values']} values, "
                f"showing the {MAX_SLICE_VALUES} largest groups"
            )
        rows.append(
            SliceRow(
                task=r["task"],
                metric=primary.get(r["task"], "score"),
                attribute=r["attr"],
                value=r["val"],
                estimate=clt_estimate(r["mean"], r["sd"], int(r["n"])),
            )
        )
    return rows, sorted(notes)


def _bad(score: float, lower_is_better: bool) -> float:
    return -score if lower_is_better else score


def worst_samples(ws: Workspace, run: Run, lower_is_better: set[str], per_task: int = 5) -> list[WorstSample]:
    """The lowest-scoring samples of each task (highest where lower is better), ties broken by id; samples
    with the task's best score are left out (a task with two wrong answers shows two rows).

    Two steps, so only the chosen rows' text columns are read: pick keys on numbers, then fetch text.
    """
    rel = ws.samples_relation_sql(run.run_id)
    badness = "score"
    if lower_is_better:
        whens = " ".join(f"WHEN {_q(t)} THEN -score" for t in sorted(lower_is_better))
        badness = f"CASE task {whens} ELSE score END"
    keys_sql = f"""
        SELECT task, min({badness}) AS worst, max({badness}) AS best,
               min_by({{'sample_id': sample_id, 'epoch': epoch, 'b': {badness}}},
                      {{'b': {badness}, 'id': sample_id, 'e': epoch}}, {int(per_task)}) AS ks
        FROM {rel} AS s WHERE score IS NOT NULL AND isfinite(score) GROUP BY task"""
    keys = []
    for r in ws.sql(keys_sql).to_pylist():
        for k in r["ks"]:
            # a sample with the task's best score is not a "worst" one, unless every sample scores the same
            if k["b"] < r["best"] or r["worst"] == r["best"]:
                keys.append((r["task"], k["sample_id"], k["epoch"]))
    if not keys:
        return []
    cond = " OR ".join("(task = ? AND sample_id = ? AND epoch = ?)" for _ in keys)
    params: list[Any] = [v for k in keys for v in k]
    text_sql = f"""
        SELECT task, sample_id, epoch, score, left(input, {TEXT_CHARS}) AS input,
               left(target, {TEXT_CHARS}) AS target, left(prediction, {TEXT_CHARS}) AS prediction
        FROM {rel} AS s WHERE {cond}"""
    found = {(r["task"], r["sample_id"], r["epoch"]): r for r in ws.sql(text_sql, params).to_pylist()}
    out = []
    for key in sorted(
        found, key=lambda k: (k[0], _bad(found[k]["score"], k[0] in lower_is_better), k[1], k[2])
    ):
        r = found[key]
        out.append(
            WorstSample(
                task=r["task"],
                sample_id=r["sample_id"],
                score=r["score"],
                input=r["input"] or "",
                target=r["target"],
                prediction=r["prediction"],
            )
        )
    return out
