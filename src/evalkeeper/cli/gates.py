"""CLI commands: baseline set/show, compare, gate, power — thin calls into `gates`, `analysis`, `stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, fmt_num, print_json, workspace


def _wide_console() -> Any:
    """Tables of numbers must not be cut to 80 columns when output goes to a file or a CI log."""
    c = console()
    if not c.is_terminal:
        c.width = max(c.width, 160)
    return c


baseline_app = typer.Typer(help="Name the approved run that candidates are compared against.",
                           no_args_is_help=True)


@baseline_app.command("set")
def baseline_set(
    run: str = typer.Argument(..., help="Run id, unique prefix, or another baseline name."),
    name: str = typer.Option("prod", "--name", "-n", help="Baseline name (history is kept)."),
    actor: str = typer.Option(None, "--actor", help="Who approved it (default: the OS user)."),
    home: str = HomeOpt,
) -> None:
    """Point a baseline name at a run; the change is appended to the audit log."""
    from evalkeeper.gates import set_baseline

    ws = workspace(home)
    decision = set_baseline(ws, run, name, actor)
    prev = decision.details.get("previous")
    console().print(f"baseline [bold]{name}[/] -> {decision.subject}"
                    + (f" (was {prev})" if prev else "") + f"  [dim]audit #{decision.seq}[/]", highlight=False)


@baseline_app.command("show")
def baseline_show(
    name: str = typer.Argument(None, help="Baseline name; all names when omitted."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Current run of each baseline name, with its history."""
    from evalkeeper.core.errors import NotFoundError

    ws = workspace(home)
    names = [name] if name else list(ws.store.baseline_names())
    out: list[dict[str, Any]] = []
    for n in names:
        history = ws.baseline_history(n)
        if not history:
            raise NotFoundError(f"no baseline named {n!r}", hint="set one with `evalkeeper baseline set RUN --name "
                                                                  f"{n}`")
        out.append({"name": n, "run_id": history[-1][0],
                    "history": [{"run_id": r, "set_at": str(at)} for r, at in history]})
    if as_json:
        print_json(out)
        return
    c = console()
    if not out:
        c.print("no baselines set")
    for b in out:
        c.print(f"[bold]{b['name']}[/] -> {b['run_id']}", highlight=False)
        for h in reversed(b["history"]):
            c.print(f"   {h['set_at']}  {h['run_id']}", highlight=False)


