"""DuckDB over a run's Parquet parts: filtered, searched, sorted, paged sample queries."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Run

# A user `--where` is a SQL expression over sample columns; it must not reach files, settings or extensions.
_FORBIDDEN = re.compile(
    r";|--|/\*|\b(read_\w+|copy|attach|detach|install|load|pragma|set|export|import|create|drop|insert|update|"
    r"delete|alter|call|glob|getenv|current_setting|parquet_\w+|sniff_\w+|query|query_table)\b",
    re.IGNORECASE,
)
_SORTABLE = {"task", "sample_id", "epoch", "score", "latency_ms", "tokens_in", "tokens_out", "input",
             "prediction", "target"}


_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def check_where(where: str) -> str:
    """Reject statements, comments and file/setting functions; words inside string literals are data."""
    if where.count("'") % 2:
        raise EvalkeeperError(f"--where {where!r} has an unterminated string literal")
    if _FORBIDDEN.search(_STRING_LITERAL.sub("''", where)):
        raise EvalkeeperError(
            f"--where {where!r} uses a statement, comment or function that is not allowed in a filter",
            hint="write a plain expression over sample columns, e.g. \"score < 1 and task = 'arith'\"",
        )
    return where


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def score_expression(run: Run) -> str:
    """`score` = the task's primary (first) metric; tasks without declared metrics use their first score."""
    whens = [f"WHEN {_quote(t.name)} THEN scores[{_quote(t.metrics[0])}]" for t in run.tasks if t.metrics]
    fallback = "map_values(scores)[1]"
    return f"CASE task {' '.join(whens)} ELSE {fallback} END" if whens else fallback


