"""TensorBoard: one scalar per task/metric (and its CI bounds) plus the run's config as text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from evalkeeper.publish.base import BaseSink, PublishContext, PublishResult, SinkError, SinkOptions, gate_summary


class TensorBoardOptions(SinkOptions):
    log_dir: str = Field(description="folder for event files; each run gets a sub-folder named after it")
    run_name: str | None = Field(None, description="sub-folder name (default: the run id)")
    step: int = Field(0, description="global step the scalars are written at")


def scalar_tag(*parts: str) -> str:
    """TensorBoard tags are path-like; keep names readable but free of characters that break grouping."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.\-]+", "_", p) for p in parts)


class TensorBoardSink(BaseSink):
    name: ClassVar[str] = "tensorboard"
    Options: ClassVar[type[TensorBoardOptions]] = TensorBoardOptions
    target_option: ClassVar[str | None] = "log_dir"
    description: ClassVar[str] = "TensorBoard event files: scalars per task/metric, config as text"
    options: TensorBoardOptions

    def publish(self, ctx: PublishContext) -> PublishResult:
        from tensorboardX import SummaryWriter

        folder = Path(self.options.log_dir).expanduser() / (self.options.run_name or ctx.run_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create TensorBoard folder: {exc.strerror}", path=str(folder)) from None
        walltime = ctx.run.created_at.timestamp()
        step = self.options.step
        writer = SummaryWriter(logdir=str(folder))
        n = 0
        try:
            for m in ctx.metrics:
                writer.add_scalar(scalar_tag(m.task, m.metric), m.value, step, walltime=walltime)
                n += 1
                for bound in ("ci_low", "ci_high", "stderr"):
                    value = getattr(m, bound)
                    if value is not None:
                        writer.add_scalar(scalar_tag(m.task, m.metric, bound), value, step, walltime=walltime)
                        n += 1
            config = {"run_id": ctx.run_id, "model": ctx.run.model.model_dump(mode="json"), "seed": ctx.run.seed,
                      "tasks": [t.model_dump(mode="json", exclude={"config"}) for t in ctx.run.tasks],
                      "tags": ctx.run.tags}
            text = "```json\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```"
            writer.add_text("config", text, step, walltime=walltime)
            if ctx.gate is not None:
                writer.add_text("gate", f"verdict: **{ctx.gate.verdict}**\n\n{gate_summary(ctx.gate)}", step,
                                walltime=walltime)
        finally:
            writer.close()
        events = sorted(str(p) for p in folder.glob("events.out.tfevents.*"))
        return PublishResult(url=folder.resolve().as_uri(), files=events,
                             ids={"log_dir": str(folder)}, details={"scalars": n})
