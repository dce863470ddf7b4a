"""Publish one run to several destinations: validate all first, retry transient failures with backoff,
keep going when one sink fails, and record what was published in the run's provenance."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkeeper.core.errors import ConfigError, EvalkeeperError
from evalkeeper.core.records import utcnow
from evalkeeper.publish.base import PublishContext, PublishResult, SinkError, TransientSinkError
from evalkeeper.publish.config import Destination, build_sink
from evalkeeper.publish.redact import redact, redaction_active, register_secrets
from evalkeeper.publish.registry import SinkInfo, discover_sinks
from evalkeeper.publish.urlcheck import OutboundURLRefused

if TYPE_CHECKING:
    from evalkeeper.store import Workspace

log = logging.getLogger("evalkeeper.publish")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
REPORT_SUFFIXES = (".html", ".md", ".pdf", ".json")
BUNDLE_SUFFIXES = (".ekb",)


@dataclass
class SinkOutcome:
    """How one destination went: the result or the (redacted) error, and how many attempts it took."""

    sink: str
    target: str
    ok: bool
    attempts: int
    seconds: float
    result: PublishResult | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sink": self.sink, "target": self.target, "ok": self.ok, "attempts": self.attempts,
                             "seconds": round(self.seconds, 3)}
        if self.result is not None:
            d.update(url=self.result.url, ids=self.result.ids, files=self.result.files)
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class PublishReport:
    run_id: str
    outcomes: list[SinkOutcome] = field(default_factory=list)
    dry_run: bool = False
    payload: dict[str, Any] = field(default_factory=dict)  # what is sent: file names, counts

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "ok": self.ok, "dry_run": self.dry_run, "payload": self.payload,
                "sinks": [o.to_dict() for o in self.outcomes]}


def _status_code(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int):
                return value
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: explicit transient errors, timeouts, connection failures, 408/429/5xx responses."""
    if isinstance(exc, TransientSinkError):
        return True
    if isinstance(exc, (SinkError, OutboundURLRefused)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import httpcore
        import httpx
        if isinstance(exc, (httpx.TransportError, httpcore.NetworkError, httpcore.TimeoutException)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    code = _status_code(exc)
    return code in TRANSIENT_STATUS


def backoff_delays(retries: int, base: float, cap: float = 30.0) -> list[float]:
    """Delays before each retry: base, 2*base, 4*base, ... capped."""
    return [min(cap, base * 2**i) for i in range(retries)]


def run_dir_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """Report and bundle files that other commands left in the run's artifact folder."""
    if not run_dir.is_dir():
        return [], []
    reports, bundles = [], []
    for p in sorted(run_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix in BUNDLE_SUFFIXES:
            bundles.append(p)
        elif p.suffix in REPORT_SUFFIXES and p.name.startswith("report"):
            reports.append(p)
    return reports, bundles


def build_context(ws: Workspace, run_ref: str, *, reports: list[Path] | None = None,
                  bundles: list[Path] | None = None, link: str | None = None) -> PublishContext:
    """Gather a run's metrics, samples, gate decisions, and report/bundle files into a PublishContext."""
    run = ws.get_run(run_ref)
    found_reports, found_bundles = run_dir_files(ws.run_dir(run.run_id))
    return PublishContext(
        run=run,
        metrics=ws.get_metrics(run.run_id),
        sample_files=ws.sample_paths(run.run_id),
        report_files=list(dict.fromkeys([*found_reports, *(reports or [])])),
        bundle_files=list(dict.fromkeys([*found_bundles, *(bundles or [])])),
        gate_decisions=ws.list_decisions(subject=run.run_id, kind="gate"),
        link=link,
        workspace=ws,
    )


def _target(sink: Any) -> str:
    """The sink's own secret-free description of its target; a plugin's bug here must not abort publishing."""
    try:
        return redact(sink.target()) if hasattr(sink, "target") else ""
    except Exception as exc:  # noqa: BLE001
        return redact(f"? ({type(exc).__name__}: {exc})")


def _publish_one(sink: Any, ctx: PublishContext, retries: int, backoff: float,
                 sleep: Callable[[float], None]) -> SinkOutcome:
    name = getattr(sink, "name", type(sink).__name__)
    target = _target(sink)
    delays = backoff_delays(retries, backoff)
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = sink.publish(ctx)
        except Exception as exc:  # noqa: BLE001 - one sink failing must not stop the others
            message = redact(exc.render() if isinstance(exc, EvalkeeperError) else f"{type(exc).__name__}: {exc}")
            if is_transient(exc) and attempt <= len(delays):
                delay = delays[attempt - 1]
                log.warning("sink %s: attempt %d failed (%s); retrying in %.1fs", name, attempt, message, delay)
                sleep(delay)
                continue
            # info, not error: the failure is in the returned report (and the CLI's table) already
            log.info("sink %s failed after %d attempt(s): %s", name, attempt, message)
            return SinkOutcome(name, target, False, attempt, time.monotonic() - start, error=message)
        if not isinstance(result, PublishResult):
            return SinkOutcome(name, target, False, attempt, time.monotonic() - start,
                               error=f"sink returned {type(result).__name__}, not PublishResult")
        result.url = redact(result.url) if result.url else result.url
        result.ids = {k: redact(v) for k, v in result.ids.items()}
        log.info("sink %s published %s", name, result.url or "")
        return SinkOutcome(name, target, True, attempt, time.monotonic() - start, result=result)


def publish_run(ws: Workspace, run_ref: str, destinations: list[Destination], *, retries: int = 3,
                backoff: float = 1.0, link: str | None = None, reports: list[Path] | None = None,
                bundles: list[Path] | None = None, sinks: dict[str, SinkInfo] | None = None,
                sleep: Callable[[float], None] = time.sleep, dry_run: bool = False) -> PublishReport:
    """Publish `run_ref` to every destination; returns per-sink outcomes (never raises for a sink failure).

    Bad destinations (unknown sink, invalid options) raise ConfigError before anything is sent.
    Successful publications are appended to `run.provenance.published` and saved. `dry_run` stops
    after validation and gathering (nothing is sent or recorded): a cheap check of a CI config.
    """
    if not destinations:
        raise ConfigError("nothing to publish to", hint="give --to NAME[:ARG] or --config evalkeeper.yaml")
    sinks = discover_sinks() if sinks is None else sinks
    built = [build_sink(d, sinks) for d in destinations]  # all validated before any is run
    for sink in built:
        register_secrets(sink.secrets() if hasattr(sink, "secrets") else [])
    ctx = build_context(ws, run_ref, reports=reports, bundles=bundles, link=link)
    report = PublishReport(run_id=ctx.run_id, dry_run=dry_run, payload={
        "metrics": len(ctx.metrics), "sample_files": [p.name for p in ctx.sample_files],
        "reports": [str(p) for p in ctx.report_files], "bundles": [str(p) for p in ctx.bundle_files],
        "gate": ctx.gate.verdict if ctx.gate else None})
    if dry_run:
        report.outcomes = [SinkOutcome(getattr(s, "name", type(s).__name__), _target(s), True, 0, 0.0)
                           for s in built]
        return report
    with tempfile.TemporaryDirectory(prefix="evalkeeper-publish-") as staging, redaction_active():
        ctx.staging_dir = Path(staging)
        for sink in built:
            report.outcomes.append(_publish_one(sink, ctx, retries, backoff, sleep))
    _record(ws, ctx.run_id, report)
    return report


def _record(ws: Workspace, run_id: str, report: PublishReport) -> None:
    entries = []
    for o in report.outcomes:
        if o.ok and o.result is not None:
            entries.append({"sink": o.sink, "target": o.target, "url": o.result.url, "ids": o.result.ids,
                            "at": utcnow().isoformat()})
    if not entries:
        return
    run = ws.get_run(run_id)  # re-read: another command may have changed the run meanwhile
    provenance = run.provenance.model_copy(update={"published": [*run.provenance.published, *entries]})
    ws.save_run(run.model_copy(update={"provenance": provenance}))
