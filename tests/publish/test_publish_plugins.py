"""Sinks are plugins: built-ins and a third-party distribution are found through the same entry points."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import discover_sinks
from evalkeeper.store import Workspace
from helpers import run_cli

PLUGIN = '''
"""A third-party sink that knows nothing of BaseSink: it only follows the protocol."""
import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from evalkeeper.publish import PublishResult


class AcmeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_dir: str
    label: str = "nightly"


class AcmeSink:
    name: ClassVar[str] = "acme"
    Options = AcmeOptions
    target_option: ClassVar[str] = "out_dir"
    description: ClassVar[str] = "writes the results JSON to a folder"

    def __init__(self, options):
        self.options = options

    def publish(self, ctx):
        path = Path(self.options.out_dir) / f"{self.options.label}-{ctx.run_id}.json"
        path.write_bytes(ctx.results_json())
        return PublishResult(url=path.as_uri(), ids={"label": self.options.label})
'''


@pytest.fixture()
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site folder holding an installed distribution `acme-evalkeeper-sinks` with two entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_sink.py").write_text(PLUGIN)
    dist = site / "acme_evalkeeper_sinks-1.2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-evalkeeper-sinks\nVersion: 1.2.0\n")
    (dist / "entry_points.txt").write_text(
        "[evalkeeper.sinks]\nacme = acme_sink:AcmeSink\nbroken = acme_sink:NoSuchSink\n"
        "webhook = acme_sink:AcmeSink\n")  # tries to shadow a built-in: must not win
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def test_builtins_are_registered_as_entry_points() -> None:
    sinks = discover_sinks()
    for name in ("hf", "mlflow", "wandb", "tensorboard", "webhook"):
        info = sinks[name]
        assert info.builtin and info.distribution == "evalkeeper" and info.error is None, info
        assert info.cls.name == name and info.value.startswith("evalkeeper.publish.sinks.")


def test_third_party_sink_is_discovered_listed_and_used(plugin_site: Path, workspace: Workspace,
                                                        run_with_gate: Run, tmp_path: Path) -> None:
    sinks = discover_sinks()
    assert sinks["acme"].distribution == "acme-evalkeeper-sinks" and sinks["acme"].version == "1.2.0"
    assert not sinks["acme"].builtin and sinks["acme"].error is None
    assert "NoSuchSink" in (sinks["broken"].error or "")
    assert sinks["webhook"].builtin  # a plugin cannot hijack a built-in name

    code, out, _ = run_cli("sinks", "list", "--json")
    assert code == 0
    listed = {r["name"]: r for r in json.loads(out)}
    assert listed["acme"]["target_option"] == "out_dir" and listed["acme"]["version"] == "1.2.0"
    assert [o["name"] for o in listed["acme"]["options"]] == ["out_dir", "label"]
    assert listed["acme"]["options"][0]["required"] and listed["acme"]["options"][1]["default"] == "nightly"
    assert listed["broken"]["error"] and listed["hf"]["builtin"]
    code, out, _ = run_cli("sinks", "list")
    assert code == 0 and "1.2.0" in out and "acme:OUT_DIR" in out and "broken" in out

    out_dir = tmp_path / "acme-out"
    out_dir.mkdir()
    code, out, err = run_cli("publish", run_with_gate.run_id, "--to", f"acme:{out_dir}", "-o", "acme.label=weekly",
                             "--json")
    assert code == 0, err
    written = json.loads((out_dir / f"weekly-{run_with_gate.run_id}.json").read_text())
    assert written["run_id"] == run_with_gate.run_id and written["gate"]["verdict"] == "fail"
    assert {m["task"] for m in written["metrics"]} == {"arith", "mc"}
    summary = json.loads(out)
    assert summary["ok"] and summary["sinks"][0]["ids"] == {"label": "weekly"}
    assert workspace.get_run(run_with_gate.run_id).provenance.published[-1]["sink"] == "acme"

    code, _, err = run_cli("publish", run_with_gate.run_id, "--to", "broken:x")
    assert code == 2 and "broken" in err and "NoSuchSink" in err
