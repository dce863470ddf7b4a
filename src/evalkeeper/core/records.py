"""Typed records that every part of evalkeeper exchanges; pydantic models are the on-disk schema."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

RunStatus = Literal["running", "complete", "failed"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Record(BaseModel):
    """Base for persisted records: strict fields, stable JSON, a schema version."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Any:
        return cls.model_validate_json(text)


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    backend: str = "unknown"  # smollm2 | hf | openai | lighteval:<kind> | lm_eval:<kind> | inspect:<provider> ...
    revision: str | None = None
    digest: str | None = None  # sha256 of weights/GGUF where known
    generation: dict[str, Any] = Field(default_factory=dict)  # temperature, max_tokens, top_p, seed ...


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str | None = None
    dataset_fingerprint: str | None = None  # sha256 of the dataset rows
    prompt_fingerprint: str | None = None  # sha256 of the prompt template
    n_shot: int | None = None
    seed: int | None = None
    metrics: list[str] = Field(default_factory=list)
    higher_is_better: dict[str, bool] = Field(default_factory=dict)
    n_samples: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # the source's task config / our task spec


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    producer: str  # evalkeeper | lighteval | lm_eval | inspect_ai | bundle
    producer_version: str | None = None
    source_path: str | None = None
    source_sha256: str | None = None  # sha256 of the imported file(s); re-import is a no-op
    command: str | None = None
    bundle_sha256: str | None = None
    published: list[dict[str, Any]] = Field(default_factory=list)  # sink results: {"sink":..,"url":..,"at":..}


class Run(Record):
    run_id: str
    model: ModelInfo
    tasks: list[TaskInfo] = Field(default_factory=list)
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    status: RunStatus = "complete"
    environment: dict[str, Any] | None = None
    provenance: Provenance
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    n_samples: int = 0
    seed: int | None = None

    def task(self, name: str) -> TaskInfo | None:
        return next((t for t in self.tasks if t.name == name), None)


class Sample(Record):
    run_id: str
    task: str
    sample_id: str  # stable across runs of the same task, so runs can be paired
    epoch: int = 0
    input: str = ""
    target: str | None = None
    prediction: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    logprobs: list[float] | None = None
    group: dict[str, str] = Field(default_factory=dict)  # group attributes for fairness slices
    metadata: dict[str, Any] = Field(default_factory=dict)
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None


class MetricResult(Record):
    run_id: str
    task: str
    metric: str
    value: float
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    method: str = "source"  # source | clt | clustered | bootstrap | binomial
    higher_is_better: bool | None = None
    source_stderr: float | None = None  # an importer's carried-over stderr when `stderr` was recomputed


class Event(Record):
    """One production interaction; attribute names follow OpenTelemetry GenAI conventions where they exist."""

    event_id: str
    timestamp: dt.datetime = Field(default_factory=utcnow)
    model: str  # gen_ai.request.model
    model_version: str | None = None
    prompt: str = ""
    response: str = ""
    latency_ms: float | None = None
    input_tokens: int | None = None  # gen_ai.usage.input_tokens
    output_tokens: int | None = None  # gen_ai.usage.output_tokens
    metadata: dict[str, Any] = Field(default_factory=dict)


class Feedback(Record):
    feedback_id: str
    idempotency_key: str
    target_kind: Literal["event", "sample"] = "event"
    target_id: str
    kind: Literal["thumbs", "score", "label", "correction"] = "thumbs"
    value: float | None = None
    label: str | None = None
    correction: str | None = None
    author: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


DecisionKind = Literal["gate", "approval", "waiver", "drift_alert", "baseline", "other"]


class Decision(Record):
    """A governance outcome, appended to the hash-chained audit log (`prev_hash`/`hash` set by the store)."""

    decision_id: str
    kind: DecisionKind
    subject: str  # usually a run id
    verdict: str  # pass | fail | error | approved | waived | alert ...
    created_at: dt.datetime = Field(default_factory=utcnow)
    actor: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None
