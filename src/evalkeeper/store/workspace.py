"""A workspace: the SQL store plus the artifact folder (Parquet samples, reports, bundles) of one project."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.core.records import Decision, MetricResult, Run, Sample
from evalkeeper.store.index_build import INDEX_DIR, build_index, part_signature, primary_metrics
from evalkeeper.store.query import SampleQuery
from evalkeeper.store.sample_index import SORTS, SampleIndex
from evalkeeper.store.samples import SampleWriter, sample_parts
from evalkeeper.store.sql import SqlStore

_SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
AUTO_INDEX_ROWS = 20_000  # searches and sorts build a missing sample index for runs at least this large
OPEN_INDEXES = 4  # sample indexes kept open per workspace


def default_home() -> Path:
    env = os.environ.get("EVALKEEPER_HOME")
    return Path(env).expanduser() if env else Path.cwd() / ".evalkeeper"


def open_workspace(home: str | os.PathLike[str] | None = None, db_url: str | None = None) -> Workspace:
    """Open (creating if needed) the workspace at `home` / $EVALKEEPER_HOME / ./.evalkeeper."""
    return Workspace(Path(home) if home is not None else default_home(), db_url)


def check_run_id(run_id: str) -> str:
    if not _SAFE_RUN_ID.match(run_id) or ".." in run_id:
        raise EvalkeeperError(f"invalid run id {run_id!r}",
                              hint="use letters, digits and . _ : @ + - (at most 128 characters)")
    return run_id


class Workspace:
    """Everything a command needs: runs and governance in SQL, samples in Parquet queried with DuckDB."""

    def __init__(self, home: Path, db_url: str | None = None) -> None:
        self.home = home
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalkeeperError(f"cannot create the workspace folder ({exc.strerror})", path=str(home)) from None
        self.artifacts = self.home / "artifacts"
        self.artifacts.mkdir(exist_ok=True)
        url = db_url or os.environ.get("EVALKEEPER_DB_URL") or f"sqlite:///{self.home / 'evalkeeper.db'}"
        self.store = SqlStore(url)
        self._query = SampleQuery()
        self._indexes: OrderedDict[str, SampleIndex] = OrderedDict()
        self._index_lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}

    # paths ------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.artifacts / "runs" / check_run_id(run_id)

    def samples_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "samples"

    def sample_paths(self, run_id: str) -> list[Path]:
        return sample_parts(self.samples_dir(run_id))

    # runs -------------------------------------------------------------------
    def get_run(self, ref: str) -> Run:
        """A run by full id, baseline name, or unique id prefix."""
        run = self.store.load_run(ref)
        if run:
            return run
        baseline = self.store.resolve_baseline(ref)
        if baseline:
            run = self.store.load_run(baseline)
            if run:
                return run
            raise NotFoundError(f"baseline {ref!r} points at run {baseline}, which is no longer in the store")
        matches = self.store.runs_with_prefix(ref)
        if len(matches) == 1:
            found = self.store.load_run(matches[0])
            assert found is not None
            return found
        if len(matches) > 1:
            raise NotFoundError(f"run id prefix {ref!r} is ambiguous: {', '.join(matches)}",
                                hint="give more characters of the run id")
        raise NotFoundError(f"no run or baseline named {ref!r} in {self.home}",
                            hint="see `evalkeeper runs list` (or set EVALKEEPER_HOME to the right workspace)")

    def list_runs(self, tag: str | None = None, model: str | None = None) -> list[Run]:
        return self.store.list_runs(tag=tag, model=model)

    def save_run(self, run: Run) -> None:
        check_run_id(run.run_id)
        self.store.save_run(run)

    def get_metrics(self, run_id: str) -> list[MetricResult]:
        return self.store.get_metrics(run_id)

    def save_metrics(self, run_id: str, metrics: list[MetricResult]) -> None:
        self.store.save_metrics(run_id, metrics)

    def tag(self, run_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Run:
        run = self.get_run(run_id)
        tags = [t for t in run.tags if t not in set(remove)]
        for t in add:
            if not t or len(t) > 128:
                raise EvalkeeperError(f"invalid tag {t!r}", hint="tags are 1-128 characters")
            if t not in tags:
                tags.append(t)
        run = run.model_copy(update={"tags": tags})
        self.store.save_run(run)
        return run

    def find_run_by_source(self, sha256: str) -> Run | None:
        return self.store.find_run_by_source(sha256)

    def delete_run(self, run_id: str) -> None:
        self.store.delete_run(run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def add_run(self, run: Run, metrics: list[MetricResult],
                batches: Iterable[pa.Table | list[Sample]]) -> Run:
        """Store a complete run atomically: samples to a temp folder, rename, then one SQL transaction.

        On any error (including bad rows in `batches`) nothing of the run remains in the workspace.
        """
        check_run_id(run.run_id)
        if self.store.run_exists(run.run_id):
            raise EvalkeeperError(f"run {run.run_id} already exists in this workspace")
        final = self.run_dir(run.run_id)
        if final.exists():
            raise EvalkeeperError(f"artifact folder for run {run.run_id} already exists", path=str(final),
                                  hint="remove it or delete the run first")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{run.run_id}-", dir=final.parent))
        try:
            writer = SampleWriter(tmp / "samples", run.run_id)
            n = writer.write_all(batches)
            run = run.model_copy(update={"n_samples": n})
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            self.store.save_run(run, metrics)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        return run

    def sample_writer(self, run_id: str) -> SampleWriter:
        return SampleWriter(self.samples_dir(run_id), check_run_id(run_id))

    # samples ------------------------------------------------------------------
    def _run_and_parts(self, run_id: str) -> tuple[Run, list[Path]]:
        run = self.get_run(run_id)
        return run, self.sample_paths(run.run_id)

    def sample_index(self, run: Run | str, build: bool | None = True) -> SampleIndex | None:
        """The run's sample index (memory-mapped, see `store.index_build`), built on first use.

        None for runs still being written, runs without samples, and when the index is missing and
        `build` is False (None: build only for runs of at least AUTO_INDEX_ROWS samples) or cannot be
        written; callers then query the Parquet parts with DuckDB.
        """
        run = run if isinstance(run, Run) else self.get_run(run)
        if run.status == "running" or not run.n_samples:
            return None
        parts = self.sample_paths(run.run_id)
        if not parts:
            return None
        signature = part_signature(parts)
        with self._index_lock:
            found = self._indexes.get(run.run_id)
            if found is not None and found.signature == signature:
                self._indexes.move_to_end(run.run_id)
                return found
            build_lock = self._build_locks.setdefault(run.run_id, threading.Lock())
        folder = self.run_dir(run.run_id) / INDEX_DIR
        with build_lock:  # concurrent first requests build once
            index = SampleIndex.open(folder)
            if index is None or index.signature != signature:
                if not (build or (build is None and run.n_samples >= AUTO_INDEX_ROWS)):
                    return None
                try:
                    build_index(run, parts, folder)
                except (OSError, ValueError, pa.ArrowException):  # read-only workspace, unreadable part:
                    return None  # DuckDB over Parquet still answers (or reports the problem)
                index = SampleIndex.open(folder)
                if index is None or index.signature != signature:
                    return None
            with self._index_lock:
                self._indexes[run.run_id] = index
                while len(self._indexes) > OPEN_INDEXES:
                    self._indexes.popitem(last=False)
            return index

    def build_sample_index(self, run_id: str) -> SampleIndex | None:
        """Build (or refresh) a finished run's sample index now, e.g. right after an import."""
        return self.sample_index(run_id, build=True)

    def _indexed(self, run: Run, task: str | None, where: str | None, search: str | None,
                 order_by: str | None) -> tuple[SampleIndex, Any] | None:
        """(index, row mask or None) when the sample index can answer this query without DuckDB."""
        if where is not None or (order_by is not None and order_by not in SORTS):
            return None
        # a missing index is built only for a large run's searches and sorts (DuckDB is quick at the rest)
        index = self.sample_index(run, build=None if (search or order_by) else False)
        if index is None:
            return None
        ok, mask = index.mask(primary=primary_metrics(run), task=task or None, search=search or None)
        return (index, mask) if ok else None

    def query_samples(self, run_id: str, task: str | None = None, where: str | None = None,
                      search: str | None = None, order_by: str | None = None, descending: bool = False,
                      limit: int | None = None, offset: int = 0, columns: list[str] | None = None) -> pa.Table:
        """Sample rows (all columns plus `score` unless `columns`), filtered, sorted by `order_by` then
        (task, sample_id, epoch), paged. Pages without `where` come from the sample index."""
        run, parts = self._run_and_parts(run_id)
        found = self._indexed(run, task, where, search, order_by) if limit is not None else None
        if found is not None and limit is not None:
            index, mask = found
            order = index.order(order_by or "task", None, descending and order_by is not None,
                                primary_metrics(run))
            _, positions = index.page(mask, order, max(0, int(offset)), max(0, int(limit)))
            return self._query.rows_at(run, parts, index.locate(positions), columns)
        return self._query.select(run, parts, task=task, where=where, search=search, order_by=order_by,
                                  descending=descending, limit=limit, offset=offset, columns=columns)

    def count_samples(self, run_id: str, task: str | None = None, where: str | None = None,
                      search: str | None = None) -> int:
        run, parts = self._run_and_parts(run_id)
        found = self._indexed(run, task, where, search, None)
        if found is not None:
            index, mask = found
            return index.n if mask is None else int(np.count_nonzero(mask))
        return self._query.count(run, parts, task=task, where=where, search=search)

    def scores(self, run_id: str, task: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample scores of one task × metric, epochs averaged per id, sorted by sample id."""
        run, parts = self._run_and_parts(run_id)
        return self._query.scores(run, parts, task, metric)

    def paired_scores(self, run_a: str, run_b: str, task: str,
                      metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Scores of two runs on their shared sample ids (joined in DuckDB): (ids, a, b, n_a, n_b)."""
        ra, pa_ = self._run_and_parts(run_a)
        rb, pb = self._run_and_parts(run_b)
        return self._query.paired_scores(ra, pa_, rb, pb, task, metric)

    def samples_relation_sql(self, run_id: str) -> str:
        """A DuckDB subquery over the run's samples (with `score`), for trusted aggregate SQL."""
        run, parts = self._run_and_parts(run_id)
        return self._query.relation_sql(run, parts)

    def sql(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        return self._query.sql(sql, params)

    # governance -----------------------------------------------------------------
    def append_decision(self, decision: Decision) -> Decision:
        return self.store.append_decision(decision)

    def list_decisions(self, subject: str | None = None, kind: str | None = None) -> list[Decision]:
        return self.store.list_decisions(subject=subject, kind=kind)

    def verify_audit_log(self) -> tuple[bool, str | None]:
        return self.store.verify_audit_log()

    def set_baseline(self, name: str, run_id: str, actor: str | None = None) -> None:
        run = self.get_run(run_id)
        if not name or len(name) > 128:
            raise EvalkeeperError(f"invalid baseline name {name!r}")
        self.store.set_baseline(name, run.run_id, actor)

    def resolve_baseline(self, name: str) -> str | None:
        return self.store.resolve_baseline(name)

    def baseline_history(self, name: str) -> list[tuple[str, Any]]:
        return self.store.baseline_history(name)
