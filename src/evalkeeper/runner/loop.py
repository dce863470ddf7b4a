"""The evaluation loop: tasks x model -> scored samples in Parquet and metrics in the store.

Crash safety: the run record is saved with status "running" before any model call; samples are
appended in atomically written Parquet parts; the run becomes "complete" (with its metrics, in one
SQL transaction) only after every sample is stored. Running the same command again finds the
unfinished run by its config fingerprint and only asks for the samples it does not have yet, so
after a `kill -9` every sample ends up stored exactly once. Responses are cached per request in
the workspace, so a repeated run costs no model calls (and does not even load local weights).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from evalkeeper import __version__
from evalkeeper.core.errors import ConfigError
from evalkeeper.core.ids import fingerprint, new_run_id
from evalkeeper.core.records import MetricResult, Provenance, Run, Sample, utcnow
from evalkeeper.runner.backends.base import Backend, ChoiceRequest, GenerateRequest, Request, Result, request_key
from evalkeeper.runner.cache import ResponseCache
from evalkeeper.runner.metrics import ScoreColumns, aggregate, aggregate_columns, metric_keys
from evalkeeper.runner.rows import SCORES, Row, extract_answer, row_to_sample, rows_to_table, sample_row, score_sample
from evalkeeper.runner.tasks import Doc, LoadedTask, TaskSpec, limit_docs
from evalkeeper.store import Workspace
from evalkeeper.store.samples import SampleWriter

RESUMABLE = ("running", "failed")


@dataclass
class RunOptions:
    limit: int | None = None
    seed: int = 1234
    use_cache: bool = True
    progress: bool = True
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    max_new_tokens: int | None = None  # overrides every task's generation.max_new_tokens
    temperature: float | None = None
    command: str | None = None
    flush_every: int = 256
    flush_seconds: float = 5.0
    resume: bool = True


@dataclass
class RunOutcome:
    run: Run
    metrics: list[MetricResult]
    resumed: bool
    model_calls: int
    cache_hits: int
    seconds: float
    # Wall seconds per phase: "load" (tasks and backend, run_evaluation only), "prepare" (resume lookup,
    # environment, run record), "answer" (requests, cache, model, sample writes), "finish" (checks, metrics).
    timings: dict[str, float] = field(default_factory=dict)


def build_request(spec: TaskSpec, doc: Doc, opts: RunOptions) -> Request:
    if spec.kind == "multiple_choice":
        assert doc.choices is not None
        return ChoiceRequest(prompt=doc.prompt, choices=tuple(doc.choices), system=spec.system_prompt,
                             chat=spec.chat, seed=opts.seed)
    g = spec.generation
    return GenerateRequest(prompt=doc.prompt, system=spec.system_prompt, chat=spec.chat,
                           max_new_tokens=opts.max_new_tokens or g.max_new_tokens,
                           temperature=g.temperature if opts.temperature is None else opts.temperature,
                           top_p=g.top_p, stop=tuple(g.stop), seed=opts.seed)


class _Requests(Sequence[Request]):
    """The requests for `docs`, each built on first access: a backend streaming them to an API builds
    them while earlier answers are in flight instead of all of them before the first call."""

    def __init__(self, spec: TaskSpec, docs: list[Doc], opts: RunOptions) -> None:
        self.spec, self.docs, self.opts = spec, docs, opts
        self._built: list[Request | None] = [None] * len(docs)

    def __len__(self) -> int:
        return len(self.docs)

    @overload
    def __getitem__(self, i: int) -> Request: ...

    @overload
    def __getitem__(self, i: slice) -> list[Request]: ...

    def __getitem__(self, i: int | slice) -> Request | list[Request]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.docs)))]
        req = self._built[i]
        if req is None:
            req = self._built[i] = build_request(self.spec, self.docs[i], self.opts)
        return req


def make_sample(run_id: str, spec: TaskSpec, doc: Doc, res: Result, cached: bool) -> Sample:
    """The validated `Sample` for one answer (the loop itself stores rows: see runner/rows.py)."""
    return row_to_sample(sample_row(run_id, spec, doc, res, cached))


def config_fingerprint(backend: Backend, tasks: list[LoadedTask], selected: dict[str, list[Doc]],
                       opts: RunOptions) -> str:
    """What makes two invocations 'the same run' for resume: model, tasks, data, prompts, items, params."""
    return fingerprint({
        "model": backend.identity(),
        "tasks": [{"spec": t.spec.model_dump(mode="json"), "data": t.dataset_fingerprint,
                   "prompt": t.prompt_fingerprint, "items": [d.sample_id for d in selected[t.spec.name]]}
                  for t in tasks],
        "limit": opts.limit, "seed": opts.seed, "max_new_tokens": opts.max_new_tokens,
        "temperature": opts.temperature,
    })


def _environment() -> dict[str, Any] | None:
    try:
        from evalkeeper.bundle.env import capture_environment
    except ImportError:
        return None
    return capture_environment()


def _find_resumable(ws: Workspace, fp: str) -> Run | None:
    candidates = [r for r in ws.list_runs() if r.status in RESUMABLE and r.labels.get("config_fingerprint") == fp]
    return max(candidates, key=lambda r: r.created_at) if candidates else None


def _done_ids(ws: Workspace, run_id: str) -> set[tuple[str, str]]:
    if not ws.sample_paths(run_id):
        return set()
    t = ws.query_samples(run_id, columns=["task", "sample_id"])
    return set(zip(t.column("task").to_pylist(), t.column("sample_id").to_pylist(), strict=True))


def compute_metrics(ws: Workspace, run: Run) -> list[MetricResult]:
    """Aggregate every task's stored per-sample scores (mean, CLT SE, 95% CI)."""
    out: list[MetricResult] = []
    for info in run.tasks:
        if not ws.sample_paths(run.run_id):
            break
        out.extend(_stored_metrics(ws, run, info.name, info.metrics))
    return out


