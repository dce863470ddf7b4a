"""CLI commands: `publish` (send a run to one or more sinks) and `sinks list` (what is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, print_json, workspace

sinks_app = typer.Typer(help="Publishing destinations (built-in and installed plugins).", no_args_is_help=True)


def publish(
    run: str = typer.Argument(..., help="Run id, unique prefix, or baseline name."),
    to: list[str] = typer.Option(None, "--to", help="Destination NAME[:ARG], repeatable: mlflow[:URI], "
                                 "tensorboard:DIR, hf:ORG/NAME, wandb[:PROJECT], webhook:URL."),
    config: Path = typer.Option(None, "--config", help="Project file with a `publish:` list of {sink, options}."),
    option: list[str] = typer.Option(None, "-o", "--option", help="Sink option SINK.KEY=VALUE, repeatable "
                                     "(e.g. -o hf.private=false)."),
    report: list[Path] = typer.Option(None, "--report", help="Report file to publish too (repeatable)."),
    bundle: list[Path] = typer.Option(None, "--bundle", help="Bundle file to publish too (repeatable)."),
    link: str = typer.Option(None, "--link", envvar="EVALKEEPER_LINK", help="URL of the run shown in messages."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries per sink on transient failures."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="First retry delay in seconds (doubles)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate destinations and show what would be sent."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Publish a run to every destination; exit 1 if any sink failed (the others still run)."""
    from evalkeeper.core.errors import ConfigError
    from evalkeeper.publish import apply_overrides, load_config, parse_target, publish_run

    dests = load_config(config) if config else []
    dests += [parse_target(spec) for spec in (to or [])]
    apply_overrides(dests, option or [])
    for p in [*(report or []), *(bundle or [])]:
        if not p.is_file():
            raise ConfigError("file not found", path=str(p))
    ws = workspace(home)
    result = publish_run(ws, run, dests, retries=retries, backoff=backoff, link=link,
                         reports=list(report or []), bundles=list(bundle or []), dry_run=dry_run)
    if as_json:
        print_json(result.to_dict())
    else:
        from rich.markup import escape
        from rich.table import Table

        title = f"publish {result.run_id}" + (" (dry run: nothing sent)" if result.dry_run else "")
        table = Table(title=title)
        for col in ("sink", "target", "status", "attempts", "published / error"):
            table.add_column(col, overflow="fold")
        for o in result.outcomes:
            status = "would publish" if result.dry_run else "[green]ok[/]" if o.ok else "[red]FAILED[/]"
            what = (o.result.url or "") if o.ok and o.result else (o.error or "")
            table.add_row(escape(o.sink), escape(o.target), status, str(o.attempts), escape(what))
        c = console()
        c.print(table)
        if result.dry_run:
            pl = result.payload
            c.print(f"{pl['metrics']} metrics, {len(pl['sample_files'])} sample file(s), gate {pl['gate'] or 'none'}; "
                    f"reports: {', '.join(pl['reports']) or 'none'}; bundles: {', '.join(pl['bundles']) or 'none'}",
                    highlight=False, markup=False)
    if not result.ok:
        # SystemExit, not typer.Exit: main() runs click in non-standalone mode, which turns Exit into a return
        raise SystemExit(1)


@sinks_app.command("list")
def list_sinks(as_json: bool = JsonOpt) -> None:
    """Every sink registered under the `evalkeeper.sinks` entry points, with its options."""
    from evalkeeper.publish import discover_sinks

    sinks = discover_sinks()
    rows: list[dict[str, Any]] = []
    for info in sinks.values():
        cls = info.cls
        rows.append({"name": info.name, "builtin": info.builtin, "distribution": info.distribution,
                     "version": info.version, "entry_point": info.value,
                     "description": getattr(cls, "description", "") if cls else "",
                     "target_option": getattr(cls, "target_option", None) if cls else None,
                     "options": info.option_specs() if cls else [], "error": info.error})
    if as_json:
        print_json(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(rows)} sink(s)")
    for col in ("name", "from", "--to", "options", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        origin = "built-in" if r["builtin"] else f"{r['distribution']} {r['version']}"
        syntax = r["name"] + (f":{r['target_option'].upper()}" if r["target_option"] else "")
        opts = ", ".join(o["name"] + ("*" if o["required"] else "") for o in r["options"])
        desc = r["description"] if not r["error"] else f"[red]broken:[/] {escape(r['error'])}"
        table.add_row(escape(r["name"]), escape(origin), escape(syntax), escape(opts), desc)
    console().print(table)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("publish")(publish)
    app.add_typer(sinks_app, name="sinks")
