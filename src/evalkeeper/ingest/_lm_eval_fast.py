"""Vectorised reading of lm-eval samples files with DuckDB's JSON reader (C++, multi-threaded, streaming).

The line-by-line Python reader in `_lm_eval_samples.py` is the reference; this path produces the same rows
for the common layout (lm-eval 0.4.3+ `arguments` objects, one filter per task, numeric per-sample
metrics) several times faster. Whatever it cannot read (another layout, a malformed line, a non-numeric
metric value, a doc id that is neither integer nor string) raises `FastPathUnavailable` / `duckdb.Error`,
and the caller continues with the Python reader from the first row not yet delivered, so errors are still
reported by line with the file named.

DuckDB builds every text column (the metadata JSON included) in C++; Python only assembles the score map
with numpy. The query runs in a producer thread that stays one batch ahead of the consumer, so parsing the
next batch overlaps with the store compressing and writing the previous one (both release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evalkeeper.ingest._pipeline import in_background

MAX_LINE_BYTES = 16 << 20
PREFETCH = 1  # finished batches waiting for the consumer (each ~75 MB per 128k generation rows)


class FastPathUnavailable(Exception):
    """The file's layout is not one the vectorised reader handles; use the Python reader."""


@dataclass
class FastBatch:
    """One batch in SAMPLE_SCHEMA plus what the caller folds in once it delivers it."""

    table: pa.Table
    ids: pa.Array  # sample ids (for the duplicate check and n)
    scores: list[np.ndarray]  # per metric, the non-missing per-sample values (for the CLT)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns(first: dict[str, Any], metric_keys: list[str]) -> dict[str, str]:
    resps = first.get("filtered_resps")
    mc = isinstance(resps, list) and bool(resps) and isinstance(resps[0], list)
    cols = {
        # JSON keeps the value as written: its text goes into metadata verbatim, as the line reader does
        "doc_id": "JSON",
        "doc": "JSON",
        "target": "VARCHAR",
        # multiple choice needs every request's continuation; generation only the first request's prompt
        "arguments": ("MAP(VARCHAR, STRUCT(arg_0 VARCHAR, arg_1 VARCHAR))" if mc
                      else "STRUCT(gen_args_0 STRUCT(arg_0 VARCHAR))"),
        "filtered_resps": "VARCHAR[][]" if mc else "VARCHAR[]",
        "filter": "JSON",
        "doc_hash": "JSON",
        "prompt_hash": "JSON",
        "target_hash": "JSON",
    }
    for m in metric_keys:
        cols[m] = "DOUBLE"
    return cols


_META_FIELDS = ("doc_hash", "prompt_hash", "target_hash", "filter", "doc")


def _metadata_sql(mc: bool) -> str:
    """The metadata JSON text, keys in the line reader's order; JSON columns are cast to their text.

    concat() skips NULL arguments, so `',"key":' || value` leaves out absent keys; when every key is
    present (lm-eval always writes them) the plain form avoids building those pieces one by one.
    """
    head = """'{"doc_id":', CAST(doc_id AS VARCHAR)"""
    if mc:
        head += """, CASE WHEN is_mc THEN ',"pred_index":' || pred_index END, ',"gold_index":' || gold_index"""
    plain = ", ".join(f"""',"{f}":', CAST({f} AS VARCHAR)""" for f in _META_FIELDS)
    skipping = ", ".join(f"""',"{f}":' || CAST({f} AS VARCHAR)""" for f in _META_FIELDS)
    all_there = " AND ".join(f"{f} IS NOT NULL" for f in _META_FIELDS)
    return (f"CASE WHEN {all_there} THEN concat({head}, {plain}, '}}') "
            f"ELSE concat({head}, {skipping}, '}}') END")