def compare(
    run_a: str = typer.Argument(..., help="Reference run (baseline), id/prefix/baseline name."),
    run_b: str = typer.Argument(..., help="Candidate run."),
    task: list[str] = typer.Option(None, "--task", "-t", help="Only these tasks (repeatable)."),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="Only these metrics (repeatable)."),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="Significance level."),
    correction: str = typer.Option("holm", "--correction", help="holm | bh | none"),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Per task: b - a on shared samples, paired CI, corrected p-value, n paired, flipped samples."""
    from evalkeeper.analysis import compare_runs
    from evalkeeper.core.errors import ConfigError

    if correction not in ("holm", "bh", "none"):
        raise ConfigError(f"unknown correction {correction!r}", hint="use holm, bh or none")
    ws = workspace(home)
    res = compare_runs(ws, run_a, run_b, tasks=task or None, metrics=metric or None, alpha=alpha,
                       correction=correction)  # type: ignore[arg-type]
    if as_json:
        print_json(res.model_dump(mode="json"))
        return
    from rich.table import Table

    table = Table(title=f"{res.run_b} vs {res.run_a} (paired, {correction})")
    table.add_column("task / metric", no_wrap=True)
    for col in ("a", "b", "b - a", f"{1 - alpha:.0%} CI", "p / corr", "n", "test", "-/+"):
        table.add_column(col, justify="left" if col == "test" else "right")
    for r in res.rows:
        style = {"worse": "bold red", "better": "green"}.get(r.direction, "")
        diff = f"[{style}]{r.diff:+.4f}[/]" if style else f"{r.diff:+.4f}"
        table.add_row(f"{r.task} / {r.metric}", fmt_num(r.mean_a), fmt_num(r.mean_b), diff,
                      f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]", f"{r.p_value:.3g} / {r.p_corrected:.3g}",
                      f"{r.n_paired:,}", r.test.replace("_exact", ""), f"{r.n_right_to_wrong}/{r.n_wrong_to_right}")
    c = _wide_console()
    c.print(table)
    for s in res.skipped:
        c.print(f"[yellow]skipped[/] {s['task']}/{s['metric']}: {s['reason']}", highlight=False)


def gate(
    run: str = typer.Argument(..., help="Candidate run: id, unique prefix, or baseline name."),
    policy: Path = typer.Option(..., "--policy", "-p", help="Gate policy YAML (see docs/gates.md)."),
    baseline: str = typer.Option(None, "--baseline", "-b", help="Baseline name or run id for no_regression "
                                                                 "rules (overrides the policy's default)."),
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML here (Jenkins, GitLab)."),
    json_out: Path = typer.Option(None, "--json", help="Write the verdicts as JSON here ('-' for stdout)."),
    markdown: Path = typer.Option(None, "--markdown", help="Write GitHub-flavoured Markdown here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No console table."),
    home: str = HomeOpt,
) -> None:
    """Evaluate a policy. Exit 0 pass, 1 a rule failed, 2 bad input (never a silent pass).

    Appends a Decision (kind gate, with the policy's sha256) to the audit log, and the Markdown summary
    to $GITHUB_STEP_SUMMARY when that is set.
    """
    from evalkeeper.core.errors import EvalkeeperError
    from evalkeeper.gates import (
        load_policy,
        render_console,
        run_gate,
        to_json,
        to_junit_xml,
        to_markdown,
        write_github_summary,
    )
    from evalkeeper.gates.output import write_text

    try:
        pol = load_policy(policy)
        ws = workspace(home)
        report = run_gate(ws, run, pol, baseline=baseline)
    except EvalkeeperError as exc:
        _summary_error(str(policy), exc.render())
        raise
    if junit:
        write_text(junit, to_junit_xml(report))
    if markdown:
        write_text(markdown, to_markdown(report))
    if json_out:
        if str(json_out) == "-":
            typer.echo(to_json(report))
        else:
            write_text(json_out, to_json(report))
    write_github_summary(report)
    if not quiet and str(json_out) != "-":
        render_console(report, _wide_console())
    # SystemExit rather than typer.Exit: in non-standalone mode click turns Exit into a return value
    raise SystemExit(report.exit_code)


def _summary_error(policy: str, message: str) -> None:
    """In GitHub Actions, a gate that could not be evaluated says why on the summary page too."""
    import os

    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(f"## Gate `{policy}`: ⛔ could not be evaluated (exit 2)\n\n```\n{message}\n```\n\n")


def power(
    task: str = typer.Option(..., "--task", "-t", help="Task whose scores estimate the variance."),
    run: str = typer.Option(..., "--run", "-r", help="Run (candidate) to estimate from."),
    delta: float = typer.Option(..., "--delta", "-d", help="Difference to detect, in metric units (0.02 = 2 "
                                                           "points).", min=1e-9),
    metric: str = typer.Option(None, "--metric", "-m", help="Metric (default: the task's primary)."),
    baseline: str = typer.Option(None, "--baseline", "-b", help="Pair with this run to estimate omega^2 "
                                                                 "from paired differences (recommended)."),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5),
    target_power: float = typer.Option(0.8, "--power", min=0.01, max=0.999),
    two_sided: bool = typer.Option(False, "--two-sided", help="Two-sided test (default one-sided, as a "
                                                              "no-regression gate)."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Samples needed to detect a drop of --delta, and the smallest drop the current n can detect."""
    from evalkeeper.analysis import power_plan

    ws = workspace(home)
    plan = power_plan(ws, run, task, delta, metric=metric, baseline=baseline, alpha=alpha, power=target_power,
                      alternative="two-sided" if two_sided else "one-sided")
    if as_json:
        print_json(plan)
        return
    c = console()
    c.print(f"task [bold]{plan['task']}[/] metric {plan['metric']} of {plan['run_id']}: n = {plan['n']:,}",
            highlight=False)
    c.print(f"omega^2 = {plan['omega2']:.5f} from {plan['omega2_from']}", highlight=False)
    c.print(f"to detect a difference of {delta:g} ({plan['alternative']}, alpha {alpha:g}, power "
            f"{target_power:.0%}): [bold]{plan['required_n']:,}[/] samples", highlight=False)
    c.print(f"with n = {plan['n']:,} the minimum detectable difference is {plan['mde']:.4f}; "
            f"power at {delta:g} is {plan['power_at_delta']:.1%}", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(baseline_app, name="baseline")
    app.command("compare")(compare)
    app.command("gate")(gate)
    app.command("power")(power)
