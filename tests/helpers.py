"""Test helpers shared across areas: synthetic runs with known score distributions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evalkeeper.core.ids import new_run_id
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.store import Workspace

Z95 = 1.959963984540054


def make_run(
    ws: Workspace,
    tasks: Sequence[str] = ("arith", "mc"),
    n: int = 200,
    seed: int = 0,
    p: float | dict[str, float] = 0.7,
    model: str = "test-model",
    tags: Sequence[str] = (),
    run_id: str | None = None,
    metric: str = "acc",
    groups: dict[str, Sequence[str]] | None = None,
    outputs: Sequence[str] | None = None,
) -> Run:
    """Add a complete run whose `metric` scores are Bernoulli(p) per task; returns the stored run.

    Sample ids are `{task}-{i}` so runs made with the same tasks and n pair up sample by sample.
    """
    rng = np.random.default_rng(seed)
    rid = run_id or new_run_id()
    samples: list[Sample] = []
    metrics: list[MetricResult] = []
    for task in tasks:
        pt = p[task] if isinstance(p, dict) else p
        scores = (rng.random(n) < pt).astype(float)
        for i in range(n):
            group = {k: str(v[i % len(v)]) for k, v in (groups or {}).items()}
            pred = outputs[i % len(outputs)] if outputs else f"answer {i}"
            samples.append(Sample(run_id=rid, task=task, sample_id=f"{task}-{i}", input=f"question {i} of {task}",
                                  target=f"answer {i}", prediction=pred, scores={metric: float(scores[i])},
                                  group=group, latency_ms=float(10 + i % 7), tokens_in=12, tokens_out=3))
        mean = float(scores.mean())
        se = float(scores.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        metrics.append(MetricResult(run_id=rid, task=task, metric=metric, value=mean, stderr=se,
                                    ci_low=mean - Z95 * se, ci_high=mean + Z95 * se, n=n, method="clt",
                                    higher_is_better=True))
    run = Run(run_id=rid, model=ModelInfo(name=model, backend="test"), tags=list(tags), seed=seed,
              tasks=[TaskInfo(name=t, metrics=[metric], higher_is_better={metric: True}, n_samples=n) for t in tasks],
              provenance=Provenance(producer="evalkeeper", command="make_run"))
    return ws.add_run(run, metrics, [samples])


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the real `evalkeeper` entry point in-process; returns (exit code, stdout, stderr).

    Goes through `main()`, so user errors are rendered and mapped to exit codes exactly as for users.
    """
    import contextlib
    import io
    import sys

    from evalkeeper.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["evalkeeper", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()
