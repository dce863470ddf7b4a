"""Webhook sink against a local receiver: Slack-compatible payload, redirects re-checked, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from evalkeeper.core.records import Run
from evalkeeper.publish import Destination, publish_run
from evalkeeper.store import Workspace

from .conftest import Recorder, read_json

NO_WAIT = {"sleep": lambda s: None}


def _hook(url: str, **options: Any) -> Destination:
    return Destination(sink="webhook", options={"url": url, **options}, origin="test")


def test_posts_slack_payload_with_metrics_gate_and_link(workspace: Workspace, run_with_gate: Run,
                                                        receiver: tuple[str, Recorder, dict[str, Any]]) -> None:
    base, rec, _ = receiver
    secret_path = "/services/T0001/B0002/XyZsecretTOKEN123"
    report = publish_run(workspace, run_with_gate.run_id,
                         [_hook(base + secret_path, allow_private=True)], link="https://dash.example/run/1",
                         **NO_WAIT)
    assert report.ok, report.to_dict()
    assert len(rec.requests) == 1 and rec.requests[0]["path"] == secret_path
    assert rec.requests[0]["headers"]["Content-Type"] == "application/json"
    msg = read_json(rec.requests[0]["body"])
    assert "smol-135m" in msg["text"] and "gate FAIL" in msg["text"]
    text = "\n".join(str(b) for b in msg["blocks"])
    metrics = {m.task: m for m in workspace.get_metrics(run_with_gate.run_id)}
    assert f"{metrics['arith'].value:.4g}" in text and f"{metrics['mc'].value:.4g}" in text
    assert f"{metrics['arith'].ci_low:.4g}" in text
    assert "Gate: FAIL (policy release): 1 of 3 rule checks failed - min-acc/arith" in text  # latest verdict
    assert "old-policy" not in text
    assert "<https://dash.example/run/1|Open run" in text
    assert msg["blocks"][0]["type"] == "header"
    # the published record keeps the host only, never the secret path
    published = workspace.get_run(run_with_gate.run_id).provenance.published
    assert published[0]["sink"] == "webhook" and published[0]["url"] == f"{base}/***"
    assert "XyZsecret" not in str(published)


def test_refuses_loopback_and_private_without_allow_private(workspace: Workspace, run_with_gate: Run,
                                                            receiver: tuple[str, Recorder, dict[str, Any]]) -> None:
    base, rec, _ = receiver
    dests = [_hook(base + "/a"), _hook("http://10.0.0.1/hook"), _hook("http://169.254.169.254/latest")]
    report = publish_run(workspace, run_with_gate.run_id, dests, **NO_WAIT)
    assert not report.ok and [o.ok for o in report.outcomes] == [False, False, False]
    assert "loopback" in (report.outcomes[0].error or "")
    assert "private" in (report.outcomes[1].error or "")
    assert "metadata" in (report.outcomes[2].error or "")
    assert all(o.attempts == 1 for o in report.outcomes)  # a refusal is not retried
    assert rec.requests == []


def test_redirect_is_followed_and_rechecked(workspace: Workspace, run_with_gate: Run,
                                            receiver: tuple[str, Recorder, dict[str, Any]]) -> None:
    base, rec, behaviour = receiver
    port = base.rsplit(":", 1)[1]
    behaviour["/moved"] = (308, {"Location": "/final"})
    behaviour["/to-other-loopback"] = (307, {"Location": f"http://127.0.0.2:{port}/final"})
    behaviour["/to-private"] = (302, {"Location": "http://10.1.2.3/x"})
    behaviour["/to-metadata"] = (301, {"Location": "http://169.254.169.254/latest/meta-data"})
    only_this_host = {"allowed_networks": ["127.0.0.1/32"]}
    report = publish_run(workspace, run_with_gate.run_id, [
        _hook(base + "/moved", **only_this_host),
        _hook(base + "/to-other-loopback", **only_this_host),
        _hook(base + "/to-private", **only_this_host),
        _hook(base + "/to-metadata", allow_private=True),
    ], **NO_WAIT)
    ok, other, private, metadata = report.outcomes
    assert ok.ok and ok.result is not None and ok.result.details["redirects"] == 1
    assert not other.ok and "127.0.0.2" in (other.error or "") and "loopback" in (other.error or "")
    assert not private.ok and "10.1.2.3" in (private.error or "")
    assert not metadata.ok and "metadata" in (metadata.error or "")
    paths = [r["path"] for r in rec.requests]
    # the redirect target got the same POST body; refused targets were never contacted
    assert paths.count("/final") == 1
    final = next(r for r in rec.requests if r["path"] == "/final")
    assert read_json(final["body"])["text"].startswith("evalkeeper: smol-135m")


def test_transient_status_is_retried_then_succeeds(workspace: Workspace, run_with_gate: Run,
                                                   receiver: tuple[str, Recorder, dict[str, Any]]) -> None:
    base, rec, behaviour = receiver
    behaviour["/flaky"] = [(503, {}), (429, {}), (200, {})]
    behaviour["/gone"] = (404, {})
    delays: list[float] = []
    report = publish_run(workspace, run_with_gate.run_id,
                         [_hook(base + "/flaky", allow_private=True), _hook(base + "/gone", allow_private=True)],
                         retries=3, backoff=0.5, sleep=delays.append)
    flaky, gone = report.outcomes
    assert flaky.ok and flaky.attempts == 3
    assert not gone.ok and gone.attempts == 1 and "HTTP 404" in (gone.error or "")
    assert delays == [0.5, 1.0]
    assert [r["path"] for r in rec.requests].count("/flaky") == 3


def test_invalid_options_name_the_option(workspace: Workspace, run_with_gate: Run) -> None:
    from evalkeeper.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        publish_run(workspace, run_with_gate.run_id,
                    [_hook("https://hooks.example/secret-part-xyz", allowed_networks=["10.0.0.0/33"],
                           timeout=-1, colour="red")])
    msg = str(info.value)
    assert "'allowed_networks'" in msg and "'timeout'" in msg and "'colour': unknown option" in msg
    assert "secret-part-xyz" not in msg
    with pytest.raises(ConfigError, match="'url'"):
        publish_run(workspace, run_with_gate.run_id, [_hook("ftp://x/secret-part-xyz")])
