"""Verdicts and gate reports: the pydantic models every output format and the audit log serialize."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from evalkeeper.core.records import utcnow

Status = Literal["pass", "fail", "warn"]


class Verdict(BaseModel):
    """One rule applied to one task: the outcome and the numbers behind it."""

    rule_id: str
    kind: str
    status: Status = "pass"  # warn = a failing rule of severity 'warning'
    reason: str = ""
    task: str | None = None
    metric: str | None = None
    subset: str | None = None  # the filter of a rate rule
    estimate: float | None = None
    se: float | None = None
    se_method: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None  # two-sided level; 1 - 2*alpha for no_regression (matches the one-sided test)
    n: int | None = None
    bound_min: float | None = None
    bound_max: float | None = None
    on: str | None = None
    baseline_run: str | None = None
    baseline_estimate: float | None = None
    diff: float | None = None  # candidate - baseline
    max_drop: float | None = None
    n_paired: int | None = None
    test: str | None = None
    p_value: float | None = None
    p_corrected: float | None = None
    alpha: float | None = None
    significant: bool | None = None
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    rule: dict[str, Any] = Field(default_factory=dict)
    line: int | None = None


class GateReport(BaseModel):
    run_id: str
    policy_name: str
    policy_source: str
    policy_sha256: str
    correction: str
    passed: bool
    verdicts: list[Verdict]
    baselines: dict[str, str] = Field(default_factory=dict)  # reference as written -> run id
    n_failed: int = 0
    n_warnings: int = 0
    evaluated_at: str = Field(default_factory=lambda: utcnow().isoformat())
    elapsed_s: float = 0.0
    decision_id: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1
