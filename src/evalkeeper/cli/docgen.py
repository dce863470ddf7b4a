"""Generate the CLI reference (docs/cli.md) from the CLI itself, so the docs cannot drift from the code."""

from __future__ import annotations

from typing import Any

import typer


def _params(cmd: Any) -> list[str]:
    lines = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            kind = "argument" if p.required else "argument, optional"
            help_text = (getattr(p, "help", None) or "").strip()
            lines.append(f"- `{p.name.upper()}` ({kind})" + (f": {help_text}" if help_text else ""))
        elif p.param_type_name == "option":
            if p.hidden:
                continue
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            help_text = (p.help or "").strip()
            default = ""
            if p.default not in (None, False, (), []) and not callable(p.default):
                default = f" (default: `{p.default}`)"
            lines.append(f"- {names}: {help_text}{default}".rstrip(": "))
    return lines


def _walk(cmd: Any, path: list[str], out: list[str]) -> None:
    if hasattr(cmd, "commands"):  # a group (Typer vendors click: duck-type it)
        if path:
            out.append(f"## `{' '.join(path)}`\n\n{(cmd.help or '').strip()}\n")
        for name in sorted(cmd.commands):
            _walk(cmd.commands[name], [*path, name], out)
        return
    out.append(f"### `evalkeeper {' '.join(path)}`\n")
    if cmd.help:
        out.append(cmd.help.strip() + "\n")
    params = _params(cmd)
    if params:
        out.append("\n".join(params) + "\n")


def render_cli_reference(app: typer.Typer) -> str:
    root = typer.main.get_command(app)
    out = ["# CLI reference\n", "Generated from the CLI by `python -m evalkeeper.cli.docgen > docs/cli.md`; "
           "a test fails when this file is out of date.\n"]
    _walk(root, [], out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    import sys

    from evalkeeper.cli.main import app

    sys.stdout.write(render_cli_reference(app))
