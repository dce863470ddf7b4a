"""Sample-explorer latency over a 1,000,000-sample run, through the real HTTP API; the CLI query path; report time.

    .venv/bin/python benchmarks/explorer_speed.py [--samples 1000000] [--queries 200] [--seed 0]
        [--index import|first-request] [--workdir DIR [--reuse]] [--cli-queries 8] [--no-report]

Writes a synthetic run (4 tasks, two metrics, two group attributes, ~120-character inputs) into a workspace
(a temp folder, or --workdir; --reuse keeps a run written there before, since writing 1M samples takes
~45 s). Then:

1. the run's sample index (`Workspace.build_sample_index`, persisted next to the Parquet parts) is built in
   a subprocess that reports its wall/CPU time and peak RSS (--index import: "paid at import time"); with
   --index first-request it is deleted, so the server builds it (in the background from startup, as
   `evalkeeper serve` does) and the first request on the run waits for it;
2. a dashboard server (uvicorn on loopback, started like `serve`: missing indexes built and existing ones
   warmed in the background) runs in its own process; as soon as it answers, the benchmark times the
   first request on the run, then sends filtered / sorted / paginated / text-searched queries with httpx
   and prints p50/p95 latency (target p95 < 150 ms), split into "cold" (first time a filter is seen) and
   "warm" (paging a filter seen before), the five slowest, the server's CPU time, and its RSS (VmRSS /
   VmHWM, target < 2 GB);
3. `Workspace.count_samples` + `query_samples` (what `evalkeeper samples` runs) for a few filters, through
   the index and through DuckDB over Parquet;
4. the time to render the HTML report for the run (target < 10 s).

Wall-clock numbers on a shared machine are noisy: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.store import SAMPLE_SCHEMA, open_workspace
from evalkeeper.store.index_build import INDEX_DIR

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


SERVER = """
import sys, uvicorn
from evalkeeper.server import create_app
from evalkeeper.store import open_workspace
app = create_app(open_workspace(sys.argv[1]))
app.state.service.prebuild()  # as `evalkeeper serve` does
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

