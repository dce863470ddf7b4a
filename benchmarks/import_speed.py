"""Import speed and peak memory: a 1,000,000-sample lm-eval output and a ~1 GB inspect_ai `.eval` log.

How to run (from the repository root; ~2.5 GB of temp disk; generating the files takes longer than the
imports, so keep them with --workdir/--reuse when running it more than once):

    # inspect_ai lives only in a throwaway venv (never in .venv):
    python3.11 -m venv /tmp/peer-venvs/inspect && /tmp/peer-venvs/inspect/bin/pip install inspect-ai==0.3.285
    .venv/bin/python benchmarks/import_speed.py --inspect-python /tmp/peer-venvs/inspect/bin/python

    # quick check while developing: 100k lm-eval samples, a 100 MB .eval
    .venv/bin/python benchmarks/import_speed.py --lm-samples 100000 --inspect-mb 100 --inspect-python ...

    # also a log of N typical-size samples (8-word questions; the mock eval's own events make each
    # ~10 KiB of JSON), for samples/s on a count rather than a size
    .venv/bin/python benchmarks/import_speed.py ... --inspect-samples 200000

What it does: writes, in a temp folder, an lm-eval output (`results_<date>.json` + a 1M-line
`samples_<task>_<date>.jsonl`, lines shaped like lm-eval 0.4's generate_until samples) and an inspect
`.eval` log (real zip layout: `_journal/start.json`, `samples/<id>_epoch_<n>.json` members made from a
sample that inspect_ai 0.3.285 itself wrote for tests/fixtures/inspect, zstd-compressed as zip method 93
like current inspect, then `summaries.json`, `reductions.json`, `header.json` with the true metrics).
Each measured phase then runs in its own subprocess, so its peak RSS is its own:

  ours-lm        evalkeeper's lm-eval importer  -> open_workspace(home=tmp).add_run  (Parquet + SQLite)
  ours-inspect   evalkeeper's inspect importer  -> open_workspace(home=tmp).add_run (logs of 20k+ samples
                 are parsed by one worker process per core; their CPU and RSS are reported too)
  inspect-read   inspect_ai's own `read_eval_log(path)` (the whole log as pydantic objects), run with
                 --inspect-python (a venv with inspect_ai; it never goes in .venv). It is first probed
                 on a small log of the same kind; when the full read is projected to need more than
                 --inspect-max-gb of memory or --inspect-max-seconds, `inspect-stream` runs instead:
                 inspect's one-sample-at-a-time `read_eval_log_samples` on the same file, stopped after
                 --inspect-max-seconds, and the speed-up is the ratio of samples/s.

Peak RSS is each phase's own VmHWM (ru_maxrss is inherited from the parent across fork + exec on Linux);
for our importers also the peak of main + worker processes' RSS (sampled every 50 ms), the CPU seconds of
the process and its workers, and the load average before and after (the machine may be shared).
`--workdir DIR --reuse` keeps the generated files for later runs (generating takes longer than importing).

Targets (DESIGN/issue 2): >= 200,000 samples/s, peak RSS < 1.5 GB, >= 10x faster than inspect's reader.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "inspect" / "arith_0.3.285.eval"
WORDS = ("alpha beta gamma delta apple river stone cloud seven orange violet paris tokyo lima berlin "
         "sum product prime divisor integer fraction answer question number total result value").split()


# -- generated inputs -----------------------------------------------------------------------------------

def _sentence(i: int, n_words: int) -> str:
    w = WORDS
    k = len(w)
    return " ".join(w[(i * 7 + j * 13 + (i >> 3) * j) % k] for j in range(n_words))


def make_lm_eval(out: Path, n: int) -> dict[str, Any]:
    """results_<date>.json + samples_<task>_<date>.jsonl for one generate_until task with n docs."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    date = "2026-11-23T08-30-00.000000"
    task = "synth_gen"
    rng = np.random.default_rng(0)
    correct = rng.random(n) < 0.62
    total = 0.0
    with open(out / f"samples_{task}_{date}.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            q = f"Question {i}: {_sentence(i, 14)}?"
            target = str(i % 97)
            pred = target if correct[i] else str((i + 1) % 97)
            em = 1.0 if correct[i] else 0.0
            total += em
            line = {
                "doc_id": i,
                "doc": {"question": q, "answer": target},
                "target": target,
                "arguments": {"gen_args_0": {"arg_0": f"{q}\nAnswer:", "arg_1": {"until": ["\n"], "do_sample": False}}},
                "resps": [[f" {pred}"]],
                "filtered_resps": [pred],
                "filter": "none",
                "metrics": ["exact_match"],
                "doc_hash": f"{i:064x}",
                "prompt_hash": f"{i * 31:064x}",
                "target_hash": f"{i % 97:064x}",
                "exact_match": em,
            }
            f.write(json.dumps(line) + "\n")
    acc = total / n
    stderr = float(np.std(correct.astype(float), ddof=1) / np.sqrt(n))
    results = {
        "results": {task: {"alias": task, "exact_match,none": acc, "exact_match_stderr,none": stderr}},
        "group_subtasks": {},
        "configs": {task: {"task": task, "dataset_path": "json", "output_type": "generate_until",
                           "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                                            "higher_is_better": True}], "num_fewshot": 0}},
        "versions": {task: 1.0},
        "n-shot": {task: 0},
        "higher_is_better": {task: {"exact_match": True}},
        "n-samples": {task: {"original": n, "effective": n}},
        "config": {"model": "dummy", "model_args": "", "batch_size": 1, "limit": None, "random_seed": 0,
                   "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234},
        "git_hash": None,
        "date": 1763886600.0,
        "lm_eval_version": "0.4.13",
        "model_name": "dummy",
        "start_time": 1.0,
        "end_time": 2.0,
        "total_evaluation_time_seconds": "1.0",
    }
    (out / f"results_{date}.json").write_text(json.dumps(results, indent=2))
    return {"path": str(out), "samples": n, "accuracy": acc}


class _ZipWriter:
    """Minimal zip writer (zstd = method 93, ZIP64 end records) - what zipfile_zstd writes for inspect."""

    def __init__(self, f: Any) -> None:
        import zstandard

        self.f = f
        self.central: list[bytes] = []
        self.cctx = zstandard.ZstdCompressor(level=3)

    def add(self, name: str, data: bytes) -> None:
        obj = self.cctx.compressobj()  # streaming frames carry no content size, like zipfile's
        comp = obj.compress(data) + obj.flush()
        crc = zlib.crc32(data)
        raw = name.encode()
        offset = self.f.tell()
        self.f.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 63, 0x800, 93, 0, 0x5B77, crc, len(comp), len(data),
                                 len(raw), 0) + raw)
        self.f.write(comp)
        self.central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 63, 63, 0x800, 93, 0, 0x5B77, crc,
                                        len(comp), len(data), len(raw), 0, 0, 0, 0, 0, offset) + raw)

    def close(self) -> None:
        cd_offset = self.f.tell()
        for entry in self.central:
            self.f.write(entry)
        cd_size = self.f.tell() - cd_offset
        count = len(self.central)
        eocd64 = self.f.tell()
        self.f.write(struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset))
        self.f.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64, 1))
        self.f.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                                 min(cd_size, 0xFFFFFFFF), min(cd_offset, 0xFFFFFFFF), 0))


