"""The gate section of a report: a `GateReport` from `evalkeeper.gates`, or the gate Decision in the audit log.

Both shapes are read: the live report (`verdicts` of `Verdict` with rule_id/status/reason and the numbers)
and the compact record `gates.record.run_gate` appends (`verdicts` of {rule, task, status, estimate, ...}).
"""

from __future__ import annotations

import math
from typing import Any

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Decision, Run
from evalkeeper.store import Workspace

from ._model import GateRule, GateSummary

_NOT_EVIDENCE = {
    "name",
    "rule",
    "rule_id",
    "id",
    "verdict",
    "status",
    "message",
    "explanation",
    "reason",
    "task",
    "metric",
    "kind",
    "passed",
    "warnings",
    "details",
    "line",
    "evidence",
}
# The numbers that explain a verdict, in reading order; anything else numeric follows.
_EVIDENCE_ORDER = (
    "estimate",
    "ci_low",
    "ci_high",
    "n",
    "bound_min",
    "bound_max",
    "baseline_estimate",
    "diff",
    "max_drop",
    "n_paired",
    "test",
    "p",
    "p_value",
    "p_corrected",
    "alpha",
)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump(mode="json"))
    if hasattr(obj, "as_dict"):
        return dict(obj.as_dict())
    raise EvalkeeperError(f"cannot read a gate report of type {type(obj).__name__}")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _evidence(r: dict[str, Any]) -> dict[str, Any]:
    given = r.get("evidence")
    if isinstance(given, dict):
        return {str(k): _clean(v) for k, v in given.items()}
    keys = [k for k in _EVIDENCE_ORDER if k in r] + sorted(k for k in r if k not in _EVIDENCE_ORDER)
    out = {}
    for k in keys:
        v = r[k]
        if k in _NOT_EVIDENCE or v is None or isinstance(v, (dict, list)):
            continue
        out[k] = _clean(v)
    return out


def _rule(r: dict[str, Any]) -> GateRule:
    name = str(r.get("name") or r.get("rule_id") or r.get("rule") or r.get("id") or "rule")
    scope = "/".join(str(x) for x in (r.get("task"), r.get("metric")) if x)
    if scope and scope not in name:
        name = f"{name} ({scope})"
    verdict = str(r.get("verdict") or r.get("status") or ("pass" if r.get("passed") else "fail"))
    message = r.get("message") or r.get("explanation") or r.get("reason")
    warnings = [str(w) for w in r.get("warnings") or []]
    if warnings:
        message = "; ".join([str(message)] + warnings if message else warnings)
    return GateRule(name=name, verdict=verdict, message=str(message) if message else None, evidence=_evidence(r))


def gate_section(ws: Workspace, run: Run, gate_report: Any = None) -> GateSummary | None:
    """The given gate report, else the latest gate Decision recorded for this run in the audit log."""
    decision: Decision | None = None
    if gate_report is None:
        found = ws.list_decisions(subject=run.run_id, kind="gate")
        if not found:
            return None
        decision = max(found, key=lambda d: (d.seq or 0, d.created_at))
        data = dict(decision.details)
    elif isinstance(gate_report, Decision):
        decision = gate_report
        data = dict(decision.details)
    else:
        data = _as_dict(gate_report)
    raw = data.get("rules") or data.get("verdicts") or data.get("results") or []
    rules = [_rule(_as_dict(r)) for r in (raw if isinstance(raw, list) else [])]
    if data.get("error"):
        rules.append(GateRule(name="evaluation", verdict="error", message=str(data["error"])))
    if decision is not None:
        verdict = decision.verdict
    elif "passed" in data:
        verdict = "pass" if data["passed"] else "fail"
    else:
        verdict = str(data.get("verdict") or data.get("status") or "unknown")
    policy = data.get("policy") or data.get("policy_source") or data.get("policy_name")
    return GateSummary(
        decision_id=decision.decision_id if decision else data.get("decision_id"),
        verdict=verdict,
        created_at=decision.created_at if decision else None,
        policy=str(policy) if policy else None,
        policy_sha256=data.get("policy_sha256"),
        rules=rules,
    )
