"""Scores for gate rules, fetched in as few DuckDB scans as possible.

A gate with 50 rules over million-sample runs must not scan the Parquet 50 times or move a million
sample-id strings into Python: values for every task of a run come back in one query (task as an
integer index), and baseline/candidate pairs are joined inside DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkeeper.store.query import check_where

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class SampleFilter:
    """Subset of samples a rule looks at: a DuckDB `where` expression and/or group attribute equalities."""

    where: str | None = None
    group: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> SampleFilter:
        where = spec.get("where")
        group = tuple(sorted((str(k), str(v)) for k, v in (spec.get("group") or {}).items()))
        return cls(check_where(where) if where else None, group)

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in self.group:
            clauses.append('"group"[?] = ?')
            params.extend([key, value])
        if self.where:
            clauses.append(f"({self.where})")
        return ("".join(f" AND {c}" for c in clauses), params)

    def describe(self) -> str:
        parts = [f"group.{k} = {v!r}" for k, v in self.group]
        if self.where:
            parts.append(self.where)
        return " and ".join(parts)


def _cluster_sql(cluster_by: str) -> tuple[str, list[Any]]:
    source, _, key = cluster_by.partition(".")
    if source == "group":
        return '"group"[?]', [key]
    return "json_extract_string(metadata, ?)", [f"$.{key}"]


def _numpy(table: Any, name: str) -> np.ndarray[Any, Any]:
    """Arrow column -> numpy through its buffer: pyarrow's own to_numpy imports pandas (seconds, once)."""
    parts = []
    for chunk in table.column(name).chunks:
        dtype = {"int32": np.int32, "int64": np.int64, "double": np.float64}[str(chunk.type)]
        if chunk.null_count:
            raise ValueError(f"unexpected nulls in column {name}")
        data = np.frombuffer(chunk.buffers()[1], dtype=dtype, count=chunk.offset + len(chunk))
        parts.append(data[chunk.offset:])
    return np.concatenate(parts) if parts else np.empty(0)


class ScoreData:
    """Per-run, per-metric score caches for one gate evaluation."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._values: dict[tuple[str, str, SampleFilter], dict[str, FloatArray]] = {}
        self._pairs: dict[tuple[str, str, str, SampleFilter], dict[str, tuple[FloatArray, FloatArray]]] = {}
        self._tasks: dict[str, list[str]] = {}
        self._epochs: dict[str, bool] = {}

    def _task_names(self, run_id: str) -> list[str]:
        if run_id not in self._tasks:
            self._tasks[run_id] = [t.name for t in self.ws.get_run(run_id).tasks]
        return self._tasks[run_id]

    def _multi_epoch(self, run_id: str) -> bool:
        """Runs with one epoch need no per-id averaging: skipping the GROUP BY halves the scan cost."""
        if run_id not in self._epochs:
            rel = self.ws.samples_relation_sql(run_id)
            row = self.ws.sql(f"SELECT coalesce(max(epoch), 0) > 0 AS multi FROM {rel} AS s").to_pylist()
            self._epochs[run_id] = bool(row[0]["multi"])
        return self._epochs[run_id]

    def _per_sample(self, run_id: str, metric: str, filt: SampleFilter, tasks: list[str]) -> tuple[str, list[Any]]:
        rel = self.ws.samples_relation_sql(run_id)
        fsql, fparams = filt.sql()
        where = f"WHERE list_contains(?::VARCHAR[], task) AND scores[?] IS NOT NULL{fsql}"
        if self._multi_epoch(run_id):
            sql = (f"(SELECT list_position(?::VARCHAR[], task)::INTEGER AS ti, sample_id, "
                   f"avg(scores[?])::DOUBLE AS v FROM {rel} AS s {where} GROUP BY ALL)")
        else:
            sql = (f"(SELECT list_position(?::VARCHAR[], task)::INTEGER AS ti, sample_id, "
                   f"scores[?]::DOUBLE AS v FROM {rel} AS s {where})")
        return sql, [tasks, metric, tasks, metric, *fparams]

    @staticmethod
    def _split(ti: np.ndarray[Any, Any], cols: list[FloatArray], tasks: list[str]) -> dict[str, list[FloatArray]]:
        order = np.argsort(ti, kind="stable")
        ti = ti[order]
        ordered = [c[order] for c in cols]
        bounds = np.searchsorted(ti, np.arange(1, len(tasks) + 2))
        out: dict[str, list[FloatArray]] = {}
        for i, task in enumerate(tasks):
            out[task] = [c[bounds[i]:bounds[i + 1]] for c in ordered]
        return out

    def values(self, run_id: str, task: str, metric: str, filt: SampleFilter = SampleFilter()) -> FloatArray:
        """Epoch-averaged per-sample scores of one task (empty when none)."""
        key = (run_id, metric, filt)
        if key not in self._values:
            tasks = self._task_names(run_id)
            sub, params = self._per_sample(run_id, metric, filt, tasks)
            table = self.ws.sql(f"SELECT ti, v FROM {sub}", params)
            ti, v = _numpy(table, "ti"), _numpy(table, "v")
            self._values[key] = {t: c[0] for t, c in self._split(ti, [v], tasks).items()}
        return self._values[key].get(task, np.empty(0))

    def paired(self, run_a: str, run_b: str, task: str, metric: str,
               filt: SampleFilter = SampleFilter()) -> tuple[FloatArray, FloatArray]:
        """Scores of a and b on the sample ids both have, for one task (joined inside DuckDB)."""
        key = (run_a, run_b, metric, filt)
        if key not in self._pairs:
            tasks = sorted(set(self._task_names(run_a)) & set(self._task_names(run_b)))
            if not tasks:
                self._pairs[key] = {}
            else:
                sa, pa_ = self._per_sample(run_a, metric, filt, tasks)
                sb, pb = self._per_sample(run_b, metric, filt, tasks)
                table = self.ws.sql(f"SELECT ti, a.v AS va, b.v AS vb FROM {sa} AS a JOIN {sb} AS b "
                                    "USING (ti, sample_id)", [*pa_, *pb])
                ti, va, vb = _numpy(table, "ti"), _numpy(table, "va"), _numpy(table, "vb")
                self._pairs[key] = {t: (c[0], c[1]) for t, c in self._split(ti, [va, vb], tasks).items()}
        return self._pairs[key].get(task, (np.empty(0), np.empty(0)))

    def clustered(self, run_id: str, task: str, metric: str, filt: SampleFilter,
                  cluster_by: str) -> tuple[FloatArray, np.ndarray[Any, Any]]:
        """Per-sample scores with the cluster key of each sample (missing keys form their own cluster)."""
        rel = self.ws.samples_relation_sql(run_id)
        fsql, fparams = filt.sql()
        cexpr, cparams = _cluster_sql(cluster_by)
        sql = (f"SELECT avg(scores[?])::DOUBLE AS v, coalesce(any_value({cexpr}), '<none>:' || sample_id) AS c "
               f"FROM {rel} AS s WHERE task = ? AND scores[?] IS NOT NULL{fsql} GROUP BY sample_id")
        table = self.ws.sql(sql, [metric, *cparams, task, metric, *fparams])
        v = _numpy(table, "v")
        c = np.asarray(table.column("c").to_pylist(), dtype=object)
        return v, c
