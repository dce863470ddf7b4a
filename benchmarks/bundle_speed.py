"""Bundle and verify throughput on a 1,000,000-sample run, next to raw sha256 + zstd over the same bytes.

    .venv/bin/python benchmarks/bundle_speed.py [--samples 1000000] [--level 3] [--repeat 3]

Writes a synthetic run (4 tasks, ~120-character inputs, scores, groups, metadata) into a temp workspace,
then times:
  create  `create_bundle` (read Parquet parts, tar, sha256 per member, zstd, sha256 of the output, fsync)
  verify  `verify_bundle` (sha256 of the input, zstd decompress, tar parse, sha256 per member, all checks)
  raw     over the very bytes that go into the tar: sha256 + zstd compress (what create must at least do)
          and zstd decompress + sha256 (what verify must at least do), 1 MiB chunks, single thread, no I/O
MB/s is uncompressed tar bytes per second; ratio = ours / raw (target >= 60%). Best of --repeat runs,
by wall clock and by CPU time (process time, all threads): on a busy shared machine wall-clock ratios
swing with the load, CPU-time ratios much less.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import zstandard

from evalkeeper.bundle import capture_environment
from evalkeeper.bundle.verify import verify_bundle
from evalkeeper.bundle.writer import create_bundle
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.store import SAMPLE_SCHEMA, open_workspace

TASKS = ("arith", "mmlu_mini", "qa", "summarize")
WORDS = np.array("alpha beta gamma delta apple river stone cloud seven orange violet paris tokyo lima "
                 "answer question model token eval seed bundle verify".split())
CHUNK = 1 << 20


def synthetic_table(run_id: str, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    task = np.array(TASKS)[np.arange(n) % len(TASKS)]
    words = WORDS[rng.integers(0, len(WORDS), size=(n, 20))]
    inputs = [" ".join(w) for w in words]
    preds = WORDS[rng.integers(0, len(WORDS), size=n)]
    scores = (rng.random(n) < 0.7).astype(float)
    f1 = rng.random(n)
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "task": pa.array(task, pa.string()),
        "sample_id": pa.array([f"{t}-{i}" for i, t in enumerate(task)], pa.string()),
        "epoch": pa.array(np.zeros(n, dtype=np.int32)),
        "input": pa.array(inputs, pa.large_string()),
        "target": pa.array(preds, pa.large_string()),
        "prediction": pa.array(np.where(scores > 0, preds, "wrong"), pa.large_string()),
        "scores": pa.MapArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                          pa.array(np.tile(["acc", "f1"], n)),
                                          pa.array(np.column_stack([scores, f1]).ravel())),
        "logprobs": pa.nulls(n, SAMPLE_SCHEMA.field("logprobs").type),
        "group": pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(np.repeat("lang", n)),
                                         pa.array(np.where(np.arange(n) % 3 > 0, "en", "fr"))),
        "metadata": pa.array([f'{{"i": {i}}}' for i in range(n)], pa.large_string()),
        "latency_ms": pa.array(rng.gamma(2.0, 40.0, n)),
        "tokens_in": pa.array(rng.integers(20, 200, n)),
        "tokens_out": pa.array(rng.integers(1, 40, n)),
    }, schema=SAMPLE_SCHEMA)


def tar_payload(path: Path) -> bytes:
    """The uncompressed tar inside a bundle (the bytes both sides of the comparison process)."""
    from evalkeeper.bundle import _layout as L

    body = path.read_bytes()[: -L.TRAILER_LEN]
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()


def raw_compress(data: bytes, level: int) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    sha = hashlib.sha256()
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(out, closefd=False) as w:
        view = memoryview(data)
        for i in range(0, len(data), CHUNK):
            block = view[i:i + CHUNK]
            sha.update(block)
            w.write(block)
    sha.hexdigest()
    return time.perf_counter() - t0, out.getvalue()


def raw_decompress(blob: bytes) -> float:
    t0 = time.perf_counter()
    sha = hashlib.sha256()
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob))
    while block := reader.read(CHUNK):
        sha.update(block)
    sha.hexdigest()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ek-bundle-bench-") as tmp:
        root = Path(tmp)
        ws = open_workspace(root / "ws")
        rid = "run-bench-1"
        t0 = time.perf_counter()
        table = synthetic_table(rid, args.samples)
        per = args.samples // len(TASKS)
        tasks = [TaskInfo(name=t, metrics=["acc", "f1"], n_samples=per) for t in TASKS]
        metrics = [MetricResult(run_id=rid, task=t, metric="acc", value=0.7, n=per) for t in TASKS]
        run = Run(run_id=rid, model=ModelInfo(name="bench", backend="fake"), tasks=tasks,
                  provenance=Provenance(producer="evalkeeper"),
                  environment=capture_environment())  # as the runner records it at run time
        batches = [table.slice(i, 250_000) for i in range(0, table.num_rows, 250_000)]
        ws.add_run(run, metrics, batches)
        print(f"setup: {args.samples:,} samples stored in {time.perf_counter() - t0:.1f}s")

        out = root / "run.ekb"
        create_w, create_c, verify_w, verify_c = [], [], [], []
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            res = create_bundle(ws, rid, out, level=args.level, record_in_workspace=False)
            create_w.append(time.perf_counter() - w0)
            create_c.append(time.process_time() - c0)
            w0, c0 = time.perf_counter(), time.process_time()
            rep = verify_bundle(out)
            verify_w.append(time.perf_counter() - w0)
            verify_c.append(time.process_time() - c0)
            assert rep.status == "intact", rep.problems
        payload = tar_payload(out)
        mb = len(payload) / 1e6
        rawc_w, rawc_c, rawd_w, rawd_c = [], [], [], []
        for _ in range(args.repeat):
            c0 = time.process_time()
            dt, blob = raw_compress(payload, args.level)
            rawc_w.append(dt)
            rawc_c.append(time.process_time() - c0)
            c0 = time.process_time()
            rawd_w.append(raw_decompress(blob))
            rawd_c.append(time.process_time() - c0)
        print(f"bundle: {res.size / 1e6:.1f} MB on disk from {mb:.1f} MB of tar "
              f"({len(res.members)} listed members), zstd level {args.level}, best of {args.repeat}")
        print(f"{'':10} {'wall MB/s':>10} {'raw wall':>10} {'ratio':>7}   {'CPU MB/s':>9} {'raw CPU':>9} {'ratio':>7}")
        out_json: dict[str, float] = {"samples": args.samples, "tar_mb": round(mb, 1),
                                      "ekb_mb": round(res.size / 1e6, 1)}
        for name, w, rw, c, rc in (("create", create_w, rawc_w, create_c, rawc_c),
                                   ("verify", verify_w, rawd_w, verify_c, rawd_c)):
            ow, orw, oc, orc = mb / min(w), mb / min(rw), mb / min(c), mb / min(rc)
            print(f"{name:10} {ow:10.1f} {orw:10.1f} {ow / orw:7.0%}   {oc:9.1f} {orc:9.1f} {oc / orc:7.0%}")
            out_json.update({f"{name}_wall_mb_s": round(ow, 1), f"{name}_raw_wall_mb_s": round(orw, 1),
                             f"{name}_wall_ratio": round(ow / orw, 3), f"{name}_cpu_ratio": round(oc / orc, 3)})
        print(json.dumps(out_json))

if __name__ == "__main__":
    main()
