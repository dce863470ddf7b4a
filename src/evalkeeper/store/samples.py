"""Per-sample storage: the Parquet schema, conversion from records, and an atomic part writer."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evalkeeper.core.atomic import atomic_open
from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Sample

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("task", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("input", pa.large_string()),
        pa.field("target", pa.large_string()),
        pa.field("prediction", pa.large_string()),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("logprobs", pa.list_(pa.float64())),
        pa.field("group", pa.map_(pa.string(), pa.string())),
        pa.field("metadata", pa.large_string()),  # JSON text
        pa.field("latency_ms", pa.float64()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
    ]
)

SAMPLE_COLUMNS = tuple(SAMPLE_SCHEMA.names)


def samples_to_table(samples: list[Sample]) -> pa.Table:
    """Convert records to a table with SAMPLE_SCHEMA (column-wise, no per-row pyarrow calls)."""
    cols: dict[str, list[object]] = {name: [] for name in SAMPLE_COLUMNS}
    for s in samples:
        cols["run_id"].append(s.run_id)
        cols["task"].append(s.task)
        cols["sample_id"].append(s.sample_id)
        cols["epoch"].append(s.epoch)
        cols["input"].append(s.input)
        cols["target"].append(s.target)
        cols["prediction"].append(s.prediction)
        cols["scores"].append(list(s.scores.items()))
        cols["logprobs"].append(s.logprobs)
        cols["group"].append(list(s.group.items()))
        cols["metadata"].append(json.dumps(s.metadata, default=str) if s.metadata else None)
        cols["latency_ms"].append(s.latency_ms)
        cols["tokens_in"].append(s.tokens_in)
        cols["tokens_out"].append(s.tokens_out)
    return pa.table(cols, schema=SAMPLE_SCHEMA)


def normalize_table(table: pa.Table, run_id: str) -> pa.Table:
    """Give a table exactly SAMPLE_SCHEMA: add missing columns as nulls, cast, set run_id."""
    n = table.num_rows
    arrays = []
    for field in SAMPLE_SCHEMA:
        if field.name == "run_id":
            arrays.append(pa.array([run_id] * n, pa.string()) if n else pa.array([], pa.string()))
        elif field.name in table.column_names:
            col = table.column(field.name)
            arrays.append(col if col.type == field.type else col.cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=SAMPLE_SCHEMA)


def table_to_samples(table: pa.Table) -> list[Sample]:
    """Convert rows back to records (for small tables: detail pages, exports)."""
    out = []
    for row in table.to_pylist():
        meta = row.get("metadata")
        out.append(
            Sample(
                run_id=row["run_id"],
                task=row["task"],
                sample_id=row["sample_id"],
                epoch=row.get("epoch") or 0,
                input=row.get("input") or "",
                target=row.get("target"),
                prediction=row.get("prediction"),
                scores=dict(row.get("scores") or []),
                logprobs=row.get("logprobs"),
                group=dict(row.get("group") or []),
                metadata=json.loads(meta) if meta else {},
                latency_ms=row.get("latency_ms"),
                tokens_in=row.get("tokens_in"),
                tokens_out=row.get("tokens_out"),
            )
        )
    return out


ROWS_PER_GROUP = 16_384  # small row groups: a page of rows found by the sample index decodes little


class SampleWriter:
    """Appends Parquet parts to a run's samples folder; each part is written atomically.

    Row groups of ROWS_PER_GROUP rows (with min/max statistics) let DuckDB skip groups on `task` filters
    and let `Workspace.query_samples` read just the groups that hold a page's rows.
    """

    def __init__(self, samples_dir: Path, run_id: str, rows_per_group: int = ROWS_PER_GROUP) -> None:
        self.dir = samples_dir
        self.run_id = run_id
        self.rows_per_group = rows_per_group
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []
        self.n_rows = 0
        self._seq = len(list(self.dir.glob("part-*.parquet")))

    def write(self, batch: pa.Table | list[Sample]) -> Path | None:
        table = samples_to_table(batch) if isinstance(batch, list) else batch
        if table.num_rows == 0:
            return None
        table = normalize_table(table, self.run_id)
        path = self.dir / f"part-{self._seq:05d}-{secrets.token_hex(3)}.parquet"
        self._seq += 1
        with atomic_open(path, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=self.rows_per_group)
        self.paths.append(path)
        self.n_rows += table.num_rows
        return path

    def write_all(self, batches: Iterable[pa.Table | list[Sample]]) -> int:
        for b in batches:
            self.write(b)
        return self.n_rows

    def close(self) -> list[Path]:
        return list(self.paths)


def sample_parts(samples_dir: Path) -> list[Path]:
    if not samples_dir.is_dir():
        return []
    return sorted(p for p in samples_dir.glob("*.parquet") if not p.name.startswith("."))


def check_parquet_readable(path: Path) -> None:
    try:
        pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure means the same to the user
        raise EvalkeeperError(f"unreadable Parquet file ({exc})", path=os.fspath(path)) from None
