"""Run store: SQL (SQLite/PostgreSQL) for runs and governance, Parquet + DuckDB for samples."""

from evalkeeper.store.samples import SAMPLE_SCHEMA, SampleWriter, normalize_table, samples_to_table, table_to_samples
from evalkeeper.store.sql import SqlStore
from evalkeeper.store.workspace import Workspace, default_home, open_workspace

__all__ = [
    "SAMPLE_SCHEMA", "SampleWriter", "SqlStore", "Workspace", "default_home", "normalize_table", "open_workspace",
    "samples_to_table", "table_to_samples",
]
