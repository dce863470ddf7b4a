"""Quality gates: a YAML policy of rules -> verdicts with their evidence, CI exit codes and outputs."""

from ._models import GateReport, Verdict
from ._regression import no_regression_family
from .evaluate import evaluate_policy
from .output import render_console, to_json, to_junit_xml, to_markdown, write_github_summary
from .policy import Policy, Rule, load_policy, parse_policy, policy_schema
from .record import run_gate, set_baseline

__all__ = [
    "GateReport",
    "Policy",
    "Rule",
    "Verdict",
    "evaluate_policy",
    "load_policy",
    "no_regression_family",
    "parse_policy",
    "policy_schema",
    "render_console",
    "run_gate",
    "set_baseline",
    "to_json",
    "to_junit_xml",
    "to_markdown",
    "write_github_summary",
]
