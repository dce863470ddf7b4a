"""Library entry points behind the CLI: run a suite or tasks, the quickstart, rescore, list tasks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from evalkeeper.core.errors import ConfigError, NotFoundError
from evalkeeper.core.records import MetricResult, Run
from evalkeeper.runner.backends import Backend, resolve_backend
from evalkeeper.runner.loop import RunOptions, RunOutcome, evaluate
from evalkeeper.runner.metrics import aggregate
from evalkeeper.runner.rows import score_sample
from evalkeeper.runner.tasks import (
    LoadedTask,
    TaskSpec,
    bundled_suites,
    bundled_task_files,
    limit_docs,
    load_task,
    parse_task_file,
)
from evalkeeper.store import Workspace


def user_task_dirs(ws: Workspace | None) -> list[Path]:
    """User task folders searched by name: ./tasks and <workspace>/tasks."""
    dirs = [Path.cwd() / "tasks"]
    if ws is not None:
        dirs.append(ws.home / "tasks")
    return [d for d in dirs if d.is_dir()]


def load_selection(tasks: list[str] | None, suite: str | None,
                   ws: Workspace | None) -> list[tuple[LoadedTask, int | None]]:
    """Tasks named on the command line and/or a bundled suite, each with its suite-level limit."""
    chosen: list[tuple[str, int | None]] = []
    if suite:
        suites = bundled_suites()
        if suite not in suites:
            raise NotFoundError(f"unknown suite {suite!r}", hint=f"bundled suites: {', '.join(sorted(suites))}")
        chosen += [(e["task"], e.get("limit")) for e in suites[suite]]
    chosen += [(t, None) for t in tasks or []]
    if not chosen:
        raise ConfigError("no tasks given", hint="use --tasks NAME[,NAME|FILE.yaml] or --suite quickstart")
    dirs = user_task_dirs(ws)
    return [(load_task(ref, dirs), limit) for ref, limit in chosen]


def apply_limits(selection: list[tuple[LoadedTask, int | None]], seed: int) -> list[LoadedTask]:
    out = []
    for task, limit in selection:
        if limit is not None:
            task.docs = limit_docs(task.docs, limit, seed)
        out.append(task)
    return out


def run_evaluation(ws: Workspace, model: str | Backend, *, tasks: list[str] | None = None,
                   suite: str | None = None, options: RunOptions | None = None,
                   backend_options: dict[str, Any] | None = None) -> RunOutcome:
    """Validate tasks and model first (nothing is stored on bad input), then run and store."""
    t0 = time.perf_counter()
    opts = options or RunOptions()
    loaded = apply_limits(load_selection(tasks, suite, ws), opts.seed)
    backend = model if isinstance(model, Backend) else resolve_backend(model, **(backend_options or {}))
    if suite and "suite" not in opts.labels:
        opts.labels = {**opts.labels, "suite": suite}
    load = time.perf_counter() - t0
    outcome = evaluate(ws, backend, loaded, opts)
    outcome.timings = {"load": load, **outcome.timings}
    return outcome


def quickstart(ws: Workspace, model: str | Backend = "smollm2", options: RunOptions | None = None) -> RunOutcome:
    opts = options or RunOptions(tags=["quickstart"])
    return run_evaluation(ws, model, suite="quickstart", options=opts)


def rescore(ws: Workspace, run_ref: str, task: str | None = None) -> list[MetricResult]:
    """Recompute per-sample scores and metrics from stored predictions with the current metric code.

    No model is called. Samples are rewritten into a fresh folder that replaces the old one by rename,
    then the run's metrics are replaced (other tasks' metrics are kept).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = ws.get_run(run_ref)
    infos = [t for t in run.tasks if task is None or t.name == task]
    if not infos:
        raise NotFoundError(f"run {run.run_id} has no task {task!r}",
                            hint=f"tasks: {', '.join(t.name for t in run.tasks)}")
    specs: dict[str, TaskSpec] = {}
    for info in infos:
        raw = (info.config or {}).get("spec")
        if raw is None:
            raise ConfigError(f"task {info.name!r} of run {run.run_id} was not produced by the evalkeeper runner; "
                              "it has no task spec to rescore with")
        specs[info.name] = TaskSpec.model_validate(raw)
    table = ws.query_samples(run.run_id)
    rows = table.to_pylist()
    new_scores: list[Any] = []
    per_task: dict[str, list[dict[str, float]]] = {n: [] for n in specs}
    for row in rows:
        spec = specs.get(row["task"])
        if spec is None:
            new_scores.append(row["scores"])
            continue
        meta = json.loads(row["metadata"]) if row["metadata"] else {}
        group = dict(row["group"] or [])
        targets = meta.get("targets") or ([row["target"]] if row["target"] is not None else [])
        s = score_sample(spec, row["prediction"], targets, meta.get("choices"), meta.get("gold_index"),
                         meta.get("chosen_index"), group, meta)
        per_task[spec.name].append(s)
        new_scores.append(list(s.items()))
    idx = table.schema.get_field_index("scores")
    table = table.set_column(idx, table.schema.field("scores"), pa.array(new_scores, table.schema.field("scores").type))
    if "score" in table.column_names:
        table = table.drop(["score"])
    _replace_samples(ws, run, table, pq)
    fresh: list[MetricResult] = []
    updated_tasks = []
    for info in run.tasks:
        if info.name in specs:
            from evalkeeper.runner.metrics import metric_keys

            keys = metric_keys(specs[info.name].metrics)
            fresh += aggregate(run.run_id, info.name, keys, per_task[info.name])
            info = info.model_copy(update={"metrics": keys})
        updated_tasks.append(info)
    kept = [m for m in ws.get_metrics(run.run_id) if m.task not in specs]
    ws.store.save_run(run.model_copy(update={"tasks": updated_tasks}), kept + fresh)
    return fresh


def _replace_samples(ws: Workspace, run: Run, table: Any, pq: Any) -> None:
    import os
    import shutil
    import tempfile

    from evalkeeper.store.samples import SampleWriter

    samples = ws.samples_dir(run.run_id)
    tmp = Path(tempfile.mkdtemp(prefix=".rescore-", dir=samples.parent))
    try:
        SampleWriter(tmp, run.run_id).write(table)
        old = samples.parent / f".old-samples-{os.getpid()}"
        os.replace(samples, old)
        try:
            os.replace(tmp, samples)
        except BaseException:
            os.replace(old, samples)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_tasks(ws: Workspace | None = None) -> list[dict[str, Any]]:
    """Bundled and user tasks with kind, size (items) and metrics; unloadable user tasks show the error."""
    from evalkeeper.runner.metrics import metric_keys

    entries: list[tuple[str, Path]] = [("bundled", p) for p in bundled_task_files().values()]
    for d in user_task_dirs(ws):
        entries += [("user", p) for p in sorted(d.glob("*.y*ml"))]
    out = []
    for origin, path in entries:
        try:
            spec, _ = parse_task_file(path)
            task = load_task(path)
            out.append({"name": spec.name, "origin": origin, "kind": spec.kind, "size": len(task.docs),
                        "metrics": metric_keys(spec.metrics), "tags": spec.tags, "path": str(path),
                        "description": spec.description})
        except (ConfigError, NotFoundError) as exc:
            out.append({"name": path.stem, "origin": origin, "kind": "?", "size": None, "metrics": [],
                        "tags": [], "path": str(path), "error": exc.render()})
    return out
