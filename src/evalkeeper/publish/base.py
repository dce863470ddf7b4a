"""The one small interface every publishing destination implements, built-in or third-party.

A sink is a class with a `name`, an `Options` pydantic model (its declared, validated options), an
optional `target_option` (the option that `--to NAME:ARG` fills), and `publish(ctx) -> PublishResult`.
`BaseSink` supplies the boilerplate; subclassing it is a convenience, not a requirement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, SecretStr

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Decision, MetricResult, Run

if TYPE_CHECKING:
    from evalkeeper.store import Workspace

RESULTS_SCHEMA = "evalkeeper.results"
RESULTS_SCHEMA_VERSION = 1


class SinkError(EvalkeeperError):
    """A sink could not publish; the message says why (and never contains a secret)."""


class TransientSinkError(SinkError):
    """A failure worth retrying (timeouts, 429, 5xx, connection resets)."""


class SinkOptions(BaseModel):
    """Base for a sink's options: unknown options are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class PublishResult:
    """What a sink published: a primary URL (or path), ids worth keeping, and the files sent."""

    url: str | None = None
    ids: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PublishContext:
    """Everything a sink may publish about one run. Expensive parts are built on first use."""

    run: Run
    metrics: list[MetricResult]
    sample_files: list[Path] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    bundle_files: list[Path] = field(default_factory=list)
    gate_decisions: list[Decision] = field(default_factory=list)
    link: str | None = None  # where a human can look at the run (dashboard URL), if known
    workspace: Workspace | None = None
    staging_dir: Path | None = None  # a private temp folder sinks may write files to

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def gate(self) -> Decision | None:
        """The latest gate decision on this run (the one that counts), if any."""
        return self.gate_decisions[-1] if self.gate_decisions else None

    def headline_metrics(self) -> list[MetricResult]:
        """One metric per task: the task's primary (first declared) metric, else its first result."""
        out: list[MetricResult] = []
        for task in dict.fromkeys(m.task for m in self.metrics):
            info = self.run.task(task)
            primary = info.metrics[0] if info and info.metrics else None
            rows = [m for m in self.metrics if m.task == task]
            out.append(next((m for m in rows if m.metric == primary), rows[0]))
        return out

    @cached_property
    def results(self) -> dict[str, Any]:
        """The standardized results document (JSON-able) published by every sink that sends files."""
        return build_results(self.run, self.metrics, self.gate)

    def results_json(self) -> bytes:
        return json.dumps(self.results, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")

    def write_results_json(self, folder: Path | None = None) -> Path:
        target = (folder or self.staging_dir or Path(".")) / f"results-{self.run_id}.json"
        target.write_bytes(self.results_json())
        return target

    def samples_table(self, limit: int | None = None, task: str | None = None) -> pa.Table:
        """Per-sample rows (DuckDB over the run's Parquet), at most `limit` of them, optionally of one task."""
        if self.workspace is None:
            raise SinkError("no workspace attached to this publish context; samples are unavailable")
        return self.workspace.query_samples(self.run_id, task=task, limit=limit)

    def sample_preview(self, limit: int) -> pa.Table:
        """At most `limit` rows shared fairly across tasks (a capped table should show every task)."""
        tasks: list[str | None] = [t.name for t in self.run.tasks] or [None]
        if limit <= 0:
            return self.samples_table(limit=0)
        tables, left = [], limit
        for i, task in enumerate(tasks):
            share = -(-left // (len(tasks) - i))  # ceil: unused share passes to the next tasks
            t = self.samples_table(limit=share, task=task)
            tables.append(t)
            left -= t.num_rows
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def build_results(run: Run, metrics: list[MetricResult], gate: Decision | None) -> dict[str, Any]:
    """A compact, versioned results document: model, tasks, every metric with its CI, gate verdict.

    The environment snapshot and local source paths are left out on purpose: they can hold private
    details that have no place on a public hub.
    """
    return {
        "schema": RESULTS_SCHEMA,
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run_id": run.run_id,
        "created_at": run.created_at.isoformat(),
        "status": run.status,
        "model": run.model.model_dump(mode="json"),
        "seed": run.seed,
        "tags": list(run.tags),
        "labels": dict(run.labels),
        "n_samples": run.n_samples,
        "tasks": [t.model_dump(mode="json", exclude={"config"}) for t in run.tasks],
        "metrics": [m.model_dump(mode="json", exclude={"schema_version", "run_id"}) for m in metrics],
        "gate": None if gate is None else {
            "verdict": gate.verdict, "decided_at": gate.created_at.isoformat(), "decision_id": gate.decision_id,
            "summary": gate_summary(gate),
            **{k: gate.details[k] for k in ("policy_name", "policy_sha256", "n_verdicts", "n_failed", "failed",
                                            "error") if k in gate.details},
        },
        "provenance": {
            "producer": run.provenance.producer,
            "producer_version": run.provenance.producer_version,
            "source_sha256": run.provenance.source_sha256,
            "bundle_sha256": run.provenance.bundle_sha256,
        },
    }


def gate_failures(gate: Decision) -> list[str]:
    """The failed rules of a gate decision (`rule/task` strings, as `evalkeeper gate` records them)."""
    failed = gate.details.get("failed")
    return [str(f) for f in failed] if isinstance(failed, list) else []


def gate_summary(gate: Decision) -> str:
    """One line for humans: verdict, policy, how many rules failed and which (or the error)."""
    text = gate.verdict.upper()
    policy = gate.details.get("policy_name")
    if policy:
        text += f" (policy {policy})"
    n, n_failed = gate.details.get("n_verdicts"), gate.details.get("n_failed")
    if isinstance(n, int) and isinstance(n_failed, int):
        text += f": {n_failed} of {n} rule checks failed"
    failures = gate_failures(gate)
    if failures:
        shown = ", ".join(failures[:10]) + (f" and {len(failures) - 10} more" if len(failures) > 10 else "")
        text += f" - {shown}"
    error = gate.details.get("error")
    if isinstance(error, str) and error:
        text += f" - error: {error.splitlines()[0][:300]}"
    return text


@runtime_checkable
class Sink(Protocol):
    """A publishing destination. Constructed with its validated options; `publish` does the work."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    target_option: ClassVar[str | None]
    description: ClassVar[str]

    def publish(self, ctx: PublishContext) -> PublishResult: ...


class BaseSink:
    """Convenience base: stores options, lists SecretStr options as secrets, describes the target."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = SinkOptions
    target_option: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def secrets(self) -> list[str]:
        """Values that must never be shown: every SecretStr option by default."""
        out: list[str] = []
        for key in type(self.options).model_fields:
            value = getattr(self.options, key)
            if isinstance(value, SecretStr):
                out.append(value.get_secret_value())
        return out

    def target(self) -> str:
        """A short, secret-free description of where this sink publishes (for summaries)."""
        if self.target_option:
            value = getattr(self.options, self.target_option, None)
            if value is not None and not isinstance(value, SecretStr):
                return str(value)
        return ""

    def publish(self, ctx: PublishContext) -> PublishResult:  # pragma: no cover - abstract
        raise NotImplementedError
