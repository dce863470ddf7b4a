"""Speed of evalkeeper's statistics against lm-evaluation-harness, and of a 50-rule gate on 1M-sample runs.

Part `bootstrap` (needs lm-eval, e.g. in a throwaway venv; evalkeeper.stats only needs numpy/scipy, so
this file puts our `src/` on sys.path):

    /tmp/peer-venvs/lm_eval/bin/python benchmarks/stats_speed.py bootstrap

times, in one process, the bootstrap standard error of the mean of 1,000,000 binary scores at 1,000
iterations: ours (`evalkeeper.stats.bootstrap_se`) vs `lm_eval.api.metrics.bootstrap_stderr(mean, ...)`
as lm-eval runs it (a multiprocessing pool; with 1,000 iterations it is one chunk in one worker).

Part `gate` (needs evalkeeper's own environment):

    .venv/bin/python benchmarks/stats_speed.py gate

builds a throwaway workspace with two runs of 1,000,000 samples (10 tasks x 100,000) and times a
gate with 50 rules (per task: threshold on the estimate, on the CI, by test, no_regression,
min_samples with a power check) including the audit-log Decision.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

N = 1_000_000
ITERS = 1_000


def _best(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_bootstrap(lm_eval_iters: int) -> None:
    from evalkeeper.stats import bootstrap_se

    rng = np.random.default_rng(0)
    scores = (rng.random(N) < 0.7).astype(np.float64)
    p = scores.mean()
    closed = math.sqrt(p * (1 - p) / N)
    ours_t, ours_se = _best(lambda: bootstrap_se(scores, n_boot=ITERS, seed=0), repeats=5)
    print(f"n = {N:,} binary scores, mean {p:.4f}, closed-form SE sqrt(p(1-p)/n) = {closed:.6e}")
    print(f"evalkeeper bootstrap_se ({ITERS} iters, exact binomial shortcut): {ours_t * 1e3:.3f} ms, "
          f"SE = {ours_se:.6e}")
    # any 1,000-iteration bootstrap SE carries Monte Carlo noise of about 1/sqrt(2*1000) = 2.2%
    errs = np.array([bootstrap_se(scores, n_boot=ITERS, seed=s) for s in range(200)]) / closed - 1
    print(f"  over 200 seeds: |SE / exact - 1| median {np.median(np.abs(errs)):.2%}, "
          f"95th percentile {np.quantile(np.abs(errs), 0.95):.2%}")
    # the general path (few distinct levels -> multinomial), for a non-binary metric of 1M samples
    graded = rng.choice([0.0, 0.25, 0.5, 1.0], size=N)
    g_t, g_se = _best(lambda: bootstrap_se(graded, n_boot=ITERS, seed=0), repeats=3)
    print(f"evalkeeper bootstrap_se on 4-level scores (exact multinomial path): {g_t * 1e3:.1f} ms, SE = {g_se:.6e} "
          f"(plug-in {graded.std() / math.sqrt(N):.6e})")
    try:
        from lm_eval.api.metrics import bootstrap_stderr, mean
    except ImportError:
        print("lm-eval is not installed in this interpreter: run with a venv that has lm-eval==0.4.13")
        return
    xs = scores.tolist()
    t0 = time.perf_counter()
    theirs_se = bootstrap_stderr(mean, xs, lm_eval_iters)
    theirs_t = time.perf_counter() - t0
    print(f"lm_eval bootstrap_stderr(mean, xs, {lm_eval_iters}): {theirs_t:.2f} s, SE = {theirs_se:.6e}")
    rel = abs(ours_se - theirs_se) / theirs_se
    print(f"speed-up: {theirs_t / ours_t:,.0f}x   SE relative difference: {rel:.2%} "
          f"(vs the exact bootstrap SE sqrt(p(1-p)/n): ours {abs(ours_se - closed) / closed:.2%}, "
          f"lm-eval {abs(theirs_se - closed) / closed:.2%})")


def _make_run(ws, run_id: str, p: dict[str, float], seed: int, tasks: int, per_task: int) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    from evalkeeper.core.records import ModelInfo, Provenance, Run, TaskInfo
    from evalkeeper.store.samples import normalize_table

    rng = np.random.default_rng(seed)
    tables = []
    for t in range(tasks):
        name = f"task{t:02d}"
        scores = (rng.random(per_task) < p[name]).astype(np.float64)
        ids = pa.array([f"{name}-{i:07d}" for i in range(per_task)])
        offsets = pa.array(np.arange(per_task + 1, dtype=np.int32))
        score_map = pa.MapArray.from_arrays(offsets, pa.array(["acc"] * per_task), pa.array(scores))
        tables.append(normalize_table(pa.table({
            "task": pa.array([name] * per_task), "sample_id": ids,
            "epoch": pa.array(np.zeros(per_task, dtype=np.int32)), "scores": score_map,
        }), run_id))
    run = Run(run_id=run_id, model=ModelInfo(name="bench", backend="test"),
              provenance=Provenance(producer="evalkeeper", command="benchmark"),
              tasks=[TaskInfo(name=f"task{t:02d}", metrics=["acc"], higher_is_better={"acc": True},
                              n_samples=per_task) for t in range(tasks)])
    ws.add_run(run, [], tables)


def bench_gate(tasks: int = 10, per_task: int = 100_000, home: str | None = None) -> None:
    from evalkeeper.gates import evaluate_policy, parse_policy, run_gate
    from evalkeeper.store import open_workspace

    where = Path(home) if home else Path(tempfile.mkdtemp(prefix="ek-bench-"))
    ws = open_workspace(where)
    if not any(r.run_id == "run-cand" for r in ws.list_runs()):
        t0 = time.perf_counter()
        base_p = {f"task{t:02d}": 0.70 for t in range(tasks)}
        cand_p = {k: (0.695 if i % 3 == 0 else 0.70) for i, k in enumerate(base_p)}
        _make_run(ws, "run-base", base_p, 1, tasks, per_task)
        _make_run(ws, "run-cand", cand_p, 2, tasks, per_task)
        print(f"built two runs of {tasks * per_task:,} samples in {time.perf_counter() - t0:.1f} s ({where})")
    else:
        print(f"reusing the runs in {where}")
    lines = ["name: bench", "baseline: run-base", "rules:"]
    for t in range(tasks):
        name = f"task{t:02d}"
        lines += [
            f"  - {{id: est-{name}, kind: threshold, task: {name}, min: 0.6}}",
            f"  - {{id: ci-{name}, kind: threshold, task: {name}, min: 0.6, on: ci}}",
            f"  - {{id: test-{name}, kind: threshold, task: {name}, min: 0.69, on: test}}",
            f"  - {{id: nr-{name}, kind: no_regression, task: {name}, max_drop: 0.002}}",
            f"  - {{id: n-{name}, kind: min_samples, task: {name}, min: 1000, detect: 0.002}}",
        ]
    policy = parse_policy("\n".join(lines) + "\n", "bench.yaml")
    assert len(policy.rules) == 5 * tasks
    walls, cpus = [], []
    for i in range(3):  # each evaluation starts with empty score caches
        t0, c0 = time.perf_counter(), time.process_time()
        report = run_gate(ws, "run-cand", policy) if i == 0 else evaluate_policy(ws, "run-cand", policy)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)  # all threads of this process: robust to a busy machine
    print(f"gate with {len(policy.rules)} rules over two {tasks * per_task:,}-sample runs: "
          f"wall {walls[0]:.2f} s first (with audit Decision), "
          f"median of the next {statistics.median(walls[1:]):.2f} s; "
          f"CPU {cpus[0]:.2f} s / {statistics.median(cpus[1:]):.2f} s; "
          f"{len(report.verdicts)} verdicts, {report.n_failed} failed")
    print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["bootstrap", "gate", "all"], nargs="?", default="all")
    ap.add_argument("--lm-eval-iters", type=int, default=ITERS,
                    help="iterations for lm-eval's bootstrap (1000 = the comparison; fewer for a quick look)")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--per-task", type=int, default=100_000)
    ap.add_argument("--home", help="workspace to build the two runs in (reused when they already exist)")
    args = ap.parse_args()
    if args.part in ("bootstrap", "all"):
        bench_bootstrap(args.lm_eval_iters)
    if args.part in ("gate", "all"):
        bench_gate(args.tasks, args.per_task, args.home)


if __name__ == "__main__":
    main()
