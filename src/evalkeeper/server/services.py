"""The service layer between HTTP routes and the workspace: lookups, sample queries, slices, comparisons.

Routes stay thin (parse parameters, pick a response); everything that touches the workspace lives here so
the API and the pages share one implementation and tests can call it without HTTP.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import pyarrow as pa

from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.core.records import MetricResult, Run
from evalkeeper.server._env import environment_summary
from evalkeeper.server._sql import ExplorerQuery
from evalkeeper.server.schemas import (
    ComparisonOut,
    MetricOut,
    RunDetail,
    RunSummary,
    SampleDetail,
    SamplePage,
    SampleRow,
    SliceReport,
    SliceRow,
    TaskOut,
)
from evalkeeper.store.index_build import primary_metrics
from evalkeeper.store.sample_index import SampleIndex

_COUNT_CACHE_SIZE = 1024
REPORT_FORMATS = ("html", "md", "json", "pdf")
_Z95 = NormalDist().inv_cdf(0.975)


def metric_out(m: MetricResult) -> MetricOut:
    return MetricOut(
        task=m.task,
        metric=m.metric,
        value=m.value,
        stderr=m.stderr,
        ci_low=m.ci_low,
        ci_high=m.ci_high,
        n=m.n,
        method=m.method,
        higher_is_better=m.higher_is_better,
    )


class DashboardService:
    """Read-only views of one workspace for the dashboard.

    Finished runs are answered from the workspace's sample index (`Workspace.sample_index`, built once
    per run and kept on disk); runs still being written, and `use_index=False`, query Parquet with DuckDB.
    """

    def __init__(self, ws: Any, use_index: bool = True) -> None:
        self.ws = ws
        self.use_index = use_index
        self._counts: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self._lock = threading.Lock()
        self._warmed: weakref.WeakSet[SampleIndex] = weakref.WeakSet()

    def prebuild(self) -> threading.Thread:
        """Build and warm the sample indexes of finished runs in the background, newest first, so the
        first click on a run does not wait for its index."""
        def work() -> None:
            pa.array(range(1))  # pyarrow's first conversion imports pandas (~1 s): at startup, not on a click
            for summary in self.all_runs():
                try:
                    run = self.get_run(summary.run_id)
                    self._index_for(run)
                except Exception:  # noqa: BLE001 - a run deleted meanwhile, a damaged part: built on demand
                    continue

        thread = threading.Thread(target=work, daemon=True, name="evalkeeper-index")
        thread.start()
        return thread

    # ---- runs -----------------------------------------------------------------------------------
    def get_run(self, ref: str) -> Run:
        run: Run = self.ws.get_run(ref)
        return run

    def summary(self, run: Run, metrics: list[MetricResult] | None = None) -> RunSummary:
        metrics = self.ws.get_metrics(run.run_id) if metrics is None else metrics
        headline: list[MetricOut] = []
        for t in run.tasks:
            primary = t.metrics[0] if t.metrics else None
            found = [m for m in metrics if m.task == t.name and (primary is None or m.metric == primary)]
            if found:
                headline.append(metric_out(found[0]))
        return RunSummary(
            run_id=run.run_id,
            model=run.model.name,
            backend=run.model.backend,
            created_at=run.created_at,
            status=run.status,
            tags=list(run.tags),
            tasks=[t.name for t in run.tasks],
            n_samples=run.n_samples,
            producer=run.provenance.producer,
            headline=headline,
            labels=dict(run.labels),
        )

    def list_runs(self, search: str | None = None, tag: str | None = None,
                  model: str | None = None) -> list[RunSummary]:
        """Runs newest first; `search` matches id, model, task names, tags and labels (case-insensitive)."""
        return self.filter_runs(self.all_runs(), search=search, tag=tag, model=model)

    def all_runs(self) -> list[RunSummary]:
        runs: list[Run] = self.ws.list_runs()
        out = [self.summary(run) for run in runs]
        out.sort(key=lambda s: s.created_at, reverse=True)
        return out

    @staticmethod
    def filter_runs(runs: list[RunSummary], search: str | None = None, tag: str | None = None,
                    model: str | None = None) -> list[RunSummary]:
        needle = (search or "").strip().lower()
        out = []
        for r in runs:
            if (tag and tag not in r.tags) or (model and r.model != model):
                continue
            if needle:
                hay = " ".join([r.run_id, r.model, r.backend, *r.tags, *r.tasks, *r.labels.values()]).lower()
                if needle not in hay:
                    continue
            out.append(r)
        return out

    def run_detail(self, ref: str) -> RunDetail:
        run = self.get_run(ref)
        metrics = self.ws.get_metrics(run.run_id)
        return RunDetail(
            summary=self.summary(run, metrics),
            metrics=[metric_out(m) for m in metrics],
            tasks=[
                TaskOut(
                    name=t.name,
                    version=t.version,
                    metrics=list(t.metrics),
                    n_shot=t.n_shot,
                    n_samples=t.n_samples,
                    dataset_fingerprint=t.dataset_fingerprint,
                    prompt_fingerprint=t.prompt_fingerprint,
                )
                for t in run.tasks
            ],
            generation=dict(run.model.generation),
            labels=dict(run.labels),
            provenance=run.provenance.model_dump(exclude_none=True, exclude={"published"}),
            environment=environment_summary(run.environment),
            group_attributes=self.group_attributes(run) if run.n_samples else {},
        )

    # ---- samples --------------------------------------------------------------------------------
    def _sql(self, run_id: str, template: str, params: list[Any]) -> list[dict[str, Any]]:
        """Run trusted SQL where `{rel}` stands for the run's samples (DuckDB over Parquet)."""
        table: pa.Table = self.ws.sql(template.replace("{rel}", self.ws.samples_relation_sql(run_id)), params)
        return list(table.to_pylist())

    def samples(self, ref: str, q: ExplorerQuery) -> SamplePage:
        """One page plus the filter's total, from the sample index when the run has one."""
        q.validate()
        run = self.get_run(ref)
        if q.task and run.task(q.task) is None:
            raise NotFoundError(f"run {run.run_id} has no task {q.task!r}")
        rows: list[SampleRow] = []
        total = 0
        page = self._indexed_page(run, q) if run.n_samples else None
        if page is not None:
            total, rows = page
        elif run.n_samples:
            sql, params = q.count_sql("{rel}")
            total = self._count(run, sql, params, lambda s, p: self._sql(run.run_id, s, p))
            if q.offset < total:
                sql, params = q.page_sql("{rel}")
                rows = [self._row(r) for r in self._sql(run.run_id, sql, params)]
        pages = max(1, math.ceil(total / q.page_size))
        return SamplePage(run_id=run.run_id, total=total, page=q.page, page_size=q.page_size, pages=pages,
                          query=q, rows=rows)

    def _indexed_page(self, run: Run, q: ExplorerQuery) -> tuple[int, list[SampleRow]] | None:
        """The page from the sample index; None when there is none or it cannot search this needle."""
        idx = self._index_for(run)
        if idx is None:
            return None
        primary = primary_metrics(run)
        ok, mask = idx.mask(primary=primary, task=q.task, metric=q.metric, score_min=q.score_min,
                            score_max=q.score_max, group=q.group, group_value=q.group_value,
                            search=(q.search or "").strip() or None)
        if not ok:
            return None
        order = idx.order(q.sort, q.metric, q.order == "desc", primary)
        total, positions = idx.page(mask, order, q.offset, q.page_size)
        return total, [self._row(r) for r in idx.listing(positions, primary)]

    def _count(self, run: Run, sql: str, params: list[Any],
               run_sql: Callable[[str, list[Any]], list[dict[str, Any]]]) -> int:
        """Total rows of a filter; cached for finished runs, whose Parquet parts never change."""
        key = (run.run_id, run.n_samples, sql, tuple(params))
        cacheable = run.status != "running"
        if cacheable:
            with self._lock:
                if key in self._counts:
                    self._counts.move_to_end(key)
                    return self._counts[key]
        n = int(run_sql(sql, params)[0]["n"])
        if cacheable:
            with self._lock:
                self._counts[key] = n
                while len(self._counts) > _COUNT_CACHE_SIZE:
                    self._counts.popitem(last=False)
        return n

    @staticmethod
    def _row(r: dict[str, Any]) -> SampleRow:
        score = r.get("score")
        return SampleRow(
            task=r["task"],
            sample_id=r["sample_id"],
            epoch=r.get("epoch") or 0,
            input=r.get("input") or "",
            target=r.get("target"),
            prediction=r.get("prediction"),
            score=None if score is None or _nan(score) else float(score),
            scores=_clean_scores(r.get("scores")),
            group=dict(r.get("group") or {}),
            latency_ms=r.get("latency_ms"),
            tokens_in=r.get("tokens_in"),
            tokens_out=r.get("tokens_out"),
            truncated=bool(r.get("truncated")),
        )

    def sample(self, ref: str, task: str, sample_id: str, epoch: int | None = None) -> SampleDetail:
        run = self.get_run(ref)
        if not run.n_samples:
            raise NotFoundError(f"run {run.run_id} has no stored samples")
        rows = self._sql(
            run.run_id,
            "SELECT * FROM {rel} AS s WHERE task = ? AND sample_id = ? ORDER BY epoch",
            [task, sample_id],
        )
        if not rows:
            raise NotFoundError(f"run {run.run_id} has no sample {sample_id!r} in task {task!r}")
        epochs = [int(r.get("epoch") or 0) for r in rows]
        chosen = rows[0] if epoch is None else next((r for r in rows if (r.get("epoch") or 0) == epoch), None)
        if chosen is None:
            raise NotFoundError(f"sample {sample_id!r} has no epoch {epoch}", hint=f"epochs: {epochs}")
        meta_text = chosen.get("metadata")
        try:
            metadata = json.loads(meta_text) if meta_text else {}
        except ValueError:
            metadata = {"_raw": meta_text}
        if not isinstance(metadata, dict):
            metadata = {"value": metadata}
        return SampleDetail(
            run_id=run.run_id,
            task=chosen["task"],
            sample_id=chosen["sample_id"],
            epoch=chosen.get("epoch") or 0,
            input=chosen.get("input") or "",
            target=chosen.get("target"),
            prediction=chosen.get("prediction"),
            scores=_clean_scores(chosen.get("scores")),
            logprobs=chosen.get("logprobs"),
            group=dict(chosen.get("group") or {}),
            metadata=metadata,
            latency_ms=chosen.get("latency_ms"),
            tokens_in=chosen.get("tokens_in"),
            tokens_out=chosen.get("tokens_out"),
            epochs=epochs,
        )

    # ---- slices ---------------------------------------------------------------------------------
    def _index_for(self, run: Run) -> SampleIndex | None:
        """The run's sample index (built on first use); the first time it is opened here its pages are
        read in the background, so early queries do not wait on page faults."""
        if not self.use_index:
            return None
        idx: SampleIndex | None = self.ws.sample_index(run)
        if idx is not None and idx not in self._warmed:
            with self._lock:
                fresh = idx not in self._warmed
                self._warmed.add(idx)
            if fresh:
                threading.Thread(target=idx.warm, daemon=True, name="evalkeeper-warm").start()
        return idx

    def group_attributes(self, run: Run) -> dict[str, list[str]]:
        """Group attribute names per task (from the index, or one aggregate query over the Parquet)."""
        idx = self._index_for(run)
        if idx is not None:
            return idx.group_keys_by_task()
        rows = self._sql(
            run.run_id,
            'SELECT task, list_sort(list_distinct(flatten(list(map_keys("group"))))) '
            "AS keys FROM {rel} AS s GROUP BY task ORDER BY task",
            [],
        )
        return {r["task"]: [k for k in (r["keys"] or []) if k is not None] for r in rows}

    def slices(self, ref: str, task: str, attribute: str, metric: str | None = None) -> SliceReport:
        """Mean of a metric per value of one group attribute, each with a 95% CLT interval."""
        run = self.get_run(ref)
        info = run.task(task)
        if info is None:
            raise NotFoundError(f"run {run.run_id} has no task {task!r}")
        metric = metric or (info.metrics[0] if info.metrics else None)
        if not metric:
            raise EvalkeeperError(f"task {task!r} declares no metrics", hint="pass metric=")
        if not run.n_samples:
            raise NotFoundError(f"run {run.run_id} has no stored samples")
        idx = self._index_for(run)
        if idx is not None:
            groups, (n, mean, sd) = idx.slice_stats(task, attribute, metric)
            if not n:
                raise NotFoundError(f"no scores for metric {metric!r} in task {task!r}")
            return SliceReport(run_id=run.run_id, task=task, metric=metric, attribute=attribute,
                               overall=_slice_row("overall", {"n": n, "mean": mean, "sd": sd}),
                               slices=[_slice_row(v, {"n": c, "mean": m, "sd": d}) for v, c, m, d in groups])
        agg = "count(scores[?]) AS n, avg(scores[?]) AS mean, stddev_samp(scores[?]) AS sd"
        base = "FROM {rel} AS s WHERE task = ? AND scores[?] IS NOT NULL"
        rows = self._sql(
            run.run_id,
            f"SELECT coalesce(\"group\"[?], '(missing)') AS value, {agg} {base} GROUP BY ALL ORDER BY value",
            [attribute, *[metric] * 3, task, metric],
        )
        if not rows:
            raise NotFoundError(f"no scores for metric {metric!r} in task {task!r}")
        overall = self._sql(run.run_id, f"SELECT {agg} {base}", [*[metric] * 3, task, metric])[0]
        return SliceReport(
            run_id=run.run_id,
            task=task,
            metric=metric,
            attribute=attribute,
            overall=_slice_row("overall", overall),
            slices=[_slice_row(r["value"], r) for r in rows],
        )

    # ---- reports --------------------------------------------------------------------------------
    def report(self, ref: str, fmt: str, compare: str | None = None) -> tuple[str, bytes]:
        """(file name, bytes) of the run's report in one format, rendered by `evalkeeper.report`."""
        from evalkeeper.report import render_report

        if fmt not in REPORT_FORMATS:
            raise EvalkeeperError(f"unknown report format {fmt!r}", hint=f"one of {', '.join(REPORT_FORMATS)}")
        run = self.get_run(ref)
        other = self.get_run(compare).run_id if compare else None
        return f"evalkeeper-report-{run.run_id}.{fmt}", render_report(self.ws, run.run_id, fmt, compare=other)

    # ---- comparison -----------------------------------------------------------------------------
    def compare(
        self, ref_a: str, ref_b: str, alpha: float = 0.05, correction: str = "holm", max_flip_ids: int = 1000
    ) -> ComparisonOut:
        """Paired comparison of b against a (statistics from `evalkeeper.analysis.compare`)."""
        from evalkeeper.analysis.compare import compare_runs

        if not 0 < alpha < 1:
            raise EvalkeeperError(f"alpha must be between 0 and 1, got {alpha}")
        if correction not in ("holm", "bh", "none"):
            raise EvalkeeperError(f"unknown correction {correction!r}", hint="use holm, bh or none")
        run_a, run_b = self.get_run(ref_a), self.get_run(ref_b)
        result = compare_runs(
            self.ws,
            run_a.run_id,
            run_b.run_id,
            alpha=alpha,
            correction=correction,  # type: ignore[arg-type]
            max_flip_ids=max_flip_ids,
        )
        return ComparisonOut(run_a=self.summary(run_a), run_b=self.summary(run_b), comparison=result)


def _slice_row(value: str, agg: dict[str, Any]) -> SliceRow:
    n, mean, sd = int(agg["n"] or 0), float(agg["mean"] or 0.0), agg.get("sd")
    if n >= 2 and sd is not None and not _nan(sd):
        se = float(sd) / math.sqrt(n)
        return SliceRow(value=str(value), n=n, mean=mean, ci_low=mean - _Z95 * se, ci_high=mean + _Z95 * se)
    return SliceRow(value=str(value), n=n, mean=mean)


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _clean_scores(raw: Any) -> dict[str, float]:
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return {str(k): float(v) for k, v in items if v is not None and not _nan(v)}


__all__ = ["DashboardService", "ExplorerQuery"]
