"""Secrets never reach logs, error messages, console output, the run record or published results."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from evalkeeper.core.records import Run
from evalkeeper.publish import (
    BaseSink,
    Destination,
    PublishContext,
    PublishResult,
    SinkInfo,
    SinkOptions,
    discover_sinks,
    display_url,
    publish_run,
    redact,
    register_secret,
)
from evalkeeper.store import Workspace
from helpers import run_cli

from .conftest import Recorder

TOKEN = "tok-7f3a9c2e5b1d4f60"


class LeakyOptions(SinkOptions):
    token: SecretStr


class LeakySink(BaseSink):
    """Does everything a careless library might: logs, prints and raises with its token."""

    name: ClassVar[str] = "leaky"
    Options: ClassVar[type[LeakyOptions]] = LeakyOptions
    options: LeakyOptions

    def publish(self, ctx: PublishContext) -> PublishResult:
        secret = self.options.token.get_secret_value()
        log = logging.getLogger("some.third.party")
        log.info("connecting with token=%s", secret)
        log.debug("headers: %s", {"Authorization": f"Bearer {secret}"})
        print(f"using {secret}")  # noqa: T201
        try:
            raise RuntimeError(f"inner failure with {secret}")
        except RuntimeError:
            log.exception("request failed")
        raise PermissionError(f"401 for token {secret}")


def test_secret_option_is_masked_in_logs_output_errors_and_records(
        workspace: Workspace, run_with_gate: Run, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    sinks = discover_sinks()
    sinks["leaky"] = SinkInfo(name="leaky", value="tests:LeakySink", distribution=None, version=None, cls=LeakySink)
    caplog.set_level(logging.DEBUG)
    report = publish_run(workspace, run_with_gate.run_id,
                         [Destination(sink="leaky", options={"token": TOKEN}, origin="test")],
                         sinks=sinks, sleep=lambda s: None)
    outcome = report.outcomes[0]
    assert not outcome.ok and outcome.error == "PermissionError: 401 for token ***"
    captured = capsys.readouterr()
    assert "using ***" in captured.out
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "token=***" in text and "inner failure with ***" in text
    everything = text + captured.out + captured.err + str(report.to_dict()) + workspace.get_run(
        run_with_gate.run_id).model_dump_json()
    assert TOKEN not in everything


def test_webhook_secret_path_masked_through_the_cli(workspace: Workspace, run_with_gate: Run,
                                                    receiver: tuple[str, Recorder, dict[str, Any]],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    base, rec, behaviour = receiver
    secret = "/services/T0/B0/s3cr3tW3bh00kPart"
    behaviour[secret] = (500, {})
    caplog.set_level(logging.DEBUG)
    code, out, err = run_cli("publish", run_with_gate.run_id, "--to", f"webhook:{base}{secret}",
                             "-o", "webhook.allow_private=true", "--retries", "1", "--backoff", "0")
    assert code == 1 and "FAILED" in out
    code1, out1, err1 = run_cli("publish", run_with_gate.run_id, "--to", f"webhook:{base}{secret}",
                                "-o", "webhook.allow_private=true", "--retries", "0", "--json")
    sink = json.loads(out1)["sinks"][0]
    assert code1 == 1 and sink["target"] == f"{base}/***" and sink["error"] == f"webhook {base}/*** answered HTTP 500"
    code2, out2, err2 = run_cli("publish", run_with_gate.run_id, "--to", f"webhook:http://10.0.0.1{secret}",
                                "--json")
    assert code2 == 1 and "private" in out2
    code3, out3, err3 = run_cli("publish", run_with_gate.run_id, "--to", f"webhook:ftp://h{secret}")
    assert code3 == 2
    assert len(rec.requests) == 3  # first attempt + one retry, then one attempt
    for text in (out, err, out1, err1, out2, err2, out3, err3, caplog.text):
        assert "s3cr3tW3bh00kPart" not in text


def test_redact_masks_registered_values_and_known_token_shapes() -> None:
    register_secret("registered-secret-value")
    register_secret("abc")  # too short to mask safely: ignored
    text = ("x registered-secret-value y hf_abcdefghijklmnopqrstuvwxyz123 Authorization: Bearer abc.def-ghi_jkl "
            "https://user:pa55word@host.example/x https://hooks.slack.com/services/T/B/C abc")
    out = redact(text)
    for leaked in ("registered-secret-value", "hf_abcdefghij", "abc.def-ghi_jkl", "pa55word", "services/T/B/C"):
        assert leaked not in out
    assert out.endswith(" abc") and "host.example" in out
    assert display_url("https://hooks.example:8443/T/B/secret?x=1") == "https://hooks.example:8443/***"
    assert display_url("https://hooks.example") == "https://hooks.example"
