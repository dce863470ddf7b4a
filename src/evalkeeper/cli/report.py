"""CLI commands: report (one run, four formats) and leaderboard (runs × tasks)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from evalkeeper.cli.common import HomeOpt, err_console, workspace

_FORMATS = ("json", "md", "html", "pdf")
_SUFFIX = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".pdf": "pdf"}

FormatOpt = typer.Option(
    None, "--format", "-f", help="json | md | html | pdf (default: from the output file's suffix, else md)."
)
OutOpt = typer.Option(None, "--output", "-o", help="Write here (atomically) instead of printing.")


def _resolve_format(fmt: str | None, out: Path | None) -> str:
    from evalkeeper.core.errors import EvalkeeperError

    if fmt is None:
        fmt = _SUFFIX.get(out.suffix.lower(), "md") if out is not None else "md"
    fmt = "md" if fmt.lower() == "markdown" else fmt.lower()
    if fmt not in _FORMATS:
        raise EvalkeeperError(f"unknown format {fmt!r}", hint=f"one of {', '.join(_FORMATS)}")
    if fmt == "pdf" and out is None:
        raise EvalkeeperError("PDF output needs a file", hint="add -o report.pdf")
    return fmt


def _emit(content: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(content.decode("utf-8"))
        sys.stdout.flush()
    else:
        err_console().print(f"wrote {out} ({len(content) / 1024:,.1f} KiB)", highlight=False)


def _split(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


def report(
    run: str = typer.Argument(..., help="Run id, unique prefix, or baseline name."),
    compare: str = typer.Option(
        None, "--compare", "-c", help="Baseline name or run id to compare against (paired, corrected)."
    ),
    fmt: str = FormatOpt,
    out: Path = OutOpt,
    worst: int = typer.Option(5, "--worst", min=0, max=100, help="Worst samples shown per task."),
    gates: bool = typer.Option(
        True, "--gates/--no-gates", help="Include the latest gate verdict recorded for the run."
    ),
    home: str = HomeOpt,
) -> None:
    """Report one run: executive summary, metrics with CIs, comparison, gates, slices, worst samples."""
    from evalkeeper.report import build_report, render_report_data
    from evalkeeper.report._render import write_output

    f = _resolve_format(fmt, out)
    ws = workspace(home)
    data = build_report(ws, run, compare=compare, include_gate=gates, worst_per_task=worst)
    _emit(write_output(render_report_data(data, f), out), out)


def leaderboard(
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated tasks (default: every task of the runs)."),
    runs: str = typer.Option(None, "--runs", help="Comma-separated run ids/prefixes/baseline names."),
    tag: str = typer.Option(None, "--tag", help="Only runs with this tag."),
    fmt: str = FormatOpt,
    out: Path = OutOpt,
    home: str = HomeOpt,
) -> None:
    """Runs × tasks, each cell the task's primary metric ± its 95% CI; sortable in HTML."""
    from evalkeeper.report import render_leaderboard

    f = _resolve_format(fmt, out)
    ws = workspace(home)
    _emit(render_leaderboard(ws, fmt=f, out=out, tasks=_split(tasks), runs=_split(runs), tag=tag), out)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("report")(report)
    app.command("leaderboard")(leaderboard)
