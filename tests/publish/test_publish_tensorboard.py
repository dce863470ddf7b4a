"""TensorBoard sink: event files read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import Destination, parse_target, publish_run
from evalkeeper.store import Workspace


def test_scalars_and_config_read_back(workspace: Workspace, run_with_gate: Run, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dest = parse_target(f"tensorboard:{tmp_path / 'tb'}")
    report = publish_run(workspace, run_with_gate.run_id, [dest], sleep=lambda s: None)
    assert report.ok, report.to_dict()
    folder = tmp_path / "tb" / run_with_gate.run_id
    assert report.outcomes[0].result is not None and report.outcomes[0].result.url == folder.resolve().as_uri()
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    metrics = workspace.get_metrics(run_with_gate.run_id)
    assert len(metrics) == 2
    for m in metrics:
        (event,) = acc.Scalars(f"{m.task}/{m.metric}")
        assert event.step == 0 and event.value == pytest.approx(m.value, rel=1e-6)
        assert event.wall_time == pytest.approx(run_with_gate.created_at.timestamp(), abs=1e-3)
        assert acc.Scalars(f"{m.task}/{m.metric}/ci_low")[0].value == pytest.approx(m.ci_low, rel=1e-6)
        assert acc.Scalars(f"{m.task}/{m.metric}/ci_high")[0].value == pytest.approx(m.ci_high, rel=1e-6)
    assert len(tags["scalars"]) == 2 * 4  # value, ci_low, ci_high, stderr per task
    # text summaries are stored as tensors by tensorboardX
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert run_with_gate.run_id in config_text and "smol-135m" in config_text and '"seed": 3' in config_text
    gate_text = acc.Tensors("gate/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "verdict: **fail**" in gate_text and "min-acc/arith" in gate_text
    # provenance records where it went
    published = workspace.get_run(run_with_gate.run_id).provenance.published
    assert published[-1]["sink"] == "tensorboard" and published[-1]["target"] == str(tmp_path / "tb")


def test_missing_log_dir_is_a_clear_error(workspace: Workspace, run_with_gate: Run) -> None:
    from evalkeeper.core.errors import ConfigError

    with pytest.raises(ConfigError, match="option 'log_dir': Field required"):
        publish_run(workspace, run_with_gate.run_id, [Destination(sink="tensorboard", origin="--to tensorboard")])
