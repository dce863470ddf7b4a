"""CLI commands: runs list / show / tag / delete, and samples."""

from __future__ import annotations

import json
from typing import Any

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, fmt_num, print_json, workspace

runs_app = typer.Typer(help="List, show and tag stored runs.", no_args_is_help=True)


def _tasks_label(names: list[str], width: int = 40) -> str:
    text = ", ".join(names)
    return text if len(text) <= width else text[: width - 1] + "…"


@runs_app.command("list")
def list_runs(
    tag: str = typer.Option(None, "--tag", help="Only runs with this tag."),
    model: str = typer.Option(None, "--model", help="Only runs of this model."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Table of runs: id, model, tasks, samples, created, tags."""
    ws = workspace(home)
    runs = ws.list_runs(tag=tag, model=model)
    if as_json:
        print_json([r.model_dump(mode="json", exclude={"environment"}) for r in runs])
        return
    from rich.table import Table

    table = Table(title=f"{len(runs)} run(s) in {ws.home}")
    table.add_column("run id", no_wrap=True)
    for col in ("model", "tasks", "samples", "created", "producer", "tags"):
        table.add_column(col, justify="right" if col == "samples" else "left", overflow="fold")
    for r in runs:
        table.add_row(r.run_id, r.model.name, _tasks_label([t.name for t in r.tasks]), f"{r.n_samples:,}",
                      r.created_at.strftime("%Y-%m-%d %H:%M"), r.provenance.producer, ", ".join(r.tags))
    console().print(table)


@runs_app.command("show")
def show_run(
    run: str = typer.Argument(..., help="Run id, unique prefix, or baseline name."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Per task × metric: value, standard error, 95% CI, n, method."""
    ws = workspace(home)
    r = ws.get_run(run)
    metrics = ws.get_metrics(r.run_id)
    if as_json:
        print_json({"run": r.model_dump(mode="json"), "metrics": [m.model_dump(mode="json") for m in metrics]})
        return
    from rich.table import Table

    c = console()
    c.print(f"[bold]{r.run_id}[/]  model [cyan]{r.model.name}[/] ({r.model.backend})  status {r.status}  "
            f"samples {r.n_samples:,}  producer {r.provenance.producer}"
            + (f"  tags {', '.join(r.tags)}" if r.tags else ""), highlight=False)
    if r.provenance.source_path:
        c.print(f"source {r.provenance.source_path} (sha256 {r.provenance.source_sha256})", highlight=False)
    table = Table()
    for col in ("task", "metric", "value", "stderr", "95% CI", "n", "method"):
        table.add_column(col, justify="left" if col in ("task", "metric", "method") else "right")
    for m in metrics:
        ci = f"[{fmt_num(m.ci_low)}, {fmt_num(m.ci_high)}]" if m.ci_low is not None else "-"
        table.add_row(m.task, m.metric, fmt_num(m.value), fmt_num(m.stderr), ci,
                      f"{m.n:,}" if m.n is not None else "-", m.method)
    c.print(table)


@runs_app.command("tag")
def tag_run(
    run: str = typer.Argument(..., help="Run id, unique prefix, or baseline name."),
    tags: list[str] = typer.Argument(..., help="Tags to add (e.g. baseline candidate)."),
    remove: bool = typer.Option(False, "--remove", help="Remove the tags instead of adding them."),
    home: str = HomeOpt,
) -> None:
    """Add (or with --remove, remove) tags on a run."""
    ws = workspace(home)
    r = ws.get_run(run)
    r = ws.tag(r.run_id, add=() if remove else tags, remove=tags if remove else ())
    console().print(f"{r.run_id}: tags {', '.join(r.tags) or '(none)'}", highlight=False)


@runs_app.command("delete")
def delete_run(
    run: str = typer.Argument(..., help="Run id (full)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    home: str = HomeOpt,
) -> None:
    """Delete a run and its samples from the workspace."""
    ws = workspace(home)
    r = ws.get_run(run)
    if not yes:
        typer.confirm(f"delete run {r.run_id} and its {r.n_samples:,} samples?", abort=True)
    ws.delete_run(r.run_id)
    console().print(f"deleted {r.run_id}", highlight=False)


def _cell(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def samples_command(
    run: str = typer.Argument(..., help="Run id, unique prefix, or baseline name."),
    task: str = typer.Option(None, "--task", "-t", help="Only this task."),
    where: str = typer.Option(None, "--where", "-w",
                              help="Filter expression, e.g. \"score < 1\" or \"scores['em'] = 0 and epoch = 0\"."),
    search: str = typer.Option(None, "--search", "-s", help="Text search in input, target and prediction."),
    sort: str = typer.Option(None, "--sort", help="Sort by a column (score, latency_ms, tokens_out, ...)."),
    desc: bool = typer.Option(False, "--desc", help="Sort descending."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=100_000, help="Rows to show."),
    offset: int = typer.Option(0, "--offset", min=0, help="Rows to skip."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Per-sample rows of a run: input, target, prediction and scores (DuckDB over Parquet)."""
    ws = workspace(home)
    r = ws.get_run(run)
    if task and r.task(task) is None:
        from evalkeeper.core.errors import NotFoundError

        raise NotFoundError(f"run {r.run_id} has no task {task!r}",
                            hint=f"tasks: {', '.join(t.name for t in r.tasks)}")
    total = ws.count_samples(r.run_id, task=task, where=where, search=search)
    table = ws.query_samples(r.run_id, task=task, where=where, search=search, order_by=sort, descending=desc,
                             limit=limit, offset=offset)
    rows = table.to_pylist()
    for row in rows:
        row["scores"] = dict(row.get("scores") or [])
        row["group"] = dict(row.get("group") or [])
        row["metadata"] = json.loads(row["metadata"]) if row.get("metadata") else {}
    if as_json:
        print_json({"run_id": r.run_id, "total": total, "offset": offset, "rows": rows})
        return
    from rich.table import Table

    out = Table(title=f"{len(rows)} of {total:,} matching sample(s) in {r.run_id}")
    for col in ("task", "sample_id", "epoch", "input", "target", "prediction", "scores"):
        out.add_column(col, overflow="fold")
    for row in rows:
        scores = ", ".join(f"{k}={fmt_num(v, 3)}" for k, v in row["scores"].items())
        out.add_row(_cell(row["task"], 24), _cell(row["sample_id"], 18), str(row["epoch"]), _cell(row["input"]),
                    _cell(row["target"], 24), _cell(row["prediction"], 40), scores)
    console().print(out)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(runs_app, name="runs")
    app.command("samples")(samples_command)
