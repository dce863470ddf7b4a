"""Response models of the dashboard's JSON API; they are also what the pages render, so the two agree."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from evalkeeper.analysis.compare import RunComparison
from evalkeeper.core.records import Sample
from evalkeeper.server._sql import ExplorerQuery


class MetricOut(BaseModel):
    task: str
    metric: str
    value: float
    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    method: str = "source"
    higher_is_better: bool | None = None


class RunSummary(BaseModel):
    run_id: str
    model: str
    backend: str
    created_at: dt.datetime
    status: str
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    tasks: list[str] = Field(default_factory=list)
    n_samples: int = 0
    producer: str = ""
    headline: list[MetricOut] = Field(
        default_factory=list, description="The primary (first) metric of every task, with its CI."
    )


class EnvItem(BaseModel):
    key: str
    value: str


class TaskOut(BaseModel):
    name: str
    version: str | None = None
    metrics: list[str] = Field(default_factory=list)
    n_shot: int | None = None
    n_samples: int | None = None
    dataset_fingerprint: str | None = None
    prompt_fingerprint: str | None = None


class RunDetail(BaseModel):
    summary: RunSummary
    metrics: list[MetricOut]
    tasks: list[TaskOut]
    generation: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    environment: list[EnvItem] = Field(default_factory=list, description="A flat summary of the environment.")
    group_attributes: dict[str, list[str]] = Field(
        default_factory=dict, description="Group attribute names per task (for slices and filters)."
    )


class SampleRow(BaseModel):
    task: str
    sample_id: str
    epoch: int = 0
    input: str = ""
    target: str | None = None
    prediction: str | None = None
    score: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    group: dict[str, str] = Field(default_factory=dict)
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    truncated: bool = Field(False, description="True when input/target/prediction were cut for the listing.")


class SamplePage(BaseModel):
    run_id: str
    total: int
    page: int
    page_size: int
    pages: int
    query: ExplorerQuery
    rows: list[SampleRow]


class SampleDetail(Sample):
    """One stored sample as the store holds it, plus the epochs stored under the same id."""

    epochs: list[int] = Field(default_factory=list, description="All epochs stored for this sample id.")


class SliceRow(BaseModel):
    value: str
    n: int
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None


class SliceReport(BaseModel):
    run_id: str
    task: str
    metric: str
    attribute: str
    overall: SliceRow
    slices: list[SliceRow]


class ComparisonOut(BaseModel):
    """Run b (candidate) against run a (baseline): paired differences, corrected p-values, flipped ids."""

    run_a: RunSummary
    run_b: RunSummary
    comparison: RunComparison