def _query(path: Path, first: dict[str, Any], metrics: list[str], primary: str) -> str:
    cols = _columns(first, metrics)
    spec = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in cols.items()) + "}"
    mc = cols["filtered_resps"] == "VARCHAR[][]"
    scores = "".join(f', "{m.replace(chr(34), chr(34) * 2)}" AS s{i}' for i, m in enumerate(metrics))
    meta_sql = _metadata_sql(mc)
    # integer and string ids only (str() of other JSON values differs from their JSON text): else NULL,
    # which sends the file to the line reader
    sample_id = "CASE WHEN json_type(doc_id) IN ('BIGINT', 'UBIGINT', 'VARCHAR') THEN doc_id->>'$' END"
    src = (f"read_json({_sql_str(str(path))}, format='newline_delimited', columns={spec}, "
           f"maximum_object_size={MAX_LINE_BYTES})")
    where = f"WHERE coalesce(filter->>'$', 'none') = {_sql_str(primary)}"
    if not mc:
        return (
            f"SELECT {sample_id} AS sample_id, coalesce(arguments.gen_args_0.arg_0, '') AS input, target, "
            f"filtered_resps[1] AS prediction, "
            f"{meta_sql} AS metadata{scores} "
            f"FROM {src} {where}"
        )
    return f"""
WITH a AS (
  SELECT *, list_transform(filtered_resps, lambda x: TRY_CAST(x[1] AS DOUBLE)) AS lls,
            list_transform(map_values(arguments), lambda x: x.arg_1) AS choices
  FROM {src} {where}
), b AS (
  SELECT *, (len(lls) > 0 AND len(lls) = len(choices) AND list_count(lls) = len(lls)
             AND list_count(choices) = len(choices)) AS is_mc
  FROM a
), c AS (
  SELECT *,
    CASE WHEN is_mc THEN list_position(lls, list_max(lls)) - 1 END AS pred_index,
    CASE WHEN NOT is_mc THEN NULL
         WHEN regexp_full_match(trim(target), '[0-9]{{1,9}}') AND CAST(trim(target) AS BIGINT) < len(choices)
           THEN CAST(trim(target) AS BIGINT)
         WHEN list_position(list_transform(choices, lambda x: trim(x)), trim(target)) > 0
           THEN list_position(list_transform(choices, lambda x: trim(x)), trim(target)) - 1
    END AS gold_index
  FROM b
)
SELECT {sample_id} AS sample_id, coalesce(map_values(arguments)[1].arg_0, '') AS input,
  CASE WHEN gold_index IS NOT NULL THEN trim(choices[gold_index + 1]) ELSE target END AS target,
  CASE WHEN is_mc THEN trim(choices[pred_index + 1]) ELSE CAST(to_json(filtered_resps[1]) AS VARCHAR) END AS prediction,
  CASE WHEN is_mc THEN lls END AS logprobs,
  {meta_sql} AS metadata{scores}
FROM c
"""


def check_layout(path: Path, first: dict[str, Any], metrics: list[str]) -> None:
    """Raise FastPathUnavailable unless the first line has the layout the query expects."""
    if any(c in str(path) for c in "*?[]{}"):
        raise FastPathUnavailable("DuckDB would read the path as a glob pattern")
    args = first.get("arguments")
    if not isinstance(args, dict) or not args or not all(isinstance(v, dict) for v in args.values()):
        raise FastPathUnavailable("arguments are not lm-eval 0.4.3+ objects")
    if next(iter(args)) != "gen_args_0":
        raise FastPathUnavailable("the first request is not gen_args_0")
    for m in metrics:
        if isinstance(first.get(m), list | dict | str):
            raise FastPathUnavailable(f"metric {m} is not numeric per sample")


def fast_batches(path: Path, first: dict[str, Any], metrics: list[str], names: list[str], primary: str,
                 task: str, run_id: str, schema: pa.Schema, batch_rows: int) -> Generator[FastBatch, None, None]:
    """Batches of `batch_rows` rows (the last one shorter) in SAMPLE_SCHEMA for the lines of the `primary`
    filter; `metrics` are the per-sample keys in the file and `names` our metric names for them."""
    check_layout(path, first, metrics)
    sql = _query(path, first, metrics, primary)
    connection: list[Any] = []

    def produce() -> Iterator[FastBatch]:
        for table in _read(sql, batch_rows, connection):
            yield _to_batch(table, names, task, run_id, schema)

    def interrupt() -> None:
        if connection:
            connection[0].interrupt()

    yield from in_background(produce(), depth=PREFETCH, name="evalkeeper-lm-eval-reader", on_close=interrupt)


