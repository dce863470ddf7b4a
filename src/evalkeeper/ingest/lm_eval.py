"""Importer for lm-evaluation-harness output: `results_<date>.json` plus `samples_<task>_<date>.jsonl`.

The results JSON holds `"metric,filter"` keys per task and group, `configs`, `versions`, `n-shot`,
`higher_is_better` and the environment (`pretty_env_info`, `git_hash`, ...). Samples files hold one JSON
line per doc per filter, written filter by filter; they are streamed, never loaded whole.
Metric names: `acc` for the default filter `none`, `exact_match,strict-match` for any other filter.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.ids import fingerprint, new_run_id, sha256_files
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.ingest._lm_eval_samples import SamplesStream, metric_name
from evalkeeper.ingest.base import (
    ImportedRun,
    as_float,
    as_object,
    fill_source_ci,
    first_string,
    loads_fast,
    peek_json,
    read_json_file,
    validation_message,
    warm_imports,
)

# Keys of the results JSON that are not environment: everything else is kept under environment["source"].
_RESULT_KEYS = {"results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                "n-samples", "samples"}
_PROMPT_KEYS = ("description", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
                "fewshot_delimiter", "fewshot_config", "use_prompt")



def _is_results_doc(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return False
    if "config_general" in data:  # lighteval
        return False
    if any(k in data for k in ("configs", "n-shot", "versions", "higher_is_better")):
        return True
    return any("," in k for v in data["results"].values() if isinstance(v, dict) for k in v)


def _is_samples_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(16 << 20)
        obj = loads_fast(first)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and "doc_id" in obj and ("resps" in obj or "filtered_resps" in obj)


def find_results_files(path: Path) -> list[Path]:
    """lm-eval results JSON files at `path` (a file, the output folder or a model subfolder), by content."""
    if path.is_file():
        return [path] if path.suffix == ".json" and _is_results_doc(peek_json(path)) else []
    try:
        candidates = sorted(p for p in path.rglob("*.json") if p.is_file())
    except OSError:
        return []
    return [p for p in candidates if _is_results_doc(peek_json(p))]


class LmEvalImporter:
    """lm-evaluation-harness results + per-sample logs."""

    name = "lm_eval"

    def detect(self, path: Path) -> bool:
        try:
            if path.is_file() and path.suffix == ".jsonl":
                return _is_samples_line(path)
            return bool(find_results_files(path))
        except OSError:
            return False

    def load(self, path: Path) -> ImportedRun:
        results_file = self._pick_results_file(path)
        data = read_json_file(results_file)
        if not _is_results_doc(data):
            raise ImportFormatError("not an lm-eval results file: expected a 'results' object with "
                                    "'metric,filter' keys and 'configs'/'versions'/'n-shot'",
                                    path=str(results_file))
        try:
            return _build(results_file, data)
        except ValidationError as e:
            raise ImportFormatError(validation_message(e), path=str(results_file)) from None
        except (TypeError, AttributeError, KeyError, IndexError, OverflowError) as e:  # a field of an odd shape
            raise ImportFormatError(f"unexpected structure: {type(e).__name__}: {e}",
                                    path=str(results_file)) from None

    def _pick_results_file(self, path: Path) -> Path:
        if path.is_file() and path.suffix == ".jsonl":
            files = find_results_files(path.parent)
        elif path.is_file():
            return path
        else:
            files = find_results_files(path)
        if not files:
            raise ImportFormatError("no lm-eval results_*.json found", path=str(path),
                                    hint="point at the folder lm_eval --output_path wrote, or its results file")
        if len(files) > 1:
            listed = ", ".join(str(f) for f in files[:5])
            raise ImportFormatError(f"{len(files)} lm-eval results files found ({listed}); import one at a time",
                                    path=str(path), hint="pass the results_<date>.json of the run you want")
        return files[0]


def _require_dict(value: Any, file: Path, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"field '{field}' must be an object, got {type(value).__name__}", path=str(file))
    return value


def _parse_task_metrics(task: str, entry: Any, file: Path) -> dict[tuple[str, str], tuple[float, float | None]]:
    """`{(metric, filter): (value, stderr)}` of one results entry; skips alias/samples and N/A stderrs."""
    if not isinstance(entry, dict):
        raise ImportFormatError(f"results['{task}'] must be an object, got {type(entry).__name__}", path=str(file))
    out: dict[tuple[str, str], tuple[float, float | None]] = {}
    stderrs: dict[tuple[str, str], float | None] = {}
    for key, value in entry.items():
        if "," not in key:
            continue  # alias, name, sample_len ...
        metric, _, filt = key.partition(",")
        num = as_float(value)
        if metric.endswith("_stderr"):
            stderrs[(metric[: -len("_stderr")], filt)] = num if num is not None and math.isfinite(num) else None
        elif num is not None:
            out[(metric, filt)] = (num, None)
        elif value not in (None, "N/A", " "):
            raise ImportFormatError(f"results['{task}']['{key}'] is not a number: {str(value)[:60]!r}",
                                    path=str(file))
    return {k: (v, stderrs.get(k)) for k, (v, _) in out.items()}


def _model_info(data: dict[str, Any]) -> ModelInfo:
    config = as_object(data.get("config"))
    args = config.get("model_args")
    args_map: dict[str, str] = {}
    if isinstance(args, str):
        for part in args.split(","):
            k, sep, v = part.partition("=")
            if sep:
                args_map[k.strip()] = v.strip()
    elif isinstance(args, dict):
        args_map = {str(k): str(v) for k, v in args.items()}
    kind = str(config.get("model") or data.get("model_source") or "unknown")
    name = data.get("model_name") or args_map.get("pretrained") or args_map.get("model") or kind
    generation: dict[str, Any] = {}
    if isinstance(config.get("gen_kwargs"), dict | str) and config.get("gen_kwargs"):
        generation["gen_kwargs"] = config["gen_kwargs"]
    for key in ("batch_size", "max_batch_size", "device", "use_cache", "limit", "bootstrap_iters"):
        if config.get(key) is not None:
            generation[key] = config[key]
    return ModelInfo(name=str(name), backend=f"lm_eval:{kind}", revision=args_map.get("revision"),
                     generation=generation)


def _timestamp(value: Any) -> dt.datetime | None:
    num = as_float(value)
    if num is None or math.isnan(num) or not (0 < num < 1e11):
        return None
    return dt.datetime.fromtimestamp(num, dt.UTC)


def _samples_file(results_file: Path, task: str) -> Path | None:
    """`samples_<task>_<date>.jsonl` next to `results_<date>.json` (date taken from the results file name)."""
    folder = results_file.parent
    stem = results_file.stem
    if stem.startswith("results_"):
        exact = folder / f"samples_{task}_{stem[len('results_'):]}.jsonl"
        if exact.is_file():
            return exact
    older = folder / f"{stem}_{task}.jsonl"  # lm-eval 0.4.0-0.4.2: <results stem>_<task>.jsonl
    if older.is_file() and _is_samples_line(older):
        return older
    prefix = f"samples_{task}_"
    # a task named "x" must not pick up "samples_x_y_<date>.jsonl" of a task named "x_y": dates have no "_"
    matches = [m for m in sorted(folder.glob(f"{_glob_escape(prefix)}*.jsonl"))
               if m.stem[len(prefix):][:1].isdigit() and "_" not in m.stem[len(prefix):]]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ImportFormatError(f"several samples files for task '{task}' and no date to choose by: "
                                + ", ".join(m.name for m in matches), path=str(results_file))
    return None


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def _build(results_file: Path, data: dict[str, Any]) -> ImportedRun:
    f = results_file
    results = _require_dict(data.get("results"), f, "results")
    groups = _require_dict(data.get("groups"), f, "groups")
    configs = _require_dict(data.get("configs"), f, "configs")
    versions = _require_dict(data.get("versions"), f, "versions")
    n_shot = _require_dict(data.get("n-shot"), f, "n-shot")
    hib = _require_dict(data.get("higher_is_better"), f, "higher_is_better")
    n_samples = _require_dict(data.get("n-samples"), f, "n-samples")
    group_subtasks = _require_dict(data.get("group_subtasks"), f, "group_subtasks")
    config = _require_dict(data.get("config"), f, "config")
    if not results:
        raise ImportFormatError("'results' is empty: the run has no scores", path=str(f))

    run_id = new_run_id()
    # Groups aggregate their subtasks and have no samples: they become metrics, not tasks.
    group_names = set(groups) | set(group_subtasks)
    group_names |= {name for name in results if name not in configs and configs}
    tasks: list[TaskInfo] = []
    metrics: list[MetricResult] = []
    streams: list[tuple[TaskInfo, Path, list[str], dict[str, MetricResult]]] = []
    for name, entry in results.items():
        parsed = _parse_task_metrics(name, entry, f)
        is_group = name in group_names
        task_hib = as_object(hib.get(name))
        by_name: dict[str, MetricResult] = {}
        filters: list[str] = []
        for (metric, filt), (value, stderr) in parsed.items():
            if not math.isfinite(value):
                continue  # NaN/inf: no value to carry or store (the samples keep their own scores)
            mname = metric_name(metric, filt)
            if filt not in filters:
                filters.append(filt)
            higher = task_hib.get(metric)
            mr = MetricResult(run_id=run_id, task=name, metric=mname, value=value, stderr=stderr,
                              method="source", higher_is_better=higher if isinstance(higher, bool) else None)
            by_name[mname] = mr
            metrics.append(mr)
        if is_group:
            size = entry.get("sample_len") if isinstance(entry, dict) else None
            for mr in by_name.values():
                mr.n = size if isinstance(size, int) and not isinstance(size, bool) else None
                fill_source_ci(mr)
            continue
        cfg = as_object(configs.get(name))
        counts = as_object(n_samples.get(name))
        n = counts.get("effective")
        for mr in by_name.values():
            mr.n = n if isinstance(n, int) else None
            fill_source_ci(mr)  # replaced by the CLT interval once the samples have been streamed
        prompt = {k: cfg[k] for k in _PROMPT_KEYS if k in cfg}
        shot = n_shot.get(name)
        fewshot_seed = config.get("fewshot_seed")
        info = TaskInfo(
            name=name,
            version=None if versions.get(name) is None else str(versions.get(name)),
            prompt_fingerprint=fingerprint(prompt) if prompt else None,
            n_shot=shot if isinstance(shot, int) else None,
            seed=fewshot_seed if isinstance(fewshot_seed, int) else None,
            metrics=list(by_name),
            higher_is_better={m.metric: m.higher_is_better for m in by_name.values()
                              if m.higher_is_better is not None},
            n_samples=n if isinstance(n, int) else None,
            config=cfg,
        )
        tasks.append(info)
        samples_path = _samples_file(f, name)
        if samples_path is not None:
            streams.append((info, samples_path, filters, by_name))

    source_files = [f] + [s[1] for s in streams]
    if streams:
        warm_imports("duckdb", "pandas", "pyarrow.pandas_compat")  # used by the samples stream
    env_source = {k: v for k, v in data.items() if k not in _RESULT_KEYS}
    env_source["groups"] = {g: group_subtasks.get(g, []) for g in sorted(group_names)}
    # `date` is wall-clock; start_time/end_time are perf counters and total time includes model loading,
    # so no finish time is derived (the raw values stay in environment["source"]).
    started = _timestamp(data.get("date"))
    seed = config.get("random_seed")
    run = Run(
        run_id=run_id,
        model=_model_info(data),
        tasks=tasks,
        created_at=started or dt.datetime.now(dt.UTC),
        started_at=started,
        environment={"source": env_source},
        provenance=Provenance(producer="lm_eval", producer_version=first_string(data, "lm_eval_version", "version"),
                              source_path=str(f.resolve()), source_sha256=sha256_files(source_files)),
        seed=seed if isinstance(seed, int) else None,
    )
    batches = _stream_all(run_id, streams)
    return ImportedRun(run=run, metrics=metrics, batches=batches, source_files=source_files)


def _stream_all(run_id: str, streams: list[tuple[TaskInfo, Path, list[str], dict[str, MetricResult]]]
                ) -> Iterator[pa.Table]:
    for info, path, filters, by_name in streams:
        yield from SamplesStream(run_id, info, path, filters, by_name).batches()
