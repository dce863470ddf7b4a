"""Importer for lm-evaluation-harness output: `results_<date>.json` plus `samples_<task>_<date>.jsonl`.

The results JSON holds `"metric,filter"` keys per task and group, `configs`, `versions`, `n-shot`,
`higher_is_better` and the environment (`pretty_env_info`, `git_hash`, ...). Samples files hold one JSON
line per doc per filter, written filter by filter; they are streamed, never loaded whole.
Metric names: `acc` for the default filter `none`, `exact_match,strict-match` for any other filter.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.ids import fingerprint, new_run_id, sha256_files
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.ingest.base import (
    CltAccumulator,
    ImportedRun,
    apply_clt,
    as_float,
    as_object,
    dumps_fast,
    fill_source_ci,
    loads_fast,
    read_json_file,
    validation_message,
)

BATCH_ROWS = 50_000
FAST_PATH = True  # read samples files with DuckDB's JSON reader when the layout allows (see _lm_eval_fast)
# Keys of the results JSON that are not environment: everything else is kept under environment["source"].
_RESULT_KEYS = {"results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                "n-samples", "samples"}
_PROMPT_KEYS = ("description", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
                "fewshot_delimiter", "fewshot_config", "use_prompt")
_SAMPLE_RESERVED = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                    "doc_hash", "prompt_hash", "target_hash"}


def metric_name(metric: str, filt: str) -> str:
    """Our metric name for lm-eval's `metric,filter` pair: the filter is dropped when it is `none`."""
    return metric if filt in ("none", "") else f"{metric},{filt}"


def _is_results_doc(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return False
    if "config_general" in data:  # lighteval
        return False
    if any(k in data for k in ("configs", "n-shot", "versions", "higher_is_better")):
        return True
    return any("," in k for v in data["results"].values() if isinstance(v, dict) for k in v)


def _peek_json(path: Path, limit: int = 64 << 20) -> Any:
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


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
        return [path] if path.suffix == ".json" and _is_results_doc(_peek_json(path)) else []
    try:
        candidates = sorted(p for p in path.rglob("*.json") if p.is_file())
    except OSError:
        return []
    return [p for p in candidates if _is_results_doc(_peek_json(p))]


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
            stderrs[(metric[: -len("_stderr")], filt)] = num if num is not None and not math.isnan(num) else None
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
            if math.isnan(value):
                continue  # a metric lm-eval could not compute has no value to carry (its samples keep theirs)
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
        provenance=Provenance(producer="lm_eval", producer_version=_version(data),
                              source_path=str(f.resolve()), source_sha256=sha256_files(source_files)),
        seed=seed if isinstance(seed, int) else None,
    )
    batches = _stream_all(run_id, streams)
    return ImportedRun(run=run, metrics=metrics, batches=batches, source_files=source_files)


def _version(data: dict[str, Any]) -> str | None:
    for key in ("lm_eval_version", "version"):
        if isinstance(data.get(key), str):
            return str(data[key])
    return None


def _stream_all(run_id: str, streams: list[tuple[TaskInfo, Path, list[str], dict[str, MetricResult]]]
                ) -> Iterator[pa.Table]:
    for info, path, filters, by_name in streams:
        yield from SamplesStream(run_id, info, path, filters, by_name).batches()


