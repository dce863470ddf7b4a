"""Power planning for a stored run: samples needed to detect a difference, and the current MDE."""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.stats import (
    minimum_detectable_effect,
    omega2_paired,
    omega2_unpaired,
    power_of_test,
    required_n,
)

from .compare import paired_scores


def power_plan(ws: Any, run: str, task: str, delta: float, metric: str | None = None,
               baseline: str | None = None, alpha: float = 0.05, power: float = 0.8,
               alternative: str = "one-sided") -> dict[str, Any]:
    """n = (z_a + z_b)^2 omega^2 / delta^2 with omega^2 from paired differences when a baseline is given,
    else from one run (2 Var(score): the unpaired bound, stated as such in `omega2_from`)."""
    r = ws.get_run(run)
    info = r.task(task)
    if info is None:
        raise NotFoundError(f"task {task!r} is not in run {r.run_id}",
                            hint=f"tasks: {', '.join(t.name for t in r.tasks) or 'none'}")
    metric = metric or (info.metrics[0] if info.metrics else None)
    if metric is None:
        raise EvalkeeperError(f"task {task!r} declares no metric", hint="pass --metric")
    if info.metrics and metric not in info.metrics:
        raise NotFoundError(f"metric {metric!r} is not a metric of task {task!r}",
                            hint=f"metrics: {', '.join(info.metrics)}")
    _, values = ws.scores(r.run_id, task, metric)
    if values.size < 2:
        raise EvalkeeperError(f"need at least 2 scored samples of {task}/{metric} in run {r.run_id}")
    if baseline:
        base_id = ws.resolve_baseline(baseline) or ws.get_run(baseline).run_id
        ids, va, vb, _, _ = paired_scores(ws, base_id, r.run_id, task, metric)
        if ids.size < 2:
            raise EvalkeeperError(f"run {r.run_id} and baseline {base_id} share fewer than 2 samples of {task}")
        omega2, source, n = omega2_paired(va, vb), f"paired differences with {base_id}", int(ids.size)
    else:
        omega2 = omega2_unpaired(values)
        source, n = "one run only: 2*Var(score), an upper bound for a paired design", int(values.size)
    need = required_n(delta, omega2, alpha, power, alternative) if omega2 > 0 else 1
    return {
        "run_id": r.run_id, "task": task, "metric": metric, "n": n, "delta": delta, "alpha": alpha,
        "power": power, "alternative": alternative, "omega2": omega2, "omega2_from": source,
        "required_n": int(need), "mde": float(minimum_detectable_effect(n, omega2, alpha, power, alternative)),
        "power_at_delta": float(power_of_test(n, delta, omega2, alpha, alternative)),
        "mean": float(np.mean(values)),
    }
