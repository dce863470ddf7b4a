"""`evalkeeper reproduce run.ekb`: re-run a native run from its recorded task specs and decide, per task,
whether the new scores are statistically equivalent (paired TOST on shared samples, stated margin).

Imported runs cannot be re-run here (their scores came from another tool); they can still be compared
against an existing run with `--against RUN`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.env import capture_environment, diff_environments
from evalkeeper.bundle.extract import Limits, safe_extract
from evalkeeper.core.errors import ConfigError, EvalkeeperError
from evalkeeper.core.records import Run, TaskInfo
from evalkeeper.stats import tost_equivalence
from evalkeeper.store import Workspace
from evalkeeper.store.query import SampleQuery

DEFAULT_MARGIN = 0.02
DEFAULT_ALPHA = 0.05


class ReproductionUnsupported(EvalkeeperError):
    """The bundle's scores came from another tool: reproduce them with that tool (exit 2)."""


@dataclass
class TaskComparison:
    task: str
    metric: str
    n_original: int
    n_new: int
    n_shared: int
    original_mean: float | None
    new_mean: float | None
    mean_diff: float | None  # new - original, on shared samples
    ci_low: float | None  # (1 - 2 alpha) CI of the paired difference, the TOST interval
    ci_high: float | None
    p_value: float | None
    verdict: str  # equivalent | different | inconclusive | no shared samples

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReproductionReport:
    original_run_id: str
    new_run_id: str
    margin: float
    alpha: float
    tasks: list[TaskComparison]
    env_differences: list[str] = field(default_factory=list)
    spec_differences: list[str] = field(default_factory=list)
    rerun: bool = False

    @property
    def equivalent(self) -> bool:
        return bool(self.tasks) and all(t.verdict == "equivalent" for t in self.tasks)

    @property
    def exit_code(self) -> int:
        return 0 if self.equivalent else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_run_id": self.original_run_id,
            "new_run_id": self.new_run_id,
            "margin": self.margin,
            "alpha": self.alpha,
            "equivalent": self.equivalent,
            "rerun": self.rerun,
            "tasks": [t.to_dict() for t in self.tasks],
            "env_differences": self.env_differences,
            "spec_differences": self.spec_differences,
        }


def _primary_metric(info: TaskInfo) -> str | None:
    return info.metrics[0] if info.metrics else None


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def compare_task(
    task: str,
    metric: str,
    original: tuple[np.ndarray, np.ndarray],
    new: tuple[np.ndarray, np.ndarray],
    margin: float,
    alpha: float,
) -> TaskComparison:
    """Paired TOST over the sample ids both runs scored (epochs already averaged per id)."""
    (ids_a, va), (ids_b, vb) = original, new
    shared, ia, ib = np.intersect1d(ids_a.astype(str), ids_b.astype(str), return_indices=True)
    a, b = va[ia], vb[ib]
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    counts = (task, metric, int(va.size), int(vb.size), int(a.size),
              float(va.mean()) if va.size else None, float(vb.mean()) if vb.size else None)
    if a.size < 2:
        return TaskComparison(*counts, None, None, None, None,
                              "no shared samples" if a.size == 0 else "inconclusive")
    r = tost_equivalence(a, b, margin, alpha)
    if r.equivalent:
        verdict = "equivalent"
    elif r.ci_low > margin or r.ci_high < -margin or (r.se == 0 and abs(r.mean_diff) >= margin):
        verdict = "different"
    else:
        verdict = "inconclusive"
    return TaskComparison(*counts, _finite(r.mean_diff), _finite(r.ci_low), _finite(r.ci_high),
                          _finite(r.p_value), verdict)


