"""Options and helpers shared by every command (declared once, reused)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from evalkeeper.store import Workspace

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
HomeOpt = typer.Option(None, "--home", envvar="EVALKEEPER_HOME", help="Workspace folder (default ./.evalkeeper).",
                       show_envvar=True)


def console() -> Console:
    """Stdout console; when piped (CI logs, files) tables get a wide fixed width instead of 80 columns."""
    import os

    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
    return Console(soft_wrap=False, width=width)


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def workspace(home: str | None = None) -> Workspace:
    from evalkeeper.store import open_workspace

    return open_workspace(home)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def fmt_num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    return f"{value:.{digits}f}"
