"""DuckDB over a run's Parquet parts: filtered, searched, sorted, paged sample queries."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

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
        page). DuckDB reads just those rows (row-number filter) with `score` added, so the result has the
        columns and types `select` gives."""
        if not located:
            located = [(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]
        selects = []
        for part_no, rows, _ in located:
            wanted = ", ".join(str(int(r)) for r in rows) or "NULL"
            selects.append(f"SELECT * EXCLUDE (file_row_number), {score_expression(run)} AS score, "
                           f"{part_no} AS __part, file_row_number AS __row "
                           f"FROM read_parquet({_quote(str(parts[part_no]))}, file_row_number=true) "
                           f"WHERE file_row_number IN ({wanted})")
        table = self._run(" UNION ALL BY NAME ".join(selects), [], None)
        keys = np.concatenate([part * (1 << 40) + rows for part, rows, _ in located])
        places = np.concatenate([places for _, _, places in located])
        got = (np.asarray(table.column("__part").to_numpy(), dtype=np.int64) * (1 << 40)
               + np.asarray(table.column("__row").to_numpy(), dtype=np.int64))
        by_key = np.argsort(keys)
        place_of_row = places[by_key][np.searchsorted(keys[by_key], got)] if got.size else got
        table = table.take(pa.array(np.argsort(place_of_row), pa.int64())).drop_columns(["__part", "__row"])
        if columns:
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise EvalkeeperError(f"sample query failed: no column {missing[0]!r}",
                                      hint=f"columns: {', '.join(table.column_names)}")
            table = table.select(columns)
        return table

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
