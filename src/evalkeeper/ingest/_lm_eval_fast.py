"""Vectorised reading of lm-eval samples files with DuckDB's JSON reader (C++, multi-threaded, streaming).

The line-by-line Python reader in `lm_eval.py` is the reference; this path produces the same rows for the
common layout (lm-eval 0.4.3+ `arguments` objects, one filter per task, numeric per-sample metrics) several
times faster. Whatever it cannot read (another layout, a malformed line, a non-numeric metric value) raises
`FastPathUnavailable` / `duckdb.Error`, and the caller continues with the Python reader from the first row
not yet delivered, so errors are still reported by line with the file named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evalkeeper.ingest.base import CltAccumulator

MAX_LINE_BYTES = 16 << 20


class FastPathUnavailable(Exception):
    """The file's layout is not one the vectorised reader handles; use the Python reader."""


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns(first: dict[str, Any], metric_keys: list[str]) -> dict[str, str]:
    resps = first.get("filtered_resps")
    mc = isinstance(resps, list) and bool(resps) and isinstance(resps[0], list)
    cols = {
        "doc_id": "VARCHAR",
        "doc": "JSON",
        "target": "VARCHAR",
        # multiple choice needs every request's continuation; generation only the first request's prompt
        "arguments": ("MAP(VARCHAR, STRUCT(arg_0 VARCHAR, arg_1 VARCHAR))" if mc
                      else "STRUCT(gen_args_0 STRUCT(arg_0 VARCHAR))"),
        "filtered_resps": "VARCHAR[][]" if mc else "VARCHAR[]",
        "filter": "VARCHAR",
        "doc_hash": "VARCHAR",
        "prompt_hash": "VARCHAR",
        "target_hash": "VARCHAR",
    }
    for m in metric_keys:
        cols[m] = "DOUBLE"
    return cols


