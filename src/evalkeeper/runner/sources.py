"""Where task rows come from: local JSONL/JSON/CSV/Parquet, a `datasets` folder, a Hugging Face dataset,
or one of the procedural generators shipped with the bundled suite.

All sources return plain `list[dict]` rows, so fingerprinting and templating never depend on the source.
Hugging Face datasets go through `datasets.load_dataset(path, name, split=..., revision=...)`; nothing
here reaches the network unless the user names a hub dataset that is not cached.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evalkeeper.core.errors import ConfigError

LOCAL_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetSpec(BaseModel):
    """The `dataset:` block of a task file. Exactly one of path / hf_path / generator is set."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # local file or folder, relative to the task file
    format: str | None = None  # jsonl | json | csv | parquet | disk (save_to_disk folder) | auto
    hf_path: str | None = None  # anything datasets.load_dataset accepts as `path` ("json", a hub id, a folder)
    hf_name: str | None = None
    split: str = "test"
    revision: str | None = None
    data_files: str | list[str] | dict[str, Any] | None = None
    generator: str | None = None  # a procedural generator (see GENERATORS)
    params: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        if self.generator:
            return f"generator:{self.generator}"
        if self.hf_path:
            return f"hf:{self.hf_path}" + (f"/{self.hf_name}" if self.hf_name else "") + f"[{self.split}]"
        return f"file:{self.path}"


def load_rows(spec: DatasetSpec, base_dir: Path, where: str) -> list[dict[str, Any]]:
    """Load every row of the dataset described by `spec` (paths relative to `base_dir`)."""
    chosen = [x for x in (spec.path, spec.hf_path, spec.generator) if x]
    if len(chosen) != 1:
        raise ConfigError("dataset: set exactly one of 'path', 'hf_path' or 'generator'", path=where)
    if spec.generator:
        from evalkeeper.runner.generators import GENERATORS

        gen = GENERATORS.get(spec.generator)
        if gen is None:
            raise ConfigError(f"unknown dataset generator {spec.generator!r}", path=where,
                              hint=f"known: {', '.join(sorted(GENERATORS))}")
        return gen(base_dir=base_dir, **spec.params)
    if spec.hf_path:
        return _load_hf(spec, base_dir, where)
    assert spec.path is not None
    path = Path(os.path.expanduser(spec.path))
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise ConfigError(f"dataset file not found: {path}", path=where)
    fmt = spec.format or ("disk" if path.is_dir() else LOCAL_FORMATS.get(path.suffix.lower()))
    if fmt is None:
        raise ConfigError(f"cannot tell the format of {path.name}", path=where,
                          hint="set dataset.format to jsonl, json, csv, parquet or disk")
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ConfigError("a .json dataset must be a list of objects (or {'data': [...]})", path=str(path))
            return [dict(r) for r in rows]
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as f:
                return [dict(r) for r in csv.DictReader(f)]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_table(path).to_pylist())
        if fmt == "disk":
            return _load_disk(path, spec.split, where)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read dataset {path}: {exc}", path=where) from None
    raise ConfigError(f"unknown dataset format {fmt!r}", path=where)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"line {lineno}: invalid JSON ({exc.msg})", path=str(path)) from None
            if not isinstance(obj, dict):
                raise ConfigError(f"line {lineno}: each line must be a JSON object", path=str(path))
            rows.append(obj)
    return rows


def _pick_split(ds: Any, split: str, where: str) -> Any:
    if hasattr(ds, "keys") and not hasattr(ds, "features"):  # a DatasetDict
        if split not in ds:
            raise ConfigError(f"split {split!r} not in dataset (has {sorted(ds.keys())})", path=where)
        return ds[split]
    return ds


def _load_disk(path: Path, split: str, where: str) -> list[dict[str, Any]]:
    """A folder written by `Dataset.save_to_disk`, or a plain data folder `load_dataset` understands."""
    import datasets

    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
            path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path), split=split)
    return list(_pick_split(ds, split, where).to_list())


def _load_hf(spec: DatasetSpec, base_dir: Path, where: str) -> list[dict[str, Any]]:
    import datasets

    assert spec.hf_path is not None
    hf_path = spec.hf_path
    local = base_dir / hf_path
    if not os.path.isabs(hf_path) and local.exists():
        hf_path = str(local)
    data_files = spec.data_files
    if isinstance(data_files, str) and not os.path.isabs(data_files) and (base_dir / data_files).exists():
        data_files = str(base_dir / data_files)
    elif isinstance(data_files, list):
        data_files = [str(base_dir / p) if (base_dir / p).exists() else p for p in data_files]
    try:
        ds = datasets.load_dataset(hf_path, spec.hf_name, split=spec.split, revision=spec.revision,
                                   data_files=data_files)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        raise ConfigError(f"datasets.load_dataset({spec.hf_path!r}, {spec.hf_name!r}, split={spec.split!r}) "
                          f"failed: {type(exc).__name__}: {exc}", path=where,
                          hint="check the path/config/split; hub datasets need network or a warm HF cache") from None
    return list(_pick_split(ds, spec.split, where).to_list())
