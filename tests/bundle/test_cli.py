"""The bundle commands end to end through the real CLI entry point (exit codes are part of the contract)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from evalkeeper.core.records import Run
from evalkeeper.store import Workspace

from ._tarkit import members, regular, with_prefix


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def ek(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run the real entry point (`evalkeeper.cli.main:main`) in-process; exit code from SystemExit."""
    from evalkeeper.cli.main import main

    def call(*args: str, home: Path) -> Result:
        monkeypatch.setenv("EVALKEEPER_HOME", str(home))
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.setattr(sys, "argv", ["evalkeeper", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def test_verify_exit_codes_from_a_real_process(bundle_path: Path, tmp_path: Path) -> None:
    def run(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "evalkeeper.cli.main", *args], capture_output=True,
                              timeout=120).returncode

    bad = with_prefix(bundle_path, tmp_path / "bad.ekb", [regular("reports/x.json")], at=2)
    assert run("verify", str(bad)) == 1  # 0 and 2 go through the same main() in the in-process tests


def test_keys_bundle_verify_inspect_env(ek: Callable[..., Result], workspace: Workspace, stored_run: Run,
                                        tmp_path: Path) -> None:
    home = workspace.home
    r = ek("keys", "generate", "--out", str(tmp_path / "keys"), "--json", home=home)
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout)
    r = ek("bundle", stored_run.run_id[:12], "-o", str(tmp_path / "run.ekb"), "--sign", key["private"], "--json",
           home=home)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["signed_by"] == key["key_id"] and Path(made["path"]).exists()

    r = ek("verify", str(tmp_path / "run.ekb"), "--pubkey", key["public"], "--sha256", home=home)
    assert r.returncode == 0 and "intact" in r.stdout and "signature valid" in r.stdout
    assert made["sha256"] in r.stdout

    bad = with_prefix(tmp_path / "run.ekb", tmp_path / "bad.ekb", [regular("reports/x.json")], at=2)
    r = ek("verify", str(bad), home=home)
    assert r.returncode == 1 and "reports/x.json" in r.stderr
    r = ek("verify", str(tmp_path / "missing.ekb"), home=home)
    assert r.returncode == 2
    (tmp_path / "other.pem").write_text("x")
    r = ek("verify", str(tmp_path / "run.ekb"), "--pubkey", str(tmp_path / "other.pem"), home=home)
    assert r.returncode == 2 and "PEM" in r.stderr  # a bad key file is a usage error, not tampering

    r = ek("inspect-bundle", str(tmp_path / "run.ekb"), "--json", home=home)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["run"]["run_id"] == stored_run.run_id
    assert {f["path"] for f in info["files"]} == {i.name for i, _ in members(tmp_path / "run.ekb")}
    assert info["environment"]["python"]
    r = ek("inspect-bundle", str(tmp_path / "run.ekb"), home=home)
    assert r.returncode == 0 and "manifest" in r.stdout and "run.json" in r.stdout

    r = ek("env", "--json", home=home)
    assert r.returncode == 0 and json.loads(r.stdout)["python"]["version"]
    r = ek("env", stored_run.run_id, home=home)
    assert r.returncode == 0 and "no environment snapshot recorded" in r.stdout


def test_import_and_reproduce_commands(ek: Callable[..., Result], workspace: Workspace, stored_run: Run,
                                       tmp_path: Path) -> None:
    home = workspace.home
    assert ek("bundle", stored_run.run_id, "-o", str(tmp_path), home=home).returncode == 0
    ekb = tmp_path / f"{stored_run.run_id}.ekb"
    other = tmp_path / "other-ws"
    r = ek("import", str(ekb), home=other)
    assert r.returncode == 0, r.stderr
    r = ek("reproduce", str(ekb), "--against", stored_run.run_id, home=other)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "equivalent" in r.stdout and "margin ±0.02" in r.stdout
    r = ek("reproduce", str(ekb), "--against", stored_run.run_id, "--margin", "0", home=other)
    assert r.returncode == 2 and "margin" in r.stderr
