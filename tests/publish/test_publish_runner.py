"""Retries with backoff, isolation between sinks, provenance records and the CLI's exit code and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import (
    BaseSink,
    Destination,
    PublishContext,
    PublishResult,
    SinkInfo,
    SinkOptions,
    TransientSinkError,
    discover_sinks,
    is_transient,
    publish_run,
)
from evalkeeper.publish.runner import backoff_delays
from evalkeeper.store import Workspace
from helpers import run_cli


class ScriptOptions(SinkOptions):
    script: list[str]  # one outcome per attempt: "ok", "transient", "fatal"


class ScriptedSink(BaseSink):
    """Fails or succeeds per attempt as scripted; records the contexts it saw."""

    name: ClassVar[str] = "scripted"
    Options: ClassVar[type[ScriptOptions]] = ScriptOptions
    calls: ClassVar[list[str]] = []
    options: ScriptOptions

    def publish(self, ctx: PublishContext) -> PublishResult:
        step = self.options.script.pop(0) if len(self.options.script) > 1 else self.options.script[0]
        ScriptedSink.calls.append(step)
        if step == "transient":
            raise TransientSinkError("server busy")
        if step == "fatal":
            raise ValueError("bad request from scripted sink")
        return PublishResult(url=f"scripted://{ctx.run_id}", ids={"n_metrics": str(len(ctx.metrics))})


@pytest.fixture()
def sinks() -> dict[str, SinkInfo]:
    ScriptedSink.calls = []
    found = discover_sinks()
    found["scripted"] = SinkInfo(name="scripted", value="tests:ScriptedSink", distribution=None, version=None,
                                 cls=ScriptedSink)
    return found


def _dest(*script: str) -> Destination:
    return Destination(sink="scripted", options={"script": list(script)}, origin="test")


def test_transient_failures_are_retried_with_exponential_backoff(workspace: Workspace, run_with_gate: Run,
                                                                 sinks: dict[str, SinkInfo]) -> None:
    delays: list[float] = []
    report = publish_run(workspace, run_with_gate.run_id, [_dest("transient", "transient", "ok")], retries=3,
                         backoff=0.5, sinks=sinks, sleep=delays.append)
    assert report.ok and report.outcomes[0].attempts == 3 and delays == [0.5, 1.0]
    assert report.outcomes[0].result is not None and report.outcomes[0].result.ids == {"n_metrics": "2"}


def test_retries_are_bounded_and_fatal_errors_not_retried(workspace: Workspace, run_with_gate: Run,
                                                          sinks: dict[str, SinkInfo]) -> None:
    delays: list[float] = []
    report = publish_run(workspace, run_with_gate.run_id, [_dest("transient"), _dest("fatal"), _dest("ok")],
                         retries=2, backoff=1.0, sinks=sinks, sleep=delays.append)
    busy, fatal, ok = report.outcomes
    assert not busy.ok and busy.attempts == 3 and "server busy" in (busy.error or "")
    assert not fatal.ok and fatal.attempts == 1 and fatal.error == "ValueError: bad request from scripted sink"
    assert ok.ok  # a failing sink does not stop the next one
    assert delays == [1.0, 2.0] and ScriptedSink.calls == ["transient"] * 3 + ["fatal", "ok"]
    published = workspace.get_run(run_with_gate.run_id).provenance.published
    assert len(published) == 1 and published[0]["url"] == f"scripted://{run_with_gate.run_id}"
    assert published[0]["at"].startswith("20")
    assert report.to_dict()["ok"] is False


def test_transient_classification() -> None:
    class Resp:
        def __init__(self, code: int) -> None:
            self.status_code = code

    class HTTPError(Exception):
        def __init__(self, code: int) -> None:
            self.response = Resp(code)

    assert is_transient(TransientSinkError("x")) and is_transient(TimeoutError()) and is_transient(ConnectionError())
    assert is_transient(httpx.ConnectError("refused")) and is_transient(httpx.ReadTimeout("slow"))
    assert is_transient(HTTPError(503)) and is_transient(HTTPError(429))
    assert not is_transient(HTTPError(404)) and not is_transient(HTTPError(401)) and not is_transient(ValueError())
    assert backoff_delays(6, 1.0, cap=10.0) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_cli_exit_1_with_per_sink_summary_when_one_sink_fails(workspace: Workspace, run_with_gate: Run,
                                                               tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    code, out, err = run_cli("publish", run_with_gate.run_id[:14], "--to", f"tensorboard:{tb}",
                             "--to", "webhook:http://10.9.8.7/hook", "--backoff", "0")
    assert code == 1, err
    assert "tensorboard" in out and "ok" in out and "FAILED" in out and "private" in out
    assert list((tb / run_with_gate.run_id).glob("events.out.tfevents.*"))  # the good sink still published
    code, out, _ = run_cli("publish", run_with_gate.run_id, "--to", f"tensorboard:{tb}", "--json")
    assert code == 0 and json.loads(out)["sinks"][0]["ok"] is True


def test_cli_user_errors_exit_2_before_anything_is_published(workspace: Workspace, run_with_gate: Run,
                                                            tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    rid = run_with_gate.run_id
    cases: list[tuple[tuple[str, ...], str]] = [
        (("--to", f"tensorboard:{tb}", "--to", "nosuch"), "unknown sink 'nosuch'"),
        (("--to", f"tensorboard:{tb}", "--to", "tensorboard"), "option 'log_dir': Field required"),
        (("--to", f"tensorboard:{tb}", "-o", "hf.private=false"), "'hf' is not among the destinations"),
        (("--to", f"tensorboard:{tb}", "-o", "tensorboard.step=abc"), "option 'step'"),
        (("--to", f"tensorboard:{tb}", "-o", "nodot"), "bad option override"),
        ((), "nothing to publish to"),
        (("--to", f"tensorboard:{tb}", "--report", str(tmp_path / "missing.html")), "file not found"),
    ]
    for args, message in cases:
        code, _, err = run_cli("publish", rid, *args)
        assert code == 2 and message in err, (args, err)
    code, _, err = run_cli("publish", "no-such-run", "--to", f"tensorboard:{tb}")
    assert code == 2 and "no run or baseline" in err
    assert not tb.exists()
    assert workspace.get_run(rid).provenance.published == []


def test_report_and_bundle_files_are_found_in_run_dir(workspace: Workspace, run_with_gate: Run,
                                                      sinks: dict[str, SinkInfo], tmp_path: Path) -> None:
    from evalkeeper.publish import build_context

    run_dir = workspace.run_dir(run_with_gate.run_id)
    (run_dir / "run.ekb").write_bytes(b"b")
    (run_dir / "report.html").write_text("<html></html>")
    (run_dir / "notes.txt").write_text("not a report")
    extra = tmp_path / "extra.pdf"
    extra.write_bytes(b"%PDF")
    ctx = build_context(workspace, run_with_gate.run_id, reports=[extra])
    assert [p.name for p in ctx.report_files] == ["report.html", "report.md", "extra.pdf"]
    assert [p.name for p in ctx.bundle_files] == ["run.ekb"]
    assert ctx.sample_files == workspace.sample_paths(run_with_gate.run_id) and ctx.sample_files
    assert ctx.gate is not None and ctx.gate.verdict == "fail" and len(ctx.gate_decisions) == 2
    headline: list[Any] = ctx.headline_metrics()
    assert [(m.task, m.metric) for m in headline] == [("arith", "acc"), ("mc", "acc")]
    results = ctx.results
    assert results["schema"] == "evalkeeper.results" and results["gate"]["verdict"] == "fail"
    assert results["gate"]["failed"] == ["min-acc/arith"] and results["gate"]["policy_name"] == "release"
    assert "verdicts" not in results["gate"]
    assert "environment" not in results and "published" not in json.dumps(results)
    assert ctx.samples_table(limit=7).num_rows == 7
    # a capped preview is shared fairly; a task with fewer rows leaves its share to the others
    assert ctx.sample_preview(9).column("task").to_pylist() == ["arith"] * 5 + ["mc"] * 4
    assert ctx.sample_preview(70).column("task").to_pylist().count("mc") == 35
    assert ctx.sample_preview(1000).num_rows == 80


def test_dry_run_validates_and_sends_nothing(workspace: Workspace, run_with_gate: Run, tmp_path: Path,
                                            receiver: tuple[str, Any, dict[str, Any]]) -> None:
    base, rec, _ = receiver
    tb = tmp_path / "tb"
    code, out, err = run_cli("publish", run_with_gate.run_id, "--to", f"tensorboard:{tb}", "--to",
                             f"webhook:{base}/hook", "-o", "webhook.allow_private=true", "--dry-run", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["dry_run"] and [s["sink"] for s in result["sinks"]] == ["tensorboard", "webhook"]
    assert all(s["attempts"] == 0 for s in result["sinks"]) and result["sinks"][1]["target"] == f"{base}/***"
    assert result["payload"]["metrics"] == 2 and result["payload"]["gate"] == "fail"
    assert result["payload"]["reports"][0].endswith("report.md")
    assert not tb.exists() and rec.requests == []
    assert workspace.get_run(run_with_gate.run_id).provenance.published == []
    code, out, err = run_cli("publish", run_with_gate.run_id, "--to", "tensorboard", "--dry-run")
    assert code == 2 and "log_dir" in err  # a dry run still validates options
