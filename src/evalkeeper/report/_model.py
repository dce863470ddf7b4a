"""The report's data model: one pydantic tree that every renderer reads and the JSON schema documents.

`docs/report-schema.json` is generated from `ReportData.model_json_schema()`; a test fails when they differ,
so the documented schema cannot drift from what `evalkeeper report --format json` writes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA_VERSION = 1
LEADERBOARD_SCHEMA_VERSION = 1

Direction = Literal["improved", "regressed", "unchanged"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Strict):
    """A number with its uncertainty: every value in a report carries one."""

    value: float = Field(description="point estimate (a mean over samples, or the source's reported value)")
    stderr: float | None = Field(default=None, description="standard error of the estimate, when known")
    ci_low: float | None = Field(default=None, description="lower bound of the 95% confidence interval")
    ci_high: float | None = Field(default=None, description="upper bound of the 95% confidence interval")
    n: int | None = Field(default=None, description="number of items behind the estimate")
    method: str = Field(
        "source", description="how the interval was obtained: clt, clustered, bootstrap, source"
    )


class RunSummary(_Strict):
    run_id: str
    model: str
    backend: str
    revision: str | None = None
    created_at: dt.datetime
    status: str
    producer: str = Field(
        description="what produced the run: evalkeeper, lighteval, lm_eval, inspect_ai, ..."
    )
    tags: list[str] = Field(default_factory=list)
    n_samples: int = Field(description="stored sample rows (all tasks, all epochs)")
    tasks: list[str] = Field(default_factory=list)


class MetricRow(_Strict):
    task: str
    metric: str
    primary: bool = Field(description="true for the task's first (headline) metric")
    higher_is_better: bool | None = None
    estimate: Estimate


class SliceRow(_Strict):
    """The task's primary metric restricted to samples whose group attribute has one value."""

    task: str
    metric: str
    attribute: str
    value: str
    estimate: Estimate


class WorstSample(_Strict):
    task: str
    sample_id: str
    score: float | None
    input: str = Field(description="model input, truncated to a few hundred characters")
    target: str | None = None
    prediction: str | None = Field(default=None, description="model output, truncated; rendered escaped")


class ComparisonRow(_Strict):
    """Paired difference candidate - baseline on the samples both runs share."""

    task: str
    metric: str
    baseline: float | None = None
    candidate: float | None = None
    diff: Estimate = Field(description="mean paired difference (candidate - baseline) with its 95% CI")
    n_paired: int
    p_value: float | None = None
    p_adjusted: float | None = Field(default=None, description="p-value corrected for multiple comparisons")
    significant: bool = False
    direction: Direction = "unchanged"
    flips_to_wrong: int | None = Field(
        None, description="samples right in the baseline, wrong in the candidate"
    )
    flips_to_right: int | None = Field(
        None, description="samples wrong in the baseline, right in the candidate"
    )
    flip_ids_to_wrong: list[str] = Field(
        default_factory=list, description="first ids that went right -> wrong"
    )
    test: str | None = Field(default=None, description="the paired test that produced p_value")


class Comparison(_Strict):
    baseline_ref: str = Field(
        description="what the user asked to compare against (a baseline name or run id)"
    )
    baseline_run_id: str
    baseline_model: str
    correction: str | None = Field(default=None, description="multiple-comparison correction (holm, bh, none)")
    alpha: float = 0.05
    rows: list[ComparisonRow] = Field(default_factory=list)


class GateRule(_Strict):
    name: str
    verdict: str
    message: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class GateSummary(_Strict):
    decision_id: str | None = None
    verdict: str = Field(description="overall verdict: pass, fail, error, warn")
    created_at: dt.datetime | None = None
    policy: str | None = None
    policy_sha256: str | None = None
    rules: list[GateRule] = Field(default_factory=list)


class EnvironmentSummary(_Strict):
    """The lines of the run's environment snapshot that explain score differences."""

    items: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="python, os, cpu, gpu, cuda, container, git, ... (summarized)"
    )
    packages: dict[str, str] = Field(default_factory=dict, description="versions of score-relevant packages")


class ExecutiveSummary(_Strict):
    """What a reader needs first: sample counts, what changed against the baseline, gates."""

    headline: str
    bullets: list[str] = Field(default_factory=list)
    n_tasks: int
    n_samples: int
    n_improved: int | None = None
    n_regressed: int | None = None
    n_unchanged: int | None = None
    gate_verdict: str | None = None


class ReportData(_Strict):
    """Everything one run report shows, in every format."""

    report_schema_version: int = REPORT_SCHEMA_VERSION
    generated_at: dt.datetime
    evalkeeper_version: str
    run: RunSummary
    summary: ExecutiveSummary
    metrics: list[MetricRow] = Field(default_factory=list)
    slices: list[SliceRow] = Field(default_factory=list)
    worst_samples: list[WorstSample] = Field(default_factory=list)
    comparison: Comparison | None = None
    gate: GateSummary | None = None
    environment: EnvironmentSummary | None = None
    notes: list[str] = Field(default_factory=list, description="caveats the reader should know about")


class LeaderboardCell(_Strict):
    task: str
    metric: str
    estimate: Estimate


class LeaderboardRow(_Strict):
    run_id: str
    model: str
    created_at: dt.datetime
    tags: list[str] = Field(default_factory=list)
    cells: list[LeaderboardCell] = Field(default_factory=list)
    mean: Estimate | None = Field(
        None, description="unweighted mean over the board's tasks; SE assumes independent tasks"
    )


class Leaderboard(_Strict):
    leaderboard_schema_version: int = LEADERBOARD_SCHEMA_VERSION
    generated_at: dt.datetime
    tasks: list[str]
    metrics: dict[str, str] = Field(description="task -> the metric shown for it (the task's primary)")
    rows: list[LeaderboardRow]

    def cell(self, row: LeaderboardRow, task: str) -> LeaderboardCell | None:
        return next((c for c in row.cells if c.task == task), None)
