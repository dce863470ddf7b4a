"""Hugging Face Hub: a dataset repo with the results JSON, per-sample Parquet, the bundle if present, and a
dataset card whose YAML metadata carries model-index style evaluation results.

Layout in the repo (several runs can share one repo; the card describes the latest one published):
    README.md                         dataset card
    results/<run_id>.json             results document
    samples/<run_id>/<part>.parquet   per-sample rows (config "samples", one split per run)
    bundles/<file>.ekb                bundle(s), if any
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, SecretStr, field_validator

from evalkeeper.publish.base import BaseSink, PublishContext, PublishResult, SinkError, SinkOptions, gate_summary

REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HuggingFaceOptions(SinkOptions):
    repo_id: str = Field(description="dataset repo, ORG/NAME")
    private: bool = Field(True, description="create the repo private (ignored if it exists)")
    token: SecretStr | None = Field(None, description="access token (default: $HF_TOKEN or `hf auth login`)")
    endpoint: str | None = Field(None, description="Hub URL (default: $HF_ENDPOINT or huggingface.co)")
    revision: str = Field("main", description="branch to commit to")
    commit_message: str | None = Field(None, description="commit message (default names the run)")
    samples: bool = Field(True, description="upload per-sample Parquet")
    task_type: str = Field("text-generation", description="model-index task type")

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if not REPO_ID.match(v) or ".." in v or "--" in v:
            raise ValueError("must look like ORG/NAME (letters, digits, '-', '_', '.')")
        return v


def split_name(run_id: str) -> str:
    """Hub split names must match \\w+; run ids contain dashes."""
    return re.sub(r"\W", "_", run_id)


def card_metadata(ctx: PublishContext, repo_id: str, task_type: str) -> dict[str, Any]:
    """Dataset-card YAML: tags, a `samples` config, and model-index results with every metric."""
    results = []
    for task in dict.fromkeys(m.task for m in ctx.metrics):
        info = ctx.run.task(task)
        metrics = []
        for m in (x for x in ctx.metrics if x.task == task):
            entry: dict[str, Any] = {"type": m.metric, "value": round(m.value, 6), "name": m.metric,
                                     "verified": False}
            if m.ci_low is not None and m.ci_high is not None:
                entry["args"] = {"ci_low": round(m.ci_low, 6), "ci_high": round(m.ci_high, 6), "n": m.n,
                                 "method": m.method}
            metrics.append(entry)
        dataset: dict[str, Any] = {"name": task, "type": task}
        if info and info.version:
            dataset["revision"] = info.version
        results.append({"task": {"type": task_type, "name": task}, "dataset": dataset, "metrics": metrics,
                        "source": {"name": "evalkeeper", "url": ctx.link} if ctx.link else {"name": "evalkeeper"}})
    meta: dict[str, Any] = {
        "pretty_name": f"Evaluation of {ctx.run.model.name}",
        "tags": ["evaluation", "evalkeeper"],
        "model-index": [{"name": ctx.run.model.name, "results": results}],
    }
    if ctx.sample_files:
        meta["configs"] = [{"config_name": "samples", "data_files": [
            {"split": split_name(ctx.run_id), "path": f"samples/{ctx.run_id}/*.parquet"}]}]
    return meta


def dataset_card(ctx: PublishContext, repo_id: str, task_type: str = "text-generation") -> str:
    meta = card_metadata(ctx, repo_id, task_type)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# Evaluation of {ctx.run.model.name}", "",
             f"Run `{ctx.run_id}` ({ctx.run.created_at:%Y-%m-%d %H:%M} UTC), backend `{ctx.run.model.backend}`, "
             f"{ctx.run.n_samples} samples. Published by evalkeeper.", "",
             "| task | metric | value | 95% CI | n |", "|---|---|---|---|---|"]
    for m in ctx.metrics:
        ci = f"[{m.ci_low:.4f}, {m.ci_high:.4f}]" if m.ci_low is not None and m.ci_high is not None else "n/a"
        lines.append(f"| {m.task} | {m.metric} | {m.value:.4f} | {ci} | {m.n if m.n is not None else ''} |")
    if ctx.gate is not None:
        lines += ["", f"Quality gate: **{ctx.gate.verdict}** - {gate_summary(ctx.gate)}."]
    lines += ["", "## Files", "", f"- `results/{ctx.run_id}.json`: metrics with confidence intervals"]
    if ctx.sample_files:
        lines.append(f"- `samples/{ctx.run_id}/`: one row per scored sample (Parquet)")
    for b in ctx.bundle_files:
        lines.append(f"- `bundles/{Path(b).name}`: the reproducible bundle (verify with `evalkeeper verify`)")
    return "\n".join(lines) + "\n"


class HuggingFaceSink(BaseSink):
    name: ClassVar[str] = "hf"
    Options: ClassVar[type[HuggingFaceOptions]] = HuggingFaceOptions
    target_option: ClassVar[str | None] = "repo_id"
    description: ClassVar[str] = "Hugging Face Hub dataset repo: results, samples, bundle, card with model-index"
    options: HuggingFaceOptions

    def _token(self) -> str:
        if self.options.token is not None:
            return self.options.token.get_secret_value()
        token = os.environ.get("HF_TOKEN")
        if not token:
            from huggingface_hub import get_token

            token = get_token()
        if not token:
            raise SinkError("no Hugging Face token", hint="set HF_TOKEN, run `hf auth login`, or set option token")
        return token

    def secrets(self) -> list[str]:
        out = super().secrets()
        try:
            out.append(self._token())
        except SinkError:
            pass
        return out

    def publish(self, ctx: PublishContext) -> PublishResult:
        from huggingface_hub import CommitOperationAdd, HfApi

        endpoint = self.options.endpoint or os.environ.get("HF_ENDPOINT") or None
        api = HfApi(endpoint=endpoint, token=self._token())
        repo_url = api.create_repo(self.options.repo_id, repo_type="dataset", private=self.options.private,
                                   exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo="README.md",
                                  path_or_fileobj=dataset_card(ctx, self.options.repo_id,
                                                               self.options.task_type).encode("utf-8")),
               CommitOperationAdd(path_in_repo=f"results/{ctx.run_id}.json", path_or_fileobj=ctx.results_json())]
        if self.options.samples:
            for p in ctx.sample_files:
                ops.append(CommitOperationAdd(path_in_repo=f"samples/{ctx.run_id}/{p.name}", path_or_fileobj=str(p)))
        for b in ctx.bundle_files:
            ops.append(CommitOperationAdd(path_in_repo=f"bundles/{Path(b).name}", path_or_fileobj=str(b)))
        message = self.options.commit_message or f"evalkeeper: publish run {ctx.run_id} ({ctx.run.model.name})"
        info = api.create_commit(self.options.repo_id, ops, commit_message=message, repo_type="dataset",
                                 revision=self.options.revision)
        if not hasattr(info, "oid"):
            raise SinkError("unexpected answer from the Hub commit API")
        return PublishResult(url=str(repo_url), ids={"repo_id": self.options.repo_id, "commit": info.oid,
                                                     "commit_url": info.commit_url},
                             files=[op.path_in_repo for op in ops], details={"private": self.options.private})
