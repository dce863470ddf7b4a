"""`--config evalkeeper.yaml`: a `publish:` list of {sink, options}, ${VAR} from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalkeeper.core.errors import ConfigError
from evalkeeper.core.records import Run
from evalkeeper.publish import load_config, parse_target
from evalkeeper.store import Workspace
from helpers import run_cli

from .conftest import Recorder, read_json


def test_config_file_publishes_to_each_destination(workspace: Workspace, run_with_gate: Run, tmp_path: Path,
                                                   receiver: tuple[str, Recorder, dict[str, Any]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base, rec, _ = receiver
    monkeypatch.setenv("TEST_HOOK_URL", f"{base}/services/T1/B2/configSecretValue42")
    cfg = tmp_path / "evalkeeper.yaml"
    cfg.write_text(f"""
gates:
  policy: gates.yaml        # other sections belong to other commands
publish:
  - sink: tensorboard
    options: {{log_dir: {tmp_path / 'tb'}, run_name: nightly}}
  - sink: webhook
    options:
      url: "${{TEST_HOOK_URL}}"
      allow_private: true
      link: https://dash.example/r
""")
    code, out, err = run_cli("publish", run_with_gate.run_id, "--config", str(cfg), "--json")
    assert code == 0, err
    assert list((tmp_path / "tb" / "nightly").glob("events.out.tfevents.*"))
    assert rec.requests[0]["path"] == "/services/T1/B2/configSecretValue42"
    assert "https://dash.example/r" in str(read_json(rec.requests[0]["body"])["blocks"])
    assert "configSecretValue42" not in out + err
    published = workspace.get_run(run_with_gate.run_id).provenance.published
    assert [p["sink"] for p in published] == ["tensorboard", "webhook"]
    assert "configSecretValue42" not in str(published)


@pytest.mark.parametrize("text,message", [
    ("publish: [{sink: webhook, options: {url: '${NOT_SET_ANYWHERE}'}}]", "NOT_SET_ANYWHERE is not set"),
    ("publish: [{sink: webhook, option: {}}]", "unknown key(s) ['option']"),
    ("publish: [{options: {}}]", "publish[0]: each item needs a `sink:` name"),
    ("publish: {sink: x}", "must be a list"),
    ("gates: {}", "no `publish:` list"),
    ("publish: [\n  - sink: [unclosed\n", "invalid YAML at line"),
    ("publish: [{sink: webhook, options: [1]}]", "publish[0].options must be a mapping"),
])
def test_config_errors_say_where(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "evalkeeper.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert message in info.value.render() and str(cfg) in info.value.render()


def test_target_parsing_keeps_colons_in_the_argument() -> None:
    dest = parse_target("webhook:https://hooks.example:8443/a/b")
    assert dest.sink == "webhook" and dest.options == {"__target__": "https://hooks.example:8443/a/b"}
    assert parse_target("wandb").options == {}
    with pytest.raises(ConfigError):
        parse_target(":x")