def _stored_metrics(ws: Workspace, run: Run, task: str, keys: list[str]) -> list[MetricResult]:
    t = ws.query_samples(run.run_id, task=task, columns=["scores"])
    return aggregate(run.run_id, task, keys, [dict(s or []) for s in t.column("scores").to_pylist()])


def _final_metrics(ws: Workspace, run: Run, fresh: dict[str, ScoreColumns],
                   resumed_tasks: set[str]) -> list[MetricResult]:
    """The same numbers as `compute_metrics`, without reading back what this invocation just wrote: a
    task whose samples all came from this invocation is aggregated from the scores we stored; a task
    with samples from an earlier, interrupted attempt is read back from storage."""
    out: list[MetricResult] = []
    for info in run.tasks:
        if info.name in resumed_tasks:
            out.extend(_stored_metrics(ws, run, info.name, info.metrics))
        else:
            out.extend(aggregate_columns(run.run_id, info.name, fresh[info.name]))
    return out


class _Sink:
    """Buffers sample rows and fresh responses; writes a Parquet part (and cache rows) every N samples or T s."""

    def __init__(self, writer: SampleWriter, cache: ResponseCache | None, opts: RunOptions) -> None:
        self.writer = writer
        self.cache = cache
        self.every = opts.flush_every
        self.seconds = opts.flush_seconds
        self.rows: list[Row] = []
        self.fresh: list[tuple[str, Result]] = []
        self.last = time.monotonic()

    def add(self, row: Row, fresh: tuple[str, Result] | None = None) -> bool:
        """Buffer one sample; True when a flush is due."""
        self.rows.append(row)
        if fresh is not None:
            self.fresh.append(fresh)
        return len(self.rows) >= self.every or time.monotonic() - self.last > self.seconds

    def flush(self) -> None:
        rows, fresh = self.rows, self.fresh
        self.rows, self.fresh = [], []
        self._write(rows, fresh)

    async def flush_async(self) -> None:
        """Flush off the event loop, so in-flight API requests keep flowing while Parquet is written."""
        rows, fresh = self.rows, self.fresh
        self.rows, self.fresh = [], []
        await asyncio.to_thread(self._write, rows, fresh)

    def _write(self, rows: list[Row], fresh: list[tuple[str, Result]]) -> None:
        # Cache first: a crash between the two only means the resumed run re-reads these from the cache.
        if self.cache is not None and fresh:
            self.cache.put_many(fresh)
        if rows:
            self.writer.write(rows_to_table(rows))
        self.last = time.monotonic()


