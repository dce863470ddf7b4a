"""A gate run as a governance event: evaluate, then append a Decision (policy sha256 included)."""

from __future__ import annotations

import getpass
from typing import Any

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.ids import new_id
from evalkeeper.core.records import Decision

from ._models import GateReport
from .evaluate import evaluate_policy
from .policy import Policy


def _actor() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user database in some containers
        return None


def run_gate(ws: Any, run: str, policy: Policy, baseline: str | None = None,
             actor: str | None = None) -> GateReport:
    """Evaluate and record. Bad input is recorded too (verdict 'error') before the error propagates."""
    base_details = {"policy_name": policy.name, "policy_source": policy.source,
                    "policy_sha256": policy.sha256, "correction": policy.correction}
    try:
        report = evaluate_policy(ws, run, policy, baseline)
    except EvalkeeperError as exc:
        try:
            subject = ws.get_run(run).run_id
        except EvalkeeperError:
            raise exc from None
        ws.append_decision(Decision(decision_id=new_id("dec"), kind="gate", subject=subject, verdict="error",
                                    actor=actor or _actor(), details={**base_details, "error": exc.render()}))
        raise
    details: dict[str, Any] = {
        **base_details,
        "baselines": report.baselines,
        "n_verdicts": len(report.verdicts),
        "n_failed": report.n_failed,
        "failed": [f"{v.rule_id}/{v.task}" if v.task else v.rule_id for v in report.verdicts
                   if v.status == "fail"],
        "verdicts": [
            {"rule": v.rule_id, "task": v.task, "metric": v.metric, "status": v.status,
             "estimate": v.estimate, "diff": v.diff, "p": v.p_value, "p_corrected": v.p_corrected, "n": v.n}
            for v in report.verdicts
        ],
    }
    decision = ws.append_decision(Decision(decision_id=new_id("dec"), kind="gate", subject=report.run_id,
                                           verdict="pass" if report.passed else "fail",
                                           actor=actor or _actor(), details=details))
    report.decision_id = decision.decision_id
    return report


def set_baseline(ws: Any, run: str, name: str, actor: str | None = None) -> Decision:
    """Point baseline `name` at `run` (history kept by the store) and log it in the audit trail."""
    run_id = ws.get_run(run).run_id
    previous = ws.resolve_baseline(name)
    ws.set_baseline(name, run_id)
    decision: Decision = ws.append_decision(Decision(
        decision_id=new_id("dec"), kind="baseline", subject=run_id, verdict="approved",
        actor=actor or _actor(), details={"name": name, "previous": previous}))
    return decision
