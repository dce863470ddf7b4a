"""CLI commands: serve (the local dashboard)."""

from __future__ import annotations

import typer

from evalkeeper.cli.common import HomeOpt, err_console, workspace


def serve_command(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind. Anything but loopback needs a token."
    ),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    token: str = typer.Option(
        None,
        "--token",
        envvar="EVALKEEPER_TOKEN",
        show_envvar=True,
        help="Require this token on every request (header, or ?token= once in a browser).",
    ),
    home: str = HomeOpt,
) -> None:
    """Open the dashboard: runs, metrics with CIs, sample explorer, slices, paired run comparison."""
    from evalkeeper.server import serve
    from evalkeeper.server.app import check_bind

    check_bind(host, token)
    ws = workspace(home)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    hint = " (open it once with ?token=<your token>)" if token else ""
    err_console().print(
        f"evalkeeper dashboard for {ws.home} at {url}{hint}  (Ctrl+C to stop)", markup=False, highlight=False
    )
    serve(ws, host=host, port=port, token=token)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("serve")(serve_command)
