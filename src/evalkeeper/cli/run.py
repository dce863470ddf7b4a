"""CLI commands: quickstart, run, rescore, tasks list (thin calls into evalkeeper.runner)."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, err_console, fmt_num, print_json, workspace

if TYPE_CHECKING:
    from evalkeeper.core.records import MetricResult
    from evalkeeper.runner.loop import RunOutcome

ModelOpt = typer.Option("smollm2", "--model", "-m",
                        help="smollm2 (embedded, default) | hf:/path/to/model | openai:MODEL | fake")
LimitOpt = typer.Option(None, "--limit", min=1, help="Only the first N items of each task.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr.")


def _metrics_table(metrics: list[MetricResult], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("task", "left"), ("metric", "left"), ("value", "right"), ("95% CI", "right"),
                         ("n", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for m in metrics:
        ci = f"[{fmt_num(m.ci_low, 3)}, {fmt_num(m.ci_high, 3)}]" if m.ci_low is not None else "-"
        table.add_row(m.task, m.metric, fmt_num(m.value, 3), ci, str(m.n or ""))
    return table


def _report(outcome: RunOutcome, as_json: bool) -> None:
    run = outcome.run
    if as_json:
        print_json({"run_id": run.run_id, "status": run.status, "model": run.model.model_dump(mode="json"),
                    "n_samples": run.n_samples, "resumed": outcome.resumed, "model_calls": outcome.model_calls,
                    "cache_hits": outcome.cache_hits, "seconds": round(outcome.seconds, 3),
                    "metrics": [m.model_dump(mode="json") for m in outcome.metrics]})
        return
    out = console()
    out.print(_metrics_table(outcome.metrics, f"{run.run_id} · {run.model.name}"))
    how = "resumed, " if outcome.resumed else ""
    out.print(f"{run.n_samples} samples stored ({how}{outcome.model_calls} model calls, "
              f"{outcome.cache_hits} from cache) in {outcome.seconds:.1f}s · run id {run.run_id}")


def _command_line() -> str:
    return "evalkeeper " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def register(app: typer.Typer) -> None:
    """Attach quickstart, run, rescore and `tasks list`."""

    @app.command("quickstart")
    def quickstart_cmd(
        model: str = ModelOpt,
        limit: int | None = LimitOpt,
        home: str | None = HomeOpt,
        progress: bool = ProgressOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Run the bundled quickstart suite on the embedded SmolLM2, store it, print a summary."""
        from evalkeeper.runner import RunOptions, quickstart

        ws = workspace(home)
        if not as_json:
            err_console().print(f"[dim]workspace {ws.home} · model {model} · first use converts the embedded "
                                "model once (seconds) into the user cache[/]")
        opts = RunOptions(limit=limit, progress=progress, tags=["quickstart"], command=_command_line())
        _report(quickstart(ws, model, opts), as_json)

    @app.command("run")
    def run_cmd(
        model: str = ModelOpt,
        tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated task names or YAML files."),
        suite: str | None = typer.Option(None, "--suite", "-s", help="A bundled suite (e.g. quickstart)."),
        limit: int | None = LimitOpt,
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (openai:)."),
        api: str = typer.Option("chat", "--api", help="chat (/chat/completions) or completions."),
        concurrency: int = typer.Option(16, "--concurrency", min=1, help="Parallel requests (openai:)."),
        timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request (openai:)."),
        max_retries: int = typer.Option(5, "--max-retries", min=0, help="Retries on 429/5xx/timeouts."),
        api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                        help="Environment variable holding the API key (never logged)."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Batch size for local models."),
        seed: int = typer.Option(1234, "--seed", help="Seed for sampling and few-shot selection."),
        max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1,
                                                  help="Override every task's max_new_tokens."),
        temperature: float | None = typer.Option(None, "--temperature", min=0.0, help="Override temperature."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Ignore and do not fill the response cache."),
        tag: list[str] = typer.Option([], "--tag", help="Tag the run (repeatable)."),  # noqa: B008
        flush_every: int = typer.Option(256, "--flush-every", min=1,
                                        help="Samples per Parquet part (what a crash can lose at most)."),
        home: str | None = HomeOpt,
        progress: bool = ProgressOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Evaluate a model on tasks or a suite; an interrupted identical run is resumed."""
        from evalkeeper.runner import RunOptions, run_evaluation

        ws = workspace(home)
        names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        opts = RunOptions(limit=limit, seed=seed, use_cache=not no_cache, progress=progress, tags=list(tag),
                          max_new_tokens=max_new_tokens, temperature=temperature, command=_command_line(),
                          flush_every=flush_every)
        backend_options = {"base_url": base_url, "api": api, "concurrency": concurrency, "timeout": timeout,
                           "max_retries": max_retries, "api_key_env": api_key_env, "batch_size": batch_size}
        _report(run_evaluation(ws, model, tasks=names, suite=suite, options=opts,
                               backend_options=backend_options), as_json)

    @app.command("rescore")
    def rescore_cmd(
        run: str = typer.Argument(..., help="Run id, unique prefix or baseline name."),
        task: str | None = typer.Option(None, "--task", help="Only this task (default: all)."),
        home: str | None = HomeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Recompute per-sample scores and metrics from stored predictions (no model calls)."""
        from evalkeeper.runner import rescore

        ws = workspace(home)
        metrics = rescore(ws, run, task)
        if as_json:
            print_json([m.model_dump(mode="json") for m in metrics])
        else:
            console().print(_metrics_table(metrics, f"rescored {run}"))

    tasks_app = typer.Typer(help="Bundled and user tasks.", no_args_is_help=True)
    app.add_typer(tasks_app, name="tasks")

    @tasks_app.command("list")
    def tasks_list_cmd(home: str | None = HomeOpt, as_json: bool = JsonOpt) -> None:
        """Bundled tasks and user tasks (./tasks, <workspace>/tasks) with sizes and metrics."""
        from rich.table import Table

        from evalkeeper.runner import list_tasks

        entries = list_tasks(workspace(home))
        if as_json:
            print_json(entries)
            return
        table = Table(title="tasks")
        for col in ("name", "origin", "kind", "size", "metrics", "tags"):
            table.add_column(col)
        for e in entries:
            size = str(e["size"]) if e["size"] is not None else f"[red]{e.get('error', 'error')}[/]"
            table.add_row(e["name"], e["origin"], e["kind"], size, ", ".join(e["metrics"]), ", ".join(e["tags"]))
        console().print(table)
