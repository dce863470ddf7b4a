"""Importer for lighteval output: `results/<model>/results_<date>.json` + `details/<model>/<date>/*.parquet`.

Task keys come as `suite|task|fewshot` (optionally `|truncate`), or `task|fewshot` in newer versions;
`all` and `...:_average|n` entries are aggregates over tasks, kept as metrics but not as tasks. The JSON may
contain bare NaN. Detail Parquet files (names contain `|`) have nested `doc` / `model_response` / `metric`
columns in current versions and flat, sometimes stringified, columns (`example`, `predictions`, `metrics`,
...) in older ones; both are read by `evalkeeper.ingest._lighteval_details`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.ids import fingerprint, new_run_id, sha256_files
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.ingest._lighteval_details import DETAIL_COLUMNS, DetailsFile
from evalkeeper.ingest.base import (
    CltAccumulator,
    ImportedRun,
    apply_clt,
    as_float,
    as_object,
    fill_source_ci,
    first_string,
    peek_json,
    read_json_file,
    validation_message,
)

_DATE_RE = re.compile(r"^results_(?P<date>.+)\.json$")
_PROMPT_KEYS = ("prompt_function", "hf_subset", "evaluation_splits", "few_shots_split", "few_shots_select",
                "generation_size", "stop_sequence", "num_fewshots", "instruction")


def split_task_key(key: str) -> tuple[str | None, str, int | None]:
    """`suite|task|fewshot[|truncate]` or `task|fewshot` -> (suite, task, fewshot)."""
    parts = key.split("|")
    if len(parts) >= 3 and parts[2].lstrip("-").isdigit():
        return parts[0], parts[1], int(parts[2])
    if len(parts) == 2 and parts[1].lstrip("-").isdigit():
        return None, parts[0], int(parts[1])
    if len(parts) >= 2:
        return parts[0], parts[1], None
    return None, key, None


def is_aggregate_key(key: str) -> bool:
    """`all` and group averages (`suite|mmlu:_average|5`) summarise tasks; they have no samples."""
    return key == "all" or ":_average" in key or key.endswith("_average")


def _is_results_doc(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("results"), dict)
            and isinstance(data.get("config_general"), dict))


def _is_details_parquet(path: Path) -> bool:
    try:
        names = set(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - any pyarrow failure means "not ours"
        return False
    return DETAIL_COLUMNS["nested"] <= names or len(names & DETAIL_COLUMNS["flat"]) >= 4


def find_results_files(path: Path) -> list[Path]:
    """lighteval results JSONs for `path`: the file, a results/<model> folder, the output folder, or a
    details/<model>/<date> folder (whose results file lives at results/<model>/results_<date>.json)."""
    if path.is_file():
        if path.suffix == ".json":
            return [path] if _is_results_doc(peek_json(path)) else []
        if path.suffix == ".parquet" and _is_details_parquet(path):
            return _results_for_details_dir(path.parent)
        return []
    try:
        candidates = sorted(p for p in path.rglob("results_*.json") if p.is_file())
    except OSError:
        return []
    found = [p for p in candidates if _is_results_doc(peek_json(p))]
    if not found and any(_is_details_parquet(p) for p in sorted(path.glob("*.parquet"))[:3]):
        found = _results_for_details_dir(path)
    return found


def _results_for_details_dir(details_dir: Path) -> list[Path]:
    date = details_dir.name
    parts = details_dir.resolve().parts
    if "details" not in parts:
        return []
    i = len(parts) - 1 - parts[::-1].index("details")
    model_rel = parts[i + 1 : -1]
    candidate = Path(*parts[:i], "results", *model_rel, f"results_{date}.json")
    return [candidate] if candidate.is_file() and _is_results_doc(peek_json(candidate)) else []


def details_dir_for(results_file: Path) -> Path | None:
    """details/<model>/<date>/ that belongs to results/<model>/results_<date>.json, if present."""
    m = _DATE_RE.match(results_file.name)
    if not m:
        return None
    date = m.group("date")
    parts = results_file.resolve().parts
    if "results" in parts[:-1]:
        i = len(parts) - 2 - parts[-2::-1].index("results")
        model_rel = parts[i + 1 : -1]
        candidate = Path(*parts[:i], "details", *model_rel, date)
        if candidate.is_dir():
            return candidate
    sibling = results_file.parent / date  # some setups write details next to the results
    return sibling if sibling.is_dir() else None


def detail_files(details_dir: Path, date: str | None) -> dict[str, Path]:
    """Task key -> details parquet, from names `details_<task key>_<date>.parquet`."""
    out: dict[str, Path] = {}
    for p in sorted(details_dir.glob("details_*.parquet")):
        stem = p.stem[len("details_"):]
        if date and stem.endswith(f"_{date}"):
            key = stem[: -len(date) - 1]
        else:
            key = stem.rsplit("_", 1)[0]
        out[key] = p
    return out


class LightevalImporter:
    """lighteval results JSON + per-sample detail Parquet files."""

    name = "lighteval"

    def detect(self, path: Path) -> bool:
        try:
            return bool(find_results_files(path))
        except OSError:
            return False

    def load(self, path: Path) -> ImportedRun:
        files = find_results_files(path) if path.exists() else []
        if path.is_file() and path.suffix == ".json" and not files:
            read_json_file(path)  # raises with the JSON error if it is not JSON at all
            raise ImportFormatError("not a lighteval results file: expected 'config_general' and 'results' "
                                    "objects", path=str(path))
        if not files:
            raise ImportFormatError("no lighteval results_*.json found", path=str(path),
                                    hint="point at lighteval's output folder, results/<model>/, or a results file")
        if len(files) > 1:
            listed = ", ".join(str(f) for f in files[:5])
            raise ImportFormatError(f"{len(files)} lighteval results files found ({listed}); import one at a time",
                                    path=str(path), hint="pass the results_<date>.json of the run you want")
        data = read_json_file(files[0])
        if not _is_results_doc(data):
            raise ImportFormatError("not a lighteval results file: expected 'config_general' and 'results'",
                                    path=str(files[0]))
        try:
            return _build(files[0], data)
        except ValidationError as e:
            raise ImportFormatError(validation_message(e), path=str(files[0])) from None
        except (TypeError, AttributeError, KeyError, IndexError, OverflowError) as e:  # a field of an odd shape
            raise ImportFormatError(f"unexpected structure: {type(e).__name__}: {e}", path=str(files[0])) from None


def _metrics_of(key: str, entry: Any, file: Path) -> dict[str, tuple[float, float | None]]:
    if not isinstance(entry, dict):
        raise ImportFormatError(f"results['{key}'] must be an object, got {type(entry).__name__}", path=str(file))
    values: dict[str, float] = {}
    stderrs: dict[str, float | None] = {}
    for name, raw in entry.items():
        num = as_float(raw)
        if num is None:
            if raw is None:
                continue
            raise ImportFormatError(f"results['{key}']['{name}'] is not a number: {str(raw)[:60]!r}",
                                    path=str(file))
        if name.endswith("_stderr"):
            stderrs[name[: -len("_stderr")]] = num if math.isfinite(num) else None
        else:
            values[name] = num
    return {m: (v, stderrs.get(m)) for m, v in values.items()}


def _model_info(general: dict[str, Any]) -> ModelInfo:
    cfg = as_object(general.get("model_config"))
    gen = general.get("generation_parameters")
    if not isinstance(gen, dict):
        gen = as_object(cfg.get("generation_parameters"))
    generation = {k: v for k, v in gen.items() if v is not None}
    name = general.get("model_name") or cfg.get("model_name") or "unknown"
    revision = general.get("model_sha") or cfg.get("revision")
    # lighteval does not record which backend ran (dummy, transformers, vllm, endpoint ...) in its results
    kind = cfg.get("model_type") or general.get("model_type")
    return ModelInfo(name=str(name), backend=f"lighteval:{kind}" if kind else "lighteval",
                     revision=str(revision) if revision else None, generation=generation)


def _seconds(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    num = as_float(value)
    return None if num is None or math.isnan(num) else num


def _date_of(results_file: Path) -> dt.datetime | None:
    m = _DATE_RE.match(results_file.name)
    if not m:
        return None
    raw = m.group("date")
    iso = raw[:13] + ":" + raw[14:16] + ":" + raw[17:] if len(raw) >= 19 else raw
    try:
        d = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def _build(results_file: Path, data: dict[str, Any]) -> ImportedRun:
    f = results_file
    results = data["results"]
    general = data["config_general"]
    versions = as_object(data.get("versions"))
    config_tasks = as_object(data.get("config_tasks"))
    summary_tasks = as_object(data.get("summary_tasks"))
    if not results:
        raise ImportFormatError("'results' is empty: the run has no scores", path=str(f))
    run_id = new_run_id()
    m = _DATE_RE.match(f.name)
    date = m.group("date") if m else None
    ddir = details_dir_for(f)
    details = detail_files(ddir, date) if ddir else {}

    metrics: list[MetricResult] = []
    tasks: list[TaskInfo] = []
    loaders: list[tuple[TaskInfo, Path, dict[str, MetricResult]]] = []
    for key, entry in results.items():
        parsed = _metrics_of(key, entry, f)
        by_name = {name: MetricResult(run_id=run_id, task=key, metric=name, value=v, stderr=se, method="source")
                   for name, (v, se) in parsed.items()}
        metrics.extend(by_name.values())
        if is_aggregate_key(key):
            continue
        suite, task, fewshot = split_task_key(key)
        cfg = _task_config(config_tasks, key, suite, task)
        summary = as_object(summary_tasks.get(key))
        n = _sample_count(summary, cfg)
        prompt = {k: cfg[k] for k in _PROMPT_KEYS if k in cfg}
        hashes = as_object(summary.get("hashes"))
        version = versions.get(key, versions.get(task))
        info = TaskInfo(name=key, version=None if version is None else str(version),
                        dataset_fingerprint=str(hashes["hash_examples"]) if hashes.get("hash_examples") else None,
                        prompt_fingerprint=fingerprint(prompt) if prompt else None,
                        n_shot=fewshot, metrics=list(by_name), n_samples=n, config=cfg)
        hib = _higher_is_better(cfg)
        for name, mr in by_name.items():
            mr.n = n
            if name in hib:
                mr.higher_is_better = hib[name]
                info.higher_is_better[name] = hib[name]
        tasks.append(info)
        if key in details:
            loaders.append((info, details[key], by_name))

    # Details for tasks the results JSON does not list are still samples of this run.
    listed = {t.name for t in tasks}
    for key, p in details.items():
        if key not in listed and not is_aggregate_key(key):
            _, _, fewshot = split_task_key(key)
            info = TaskInfo(name=key, n_shot=fewshot)
            tasks.append(info)
            loaders.append((info, p, {}))

    # Each details file is opened (and its layout checked) now, so a bad file fails the import before anything
    # is written; its rows are streamed, and the metrics refined in place once they have all been seen.
    opened = [(info, DetailsFile(p), by_name) for info, p, by_name in loaders]
    batches: Iterable[list[Sample]] = _stream_details(opened, metrics, run_id)
    if not opened:
        _finish_metrics(metrics)
    source_files = [f] + [p for _, p, _ in loaders]
    # lighteval names the file after the moment it saved (the end of the run), in local time without a zone
    end = _date_of(f)
    total = _seconds(general.get("total_evaluation_time_secondes"))
    run = Run(
        run_id=run_id,
        model=_model_info(general),
        tasks=tasks,
        created_at=end or dt.datetime.now(dt.UTC),
        started_at=end - dt.timedelta(seconds=total) if end and total is not None and 0 <= total < 1e8 else None,
        finished_at=end,
        environment={"source": {"config_general": general, "versions": versions,
                                "summary_general": data.get("summary_general"),
                                "aggregates": [k for k in results if is_aggregate_key(k)]}},
        provenance=Provenance(producer="lighteval",
                              producer_version=first_string(general, "lighteval_version", "version"),
                              source_path=str(f.resolve()), source_sha256=sha256_files(source_files)),
        seed=None,
    )
    return ImportedRun(run=run, metrics=metrics, batches=batches, source_files=source_files)


def _task_config(config_tasks: dict[str, Any], key: str, suite: str | None, task: str) -> dict[str, Any]:
    for k in (key, f"{suite}|{task}" if suite else task, task):
        cfg = config_tasks.get(k)
        if isinstance(cfg, dict):
            return cfg
    return {}


def _sample_count(summary: dict[str, Any], cfg: dict[str, Any]) -> int | None:
    """Docs in a task per the JSON; lighteval often writes -1 or 0 there, so the detail rows decide later."""
    eff = cfg.get("effective_num_docs")
    if isinstance(eff, int) and not isinstance(eff, bool) and eff > 0:
        return eff
    total = 0
    for k in ("truncated", "non_truncated"):
        v = summary.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            total += v
    return total or None


def _higher_is_better(cfg: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    listed = cfg.get("metrics") or cfg.get("metric") or []
    for m in listed if isinstance(listed, list) else []:
        if not isinstance(m, dict):
            continue
        hib = m.get("higher_is_better")
        names = m.get("metric_name")
        if isinstance(hib, dict):
            out.update({str(k): bool(v) for k, v in hib.items() if isinstance(v, bool)})
        elif isinstance(hib, bool):
            for n in names if isinstance(names, list) else [names]:
                if isinstance(n, str):
                    out[n] = hib
    return out


def _stream_details(opened: list[tuple[TaskInfo, DetailsFile, dict[str, MetricResult]]],
                    metrics: list[MetricResult], run_id: str) -> Iterator[list[Sample]]:
    for info, details, by_name in opened:
        scores: dict[str, CltAccumulator] = {}  # in order of first appearance
        n = 0
        for samples in details.samples(run_id, info.name):
            for s in samples:
                for k, v in s.scores.items():
                    acc = scores.get(k)
                    if acc is None:
                        acc = scores[k] = CltAccumulator()
                    acc.add(v)
            n += len(samples)
            yield samples
        info.n_samples = n
        _recompute(info, scores, n, by_name, metrics, run_id)
    _finish_metrics(metrics)


def _finish_metrics(metrics: list[MetricResult]) -> None:
    for mr in metrics:
        fill_source_ci(mr)
    # a metric lighteval could not compute is NaN (or inf) in the JSON; with no samples to recompute it from,
    # it has no value that can be stored (the list is changed in place: it is the ImportedRun's)
    metrics[:] = [mr for mr in metrics if math.isfinite(mr.value)]


def _recompute(info: TaskInfo, scores: dict[str, CltAccumulator], n: int, by_name: dict[str, MetricResult],
               metrics: list[MetricResult], run_id: str) -> None:
    """CLT stderr/CI from the detail rows for every metric whose per-sample mean is the reported value."""
    for name, acc in scores.items():
        mr = by_name.get(name)
        if mr is None:  # a per-sample metric the results JSON does not report: the per-sample mean is it
            mr = MetricResult(run_id=run_id, task=info.name, metric=name, value=math.nan, method="source")
            by_name[name] = mr
            metrics.append(mr)
            info.metrics.append(name)
        apply_clt(mr, acc)
        if mr.method != "clt" and mr.n is None:
            mr.n = n
    for mr in by_name.values():
        if mr.n is None:
            mr.n = n