def _fixture_members() -> dict[str, bytes]:
    sys.path.insert(0, str(REPO / "src"))
    from evalkeeper.ingest._zipread import ZipReader

    with ZipReader(FIXTURE) as z:
        return {m.name: z.read(m) for m in z.members()}


def _replace_strings(obj: Any, mapping: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [_replace_strings(v, mapping) for v in obj]
    if isinstance(obj, dict):
        return {k: _replace_strings(v, mapping) for k, v in obj.items()}
    return obj


def make_inspect_eval(path: Path, target_bytes: int, n_samples: int | None = None,
                      words: int = 60) -> dict[str, Any]:
    """A `.eval` log of about `target_bytes` (or of exactly `n_samples` samples), built from a sample
    inspect 0.3.285 wrote (q03, epoch 1); questions have `words` words (60: long, 8: typical QA)."""
    import numpy as np

    members = _fixture_members()
    tmpl = json.loads(members["samples/q03_epoch_1.json"])
    question, answer = tmpl["input"], tmpl["output"]["completion"]
    tmpl = _replace_strings(tmpl, {question: "@IN@", answer: "@OUT@", answer.lower(): "@OUTL@", "q03": "@ID@",
                                   tmpl["target"]: "@TGT@"})
    tmpl["scores"] = "@SCORES@"
    tmpl["metadata"] = "@META@"
    text = json.dumps(tmpl, separators=(",", ":"))
    assert text.count('"@SCORES@"') == 1 and "@IN@" in text and "@OUT@" in text
    rng = np.random.default_rng(1)
    kinds = []
    per_score: dict[str, list[float]] = {"match": [], "includes": [], "digits_credit": [], "answer_length": []}
    ids: list[str] = []
    header = json.loads(members["header.json"])
    json_bytes = 0

    def more(f: Any, i: int) -> bool:
        return i < n_samples if n_samples is not None else f.tell() < target_bytes

    with open(path, "wb") as f:
        z = _ZipWriter(f)
        z.add("_journal/start.json", members["_journal/start.json"])
        i = 0
        while more(f, i):
            block = rng.random(1024 if n_samples is None else min(1024, n_samples - i))
            for r in block:
                sid = f"s{i:07d}"
                q = f"Question {i}: {_sentence(i, words)}? Answer with the number only."
                tgt = str(i % 97)
                kind = 0 if r < 0.55 else (1 if r < 0.75 else 2)  # exact, target inside text, wrong
                out = tgt if kind == 0 else (f"The answer is {tgt}, {_sentence(i + 1, 20)}" if kind == 1
                                             else f"{(i + 3) % 97} {_sentence(i + 2, 12)}")
                m = 1.0 if kind == 0 else 0.0
                inc = 1.0 if kind < 2 else 0.0
                dc = "C" if kind == 0 else ("P" if kind == 1 else "I")
                scores = {"match": {"value": "C" if m else "I", "answer": out, "explanation": out, "history": []},
                          "includes": {"value": "C" if inc else "I", "answer": out.lower(), "history": []},
                          "digits_credit": {"value": dc, "answer": out, "history": []},
                          "answer_length": {"value": len(out), "history": []}}
                meta = {"level": ("easy", "medium", "hard")[i % 3], "lang": ("en", "fr")[i % 2]}
                doc = (text.replace("@IN@", q).replace("@OUTL@", out.lower()).replace("@OUT@", out)
                       .replace("@ID@", sid).replace("@TGT@", tgt)
                       .replace('"@SCORES@"', json.dumps(scores, separators=(",", ":")))
                       .replace('"@META@"', json.dumps(meta, separators=(",", ":"))))
                raw = doc.encode()
                json_bytes += len(raw)
                z.add(f"samples/{sid}_epoch_1.json", raw)
                per_score["match"].append(m)
                per_score["includes"].append(inc)
                per_score["digits_credit"].append({"C": 1.0, "P": 0.5, "I": 0.0}[dc])
                per_score["answer_length"].append(float(len(out)))
                ids.append(sid)
                kinds.append(kind)
                i += 1
        n = i
        summaries = [{"id": s, "epoch": 1, "input": "", "target": "", "completed": True} for s in ids]
        z.add("summaries.json", json.dumps(summaries).encode())
        reductions = [{"scorer": name,
                       "samples": [{"value": v, "sample_id": s} for s, v in zip(ids, vals, strict=True)]}
                      for name, vals in per_score.items()]
        z.add("reductions.json", json.dumps(reductions).encode())
        del reductions, summaries
        truth = {}
        for es in header["results"]["scores"]:
            vals = np.asarray(per_score[es["name"]])
            mean, se = float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(n))
            for mname, metric in es["metrics"].items():
                metric["value"] = se if mname == "stderr" else mean
            es["scored_samples"] = n
            truth[es["name"]] = (mean, se)
        header["results"]["total_samples"] = header["results"]["completed_samples"] = n
        header["eval"]["dataset"].update({"samples": n, "sample_ids": ids})
        header["eval"]["config"]["epochs"] = 1
        header["eval"]["task_args"] = {"epochs": 1}
        z.add("header.json", json.dumps(header).encode())
        z.close()
    return {"path": str(path), "samples": n, "bytes": path.stat().st_size, "json_bytes": json_bytes,
            "truth": truth}


