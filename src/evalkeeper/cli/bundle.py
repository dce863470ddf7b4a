"""CLI commands: keys generate, bundle, verify, inspect-bundle, env, reproduce (thin calls into evalkeeper.bundle)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from evalkeeper.cli.common import HomeOpt, JsonOpt, console, err_console, fmt_num, print_json, workspace

PubkeyOpt = typer.Option(None, "--pubkey", help="Ed25519 public key (PEM) the signature must verify against.")


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_env(env: dict[str, Any] | None, full: bool) -> None:
    from rich.table import Table

    from evalkeeper.bundle import summarize_environment

    c = console()
    if env and "python" not in env and isinstance(env.get("importer"), dict):
        c.print(
            "the source tool recorded no environment snapshot; showing the machine that imported it",
            highlight=False,
        )
        env = env["importer"]
    if not env:
        c.print("no environment snapshot recorded")
        return
    table = Table(title="environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in summarize_environment(env).items():
        table.add_row(k, "-" if v is None else str(v))
    c.print(table)
    if env.get("note"):
        c.print(f"[yellow]note:[/] {env['note']}", highlight=False)
    if env.get("env_vars"):
        c.print("env vars: " + ", ".join(f"{k}={v}" for k, v in env["env_vars"].items()), highlight=False)
    if full:
        pk = env.get("packages") or {}
        c.print("packages: " + ", ".join(f"{k}=={v}" for k, v in pk.items()), highlight=False)


def register(app: typer.Typer) -> None:
    """Attach keys, bundle, verify, inspect-bundle, env and reproduce."""
    keys_app = typer.Typer(help="Ed25519 signing keys for bundles.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @keys_app.command("generate")
    def keys_generate(
        out: Path = typer.Option(Path("keys"), "--out", "-o", help="Folder for private.pem and public.pem."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Create an Ed25519 key pair (private.pem is mode 0600; encrypted if $EVALKEEPER_KEY_PASSPHRASE)."""
        from evalkeeper.bundle.signing import generate_keys

        kp = generate_keys(out, force=force)
        info = {"private": str(kp.private_path), "public": str(kp.public_path), "key_id": kp.key_id}
        if as_json:
            print_json(info)
        else:
            console().print(
                f"wrote {kp.private_path} (keep secret) and {kp.public_path}; key id {kp.key_id[:16]}",
                highlight=False,
            )

    @app.command("bundle")
    def bundle_cmd(
        run: str = typer.Argument(..., help="Run id, unique prefix or baseline name."),
        out: Path = typer.Option(..., "--out", "-o", help="Bundle file to write (.ekb), or a folder."),
        sign: Path | None = typer.Option(
            None, "--sign", help="Ed25519 private key (PEM) to sign the provenance."
        ),
        level: int = typer.Option(3, "--level", min=1, max=22, help="zstd compression level."),
        home: str | None = HomeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Package a run (record, samples, metrics, env, specs, reports, repro files) into one .ekb file."""
        from evalkeeper.bundle.writer import create_bundle, describe_result

        res = create_bundle(workspace(home), run, out, sign_key=sign, level=level)
        info = describe_result(res)
        for warning in res.warnings:
            err_console().print(f"[yellow]warning:[/] {warning}", highlight=False)
        if as_json:
            print_json(info)
            return
        signed = f", signed by key {res.key_id[:16]}" if res.key_id else ""
        console().print(
            f"wrote {res.path} ({_human_size(res.size)} from {_human_size(res.uncompressed_bytes)}, "
            f"{info['members']} members{signed})\nsha256 {res.sha256}",
            highlight=False,
        )

    @app.command("verify")
    def verify_cmd(
        path: Path = typer.Argument(..., help="Bundle file (.ekb)."),
        pubkey: Path | None = PubkeyOpt,
        sha256: bool = typer.Option(
            False, "--sha256", help="Also print the file's sha256 (as sha256sum does)."
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        """Check every digest, manifest completeness and the signature. Exit 0 intact, 1 tampered, 2 unreadable."""
        from evalkeeper.bundle.verify import verify_bundle

        rep = verify_bundle(path, public_key_path=pubkey, file_sha256=sha256)
        if as_json:
            print_json(rep.to_dict())
        elif rep.status == "intact":
            sig = {
                "valid": "signature valid",
                "unsigned": "unsigned",
                "present (not checked)": "signed (pass --pubkey to check the signature)",
            }.get(rep.signature, rep.signature)
            console().print(
                f"[green]intact[/]: {rep.members} members, every digest matches; {sig}"
                + (f"\nsha256 {rep.file_sha256}" if rep.file_sha256 else ""),
                highlight=False,
            )
        else:
            e = err_console()
            e.print(f"[bold red]{rep.status}[/]: {path}", highlight=False)
            for p in rep.problems:
                e.print(f"  {p.member}: {p.message}", highlight=False, markup=False)
        sys.exit(rep.exit_code)  # not typer.Exit: in non-standalone mode click returns its code silently

    @app.command("inspect-bundle")
    def inspect_cmd(
        path: Path = typer.Argument(..., help="Bundle file (.ekb)."),
        pubkey: Path | None = PubkeyOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Show the manifest, environment summary, provenance and verification status of a bundle."""
        from rich.table import Table

        from evalkeeper.bundle.verify import inspect_bundle

        info = inspect_bundle(path, public_key_path=str(pubkey) if pubkey else None)
        if as_json:
            print_json(info)
            return
        c = console()
        v, r = info["verification"], info["run"]
        c.print(
            f"[bold]{r['run_id']}[/] · model {r['model']} · producer {r['producer']} · {r['n_samples']} samples · "
            f"tasks {', '.join(r['tasks'] or [])}",
            highlight=False,
        )
        c.print(f"verification: {v['status']} · signature {v['signature']}", highlight=False)
        for p in v["problems"]:
            c.print(f"  [red]{p['member']}[/]: {p['message']}", highlight=False)
        table = Table(title="manifest")
        for col in ("path", "size", "sha256"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for f in info["files"]:
            table.add_row(f["path"], _human_size(f["size"]), f["sha256"][:16] + "…")
        c.print(table)
        env_t = Table(title="environment (at run time)", show_header=False)
        env_t.add_column("key", style="bold")
        env_t.add_column("value")
        for k, val in info["environment"].items():
            env_t.add_row(k, "-" if val is None else str(val))
        c.print(env_t)
        prov = info["provenance"]
        deps = prov.get("resolvedDependencies") or []
        c.print(
            f"provenance: {prov.get('predicateType')} · builder {(prov.get('builder') or {}).get('id')}",
            highlight=False,
        )
        for d in deps:
            c.print(f"  {d['name']}: sha256 {d['digest']['sha256'][:16]}…", highlight=False)

    @app.command("env")
    def env_cmd(
        run: str | None = typer.Argument(
            None, help="Run whose recorded snapshot to show (default: this machine now)."
        ),
        full: bool = typer.Option(False, "--full", help="Also list every installed distribution."),
        home: str | None = HomeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Print the environment snapshot taken at run time (or of this machine now)."""
        from evalkeeper.bundle import capture_environment

        env = workspace(home).get_run(run).environment if run else capture_environment()
        if as_json:
            print_json(env)
        else:
            _print_env(env, full)

    @app.command("reproduce")
    def reproduce_cmd(
        path: Path = typer.Argument(..., help="Bundle file (.ekb) of the run to reproduce."),
        margin: float = typer.Option(0.02, "--margin", help="Equivalence margin on the metric scale (TOST)."),
        alpha: float = typer.Option(0.05, "--alpha", help="TOST level (the CI shown is 1 - 2*alpha)."),
        against: str | None = typer.Option(
            None, "--against", help="Compare with this existing run, no re-run."
        ),
        model: str | None = typer.Option(
            None, "--model", help="Override the model string used for the re-run."
        ),
        home: str | None = HomeOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Re-run a native run from its bundle and test equivalence per task. Exit 0 equivalent, 1 not."""
        from rich.table import Table

        from evalkeeper.bundle.reproduce import reproduce_bundle

        rep = reproduce_bundle(
            path,
            workspace(home),
            margin=margin,
            alpha=alpha,
            against=against,
            model=model,
            progress=not as_json,
        )
        if as_json:
            print_json(rep.to_dict())
            sys.exit(rep.exit_code)  # not typer.Exit: in non-standalone mode click returns its code silently
        c = console()
        how = "re-ran as" if rep.rerun else "compared with"
        c.print(
            f"{rep.original_run_id} {how} {rep.new_run_id}: paired TOST, margin ±{rep.margin} "
            f"(absolute, metric scale), alpha {rep.alpha}",
            highlight=False,
        )
        table = Table(box=None, pad_edge=False)
        ci = f"{100 * (1 - 2 * rep.alpha):.0f}% CI"
        for col in ("task", "metric", "orig", "new", "n", "new-orig", ci, "p", "verdict"):
            table.add_column(col, no_wrap=True)
        for t in rep.tasks:
            colour = {"equivalent": "green", "different": "red"}.get(t.verdict, "yellow")
            table.add_row(
                t.task,
                t.metric,
                fmt_num(t.original_mean, 3),
                fmt_num(t.new_mean, 3),
                str(t.n_shared),
                fmt_num(t.mean_diff, 3),
                f"[{fmt_num(t.ci_low, 3)}, {fmt_num(t.ci_high, 3)}]",
                fmt_num(t.p_value, 3),
                f"[{colour}]{t.verdict}[/]",
            )
        c.print(table)
        verdict = "[green]equivalent[/]" if rep.equivalent else "[red]not shown equivalent[/]"
        c.print(f"verdict: {verdict}")
        if rep.spec_differences:
            c.print(
                "model/task differences:\n  " + "\n  ".join(rep.spec_differences),
                highlight=False,
                markup=False,
            )
        if rep.env_differences:
            c.print(
                "environment differences that could explain a difference:\n  "
                + "\n  ".join(rep.env_differences[:30]),
                highlight=False,
                markup=False,
            )
        elif not rep.equivalent:
            c.print("no environment differences recorded (same packages, hardware and settings)")
        sys.exit(rep.exit_code)  # not typer.Exit: in non-standalone mode click returns its code silently
