"""Gate reports for people and CI: Rich table, JSON, JUnit XML, GitHub step-summary Markdown."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from evalkeeper.core.atomic import atomic_write_text

from ._models import GateReport, Verdict


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _ci(v: Verdict) -> str:
    if v.ci_low is None or v.ci_high is None:
        return "-"
    level = f" {v.ci_level:.0%}" if v.ci_level is not None else ""
    return f"[{v.ci_low:.4f}, {v.ci_high:.4f}]{level}"


def _target(v: Verdict) -> str:
    return " / ".join(x for x in (v.task or "", v.metric or "", v.subset or "") if x) or "-"


def render_console(report: GateReport, console: Any = None) -> None:
    """Print the verdict table, then one line of reasoning (and warnings) per verdict."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    c = console or Console()
    table = Table(title=f"gate {report.policy_name!r} on {report.run_id}")
    for col in ("#", "status", "rule", "task / metric", "estimate", "CI", "diff", "p raw / corr", "n"):
        table.add_column(col, overflow="fold", justify="right" if col in ("#", "estimate", "diff", "n") else "left")
    colors = {"pass": "green", "fail": "bold red", "warn": "yellow"}
    for i, v in enumerate(report.verdicts, 1):
        p = f"{_p(v.p_value)} / {_p(v.p_corrected)}" if v.p_value is not None else "-"
        table.add_row(str(i), f"[{colors[v.status]}]{v.status}[/]", escape(v.rule_id), escape(_target(v)),
                      _num(v.estimate), _ci(v), _num(v.diff), p, "-" if v.n is None else f"{v.n:,}")
    c.print(table)
    for i, v in enumerate(report.verdicts, 1):
        c.print(f"{i}. [{colors[v.status]}]{v.status}[/] {escape(v.reason)}", highlight=False)
        for w in v.warnings:
            c.print(f"   [yellow]warning:[/] {escape(w)}", highlight=False)
    word = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    c.print(f"{word}  {report.n_failed} failed of {len(report.verdicts)} verdicts, "
            f"{report.n_warnings} with warnings; correction {report.correction}; "
            f"policy sha256 {report.policy_sha256[:12]}", highlight=False)


def to_json(report: GateReport) -> str:
    return report.model_dump_json(indent=2)


def to_junit_xml(report: GateReport) -> str:
    """JUnit XML: one testcase per verdict; failures carry the reason, system-out the evidence."""
    suites = ET.Element("testsuites", name="evalkeeper")
    suite = ET.SubElement(suites, "testsuite", name=f"evalkeeper.gate.{report.policy_name}",
                          tests=str(len(report.verdicts)), failures=str(report.n_failed), errors="0",
                          skipped="0", time=f"{report.elapsed_s:.3f}", timestamp=report.evaluated_at)
    props = ET.SubElement(suite, "properties")
    for key, value in (("run_id", report.run_id), ("policy_sha256", report.policy_sha256),
                       ("correction", report.correction), *report.baselines.items()):
        ET.SubElement(props, "property", name=str(key), value=str(value))
    for v in report.verdicts:
        name = f"{v.rule_id}[{v.task}]" if v.task else v.rule_id
        case = ET.SubElement(suite, "testcase", classname=f"gate.{v.kind}", name=name, time="0")
        evidence = _evidence(v)
        if v.status == "fail":
            failure = ET.SubElement(case, "failure", message=v.reason, type=v.kind)
            failure.text = evidence
        out = ET.SubElement(case, "system-out")
        out.text = evidence + "".join(f"\nwarning: {w}" for w in v.warnings)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _evidence(v: Verdict) -> str:
    parts = [f"status={v.status}", f"reason={v.reason}", f"estimate={_num(v.estimate)}", f"ci={_ci(v)}",
             f"n={v.n}"]
    if v.kind == "no_regression":
        parts += [f"baseline={v.baseline_run}", f"baseline_estimate={_num(v.baseline_estimate)}",
                  f"diff={_num(v.diff)}", f"n_paired={v.n_paired}", f"test={v.test}"]
    if v.p_value is not None:
        parts += [f"p={_p(v.p_value)}", f"p_corrected={_p(v.p_corrected)}"]
    return "\n".join(parts)


def to_markdown(report: GateReport) -> str:
    """GitHub-flavoured Markdown for $GITHUB_STEP_SUMMARY or a PR comment."""
    icon = {"pass": "✅", "fail": "❌", "warn": "⚠️"}
    head = "✅ **PASS**" if report.passed else "❌ **FAIL**"
    lines = [f"## Gate `{report.policy_name}` on `{report.run_id}`: {head}", "",
             f"{report.n_failed} failed of {len(report.verdicts)} verdicts · correction: {report.correction}"
             f" · policy sha256 `{report.policy_sha256[:12]}`", ""]
    if report.baselines:
        lines += ["Baselines: " + ", ".join(f"`{k}` → `{v}`" for k, v in report.baselines.items()), ""]
    lines += ["| | rule | task / metric | estimate | CI | diff | p (raw / corr) | n | reason |",
              "|---|---|---|---:|---|---:|---|---:|---|"]
    for v in report.verdicts:
        p = f"{_p(v.p_value)} / {_p(v.p_corrected)}" if v.p_value is not None else "-"
        reason = (v.reason + "".join(f"<br>⚠️ {w}" for w in v.warnings)).replace("|", "\\|")
        lines.append(f"| {icon[v.status]} | `{v.rule_id}` | {_target(v)} | {_num(v.estimate)} | {_ci(v)} | "
                     f"{_num(v.diff)} | {p} | {'-' if v.n is None else f'{v.n:,}'} | {reason} |")
    return "\n".join(lines) + "\n"


def write_github_summary(report: GateReport, env: dict[str, str] | None = None) -> Path | None:
    """Append the Markdown to $GITHUB_STEP_SUMMARY when it is set (GitHub Actions); else do nothing."""
    target = (env if env is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as f:
        f.write(to_markdown(report) + "\n")
    return path


def write_text(path: str | Path, text: str) -> None:
    atomic_write_text(Path(path), text)