# -- measured phases (each in its own process) ----------------------------------------------------------

def _maxrss_bytes() -> int:
    """Peak RSS of this process's own memory image (VmHWM). Not `ru_maxrss`: Linux carries that over from
    the parent across fork + exec, so every phase would report at least the generator's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class _TreeRss:
    """Peak of the summed RSS of this process and its children (the inspect importer's worker processes),
    sampled every 50 ms; VmHWM alone would miss the workers."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss(pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _children(self) -> list[str]:
        import os

        out: list[str] = []
        try:
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/children") as f:
                    out.extend(f.read().split())
        except OSError:
            pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss("self") + sum(self._rss(c) for c in self._children()))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) of this process and of its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def phase_ours(path: str, fmt: str, ws_home: str) -> dict[str, Any]:
    import os

    sys.path.insert(0, str(REPO / "src"))
    from evalkeeper.ingest.inspect import InspectImporter
    from evalkeeper.ingest.lm_eval import LmEvalImporter
    from evalkeeper.store import open_workspace

    ws = open_workspace(home=ws_home)
    importer = InspectImporter() if fmt == "inspect" else LmEvalImporter()
    tree = _TreeRss()
    load_before = os.getloadavg()[0]
    cpu0, kids0 = _cpu_seconds()
    t0 = time.perf_counter()
    loaded = importer.load(Path(path))
    items = loaded if isinstance(loaded, list) else [loaded]
    n = 0
    metrics = {}
    for item in items:
        run = ws.add_run(item.run, item.metrics, item.batches)
        n += run.n_samples
        metrics.update({f"{m.task}/{m.metric}": [m.value, m.stderr, m.method] for m in item.metrics})
    seconds = time.perf_counter() - t0
    cpu1, kids1 = _cpu_seconds()
    return {"seconds": seconds, "samples": n, "metrics": metrics, "cpu_seconds": cpu1 - cpu0,
            "child_cpu_seconds": kids1 - kids0, "tree_peak_rss_bytes": tree.stop(),
            "loadavg": [load_before, os.getloadavg()[0]]}


