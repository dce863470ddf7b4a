"""MLflow: one MLflow run per evalkeeper run, with params, metrics (value and CI bounds), tags, artifacts.

Publishing the same run again updates the MLflow run tagged with its id instead of creating a
duplicate, so a retry after a partial failure is safe.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from evalkeeper.publish.base import (
    BaseSink,
    PublishContext,
    PublishResult,
    SinkError,
    SinkOptions,
    TransientSinkError,
)
from evalkeeper.publish.redact import redact

RUN_ID_TAG = "evalkeeper.run_id"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_PARAM_LEN = 500


class MlflowOptions(SinkOptions):
    tracking_uri: str | None = Field(None, description="tracking server URI (default: $MLFLOW_TRACKING_URI)")
    experiment: str = Field("evalkeeper", description="experiment name (created if missing)")
    run_name: str | None = Field(None, description="MLflow run name (default: the evalkeeper run id)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on the MLflow run")
    artifacts: bool = Field(True, description="upload results JSON, reports and bundles as artifacts")
    http_retries: int = Field(2, ge=0, description="MLflow client's own HTTP retries per request")
    timeout: float = Field(60.0, gt=0, description="seconds per HTTP request")


def metric_key(*parts: str) -> str:
    """MLflow metric names allow letters, digits, `_ - . / space`; anything else becomes `_`."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]+", "_", p) for p in parts)


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."


def run_params(ctx: PublishContext) -> dict[str, str]:
    """Model, tasks, seeds and versions, flattened to MLflow params."""
    run = ctx.run
    params: dict[str, Any] = {"model.name": run.model.name, "model.backend": run.model.backend,
                              "tasks": ",".join(t.name for t in run.tasks), "seed": run.seed,
                              "producer": run.provenance.producer,
                              "producer_version": run.provenance.producer_version}
    if run.model.revision:
        params["model.revision"] = run.model.revision
    if run.model.digest:
        params["model.digest"] = run.model.digest
    for key, value in sorted(run.model.generation.items()):
        params[f"generation.{key}"] = value
    for t in run.tasks:
        for attr in ("version", "seed", "n_shot", "dataset_fingerprint", "prompt_fingerprint"):
            value = getattr(t, attr)
            if value is not None:
                params[f"task.{t.name}.{attr}"] = value
    return {metric_key(k): _param(v) for k, v in params.items() if v is not None}


def run_metrics(ctx: PublishContext) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in ctx.metrics:
        base = metric_key(m.task, m.metric)
        out[base] = m.value
        for attr in ("ci_low", "ci_high", "stderr"):
            value = getattr(m, attr)
            if value is not None:
                out[f"{base}/{attr}"] = float(value)
        if m.n is not None:
            out[f"{base}/n"] = float(m.n)
    return out


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set MLflow client environment knobs for the duration of a publish, unless the user set them."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class MlflowSink(BaseSink):
    name: ClassVar[str] = "mlflow"
    Options: ClassVar[type[MlflowOptions]] = MlflowOptions
    target_option: ClassVar[str | None] = "tracking_uri"
    description: ClassVar[str] = "MLflow tracking server: params, metrics with CIs, tags, artifacts"
    options: MlflowOptions

    def _uri(self) -> str:
        uri = self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise SinkError("no MLflow tracking URI", hint="use --to mlflow:URI, option tracking_uri, "
                                                           "or set MLFLOW_TRACKING_URI")
        return uri

    def target(self) -> str:
        return redact(self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "$MLFLOW_TRACKING_URI")

    def secrets(self) -> list[str]:
        return [*super().secrets(), os.environ.get("MLFLOW_TRACKING_TOKEN", ""),
                os.environ.get("MLFLOW_TRACKING_PASSWORD", "")]

    def publish(self, ctx: PublishContext) -> PublishResult:
        uri = self._uri()
        knobs = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.options.http_retries),
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(self.options.timeout))}
        from mlflow.exceptions import MlflowException

        with _env(knobs):
            try:
                return self._publish(ctx, uri)
            except MlflowException as exc:
                # connection failures arrive as MlflowException with HTTP status 500; 429/5xx are worth a retry
                code = exc.get_http_status_code()  # type: ignore[no-untyped-call]
                text = str(exc.message).split(" (Caused by", 1)[0][:500]
                if code in TRANSIENT_STATUS:
                    raise TransientSinkError(f"MLflow at {redact(uri)}: {text}") from None
                raise SinkError(f"MLflow at {redact(uri)}: {text}") from None

    def _publish(self, ctx: PublishContext, uri: str) -> PublishResult:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(self.options.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.options.experiment)
        existing = client.search_runs([exp_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{ctx.run_id}'",
                                      max_results=1)
        tags = {RUN_ID_TAG: ctx.run_id, "evalkeeper.model": ctx.run.model.name,
                "evalkeeper.status": ctx.run.status, **{f"evalkeeper.tag.{t}": "1" for t in ctx.run.tags},
                **{f"evalkeeper.label.{k}": v for k, v in ctx.run.labels.items()}, **self.options.tags}
        if ctx.gate is not None:
            tags["evalkeeper.gate"] = ctx.gate.verdict
        if existing:
            mlrun = existing[0]
            client.update_run(mlrun.info.run_id, status="RUNNING")
        else:
            mlrun = client.create_run(exp_id, run_name=self.options.run_name or ctx.run_id,
                                      start_time=int(ctx.run.created_at.timestamp() * 1000))
        rid = mlrun.info.run_id
        now = int(time.time() * 1000)
        params = run_params(ctx)
        old_params = dict(mlrun.data.params) if existing else {}
        new_params = [Param(k, v) for k, v in params.items() if k not in old_params]  # params are immutable
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(ctx).items()]
        tag_list = [RunTag(k, _param(v)) for k, v in tags.items()]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit is 1000 metrics
            client.log_batch(rid, metrics=metrics[i:i + 1000], params=new_params if i == 0 else [],
                             tags=tag_list if i == 0 else [])
        files: list[str] = []
        if self.options.artifacts:
            results = ctx.write_results_json()
            client.log_artifact(rid, str(results), "results")
            files.append(f"results/{results.name}")
            for group, paths in (("reports", ctx.report_files), ("bundles", ctx.bundle_files)):
                for p in paths:
                    client.log_artifact(rid, str(Path(p)), group)
                    files.append(f"{group}/{Path(p).name}")
        client.set_terminated(rid, status="FINISHED")
        base = uri.rstrip("/")
        url = f"{base}/#/experiments/{exp_id}/runs/{rid}" if base.startswith("http") else f"{base} run {rid}"
        return PublishResult(url=url, ids={"experiment_id": str(exp_id), "run_id": rid}, files=files,
                             details={"metrics": len(metrics), "params": len(params), "updated": bool(existing)})