class _Progress:
    """Rich progress bar (stderr) with rate and ETA; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                            transient=False)
        self.bar.start()
        self.overall = self.bar.add_task("all tasks", total=total, rate="")
        self.current: Any = None

    def task(self, name: str, total: int, done: int) -> None:
        if self.bar is not None:
            self.current = self.bar.add_task(name, total=total, completed=done, rate="")
            self.bar.advance(self.overall, done)

    def note(self, text: str) -> None:
        if self.bar is not None and self.current is not None:
            self.bar.update(self.current, description=text)

    def advance(self, n: int = 1) -> None:
        if self.bar is None:
            return
        for tid in (self.current, self.overall):
            self.bar.advance(tid, n)
            speed = self.bar.tasks[tid].speed if tid < len(self.bar.tasks) else None
            self.bar.update(tid, rate=f"{speed:.1f}/s" if speed else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def _evaluate(ws: Workspace, backend: Backend, tasks: list[LoadedTask], opts: RunOptions,
                    on_run: Callable[[Run], None] | None) -> RunOutcome:
    t0 = time.perf_counter()
    selected = {t.spec.name: limit_docs(t.docs, opts.limit, opts.seed) for t in tasks}
    fp = config_fingerprint(backend, tasks, selected, opts)
    run = _find_resumable(ws, fp) if opts.resume else None
    resumed = run is not None
    if run is None:
        generation: dict[str, Any] = {"seed": opts.seed}
        if opts.max_new_tokens is not None:
            generation["max_new_tokens"] = opts.max_new_tokens
        if opts.temperature is not None:
            generation["temperature"] = opts.temperature
        run = Run(run_id=new_run_id(), model=backend.info().model_copy(update={"generation": generation}),
                  tasks=[t.info(opts.seed, len(selected[t.spec.name])) for t in tasks], started_at=utcnow(),
                  status="running", environment=_environment(),
                  provenance=Provenance(producer="evalkeeper", producer_version=__version__, command=opts.command),
                  tags=list(opts.tags), labels={**opts.labels, "config_fingerprint": fp}, seed=opts.seed)
    else:
        run = run.model_copy(update={"status": "running"})
    ws.save_run(run)
    if on_run:
        on_run(run)
    cache = ResponseCache(ws.home / "cache" / "responses.sqlite3") if opts.use_cache else None
    done = _done_ids(ws, run.run_id)
    resumed_tasks = {name for name, _ in done}
    total = sum(len(d) for d in selected.values())
    progress = _Progress(opts.progress, total)
    model_calls = cache_hits = 0
    identity = backend.identity()
    writer = ws.sample_writer(run.run_id)
    sink = _Sink(writer, cache, opts)
    fresh_scores = {info.name: ScoreColumns(info.metrics) for info in run.tasks}  # the keys compute_metrics uses
    run_id = run.run_id
    t_answer = time.perf_counter()
    try:
        for task in tasks:
            spec = task.spec
            docs = selected[spec.name]
            todo = [d for d in docs if (spec.name, d.sample_id) not in done] if done else docs
            scores = fresh_scores[spec.name]
            progress.task(spec.name, len(docs), len(docs) - len(todo))
            requests = _Requests(spec, todo, opts)
            keys: list[str] | None = None
            missing = list(range(len(todo)))
            if cache is not None:  # keys are only needed to read and fill the cache
                keys = [request_key(identity, r) for r in requests]
                hits = cache.get_many(keys)
                for doc, key in zip(todo, keys, strict=True):
                    if key in hits:
                        row = sample_row(run_id, spec, doc, hits[key], cached=True)
                        scores.add(row[SCORES])
                        if sink.add(row):
                            sink.flush()
                        cache_hits += 1
                        progress.advance()
                missing = [i for i, key in enumerate(keys) if key not in hits]
            if missing:
                progress.note(f"{spec.name} (starting model)")
                await backend.start()
                progress.note(spec.name)
                asked = requests if len(missing) == len(requests) else [requests[i] for i in missing]
                async for j, res in backend.run(asked):
                    i = missing[j]
                    model_calls += 1
                    row = sample_row(run_id, spec, todo[i], res, cached=False)
                    scores.add(row[SCORES])
                    if sink.add(row, (keys[i], res) if keys is not None else None):
                        await sink.flush_async()
                    progress.advance()
            sink.flush()
    except BaseException as exc:
        progress.close()
        if isinstance(exc, Exception):  # a crash (kill -9) never gets here; the run stays "running"
            with contextlib.suppress(Exception):
                sink.flush()  # keep the answers we already paid for
            ws.save_run(run.model_copy(update={"status": "failed", "labels": {
                **run.labels, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}}))
        raise
    finally:
        writer.close()
        if cache is not None:
            cache.close()
        await backend.close()
    progress.close()
    t_finish = time.perf_counter()
    n = ws.count_samples(run.run_id) if ws.sample_paths(run.run_id) else 0
    if n != total:
        raise ConfigError(f"run {run.run_id} has {n} stored samples, expected {total}",
                          hint="the samples folder was changed while the run was going; re-run the command")
    metrics = _final_metrics(ws, run, fresh_scores, resumed_tasks)
    labels = {k: v for k, v in run.labels.items() if k != "error"}
    run = run.model_copy(update={"status": "complete", "finished_at": utcnow(), "n_samples": n, "labels": labels})
    ws.store.save_run(run, metrics)  # run + metrics in one transaction: "complete" implies metrics exist
    t_end = time.perf_counter()
    return RunOutcome(run=run, metrics=metrics, resumed=resumed, model_calls=model_calls, cache_hits=cache_hits,
                      seconds=t_end - t0, timings={"prepare": t_answer - t0, "answer": t_finish - t_answer,
                                                   "finish": t_end - t_finish})


def evaluate(ws: Workspace, backend: Backend, tasks: list[LoadedTask], opts: RunOptions | None = None,
             on_run: Callable[[Run], None] | None = None) -> RunOutcome:
    """Run `tasks` on `backend`, store everything in `ws`, resume an unfinished identical run if any."""
    if not tasks:
        raise ConfigError("no tasks to run")
    names = [t.spec.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique in one run: {names}")
    # Objects that exist before the run (modules, tasks, documents) need no rescanning by the full
    # garbage collections that the run's allocations trigger (~0.1 s per 5000 samples); thawed after.
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        return asyncio.run(_evaluate(ws, backend, tasks, opts or RunOptions(), on_run))
    finally:
        if freeze:
            gc.unfreeze()


__all__ = ["RunOptions", "RunOutcome", "compute_metrics", "evaluate", "extract_answer", "make_sample", "metric_keys",
           "score_sample"]
