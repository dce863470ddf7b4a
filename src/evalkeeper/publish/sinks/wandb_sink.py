"""Weights & Biases: a W&B run with the config, summary metrics (with CIs), a capped samples table and the
report/results as artifacts. Works online (a W&B server) or offline (a run folder to `wandb sync` later)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from evalkeeper.publish.base import BaseSink, PublishContext, PublishResult, SinkError, SinkOptions

TABLE_COLUMNS: list[str | int] = ["task", "sample_id", "epoch", "input", "target", "prediction", "score"]
MAX_CELL = 2000  # characters kept per text cell


class WandbOptions(SinkOptions):
    project: str = Field("evalkeeper", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (user or team)")
    mode: Literal["online", "offline"] | None = Field(None, description="online or offline (default: $WANDB_MODE, "
                                                                         "else online)")
    dir: str | None = Field(None, description="where W&B writes run folders (default: $WANDB_DIR, else the "
                                              "workspace)")
    api_key: SecretStr | None = Field(None, description="API key (default: $WANDB_API_KEY or `wandb login`)")
    base_url: str | None = Field(None, description="W&B server URL (default: $WANDB_BASE_URL or wandb.ai)")
    run_name: str | None = Field(None, description="W&B run name (default: the evalkeeper run id)")
    max_rows: int = Field(1000, ge=0, description="samples in the table at most (0: no table)")
    tags: list[str] = Field(default_factory=list, description="extra W&B tags")


def summary_metrics(ctx: PublishContext) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in ctx.metrics:
        base = f"{m.task}/{m.metric}"
        out[base] = m.value
        for attr in ("ci_low", "ci_high", "stderr"):
            value = getattr(m, attr)
            if value is not None:
                out[f"{base}/{attr}"] = float(value)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_CELL:
        return value[:MAX_CELL] + "..."
    return value


def sample_rows(ctx: PublishContext, limit: int) -> list[list[Any]]:
    """Up to `limit` per-sample rows, shared across tasks (DuckDB over the run's Parquet)."""
    table = ctx.sample_preview(limit)
    cols = {name: table.column(name).to_pylist() for name in map(str, TABLE_COLUMNS) if name in table.column_names}
    n = table.num_rows
    return [[_cell(cols[c][i]) if c in cols else None for c in TABLE_COLUMNS] for i in range(n)]


class WandbSink(BaseSink):
    name: ClassVar[str] = "wandb"
    Options: ClassVar[type[WandbOptions]] = WandbOptions
    target_option: ClassVar[str | None] = "project"
    description: ClassVar[str] = "Weights & Biases run (online or offline): summary, samples table, artifacts"
    options: WandbOptions

    def secrets(self) -> list[str]:
        return [*super().secrets(), os.environ.get("WANDB_API_KEY", "")]

    def target(self) -> str:
        entity = f"{self.options.entity}/" if self.options.entity else ""
        return f"{entity}{self.options.project} ({self._mode()})"

    def _mode(self) -> Literal["online", "offline"]:
        mode = self.options.mode or os.environ.get("WANDB_MODE") or "online"
        if mode == "online":
            return "online"
        if mode == "offline":
            return "offline"
        raise SinkError(f"W&B mode {mode!r} is not supported", hint="use online or offline")

    def _dir(self, ctx: PublishContext) -> Path:
        if self.options.dir:
            return Path(self.options.dir).expanduser()
        if os.environ.get("WANDB_DIR"):
            return Path(os.environ["WANDB_DIR"])
        if ctx.workspace is not None:
            return ctx.workspace.home / "wandb"
        return Path.cwd()

    def publish(self, ctx: PublishContext) -> PublishResult:
        import wandb

        mode = self._mode()
        folder = self._dir(ctx)
        folder.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {"console": "off", "silent": True, "x_disable_stats": True,
                                    "x_disable_meta": True, "disable_git": True, "save_code": False}
        if self.options.api_key is not None:
            settings["api_key"] = self.options.api_key.get_secret_value()
        if self.options.base_url:
            settings["base_url"] = self.options.base_url
        config = {"evalkeeper_run_id": ctx.run_id, "model": ctx.run.model.model_dump(mode="json"),
                  "seed": ctx.run.seed, "tasks": {t.name: t.model_dump(mode="json", exclude={"config", "name"})
                                                  for t in ctx.run.tasks}}
        try:
            run = wandb.init(project=self.options.project, entity=self.options.entity, mode=mode, dir=str(folder),
                             name=self.options.run_name or ctx.run_id, config=config,
                             tags=[*ctx.run.tags, *self.options.tags][:64], job_type="evaluation",
                             reinit="create_new", settings=wandb.Settings(**settings))
        except wandb.errors.UsageError as exc:
            raise SinkError(f"W&B: {exc}", hint="for online mode set WANDB_API_KEY or run `wandb login`; "
                                                "or use -o wandb.mode=offline") from None
        try:
            summary: dict[str, Any] = dict(summary_metrics(ctx))
            if ctx.gate is not None:
                summary["gate"] = ctx.gate.verdict
            run.summary.update(summary)
            n_rows = 0
            if self.options.max_rows > 0 and ctx.sample_files:
                rows = sample_rows(ctx, self.options.max_rows)
                n_rows = len(rows)
                run.log({"samples": wandb.Table(columns=TABLE_COLUMNS, data=rows)})
            files = []
            art = wandb.Artifact(f"evalkeeper-{ctx.run_id}", type="evaluation",
                                 metadata={"run_id": ctx.run_id, "model": ctx.run.model.name})
            results = ctx.write_results_json()
            art.add_file(str(results), name=f"results/{results.name}")
            files.append(f"results/{results.name}")
            for p in ctx.report_files:
                art.add_file(str(p), name=f"reports/{Path(p).name}")
                files.append(f"reports/{Path(p).name}")
            run.log_artifact(art)
            url = run.url
            run_id = run.id
            sync_dir = str(run.settings.sync_dir)
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()
        details: dict[str, Any] = {"mode": mode, "table_rows": n_rows, "summary_keys": len(summary)}
        if mode == "offline":
            details["sync"] = f"wandb sync {sync_dir}"
        return PublishResult(url=url or Path(sync_dir).resolve().as_uri(), ids={"wandb_run_id": run_id},
                             files=files, details=json.loads(json.dumps(details)))
