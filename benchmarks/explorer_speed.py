"""Sample-explorer latency over a 1,000,000-sample run, through the real HTTP API; and HTML report time.

    .venv/bin/python benchmarks/explorer_speed.py [--samples 1000000] [--queries 200] [--seed 0]

Writes a synthetic run (4 tasks, two metrics, two group attributes, ~120-character inputs) into a temp
workspace, starts uvicorn on a free loopback port, sends filtered / sorted / paginated / text-searched
queries with httpx, and prints p50/p95 latency (target p95 < 150 ms), the same split into "cold" (first
time a filter is seen: the total count is computed) and "warm" (paging a filter seen before: the count
comes from the cache), and the time to render the HTML report for the run (target < 10 s).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.store import SAMPLE_SCHEMA, open_workspace

TASKS = ("arith", "mmlu_mini", "qa", "summarize")
WORDS = np.array("alpha beta gamma delta apple river stone cloud seven orange violet paris tokyo lima "
                 "integral matrix vector proof tensor graph sample model answer question".split())
LANGS = np.array(["en", "fr", "de", "es", "ja"])
LEVELS = np.array(["easy", "medium", "hard"])


def _map(keys: list[str], columns: list[np.ndarray], typ: pa.DataType) -> pa.MapArray:
    n, k = len(columns[0]), len(keys)
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    key_arr = pa.array(np.tile(np.array(keys), n))
    items = pa.array(np.stack(columns, axis=1).reshape(-1), type=typ)
    return pa.MapArray.from_arrays(offsets, key_arr, items)


def synthetic_batch(run_id: str, task: str, start: int, n: int, rng: np.random.Generator) -> pa.Table:
    """One task's rows, built column-wise (a million Sample records would take minutes to validate)."""
    idx = np.arange(start, start + n)
    words = WORDS[rng.integers(0, len(WORDS), size=(n, 14))]
    inputs = [f"Q{i}: " + " ".join(w) + " ?" for i, w in zip(idx, words, strict=True)]
    preds = [" ".join(w[:4]) for w in words]
    acc = (rng.random(n) < 0.68).astype(np.float64)
    f1 = np.clip(acc * 0.6 + rng.random(n) * 0.4, 0, 1)
    lang = LANGS[rng.integers(0, len(LANGS), n)]
    level = LEVELS[rng.integers(0, len(LEVELS), n)]
    cols: dict[str, Any] = {
        "run_id": pa.array([run_id] * n),
        "task": pa.array([task] * n),
        "sample_id": pa.array([f"{task}-{i:07d}" for i in idx]),
        "epoch": pa.array(np.zeros(n, dtype=np.int32)),
        "input": pa.array(inputs, pa.large_string()),
        "target": pa.array([" ".join(w[:3]) for w in words], pa.large_string()),
        "prediction": pa.array(preds, pa.large_string()),
        "scores": _map(["acc", "f1"], [acc, f1], pa.float64()),
        "logprobs": pa.nulls(n, pa.list_(pa.float64())),
        "group": _map(["lang", "level"], [lang, level], pa.string()),
        "metadata": pa.nulls(n, pa.large_string()),
        "latency_ms": pa.array(rng.gamma(2.0, 150.0, n)),
        "tokens_in": pa.array(rng.integers(20, 400, n)),
        "tokens_out": pa.array(rng.integers(1, 60, n)),
    }
    return pa.table(cols, schema=SAMPLE_SCHEMA)