BUILD = """
import json, resource, sys, time
from evalkeeper.store import open_workspace
ws = open_workspace(sys.argv[1])
t, c = time.perf_counter(), time.process_time()
ws.build_sample_index(sys.argv[2])
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "hwm_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def proc_mem(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of a process in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def get_workspace(args: argparse.Namespace, tmp: str) -> tuple[Any, Run]:
    home = Path(args.workdir or tmp) / "ws"
    if args.workdir and not args.reuse and home.exists():
        shutil.rmtree(home)
    ws = open_workspace(home)
    run_id = f"bench-{args.seed}-{args.samples}"
    if args.reuse and ws.store.run_exists(run_id):
        run = ws.get_run(run_id)
        print(f"reusing {run.n_samples:,} samples in {home}")
        return ws, run
    t0 = time.perf_counter()
    run = build_run(ws, args.samples, args.seed)
    size = sum(p.stat().st_size for p in ws.sample_paths(run.run_id))
    print(f"wrote {run.n_samples:,} samples ({size / 2**20:.1f} MiB Parquet) in {time.perf_counter() - t0:.1f} s")
    return ws, run


def build_index(ws: Any, run: Run, mode: str) -> None:
    folder = ws.run_dir(run.run_id) / INDEX_DIR
    shutil.rmtree(folder, ignore_errors=True)
    if mode != "import":
        print("index: none on disk; the server builds it from startup, the first request waits for it")
        return
    out = subprocess.run([sys.executable, "-c", BUILD, str(ws.home), run.run_id], check=True,
                         capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"index build (once per run, persisted, {size / 2**20:.0f} MiB): {r['wall']:.1f} s wall, "
          f"{r['cpu']:.1f} s CPU, peak RSS {r['hwm_mb']:.0f} MiB  [load {load()}]")


def http_queries(ws: Any, run: Run, args: argparse.Namespace) -> None:
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ws.home), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.time() + 60
            while True:
                try:
                    client.get("/api/health").raise_for_status()
                    break
                except httpx.TransportError:
                    if time.time() > deadline:
                        raise RuntimeError("the dashboard server did not start") from None
                    time.sleep(0.1)
            print(f"server started: RSS {proc_mem(server.pid)['VmRSS']:.0f} MiB")
            t = time.perf_counter()
            client.get(f"/api/runs/{run.run_id}").raise_for_status()
            print(f"first request on the run (opens its index): {(time.perf_counter() - t) * 1000:.0f} ms")
            queries = query_mix(np.random.default_rng(args.seed + 1), args.queries)
            seen: set[tuple[Any, ...]] = set()
            lat: dict[str, list[float]] = {"all": [], "cold": [], "warm": []}
            by_kind: dict[str, list[float]] = {}
            load_before, cpu0 = load(), proc_cpu(server.pid)
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
            cpu = proc_cpu(server.pid) - cpu0
            mem = proc_mem(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n{len(queries)} explorer queries over HTTP (page size 50) on {run.n_samples:,} samples "
          f"[load {load_before} -> {load()}; server CPU {cpu:.1f} s]")
    for name, values in lat.items():
        print(f"  {name:5s} n={len(values):3d}  p50 {pct(values, 50):7.1f} ms  p95 {pct(values, 95):7.1f} ms"
              f"  max {max(values) if values else float('nan'):7.1f} ms")
    slowest = sorted(range(len(lat["all"])), key=lambda i: -lat["all"][i])[:5]
    print("  slowest: " + ", ".join(f"#{i} {queries[i][0]} {lat['all'][i]:.0f} ms" for i in slowest))
    print("  by query kind (p50 / p95 ms):")
    for kind, values in sorted(by_kind.items()):
        print(f"    {kind:20s} n={len(values):3d}  {statistics.median(values):7.1f} / {pct(values, 95):7.1f}")
    p95 = pct(lat["all"], 95)
    print(f"  target p95 < 150 ms: {'MET' if p95 < 150 else 'NOT MET'} ({p95:.1f} ms)")
    print(f"  server memory: VmRSS {mem['VmRSS']:.0f} MiB, VmHWM {mem['VmHWM']:.0f} MiB (target < 2048)")


def cli_queries(ws: Any, run: Run, n: int) -> None:
    """count_samples + query_samples (the `evalkeeper samples` command) through the index and DuckDB."""
    if n <= 0:
        return
    rng = np.random.default_rng(7)
    mix: list[dict[str, Any]] = []
    for i in range(n):
        task = str(TASKS[i % len(TASKS)])
        word = str(WORDS[int(rng.integers(0, len(WORDS)))])
        mix.append([{"task": task}, {"search": word}, {"task": task, "search": f"{word} "},
                    {}][i % 4] | {"order_by": [None, "score", "latency_ms", "tokens_out"][i % 4],
                                  "descending": bool(i % 2), "offset": int(rng.integers(0, 2000))})
    parts = ws.sample_paths(run.run_id)
    times: dict[str, list[float]] = {"index": [], "duckdb": []}
    for q in mix:
        filters = {k: q[k] for k in ("task", "search") if k in q}
        t = time.perf_counter()
        total = ws.count_samples(run.run_id, **filters)
        fast = ws.query_samples(run.run_id, limit=20, **filters, order_by=q["order_by"],
                                descending=q["descending"], offset=q["offset"])
        times["index"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        slow_total = ws._query.count(run, parts, **filters)
        slow = ws._query.select(run, parts, limit=20, **filters, order_by=q["order_by"],
                                descending=q["descending"], offset=q["offset"])
        times["duckdb"].append((time.perf_counter() - t) * 1000)
        assert total == slow_total and fast.column("sample_id").to_pylist() == slow.column("sample_id").to_pylist()
    print(f"\nWorkspace.count_samples + query_samples (20 rows), {n} filters [load {load()}]; same rows both ways:")
    for name, values in times.items():
        print(f"  {name:7s} p50 {pct(values, 50):7.1f} ms  max {max(values):7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", choices=("import", "first-request"), default="import",
                    help="build the sample index before the server starts, or let the first request build it")
    ap.add_argument("--workdir", help="keep the workspace here instead of a temp folder")
    ap.add_argument("--reuse", action="store_true", help="reuse a run written to --workdir before")
    ap.add_argument("--cli-queries", type=int, default=8, help="Workspace.query_samples filters to time")
    ap.add_argument("--no-report", action="store_true", help="skip the HTML report timing")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {load()}")

    with tempfile.TemporaryDirectory(prefix="evalkeeper-bench-") as tmp:
        ws, run = get_workspace(args, tmp)
        build_index(ws, run, args.index)
        http_queries(ws, run, args)
        cli_queries(ws, run, args.cli_queries)
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