def compare_runs(
    original: Run,
    original_parts: list[Path],
    new: Run,
    new_parts: list[Path],
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
) -> list[TaskComparison]:
    """Per task of the original run, its primary metric compared on shared samples."""
    if margin <= 0:
        raise ConfigError("the equivalence margin must be positive", hint="e.g. --margin 0.02")
    if not original_parts:
        raise EvalkeeperError(
            f"run {original.run_id} has no per-sample scores in the bundle: equivalence cannot be tested",
            hint="only runs with per-sample results can be reproduced",
        )
    q = SampleQuery()
    out = []
    for info in original.tasks:
        metric = _primary_metric(info)
        if metric is None:
            continue
        orig_scores = q.scores(original, original_parts, info.name, metric)
        if new.task(info.name) is None or not new_parts:
            new_scores = (np.array([], dtype=object), np.array([], dtype=float))
        else:
            new_scores = q.scores(new, new_parts, info.name, metric)
        out.append(compare_task(info.name, metric, orig_scores, new_scores, margin, alpha))
    return out


def spec_differences(original: Run, new: Run) -> list[str]:
    """Model and task identity differences (weights digest, dataset/prompt fingerprints, n-shot, seeds)."""
    out = []
    for attr in ("name", "backend", "revision", "digest"):
        a, b = getattr(original.model, attr), getattr(new.model, attr)
        if a != b:
            out.append(f"model {attr}: {a} -> {b}")
    if original.model.generation != new.model.generation:
        out.append(f"generation parameters: {original.model.generation} -> {new.model.generation}")
    for t in original.tasks:
        n = new.task(t.name)
        if n is None:
            out.append(f"task {t.name}: missing from the new run")
            continue
        for attr in ("version", "dataset_fingerprint", "prompt_fingerprint", "n_shot", "seed"):
            a, b = getattr(t, attr), getattr(n, attr)
            if a != b:
                out.append(f"task {t.name} {attr}: {a} -> {b}")
    return out


def model_ref_for(run: Run) -> tuple[str, dict[str, Any]]:
    """The runner's `--model` string (and backend options) that recreates the recorded backend."""
    m = run.model
    if m.backend == "fake":
        return "fake", {}
    if m.backend == "smollm2":
        return "smollm2", {}
    if m.backend == "openai":
        return f"openai:{m.name}", {"base_url": m.revision}
    raise ConfigError(
        f"cannot tell how to load model {m.name!r} (backend {m.backend!r}) again",
        hint="pass --model with the runner's model string, e.g. --model hf:/path/to/model",
    )


def _absolutize(value: Any, base: Path) -> Any:
    """A relative path that exists under the original task folder, made absolute; anything else as is."""
    if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
        candidate = base / value
        if candidate.exists():
            return str(candidate)
    return value


