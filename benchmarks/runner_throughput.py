"""Runner benchmark: API throughput against a 50 ms loopback server, embedded model cold/warm start,
quickstart wall time.

    .venv/bin/python benchmarks/runner_throughput.py                 # everything
    .venv/bin/python benchmarks/runner_throughput.py --skip-cold --skip-quickstart

Throughput: a loopback OpenAI-compatible server (its own process, so it does not share our GIL)
answers every request after 50 ms. We push N requests at concurrency C through (a) the openai backend
alone and (b) the whole loop (task rendering, scoring, Parquet parts, run record; cache off), timing
the whole `run_evaluation` call. The bound is C / 0.05 s requests per second; target >= 90% of it.
For reference, (c) a do-nothing client (pre-built bytes on raw keep-alive connections) shows what the
server and the OS alone allow (timer granularity, loopback), and the full loop's line is followed by
its phases: task loading (rendering), preparing the run record, answering, and the final checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([PY, "-m", "evalkeeper.runner.testing", "--delay", str(delay)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


def raw_client(url: str, n: int, concurrency: int) -> tuple[float, str]:
    """The server's own ceiling: the same request bytes over raw connections, nothing else done."""
    from evalkeeper.runner.backends._fasthttp import FastConnection

    port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "question 1"}],
                       "max_tokens": 4}).encode()
    payload = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def go() -> float:
        left = [n]

        async def worker(conn: FastConnection) -> None:
            while left[0] > 0:
                left[0] -= 1
                await conn.request(payload, 30, 10)
            conn.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(FastConnection("127.0.0.1", port)) for _ in range(concurrency)))
        return time.perf_counter() - t0

    return asyncio.run(go()), ""


def backend_only(url: str, n: int, concurrency: int) -> tuple[float, str]:
    from evalkeeper.runner.backends.base import GenerateRequest
    from evalkeeper.runner.backends.openai import OpenAIBackend

    backend = OpenAIBackend("bench", url, concurrency=concurrency, timeout=30, max_retries=2)
    requests = [GenerateRequest(prompt=f"question {i}", max_new_tokens=4) for i in range(n)]

    async def go() -> float:
        await backend.start()
        t0 = time.perf_counter()
        got = 0
        async for _ in backend.run(requests):
            got += 1
        elapsed = time.perf_counter() - t0
        await backend.close()
        assert got == n
        return elapsed

    return asyncio.run(go()), ""


def full_loop(url: str, n: int, concurrency: int) -> tuple[float, str]:
    from evalkeeper.runner import RunOptions, run_evaluation
    from evalkeeper.store import open_workspace

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "q.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "q": f"question {i}", "a": "42"}) + "\n"
                                           for i in range(n)))
        (d / "bench.yaml").write_text("name: bench\ndataset: {path: q.jsonl}\nprompt: '{{ q }}'\ntarget: a\n"
                                      "id_field: id\nmetrics: [exact_match]\ngeneration: {max_new_tokens: 4}\n")
        ws = open_workspace(d / "ws")
        t0 = time.perf_counter()
        out = run_evaluation(ws, "openai:bench", tasks=[str(d / "bench.yaml")],
                             options=RunOptions(progress=False, use_cache=False),
                             backend_options={"base_url": url, "concurrency": concurrency, "max_retries": 2})
        elapsed = time.perf_counter() - t0
        assert out.run.n_samples == n and out.metrics[0].value == 1.0
        t = out.timings
        answer_rate = n / t["answer"]
        bound = concurrency / float(os.environ.get("BENCH_DELAY", "0.05"))
        rest = elapsed - sum(t.values())
        return elapsed, (f"{'':17s}phases: load tasks {t['load']:.2f}s + prepare {t['prepare']:.2f}s + "
                         f"answer {t['answer']:.2f}s ({answer_rate:.0f} req/s, {answer_rate / bound:.0%}) + "
                         f"finish {t['finish']:.2f}s + other {rest:.2f}s")


def model_start(cache: Path) -> dict[str, float]:
    """Load the embedded model in a fresh process; returns import and load seconds."""
    code = ("import time; t=time.perf_counter(); import torch, transformers; "
            "from evalkeeper.runner.backends.local import TransformersBackend; i=time.perf_counter()-t; "
            "b=TransformersBackend.smollm2(); t=time.perf_counter(); b.load(); "
            "print(i, time.perf_counter()-t)")
    env = {**os.environ, "EVALKEEPER_CACHE_DIR": str(cache)}
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True)
    imp, load = map(float, out.stdout.split())
    return {"import_s": imp, "load_s": load}


def quickstart_time() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "EVALKEEPER_HOME": str(Path(tmp) / "ws")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([PY, "-m", "evalkeeper.cli.main", "quickstart", "--no-progress"], env=env, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold (GGUF conversion) start")
    ap.add_argument("--skip-model", action="store_true", help="skip cold and warm model start")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the throughput measurements N times")
    args = ap.parse_args()
    bound = args.concurrency / args.delay
    t0 = time.process_time()
    total = 0
    for i in range(5_000_000):
        total += i
    calib = time.process_time() - t0
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; a 5M-iteration Python loop "
          f"took {calib:.2f} CPU-s (an idle modern core: ~0.25 s) -- CPU-time figures below scale with it")
    os.environ["BENCH_DELAY"] = str(args.delay)
    proc, url = start_server(args.delay)
    try:
        for rep in range(args.repeat):
            if args.repeat > 1:
                print(f"-- repeat {rep + 1}/{args.repeat}")
            for label, fn in (("openai backend", backend_only), ("full loop", full_loop),
                              ("raw client (ref)", raw_client)):
                load = os.getloadavg()[0]
                cpu0 = time.process_time()
                elapsed, details = fn(url, args.requests, args.concurrency)
                cpu_ms = (time.process_time() - cpu0) / args.requests * 1000
                rate = args.requests / elapsed
                overhead_ms = (elapsed * args.concurrency / args.requests - args.delay) * 1000
                print(f"{label:16s}: {args.requests} requests at concurrency {args.concurrency} in {elapsed:.2f}s = "
                      f"{rate:.0f} req/s ({rate / bound:.0%} of the {bound:.0f} req/s bound); "
                      f"per-request overhead {overhead_ms:.2f} ms wall, {cpu_ms:.3f} ms client CPU "
                      f"(CPU-bound ceiling {1000 / cpu_ms:.0f} req/s on one free core); load average {load:.1f}")
                if details:
                    print(details)
    finally:
        proc.terminate()
        proc.wait()
    if not args.skip_model:
        from evalkeeper.runner.backends.local import cache_dir

        if not args.skip_cold:
            with tempfile.TemporaryDirectory() as tmp:
                cold = model_start(Path(tmp))
            print(f"embedded model cold start (GGUF -> cache): import {cold['import_s']:.1f}s + "
                  f"load {cold['load_s']:.1f}s")
        warm = model_start(cache_dir())  # converts once into the real cache if it is not there yet
        warm = model_start(cache_dir())
        print(f"embedded model warm start: import {warm['import_s']:.1f}s + load {warm['load_s']:.1f}s "
              f"(target load <= 5 s)")
    if not args.skip_quickstart:
        wall, cpu = quickstart_time()
        print(f"quickstart: {wall:.1f}s wall, {cpu:.1f}s CPU (target <= 180 s wall on 2 cores)")


if __name__ == "__main__":
    main()