class SampleQuery:
    """Builds and runs sample queries; one DuckDB connection per workspace, a cursor per call."""

    def __init__(self) -> None:
        self._conn = duckdb.connect(":memory:")
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            return self._conn.cursor()

    def relation_sql(self, run: Run, parts: list[Path]) -> str:
        if not parts:
            raise EvalkeeperError(f"run {run.run_id} has no stored samples", hint="import or run it again")
        files = "[" + ", ".join(_quote(str(p)) for p in parts) + "]"
        return (f"(SELECT *, {score_expression(run)} AS score FROM read_parquet({files}, union_by_name=true))")

    def _filters(self, task: str | None, where: str | None, search: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if task:
            clauses.append("task = ?")
            params.append(task)
        if search:
            clauses.append("(" + " OR ".join(f"{c} ILIKE ? ESCAPE '\\'" for c in ("input", "prediction", "target"))
                           + ")")
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params.extend([pattern] * 3)
        if where:
            clauses.append(f"({check_where(where)})")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _run(self, sql: str, params: list[Any] | dict[str, Any], where: str | None) -> pa.Table:
        cur = self.cursor()
        try:
            return cur.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as exc:
            msg = str(exc).splitlines()[0]
            if where:
                raise EvalkeeperError(f"cannot apply --where {where!r}: {msg}",
                                      hint="columns: task, sample_id, epoch, input, target, prediction, "
                                           "score, scores['metric'], \"group\"['attr'], latency_ms, "
                                           "tokens_in, tokens_out") from None
            raise EvalkeeperError(f"sample query failed: {msg}") from None

    def select(self, run: Run, parts: list[Path], *, task: str | None = None, where: str | None = None,
               search: str | None = None, order_by: str | None = None, descending: bool = False,
               limit: int | None = None, offset: int = 0, columns: list[str] | None = None) -> pa.Table:
        rel = self.relation_sql(run, parts)
        filt, params = self._filters(task, where, search)
        cols = "*" if not columns else ", ".join(f'"{c}"' for c in columns)
        order = ""
        if order_by:
            if order_by not in _SORTABLE:
                raise EvalkeeperError(f"cannot sort by {order_by!r}", hint=f"one of {sorted(_SORTABLE)}")
            order = f" ORDER BY {order_by} {'DESC' if descending else 'ASC'} NULLS LAST, task, sample_id, epoch"
        else:
            order = " ORDER BY task, sample_id, epoch" if limit is not None else ""
        page = ""
        if limit is not None:
            page = f" LIMIT {int(limit)} OFFSET {int(offset)}"
        sql = f"SELECT {cols} FROM {rel} AS s{filt}{order}{page}"
        return self._run(sql, params, where)

    def rows_at(self, run: Run, parts: list[Path], located: list[tuple[int, np.ndarray, np.ndarray]],
                columns: list[str] | None = None) -> pa.Table:
        """Rows by position, in page order: `located` holds (part number, rows in the part, places in the
        page). Only the row groups holding them are read; DuckDB adds `score` and picks `columns`, so the
        result has the same columns and types as `select`."""
        pieces = []
        for part_no, rows, places in located:
            pf = pq.ParquetFile(parts[part_no])
            md = pf.metadata
            starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
            groups = np.searchsorted(starts, rows, side="right") - 1
            needed = np.unique(groups)
            table = pf.read_row_groups(needed.tolist())
            before = np.concatenate([[0], np.cumsum(starts[needed + 1] - starts[needed])[:-1]])
            local = rows - starts[groups] + before[np.searchsorted(needed, groups)]
            pieces.append(table.take(pa.array(local, pa.int64())).append_column("__pos", pa.array(places, pa.int64())))
        if not pieces:
            pieces.append(pq.read_schema(parts[0]).empty_table().append_column("__pos", pa.array([], pa.int64())))
        rows_table = pa.concat_tables(pieces, promote_options="permissive").sort_by("__pos").drop_columns(["__pos"])
        cols = "*" if not columns else ", ".join(f'"{c}"' for c in columns)
        cur = self.cursor()
        try:
            cur.register("__rows", rows_table)
            return cur.sql(f"SELECT {cols} FROM (SELECT *, {score_expression(run)} AS score FROM __rows) AS s"
                           ).to_arrow_table()
        except duckdb.Error as exc:
            raise EvalkeeperError(f"sample query failed: {str(exc).splitlines()[0]}") from None
        finally:
            cur.close()

    def count(self, run: Run, parts: list[Path], *, task: str | None = None, where: str | None = None,
              search: str | None = None) -> int:
        rel = self.relation_sql(run, parts)
        filt, params = self._filters(task, where, search)
        t = self._run(f"SELECT count(*) AS n FROM {rel} AS s{filt}", params, where)
        return int(t.column("n")[0].as_py())

    def _per_sample(self, rel: str) -> str:
        return (f"SELECT sample_id, avg(scores[$metric]) AS v FROM {rel} AS s "
                "WHERE task = $task AND scores[$metric] IS NOT NULL GROUP BY sample_id")

    def scores(self, run: Run, parts: list[Path], task: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        sql = f"{self._per_sample(self.relation_sql(run, parts))} ORDER BY sample_id"
        t = self._run(sql, {"metric": metric, "task": task}, None)
        ids = t.column("sample_id").to_numpy(zero_copy_only=False).astype(object)
        vals = t.column("v").to_numpy(zero_copy_only=False).astype(np.float64)
        return ids, vals

    def paired_scores(self, run_a: Run, parts_a: list[Path], run_b: Run, parts_b: list[Path], task: str,
                      metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Join two runs on sample id inside DuckDB: (shared ids, a's, b's, n_a, n_b), sorted by id."""
        a = self._per_sample(self.relation_sql(run_a, parts_a))
        b = self._per_sample(self.relation_sql(run_b, parts_b))
        params = {"metric": metric, "task": task}
        sql = (f"WITH a AS ({a}), b AS ({b}), "
               "n AS (SELECT (SELECT count(*) FROM a) AS na, (SELECT count(*) FROM b) AS nb) "
               "SELECT a.sample_id, a.v AS va, b.v AS vb, n.na, n.nb FROM a JOIN b USING (sample_id), n "
               "UNION ALL SELECT NULL, NULL, NULL, n.na, n.nb FROM n ORDER BY 1 NULLS LAST")
        t = self._run(sql, params, None)
        n = t.num_rows - 1  # the last row only carries the counts
        na, nb = int(t.column("na")[n].as_py()), int(t.column("nb")[n].as_py())
        t = t.slice(0, n)
        ids = t.column("sample_id").to_numpy(zero_copy_only=False).astype(object)
        return (ids, t.column("va").to_numpy(zero_copy_only=False).astype(np.float64),
                t.column("vb").to_numpy(zero_copy_only=False).astype(np.float64), na, nb)

    def sql(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run trusted SQL (built by evalkeeper code, not users) and return Arrow."""
        return self._run(sql, params or [], None)