def build_run(ws: Any, n_samples: int, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    run_id = f"bench-{seed}-{n_samples}"
    per_task = n_samples // len(TASKS)
    chunk = 125_000

    def batches() -> Any:
        for task in TASKS:
            for start in range(0, per_task, chunk):
                yield synthetic_batch(run_id, task, start, min(chunk, per_task - start), rng)

    tasks = [TaskInfo(name=t, metrics=["acc", "f1"], higher_is_better={"acc": True, "f1": True},
                      n_samples=per_task) for t in TASKS]
    run = Run(run_id=run_id, model=ModelInfo(name="bench-model", backend="synthetic"), tasks=tasks,
              provenance=Provenance(producer="evalkeeper", command="benchmarks/explorer_speed.py"))
    metrics = [MetricResult(run_id=run_id, task=t, metric=m, value=0.68, stderr=0.001, ci_low=0.678,
                            ci_high=0.682, n=per_task, method="clt") for t in TASKS for m in ("acc", "f1")]
    return ws.add_run(run, metrics, batches())  # type: ignore[no-any-return]


def query_mix(rng: np.random.Generator, n: int) -> list[tuple[str, dict[str, Any]]]:
    """Explorer requests like a person makes them: pick a filter, then page through it a few times."""
    kinds = ["task_page", "wrong_by_latency", "group_by_score", "search", "metric_range", "deep_page",
             "group_value_search"]
    out: list[tuple[str, dict[str, Any]]] = []
    while len(out) < n:
        kind = kinds[int(rng.integers(0, len(kinds)))]
        task = str(TASKS[int(rng.integers(0, len(TASKS)))])
        if kind == "task_page":
            base = {"task": task, "sort": "sample_id"}
        elif kind == "wrong_by_latency":
            base = {"task": task, "score_max": 0, "sort": "latency_ms", "order": "desc"}
        elif kind == "group_by_score":
            base = {"group": "lang", "group_value": str(LANGS[int(rng.integers(0, 5))]), "sort": "score",
                    "order": "desc"}
        elif kind == "search":
            base = {"search": f"{WORDS[int(rng.integers(0, len(WORDS)))]} {WORDS[int(rng.integers(0, len(WORDS)))]}"}
        elif kind == "metric_range":
            lo = round(float(rng.uniform(0, 0.8)), 2)
            base = {"task": task, "metric": "f1", "score_min": lo, "score_max": lo + 0.1, "sort": "score"}
        elif kind == "deep_page":
            base = {"sort": "tokens_out", "order": "desc"}
        else:
            base = {"task": task, "group": "level", "group_value": "hard", "search": "Q1"}
        for _ in range(int(rng.integers(1, 5))):  # page through the same filter
            page = int(rng.integers(1, 2000)) if kind == "deep_page" else int(rng.integers(1, 40))
            out.append((kind, {**base, "page": page, "page_size": 50}))
    return out[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(app: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report timing")
    args = ap.parse_args()

    import httpx

    from evalkeeper.server import create_app

    with tempfile.TemporaryDirectory(prefix="evalkeeper-bench-") as tmp:
        ws = open_workspace(Path(tmp) / "ws")
        t0 = time.perf_counter()
        run = build_run(ws, args.samples, args.seed)
        size = sum(p.stat().st_size for p in ws.sample_paths(run.run_id))
        print(f"wrote {run.n_samples:,} samples ({size / 2**20:.1f} MiB Parquet) in {time.perf_counter() - t0:.1f} s")

        server, thread, base = start_server(create_app(ws))
        rng = np.random.default_rng(args.seed + 1)
        queries = query_mix(rng, args.queries)
        seen: set[tuple[Any, ...]] = set()
        lat: dict[str, list[float]] = {"all": [], "cold": [], "warm": []}
        by_kind: dict[str, list[float]] = {}
        with httpx.Client(base_url=base, timeout=60) as client:
            t = time.perf_counter()
            client.get(f"/api/runs/{run.run_id}").raise_for_status()  # run detail builds the explorer index
            print(f"first request on the run (loads it into the in-memory explorer index): "
                  f"{time.perf_counter() - t:.1f} s")
            for kind, params in queries:
                key = tuple(sorted((k, v) for k, v in params.items() if k not in ("page", "page_size")))
                t = time.perf_counter()
                resp = client.get(f"/api/runs/{run.run_id}/samples", params=params)
                ms = (time.perf_counter() - t) * 1000
                resp.raise_for_status()
                body = resp.json()
                assert body["total"] >= len(body["rows"]), body
                lat["all"].append(ms)
                lat["warm" if key in seen else "cold"].append(ms)
                by_kind.setdefault(kind, []).append(ms)
                seen.add(key)
        server.should_exit = True
        thread.join(timeout=10)

        print(f"\n{len(queries)} explorer queries over HTTP (page size 50) on {run.n_samples:,} samples")
        for name, values in lat.items():
            print(f"  {name:5s} n={len(values):3d}  p50 {pct(values, 50):7.1f} ms  p95 {pct(values, 95):7.1f} ms"
                  f"  max {max(values) if values else float('nan'):7.1f} ms")
        print("  by query kind (p50 / p95 ms):")
        for kind, values in sorted(by_kind.items()):
            print(f"    {kind:20s} n={len(values):3d}  {statistics.median(values):7.1f} / {pct(values, 95):7.1f}")
        p95 = pct(lat["all"], 95)
        print(f"  target p95 < 150 ms: {'MET' if p95 < 150 else 'NOT MET'} ({p95:.1f} ms)")

        if not args.no_report:
            from evalkeeper.report import render_report

            out = Path(tmp) / "report.html"
            t = time.perf_counter()
            render_report(ws, run.run_id, "html", out)
            secs = time.perf_counter() - t
            print(f"\nHTML report for the run: {secs:.2f} s ({out.stat().st_size / 1024:.0f} KiB); "
                  f"target < 10 s: {'MET' if secs < 10 else 'NOT MET'}")


if __name__ == "__main__":
    main()