def phase_inspect(path: str, mode: str, budget_s: float | None = None) -> dict[str, Any]:
    from inspect_ai.log import read_eval_log, read_eval_log_samples

    base = _maxrss_bytes()
    t0 = time.perf_counter()
    complete = True
    if mode == "read":
        log = read_eval_log(path)
        n = len(log.samples or [])
    else:
        # the budget counts from the first sample: inspect first reads the header, summaries and
        # reductions, which takes long on a big log; samples/s after that is reported separately
        n = 0
        t_first = None
        for _ in read_eval_log_samples(path, all_samples_required=False):
            n += 1
            if t_first is None:
                t_first = time.perf_counter()
            if budget_s is not None and n % 64 == 0 and time.perf_counter() - t_first > budget_s:
                complete = False
                break
        end = time.perf_counter()
        if t_first is not None and n > 1:
            return {"seconds": end - t0, "samples": n, "base_rss_bytes": base, "complete": complete,
                    "seconds_to_first_sample": t_first - t0,
                    "samples_per_s_after_first": (n - 1) / (end - t_first) if end > t_first else None}
    return {"seconds": time.perf_counter() - t0, "samples": n, "base_rss_bytes": base, "complete": complete}


def run_phase(python: str, args: list[str], mem_limit_gb: float | None = None) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--phase", *args]
    if mem_limit_gb:
        cmd += ["--mem-limit-gb", str(mem_limit_gb)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _phase_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("path")
    ap.add_argument("extra", nargs="?")
    ap.add_argument("--mem-limit-gb", type=float)
    a = ap.parse_args(argv)
    if a.mem_limit_gb:
        lim = int(a.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    if a.name in ("ours-lm", "ours-inspect"):
        out = phase_ours(a.path, "lm" if a.name == "ours-lm" else "inspect", a.extra)
    elif a.name == "inspect-read":
        out = phase_inspect(a.path, "read")
    else:
        out = phase_inspect(a.path, "stream", float(a.extra) if a.extra else None)
    out["peak_rss_bytes"] = _maxrss_bytes()
    print(json.dumps(out))


# -- driver ---------------------------------------------------------------------------------------------

def _sample_json_bytes(path: Path) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from evalkeeper.ingest._zipindex import scan_directory
    from evalkeeper.ingest._zipread import ZipReader

    with ZipReader(path) as z:
        table, _ = scan_directory(z, b"samples/", b".json")
    return int(table.file_size.sum())


def _inspect_phase(py: str, tmp: Path, ws: str, ev: dict[str, Any], label: str) -> dict[str, Any]:
    """Import one generated .eval; print samples/s, MB/s of sample JSON, and the metrics against the truth."""
    shutil.rmtree(tmp / ws, ignore_errors=True)
    r = run_phase(py, ["ours-inspect", ev["path"], str(tmp / ws)])
    print(f"{label} {_fmt(r)}")
    if "error" in r:
        return r
    if "json_bytes" not in ev:  # generated by an older version of this script
        ev["json_bytes"] = _sample_json_bytes(Path(ev["path"]))
    per = ev["json_bytes"] / max(ev["samples"], 1)
    if per:
        print(f"  {ev['json_bytes'] / 2**20 / r['seconds']:,.0f} MiB/s of sample JSON ({per / 1024:.1f} KiB per "
              f"sample), {ev['bytes'] / 2**20 / r['seconds']:,.0f} MiB/s of .eval file")
    for name, (mean, se) in ev["truth"].items():
        got = r["metrics"].get(f"arith/{name}")
        ok = got is not None and abs(got[0] - mean) < 1e-9 and abs((got[1] or 0) - se) < 1e-9
        print(f"  metric {name}: {got} vs generated truth ({mean:.6f}, {se:.6f}) {'OK' if ok else 'MISMATCH'}")
    return r


def _fmt(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED ({r['error'].strip().splitlines()[-1] if r['error'].strip() else r['returncode']})"
    rate = r["samples"] / r["seconds"] if r["seconds"] else float("inf")
    text = (f"{r['samples']:>9,} samples in {r['seconds']:7.2f} s = {rate:>9,.0f} samples/s, "
            f"peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB")
    if "cpu_seconds" in r:
        text += (f" (with worker processes {r['tree_peak_rss_bytes'] / 2**30:.2f} GiB); CPU {r['cpu_seconds']:.1f} s"
                 f" + workers {r['child_cpu_seconds']:.1f} s; load {r['loadavg'][0]:.1f} -> {r['loadavg'][1]:.1f}")
    return text


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        _phase_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-samples", type=int, default=1_000_000)
    ap.add_argument("--inspect-mb", type=float, default=1024.0, help="size of the generated .eval (MiB)")
    ap.add_argument("--inspect-python", default=None,
                    help="python of a venv with inspect_ai (default: skip inspect's own reader)")
    ap.add_argument("--inspect-max-gb", type=float, default=8.0,
                    help="run read_eval_log only if its projected peak RSS is below this")
    ap.add_argument("--inspect-max-seconds", type=float, default=600.0,
                    help="run read_eval_log only if its projected time is below this; else time the streaming "
                         "reader for this long")
    ap.add_argument("--workdir", default=None, help="keep generated files here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: reuse the files a previous run generated there")
    ap.add_argument("--skip-lm", action="store_true", help="do not time the lm-eval import")
    ap.add_argument("--inspect-samples", type=int, default=0,
                    help="also import a log of this many typical-size samples (8-word questions; 0: skip)")
    a = ap.parse_args()
    tmp = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="ek-import-speed-"))
    tmp.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    report: dict[str, Any] = {}
    try:
        gen_file = tmp / "generated.json"
        gen = json.loads(gen_file.read_text()) if a.reuse and gen_file.is_file() else None
        if gen is None:
            t = time.perf_counter()
            lm = make_lm_eval(tmp / "lm_eval_out", a.lm_samples)
            print(f"generated lm-eval output: {lm['samples']:,} samples ({time.perf_counter() - t:.1f} s)")
            t = time.perf_counter()
            ev = make_inspect_eval(tmp / "synthetic.eval", int(a.inspect_mb * 2**20))
            print(f"generated inspect .eval: {ev['samples']:,} samples, {ev['bytes'] / 2**20:,.0f} MiB "
                  f"({time.perf_counter() - t:.1f} s)")
            gen_file.write_text(json.dumps({"lm": lm, "ev": ev}))
        else:
            lm, ev = gen["lm"], gen["ev"]
            print(f"reusing {lm['samples']:,} lm-eval samples and a {ev['samples']:,}-sample "
                  f"{ev['bytes'] / 2**20:,.0f} MiB .eval in {tmp}")

        if not a.skip_lm:
            shutil.rmtree(tmp / "ws-lm", ignore_errors=True)
            report["ours-lm"] = run_phase(py, ["ours-lm", lm["path"], str(tmp / "ws-lm")])
            print(f"evalkeeper lm-eval import:   {_fmt(report['ours-lm'])}")
        ours = report["ours-inspect"] = _inspect_phase(py, tmp, "ws-inspect", ev, "evalkeeper inspect import:  ")

        if a.inspect_samples:
            typical_file = tmp / "typical.json"
            typ = json.loads(typical_file.read_text()) if a.reuse and typical_file.is_file() else None
            if typ is None or typ["samples"] != a.inspect_samples:
                t = time.perf_counter()
                typ = make_inspect_eval(tmp / "typical.eval", 0, n_samples=a.inspect_samples, words=8)
                print(f"generated typical-size inspect .eval: {typ['samples']:,} samples, "
                      f"{typ['bytes'] / 2**20:,.0f} MiB ({time.perf_counter() - t:.1f} s)")
                typical_file.write_text(json.dumps(typ))
            report["ours-inspect-typical"] = _inspect_phase(py, tmp, "ws-typical", typ,
                                                            "evalkeeper inspect import, typical samples:")

        if a.inspect_python:
            # inspect's reader is slow and holds the whole log in memory: probe it on a small log first
            small = make_inspect_eval(tmp / "small.eval", 2 * 2**20)
            small.pop("truth")
            probe = run_phase(a.inspect_python, ["inspect-read", small["path"]])
            report["inspect-probe"] = probe
            if "error" in probe:
                print(f"inspect read_eval_log probe failed: {probe['error'][-500:]}")
            else:
                base = probe["base_rss_bytes"]
                scale = ev["samples"] / small["samples"]
                mem = base + (probe["peak_rss_bytes"] - base) * scale
                secs = probe["seconds"] * scale
                print(f"inspect read_eval_log on a {small['samples']:,}-sample log: {_fmt(probe)}; projected for "
                      f"{ev['samples']:,} samples: {secs:,.0f} s, peak {mem / 2**30:.1f} GiB")
                if mem < a.inspect_max_gb * 2**30 and secs < a.inspect_max_seconds:
                    report["inspect"] = run_phase(a.inspect_python, ["inspect-read", ev["path"]])
                    label = "inspect_ai read_eval_log:   "
                else:
                    report["inspect"] = run_phase(a.inspect_python,
                                                  ["inspect-stream", ev["path"], str(a.inspect_max_seconds)])
                    label = (f"inspect_ai read_eval_log_samples (the full read_eval_log would not fit in "
                             f"{a.inspect_max_gb} GiB / {a.inspect_max_seconds:.0f} s; streaming reader, "
                             f"same file, stopped after {a.inspect_max_seconds:.0f} s): ")
                print(f"{label}{_fmt(report['inspect'])}")
                theirs = report["inspect"]
                if "error" not in theirs and "error" not in ours:
                    ours_rate = ours["samples"] / ours["seconds"]
                    ratio = ours_rate / (theirs["samples"] / theirs["seconds"])
                    report["speedup"] = ratio
                    print(f"speed-up vs inspect_ai's reader on its own format (samples/s ratio): {ratio:.1f}x")
                    steady = theirs.get("samples_per_s_after_first")
                    if steady:
                        report["speedup_vs_steady_state"] = ours_rate / steady
                        print(f"  inspect needed {theirs['seconds_to_first_sample']:.0f} s before its first sample "
                              f"(header, summaries, reductions), then {steady:,.0f} samples/s; "
                              f"vs that steady state alone: {ours_rate / steady:.1f}x")
                    probe_rate = probe["samples"] / probe["seconds"]
                    report["speedup_vs_probe"] = ours_rate / probe_rate
                    print(f"  vs read_eval_log's rate on the small log ({probe_rate:,.0f} samples/s): "
                          f"{ours_rate / probe_rate:.1f}x")
        if a.json:
            print(json.dumps(report, default=str))
    finally:
        if not a.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
