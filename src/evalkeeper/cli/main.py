"""The `evalkeeper` command: a Typer app assembled from one module per command group."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

import typer

from evalkeeper import __version__

COMMAND_MODULES = ("ingest", "runs", "run", "gates", "bundle", "report", "serve", "publish")

app = typer.Typer(
    name="evalkeeper",
    help="Package, report, publish and govern LLM evaluations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evalkeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """evalkeeper: import or run evaluations, then package, report, publish and govern them."""


for _name in COMMAND_MODULES:
    import_module(f"evalkeeper.cli.{_name}").register(app)


def main() -> None:
    """Entry point: user errors print one clear message and exit 2 (or the error's own code), no traceback."""
    from evalkeeper.core.errors import EvalkeeperError

    try:
        # In non-standalone mode click returns typer.Exit's code instead of exiting: pass it on.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except EvalkeeperError as exc:
        from evalkeeper.cli.common import err_console

        err_console().print(f"[bold red]error:[/] {exc.render()}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        click_exc = _click_exceptions()
        if isinstance(exc, click_exc.ClickException):
            exc.show()
            sys.exit(2 if isinstance(exc, click_exc.UsageError) else exc.exit_code)
        raise


def _click_exceptions() -> Any:
    """Typer >= 0.25 vendors click as `typer._click`; older Typer uses the click package."""
    try:
        from typer._click import exceptions as vendored

        return vendored
    except ImportError:  # pragma: no cover - older typer
        import click

        return click.exceptions


if __name__ == "__main__":
    main()
