"""CLI command: import a peer tool's output (lighteval, lm-eval, inspect_ai) or an evalkeeper bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, print_json, workspace


def import_command(
    paths: list[Path] = typer.Argument(..., help="Output folder or file(s) of lighteval / lm-eval / inspect_ai, "
                                                 "or an evalkeeper bundle (.ekb)."),
    tag: list[str] = typer.Option([], "--tag", help="Tag(s) to put on the imported run(s)."),
    as_json: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Import evaluation results; the format is detected from the content. Re-importing is a no-op."""
    from evalkeeper.ingest.service import import_path

    ws = workspace(home)
    results = []
    for path in paths:
        results.extend(import_path(ws, path, tags=tag))
    if as_json:
        print_json([r.as_dict() for r in results])
        return
    c = console()
    for r in results:
        if r.already:
            c.print(f"[yellow]already imported[/] {r.source} as [bold]{r.run.run_id}[/] (same sha256); nothing "
                    "written", highlight=False)
        else:
            c.print(f"[green]imported[/] {r.source} ({r.importer}) as [bold]{r.run.run_id}[/]: model "
                    f"{r.run.model.name}, {len(r.run.tasks)} task(s), {r.run.n_samples:,} samples", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("import")(import_command)