def _read(sql: str, batch_rows: int, connection: list[Any]) -> Iterator[pa.Table]:
    """Tables of exactly `batch_rows` rows (the last one shorter); the connection is put in `connection`
    so the consumer can interrupt a running query."""
    import duckdb

    threads = max(1, min(os.cpu_count() or 1, 8))
    con = duckdb.connect(config={"threads": threads, "memory_limit": "768MB", "preserve_insertion_order": True})
    connection.append(con)
    try:
        reader = con.sql(sql).to_arrow_reader(min(batch_rows, 1 << 16))
        pending: list[pa.RecordBatch] = []
        rows = 0
        for rb in reader:
            pending.append(rb)
            rows += rb.num_rows
            while rows >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending, rows = rest.to_batches(), rest.num_rows
        if rows:
            yield pa.Table.from_batches(pending)
    finally:
        con.close()


def _const_strings(value: str, n: int) -> pa.Array:
    """`n` copies of `value` as a string array, built from buffers (no per-row Python objects)."""
    raw = value.encode()
    offsets = np.arange(n + 1, dtype=np.int64 if len(raw) * n >= 2**31 else np.int32) * len(raw)
    kind = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


def _score_map(table: pa.Table, names: list[str]) -> tuple[pa.Array, list[np.ndarray]]:
    """The `scores` map column (missing scores left out) and, per metric, its present values."""
    n = table.num_rows
    k = len(names)
    if not k:
        return (pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()),
                                        pa.array([], pa.float64())), [])
    cols = [table.column(f"s{i}").combine_chunks().cast(pa.float64()) for i in range(k)]
    mat = np.empty((n, k), dtype=np.float64)
    present = np.ones((n, k), dtype=bool)
    for i, col in enumerate(cols):
        if col.null_count:
            present[:, i] = col.is_valid().to_numpy(zero_copy_only=False)
            col = col.fill_null(0.0)
        mat[:, i] = col.to_numpy(zero_copy_only=False)
    key_index = np.tile(np.arange(k, dtype=np.int32), n)
    if present.all():
        offsets = np.arange(n + 1, dtype=np.int32) * k
        values = mat.ravel()
        per_metric = [mat[:, i] for i in range(k)]
    else:
        offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
        key_index = key_index[present.ravel()]
        values = mat[present]
        per_metric = [mat[present[:, i], i] for i in range(k)]
    keys = pa.array(names, pa.string()).take(pa.array(key_index))
    scores = pa.MapArray.from_arrays(pa.array(offsets), keys, pa.array(values, pa.float64()))
    return scores, per_metric


def _to_batch(table: pa.Table, names: list[str], task: str, run_id: str, schema: pa.Schema) -> FastBatch:
    n = table.num_rows
    ids = table.column("sample_id").combine_chunks()
    if ids.null_count:
        raise FastPathUnavailable("a line has no integer or string doc_id")
    scores, per_metric = _score_map(table, names)
    given: dict[str, Any] = {
        "run_id": _const_strings(run_id, n),
        "task": _const_strings(task, n),
        "sample_id": ids,
        "epoch": pa.array(np.zeros(n, dtype=np.int32)),
        "scores": scores,
    }
    arrays = []
    for field in schema:
        col = given.get(field.name)
        if col is None:
            col = table.column(field.name) if field.name in table.column_names else pa.nulls(n, field.type)
        arrays.append(col if col.type == field.type else col.cast(field.type))
    return FastBatch(pa.Table.from_arrays(arrays, schema=schema), ids, per_metric)
