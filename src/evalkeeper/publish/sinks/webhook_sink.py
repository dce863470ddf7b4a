"""Generic webhook: a Slack-compatible JSON summary (text + blocks) POSTed to a URL.

The URL's path is treated as a secret (Slack/Teams/Discord webhook URLs are bearer credentials), and
the target is checked against link-local, loopback and private ranges before anything is sent.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from evalkeeper.publish.base import (
    BaseSink,
    PublishContext,
    PublishResult,
    SinkError,
    SinkOptions,
    TransientSinkError,
    gate_summary,
)
from evalkeeper.publish.redact import display_url, url_secret_parts
from evalkeeper.publish.urlcheck import post_json_safely

GATE_ICONS = {"pass": ":white_check_mark:", "fail": ":x:", "error": ":warning:"}
MAX_FIELDS = 10  # Slack allows at most 10 fields in a section block


class WebhookOptions(SinkOptions):
    url: str = Field(description="webhook URL (its path is treated as a secret)")
    allow_private: bool = Field(False, description="allow loopback/private/link-local targets (internal hooks)")
    allowed_networks: list[str] = Field(default_factory=list, description="CIDRs allowed even if private "
                                        "(narrower than allow_private), e.g. [10.20.0.0/16]")
    timeout: float = Field(10.0, gt=0, description="seconds per request")
    max_redirects: int = Field(5, ge=0, le=20, description="redirects followed (each one re-checked)")
    link: str | None = Field(None, description="URL to the run shown in the message (default: --link)")
    max_metrics: int = Field(20, ge=1, description="headline metrics shown at most")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return v

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network in CIDR form (e.g. 10.20.0.0/16)") from None
        return v


def _esc(text: str) -> str:
    """Slack mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def build_message(ctx: PublishContext, link: str | None = None, max_metrics: int = 20) -> dict[str, Any]:
    """The Slack-compatible payload: a plain `text` fallback plus Block Kit `blocks`."""
    model = ctx.run.model.name
    headline = ctx.headline_metrics()[:max_metrics]
    gate = ctx.gate
    gate_text = f"gate {gate.verdict.upper()}" if gate else "no gate evaluated"
    tasks = ", ".join(t.name for t in ctx.run.tasks) or "no tasks"
    text = f"evalkeeper: {model} evaluated on {tasks} ({gate_text}) - run {ctx.run_id}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Evaluation: {model}"[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(
            f"run {ctx.run_id} | backend {ctx.run.model.backend} | {ctx.run.n_samples} samples")}]},
    ]
    fields = []
    for m in headline:
        ci = f" [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]" if m.ci_low is not None and m.ci_high is not None else ""
        fields.append({"type": "mrkdwn", "text": f"*{_esc(m.task)} / {_esc(m.metric)}*\n{_fmt(m.value)}{ci}"})
    for i in range(0, len(fields), MAX_FIELDS):
        blocks.append({"type": "section", "fields": fields[i:i + MAX_FIELDS]})
    if gate is not None:
        icon = GATE_ICONS.get(gate.verdict, ":grey_question:")
        line = f"{icon} *Gate: {_esc(gate_summary(gate))[:2900]}*"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line}})
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{_esc(link)}|Open run {ctx.run_id}>"}})
    return {"text": text, "blocks": blocks}


class WebhookSink(BaseSink):
    name: ClassVar[str] = "webhook"
    Options: ClassVar[type[WebhookOptions]] = WebhookOptions
    target_option: ClassVar[str | None] = "url"
    description: ClassVar[str] = "Slack-compatible JSON summary POSTed to a URL (private targets refused)"
    options: WebhookOptions

    def secrets(self) -> list[str]:
        return [*super().secrets(), *url_secret_parts(self.options.url)]

    def target(self) -> str:
        return display_url(self.options.url)

    def publish(self, ctx: PublishContext) -> PublishResult:
        import httpcore

        payload = build_message(ctx, self.options.link or ctx.link, self.options.max_metrics)
        shown = display_url(self.options.url)
        try:
            resp = post_json_safely(self.options.url, payload, allow_private=self.options.allow_private,
                                    allowed_networks=self.options.allowed_networks,
                                    timeout=self.options.timeout, max_redirects=self.options.max_redirects)
        except (httpcore.TimeoutException, httpcore.NetworkError) as exc:
            raise TransientSinkError(f"webhook {shown}: {type(exc).__name__}") from None
        except httpcore.ProtocolError as exc:
            raise TransientSinkError(f"webhook {shown}: protocol error {type(exc).__name__}") from None
        if resp.status in (408, 425, 429) or resp.status >= 500:
            raise TransientSinkError(f"webhook {shown} answered HTTP {resp.status}")
        if resp.status >= 300:
            raise SinkError(f"webhook {shown} answered HTTP {resp.status}: "
                            f"{resp.body[:200].decode('utf-8', 'replace')}")
        return PublishResult(url=shown, details={"status": resp.status, "redirects": resp.hops,
                                                 "blocks": len(payload["blocks"])})