def _query(path: Path, first: dict[str, Any], metrics: list[str], primary: str) -> str:
    cols = _columns(first, metrics)
    spec = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in cols.items()) + "}"
    mc = cols["filtered_resps"] == "VARCHAR[][]"
    scores = ", ".join(f'"{m.replace(chr(34), chr(34) * 2)}" AS s{i}' for i, m in enumerate(metrics))
    meta_tail = (
        " || coalesce(',\"doc_hash\":' || to_json(doc_hash), '')"
        " || coalesce(',\"prompt_hash\":' || to_json(prompt_hash), '')"
        " || coalesce(',\"target_hash\":' || to_json(target_hash), '')"
        " || coalesce(',\"filter\":' || to_json(filter), '')"
        " || coalesce(',\"doc\":' || CAST(doc AS VARCHAR), '') || '}'"
    )
    doc_id_json = ("CASE WHEN regexp_full_match(doc_id, '-?[0-9]+') THEN doc_id ELSE to_json(doc_id) END")
    src = (f"read_json({_sql_str(str(path))}, format='newline_delimited', columns={spec}, "
           f"maximum_object_size={MAX_LINE_BYTES})")
    where = f"WHERE coalesce(filter, 'none') = {_sql_str(primary)}"
    input_sql = "coalesce(map_values(arguments)[1].arg_0, '')"
    if not mc:
        input_sql = "coalesce(arguments.gen_args_0.arg_0, '')"
        return (
            f"SELECT doc_id AS sample_id, {input_sql} AS input, target, filtered_resps[1] AS prediction, "
            f"NULL::DOUBLE[] AS logprobs, '{{\"doc_id\":' || {doc_id_json}{meta_tail} AS metadata"
            f"{', ' + scores if scores else ''} FROM {src} {where}"
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
SELECT doc_id AS sample_id, {input_sql} AS input,
  CASE WHEN gold_index IS NOT NULL THEN trim(choices[gold_index + 1]) ELSE target END AS target,
  CASE WHEN is_mc THEN trim(choices[pred_index + 1]) ELSE to_json(filtered_resps[1]) END AS prediction,
  CASE WHEN is_mc THEN lls END AS logprobs,
  '{{"doc_id":' || {doc_id_json}
    || CASE WHEN is_mc THEN ',"pred_index":' || pred_index ELSE '' END
    || coalesce(',"gold_index":' || gold_index, ''){meta_tail} AS metadata
  {', ' + scores if scores else ''}
FROM c
"""


def fast_batches(path: Path, first: dict[str, Any], metrics: list[str], names: list[str], primary: str,
                 task: str, run_id: str, schema: pa.Schema, acc: dict[str, CltAccumulator], seen: set[str],
                 batch_rows: int) -> Iterator[pa.Table]:
    """Tables in SAMPLE_SCHEMA for the lines of `primary` filter; `metrics` are the per-sample keys in the
    file and `names` our metric names for them. Updates `acc` (CLT) and `seen` (doc ids) as it goes."""
    import duckdb

    if any(c in str(path) for c in "*?[]{}"):
        raise FastPathUnavailable("DuckDB would read the path as a glob pattern")
    args = first.get("arguments")
    if not isinstance(args, dict) or not args or not all(isinstance(v, dict) for v in args.values()):
        raise FastPathUnavailable("arguments are not lm-eval 0.4.3+ objects")
    if next(iter(args)) != "gen_args_0":
        raise FastPathUnavailable("the first request is not gen_args_0")
    for m in metrics:
        v = first.get(m)
        if isinstance(v, (list, dict, str)):
            raise FastPathUnavailable(f"metric {m} is not numeric per sample")
    threads = max(1, min(os.cpu_count() or 1, 8))
    con = duckdb.connect(config={"threads": threads, "memory_limit": "768MB", "preserve_insertion_order": True})
    try:
        rel = con.sql(_query(path, first, metrics, primary))
        to_reader = getattr(rel, "to_arrow_reader", None) or getattr(rel, "fetch_arrow_reader", None)
        if to_reader is None:
            raise FastPathUnavailable("this DuckDB cannot stream Arrow batches")
        reader = to_reader(batch_rows)
        for batch in reader:
            yield _to_table(batch, names, task, run_id, schema, acc, seen)
    finally:
        con.close()


def _to_table(batch: pa.RecordBatch, names: list[str], task: str, run_id: str, schema: pa.Schema,
              acc: dict[str, CltAccumulator], seen: set[str]) -> pa.Table:
    n = batch.num_rows
    ids = batch.column("sample_id")
    if ids.null_count:
        raise FastPathUnavailable("a line has no doc_id")
    new_ids = ids.to_pylist()
    if len(set(new_ids)) != n or not seen.isdisjoint(new_ids):
        raise FastPathUnavailable("duplicate doc_id")  # the Python reader reports it with its line
    k = len(names)
    columns: list[np.ndarray] = []
    if k:
        mat = np.column_stack([batch.column(f"s{i}").to_numpy(zero_copy_only=False).astype(np.float64)
                               for i in range(k)])  # nulls come back as NaN
        present = np.column_stack([~np.asarray(batch.column(f"s{i}").is_null()) for i in range(k)])
        columns = [mat[:, i] for i in range(k)]
        offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
        keys = np.tile(np.array(names, dtype=object), n)[present.ravel()]
        scores = pa.MapArray.from_arrays(pa.array(offsets), pa.array(keys, pa.string()),
                                         pa.array(mat[present], pa.float64()))
    else:
        scores = pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()),
                                         pa.array([], pa.float64()))
    given = {
        "run_id": pa.array(np.full(n, run_id, dtype=object), pa.string()),
        "task": pa.array(np.full(n, task, dtype=object), pa.string()),
        "sample_id": ids,
        "epoch": pa.array(np.zeros(n, dtype=np.int32)),
        "input": batch.column("input"),
        "target": batch.column("target"),
        "prediction": batch.column("prediction"),
        "scores": scores,
        "logprobs": batch.column("logprobs"),
        "metadata": batch.column("metadata"),
    }
    arrays = []
    for field in schema:
        col = given.get(field.name)
        if col is None:
            arrays.append(pa.nulls(n, field.type))
        else:
            arrays.append(col if col.type == field.type else col.cast(field.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    # only now that the batch converted: count its ids and scores
    seen.update(new_ids)
    for name, col in zip(names, columns, strict=True):
        acc.setdefault(name, CltAccumulator()).add_many(col[~np.isnan(col)])
    return table