class SamplesStream:
    """Streams one samples_<task>.jsonl into Parquet-ready tables, accumulating CLT stats on the way.

    With several filters, lines come filter by filter; the first filter's lines become the samples and the
    other filters' numeric scores are merged in by doc id (a first pass keeps only those numbers).
    """

    def __init__(self, run_id: str, info: TaskInfo, path: Path, filters: list[str],
                 by_name: dict[str, MetricResult]) -> None:
        self.run_id = run_id
        self.info = info
        self.path = path
        self.filters = filters
        self.by_name = by_name
        self.acc: dict[str, CltAccumulator] = {}

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            fh = open(self.path, "rb")
        except OSError as e:
            raise ImportFormatError(f"cannot read samples file: {e.strerror or e}", path=str(self.path)) from None
        with fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    obj = loads_fast(raw)
                except (ValueError, RecursionError):
                    tail = "" if raw.endswith(b"\n") else " (file truncated?)"
                    raise ImportFormatError(f"line {lineno}: invalid JSON{tail}", path=str(self.path)) from None
                if not isinstance(obj, dict) or "doc_id" not in obj:
                    raise ImportFormatError(f"line {lineno}: not an lm-eval sample (no 'doc_id')",
                                            path=str(self.path))
                yield lineno, obj

    def _scores(self, obj: dict[str, Any], filt: str) -> tuple[dict[str, float], dict[str, Any]]:
        names = obj.get("metrics")
        if not isinstance(names, list):
            names = [k for k in obj if k not in _SAMPLE_RESERVED]
        scores: dict[str, float] = {}
        other: dict[str, Any] = {}
        for m in names:
            if not isinstance(m, str) or m not in obj:
                continue
            num = as_float(obj[m])
            key = metric_name(m, filt)
            if num is None:
                other[key] = obj[m]
            else:
                scores[key] = num
        return scores, other

    def batches(self) -> Iterator[pa.Table]:
        from evalkeeper.store.samples import SAMPLE_SCHEMA

        seen: set[str] = set()
        delivered = 0
        if FAST_PATH and len(self.filters) <= 1:
            from evalkeeper.ingest._lm_eval_fast import FastPathUnavailable, fast_batches

            first = self._first_line()
            metrics = first.get("metrics") if first else None
            if first is not None and isinstance(metrics, list) and all(isinstance(m, str) for m in metrics):
                primary = self.filters[0] if self.filters else str(first.get("filter", "none"))
                names = [metric_name(m, primary) for m in metrics]
                try:
                    for table in fast_batches(self.path, first, metrics, names, primary, self.info.name,
                                              self.run_id, SAMPLE_SCHEMA, self.acc, seen, BATCH_ROWS):
                        delivered += table.num_rows
                        yield table
                    self._finish(len(seen))
                    return
                except FastPathUnavailable:
                    pass
                except Exception as e:  # noqa: BLE001 - duckdb.Error and its kin: let the line reader judge
                    if not _is_duckdb_error(e):
                        raise
        yield from self._python_batches(SAMPLE_SCHEMA, seen, skip=delivered)

    def _first_line(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                for raw in f:
                    if raw.strip():
                        obj = loads_fast(raw)
                        return obj if isinstance(obj, dict) else None
        except (OSError, ValueError, RecursionError):
            return None
        return None

    def _python_batches(self, schema: pa.Schema, seen: set[str], skip: int = 0) -> Iterator[pa.Table]:
        """The reference reader; `skip` primary-filter lines were already delivered by the fast path."""
        primary = self.filters[0] if self.filters else None
        extra: dict[str, dict[str, float]] = {}
        if len(self.filters) > 1:
            for _, obj in self._lines():
                filt = str(obj.get("filter", "none"))
                if filt != primary:
                    scores, _ = self._scores(obj, filt)
                    extra.setdefault(str(obj["doc_id"]), {}).update(scores)
        cols = _Columns()
        for lineno, obj in self._lines():
            filt = str(obj.get("filter", "none"))
            if primary is None:
                primary = filt
            if filt != primary:
                continue
            if skip:
                skip -= 1
                continue
            doc_id = str(obj["doc_id"])
            if doc_id in seen:
                raise ImportFormatError(f"line {lineno}: doc_id {doc_id} appears twice for filter '{filt}'",
                                        path=str(self.path))
            seen.add(doc_id)
            scores, other = self._scores(obj, filt)
            scores.update(extra.pop(doc_id, {}))
            for k, v in scores.items():
                acc = self.acc.get(k)
                if acc is None:
                    acc = self.acc[k] = CltAccumulator()
                acc.add(v)
            _append_row(cols, obj, scores, other)
            if len(cols.sample_id) >= BATCH_ROWS:
                yield self._table(cols, schema)
        if extra:  # other filters' scores for docs the primary filter never had: still count them
            for scores in extra.values():
                for k, v in scores.items():
                    self.acc.setdefault(k, CltAccumulator()).add(v)
        if cols.sample_id:
            yield self._table(cols, schema)
        self._finish(len(seen))

    def _table(self, cols: _Columns, schema: pa.Schema) -> pa.Table:
        try:
            return cols.table(schema, self.run_id, self.info.name)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ImportFormatError(f"unexpected sample values: {str(e)[:200]}", path=str(self.path)) from None

    def _finish(self, n_docs: int) -> None:
        """Now that every score was seen: CLT stderr/CI for mean-type metrics, and the real n."""
        for name, acc in self.acc.items():
            mr = self.by_name.get(name)
            if mr is not None:
                apply_clt(mr, acc)
        self.info.n_samples = n_docs
        for mr in self.by_name.values():
            if mr.method != "clt":
                mr.n = n_docs if mr.n is None else mr.n


def _is_duckdb_error(e: Exception) -> bool:
    return type(e).__module__.split(".")[0] in ("duckdb", "_duckdb")


def _first_args(obj: dict[str, Any]) -> list[list[Any]]:
    """Request arguments as lists: `{"gen_args_0": {"arg_0": ..}}` (0.4.3+) or `[[ctx, cont], ...]` (older)."""
    args = obj.get("arguments")
    out: list[list[Any]] = []
    if isinstance(args, dict):
        for v in args.values():
            if isinstance(v, dict):
                out.append(list(v.values()))
            elif isinstance(v, list):
                out.append(v)
    elif isinstance(args, list):
        for v in args:
            out.append(v if isinstance(v, list) else [v])
    return out


def _append_row(cols: _Columns, obj: dict[str, Any], scores: dict[str, float], other: dict[str, Any]) -> None:
    args = _first_args(obj)
    ctx = args[0][0] if args and args[0] else ""
    filtered = obj.get("filtered_resps")
    target = obj.get("target")
    meta: dict[str, Any] = {"doc_id": obj["doc_id"]}
    logprobs: list[float] | None = None
    prediction: str | None = None
    choices = [a[1] for a in args if len(a) > 1 and isinstance(a[1], str)]
    lls = _loglikelihoods(filtered)
    if lls is not None and len(args) > 0 and len(choices) == len(lls):
        # multiple choice: one loglikelihood request per choice; the prediction is the argmax choice
        logprobs = lls
        best = max(range(len(lls)), key=lambda i: lls[i])
        prediction = choices[best].strip()
        meta["pred_index"] = best
        gold = _gold_index(target, choices)
        if gold is not None:
            meta["gold_index"] = gold
            target = choices[gold].strip()
    elif isinstance(filtered, list) and filtered:
        first = filtered[0]
        prediction = first if isinstance(first, str) else dumps_fast(first)
    elif isinstance(filtered, str):
        prediction = filtered
    for key in ("doc_hash", "prompt_hash", "target_hash", "filter"):
        if key in obj:
            meta[key] = obj[key]
    if other:
        meta["unaggregated"] = other
    if "doc" in obj:
        meta["doc"] = obj["doc"]
    cols.sample_id.append(str(obj["doc_id"]))
    cols.input.append(ctx if isinstance(ctx, str) else dumps_fast(ctx))
    cols.target.append(None if target is None else target if isinstance(target, str) else dumps_fast(target))
    cols.prediction.append(prediction)
    cols.score_keys.extend(scores)
    cols.score_values.extend(scores.values())
    cols.score_offsets.append(len(cols.score_keys))
    cols.logprobs.append(logprobs)
    cols.metadata.append(dumps_fast(meta))


def _number(value: Any) -> float | None:
    """A float from a number or a numeric string (lm-eval 0.4.13 writes loglikelihoods as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _gold_index(target: Any, choices: list[str]) -> int | None:
    """The gold choice of a multiple-choice doc: lm-eval logs the index as an int or as its string."""
    if isinstance(target, bool):
        return None
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target.strip())
    if isinstance(target, int) and 0 <= target < len(choices):
        return target
    if isinstance(target, str):
        stripped = [c.strip() for c in choices]
        if target.strip() in stripped:
            return stripped.index(target.strip())
    return None


def _loglikelihoods(filtered: Any) -> list[float] | None:
    """Per-choice loglikelihoods from filtered_resps `[[ll, is_greedy], ...]` (or `[ll, ...]`), else None."""
    if not isinstance(filtered, list) or not filtered:
        return None
    out: list[float] = []
    for item in filtered:
        num = _number(item[0]) if isinstance(item, list) and item else _number(item)
        if num is None or (isinstance(item, str) and not isinstance(filtered[0], list)):
            return None
        out.append(num)
    return out


class _Columns:
    """Column buffers for one batch; scores are kept flat (keys, values, offsets) to build the map fast."""

    def __init__(self) -> None:
        self.sample_id: list[str] = []
        self.input: list[str] = []
        self.target: list[str | None] = []
        self.prediction: list[str | None] = []
        self.score_keys: list[str] = []
        self.score_values: list[float] = []
        self.score_offsets: list[int] = [0]
        self.logprobs: list[list[float] | None] = []
        self.metadata: list[str] = []

    def table(self, schema: pa.Schema, run_id: str, task: str) -> pa.Table:
        n = len(self.sample_id)
        scores = pa.MapArray.from_arrays(pa.array(self.score_offsets, pa.int32()),
                                         pa.array(self.score_keys, pa.string()),
                                         pa.array(self.score_values, pa.float64()))
        given = {
            "run_id": pa.array([run_id] * n, pa.string()),
            "task": pa.array([task] * n, pa.string()),
            "sample_id": pa.array(self.sample_id, pa.string()),
            "epoch": pa.array([0] * n, pa.int32()),
            "input": pa.array(self.input, pa.large_string()),
            "target": pa.array(self.target, pa.large_string()),
            "prediction": pa.array(self.prediction, pa.large_string()),
            "scores": scores,
            "logprobs": pa.array(self.logprobs, pa.list_(pa.float64())),
            "metadata": pa.array(self.metadata, pa.large_string()),
        }
        arrays = [given[f.name].cast(f.type) if f.name in given and given[f.name].type != f.type
                  else given.get(f.name, pa.nulls(n, f.type)) for f in schema]
        self.__init__()  # type: ignore[misc]
        return pa.Table.from_arrays(arrays, schema=schema)
