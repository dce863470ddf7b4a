"""Cold GGUF conversion of the embedded SmolLM2: evalkeeper's converter vs transformers' GGUF load.

    .venv/bin/python benchmarks/gguf_convert.py                    # fast path, 3 runs, then transformers once
    .venv/bin/python benchmarks/gguf_convert.py --repeat 5 --skip-transformers

Each run is a fresh process with an empty cache dir (so nothing is memoised), timing
`converted_dir()` alone: torch, transformers and the Llama classes are imported first (a first run
imports them anyway, to load the converted folder), then the folder is loaded as a run would. Printed
per run: wall and CPU seconds of the conversion, the load average when it started, and the whole
process (imports, conversion, loading the folder). The machine is shared,
so wall time is noisy; CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
import torch, transformers
from transformers import LlamaConfig, LlamaForCausalLM  # load() imports these anyway (to load the folder)
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
from evalkeeper.runner.backends import _gguf, local
if sys.argv[1] == "transformers":
    def unsupported(gguf, out):
        raise _gguf.GgufUnsupported("benchmark: forced fallback")
    _gguf.convert = unsupported
gguf, _ = local.smollm2_gguf()
load = os.getloadavg()
w1 = time.perf_counter(); c1 = time.process_time()
folder = local.converted_dir(gguf, "0" * 64)
w2 = time.perf_counter(); c2 = time.process_time()
backend = local.TransformersBackend(folder, backend="hf", name="smollm2")
backend.load()  # what a first run does next: load the converted folder
w3 = time.perf_counter(); c3 = time.process_time()
marker = json.loads((folder / "evalkeeper-converted.json").read_text())
print(json.dumps({"convert_wall": w2 - w1, "convert_cpu": c2 - c1, "load_wall": w3 - w2, "load_cpu": c3 - c2,
                  "total_wall": w3 - t0, "total_cpu": c3 - c0,
                  "load": load, "converter": marker.get("converter"),
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_once(mode: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ek-gguf-bench-") as tmp:
        env = dict(os.environ, EVALKEEPER_CACHE_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="fast-path runs (default 3)")
    ap.add_argument("--transformers-repeat", type=int, default=1, help="transformers-path runs (default 1)")
    ap.add_argument("--skip-transformers", action="store_true", help="do not time the transformers path")
    args = ap.parse_args()
    modes = [("evalkeeper", args.repeat)] + ([] if args.skip_transformers else [
        ("transformers", args.transformers_repeat)])
    for mode, n in modes:
        walls, cpus = [], []
        for i in range(n):
            r = run_once(mode)
            assert r["converter"] == mode, r
            load = ", ".join(f"{x:.2f}" for x in r["load"])  # type: ignore[attr-defined]
            print(f"{mode:12s} run {i + 1}: convert {r['convert_wall']:6.2f}s wall {r['convert_cpu']:6.2f}s cpu | "
                  f"then load folder {r['load_wall']:5.2f}s wall | "
                  f"process (imports+convert+load) {r['total_wall']:6.2f}s wall {r['total_cpu']:6.2f}s cpu | "
                  f"max rss {r['max_rss_mb']:.0f} MB | load avg {load}", flush=True)
            walls.append(float(r["convert_wall"]))  # type: ignore[arg-type]
            cpus.append(float(r["convert_cpu"]))  # type: ignore[arg-type]
        print(f"{mode:12s} median convert: {sorted(walls)[len(walls) // 2]:.2f}s wall, "
              f"{sorted(cpus)[len(cpus) // 2]:.2f}s cpu over {n} run(s)", flush=True)


if __name__ == "__main__":
    main()