def _task_file_for(info: TaskInfo, tmp: Path) -> Path:
    """The *recorded* task spec as a task file the runner can load, never today's version of the task:
    relative dataset paths (and generator files) are resolved against the original task's folder."""
    from evalkeeper.runner.tasks import SUITES_DIR

    cfg = info.config or {}
    spec, source = cfg.get("spec"), str(cfg.get("source") or "")
    if not spec:
        raise ConfigError(
            f"task {info.name!r} has no recorded task spec", hint="was it produced by `evalkeeper run`?"
        )
    base = SUITES_DIR if source.startswith("bundled:") else Path(source).parent if source else None
    spec = json.loads(json.dumps(spec))
    ds = spec.get("dataset") or {}
    if base is not None:
        for key in ("path", "hf_path"):
            ds[key] = _absolutize(ds.get(key), base)
        ds["params"] = {k: _absolutize(v, base) for k, v in (ds.get("params") or {}).items()}
    import yaml

    path = tmp / f"{info.name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def rerun_native(
    ws: Workspace,
    original: Run,
    original_ids: dict[str, set[str]],
    *,
    model: Any = None,
    progress: bool = False,
) -> Run:
    """Run the recorded task specs again (fresh: no cache, no resume) on the shared sample ids."""
    from evalkeeper.runner.backends import resolve_backend
    from evalkeeper.runner.loop import RunOptions, evaluate
    from evalkeeper.runner.tasks import load_task

    if model is not None and not isinstance(model, str):
        backend = model  # a Backend instance (library callers, tests)
    else:
        ref, backend_opts = (model, {}) if model else model_ref_for(original)
        backend = resolve_backend(ref, **backend_opts)
    gen = original.model.generation
    opts = RunOptions(
        seed=int(gen.get("seed", original.seed if original.seed is not None else 1234)),
        use_cache=False,
        resume=False,
        progress=progress,
        tags=["reproduction"],
        labels={"reproduces": original.run_id},
        max_new_tokens=gen.get("max_new_tokens"),
        temperature=gen.get("temperature"),
        command=f"evalkeeper reproduce ({original.run_id})",
    )
    with tempfile.TemporaryDirectory(prefix="ekb-reproduce-") as tmp:
        loaded = []
        for info in original.tasks:
            task = load_task(_task_file_for(info, Path(tmp)))
            wanted = original_ids.get(info.name)
            if wanted:
                task.docs = [d for d in task.docs if d.sample_id in wanted]
            loaded.append(task)
        run = evaluate(ws, backend, loaded, opts).run
    # Record where the specs came from (the temp files are gone): the original task sources.
    sources = {t.name: (t.config or {}).get("source") for t in original.tasks}
    tasks = [
        t.model_copy(
            update={"config": {**t.config, "source": sources.get(t.name), "reproduces": original.run_id}}
        )
        for t in run.tasks
    ]
    run = run.model_copy(update={"tasks": tasks})
    ws.save_run(run)
    return run


def reproduce_bundle(
    path: str | os.PathLike[str],
    ws: Workspace,
    *,
    margin: float = DEFAULT_MARGIN,
    alpha: float = DEFAULT_ALPHA,
    against: str | None = None,
    model: Any = None,
    progress: bool = False,
    limits: Limits = Limits(),
) -> ReproductionReport:
    """Verify + extract the bundle, re-run it (or take `against`), and compare task by task."""
    if margin <= 0:
        raise ConfigError("the equivalence margin must be positive", hint="e.g. --margin 0.02")
    if not 0 < alpha < 0.5:
        raise ConfigError("alpha must be between 0 and 0.5", hint="e.g. --alpha 0.05")
    with safe_extract(path, limits=limits) as ex:
        original = Run.model_validate_json(ex.scan.meta[L.RUN])
        env = json.loads(ex.scan.meta[L.ENVIRONMENT]) if L.ENVIRONMENT in ex.scan.meta else None
        parts = [
            ex.path(n)
            for n in sorted(ex.scan.members)
            if n.startswith(L.SAMPLES_DIR) and n.endswith(".parquet")
        ]
        rerun = False
        if against is not None:
            new = ws.get_run(against)
        elif original.provenance.producer != "evalkeeper":
            raise ReproductionUnsupported(
                f"run {original.run_id} was produced by {original.provenance.producer} "
                f"{original.provenance.producer_version or ''}, not by evalkeeper's runner: reproducing it needs "
                "the original tool",
                path=str(path),
                hint=f"re-run it with {original.provenance.producer} (see REPRODUCE.md in the bundle), import "
                "the new output, then `evalkeeper reproduce BUNDLE --against NEW_RUN`",
            )
        else:
            q = SampleQuery()
            ids = {
                t.name: set(map(str, q.scores(original, parts, t.name, m)[0]))
                for t in original.tasks
                if (m := _primary_metric(t))
            }
            new = rerun_native(ws, original, ids, model=model, progress=progress)
            rerun = True
        comparisons = compare_runs(
            original, parts, new, ws.sample_paths(new.run_id), margin=margin, alpha=alpha
        )
    new_env = new.environment if new.environment else capture_environment()
    return ReproductionReport(
        original.run_id,
        new.run_id,
        margin,
        alpha,
        comparisons,
        diff_environments(env, new_env),
        spec_differences(original, new),
        rerun,
    )
