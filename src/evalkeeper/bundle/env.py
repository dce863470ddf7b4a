"""Environment snapshot (S6P4): everything that could explain why a re-run gives different scores.

`capture_environment` never fails and never imports heavy libraries (torch is inspected through its
installed `version.py` file unless it is already imported); it takes well under a second.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata as md
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV_SCHEMA = "evalkeeper.environment/v1"

# Variables worth recording: they change numerics, threading, caches or which endpoint is used.
ENV_ALLOW_PREFIXES = (
    "EVALKEEPER_",
    "CUDA_",
    "NVIDIA_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TORCH_",
    "PYTORCH_",
    "VLLM_",
    "XLA_",
    "NCCL_",
    "OPENAI_",
    "ANTHROPIC_",
    "TOKENIZERS_",
    "CUBLAS_",
    "ROCM_",
    "HIP_",
)
ENV_ALLOW_NAMES = frozenset(
    {
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "PYTHONHASHSEED",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "CONDA_DEFAULT_ENV",
        "CONDA_PREFIX",
        "LANG",
        "LC_ALL",
        "TZ",
        "KUBERNETES_SERVICE_HOST",
    }
)
REDACTED = "<redacted>"
_SECRET_NAME_PARTS = frozenset(
    {
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD",
        "CREDENTIAL",
        "CREDENTIALS",
        "KEY",
        "APIKEY",
        "AUTH",
        "PRIVATE",
        "COOKIE",
        "SESSION",
        "SIGNATURE",
    }
)
_SECRET_VALUE = re.compile(
    r"^(hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}"
    r"|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}|glpat-[A-Za-z0-9_\-]{16,}|eyJ[A-Za-z0-9_\-]{10,}\..*)$"
)
_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 2.0) -> str | None:
    """Run a helper program; None on any failure (missing binary, timeout, non-zero exit)."""
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode("utf-8", "replace")


def _run_all(cmds: list[tuple[list[str], float]], cwd: str | None = None) -> list[str | None]:
    """`_run` for several (command, timeout) pairs started at once, so their wall times overlap."""
    procs: list[subprocess.Popen[bytes] | None] = []
    for cmd, _ in cmds:
        try:
            procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        except (OSError, subprocess.SubprocessError):
            procs.append(None)
    out: list[str | None] = []
    for proc, (_, timeout) in zip(procs, cmds, strict=True):
        if proc is None:
            out.append(None)
            continue
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out.append(None)
            continue
        out.append(stdout.decode("utf-8", "replace") if proc.returncode == 0 else None)
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def looks_secret(value: str) -> bool:
    """Known token shapes, or a long unbroken high-entropy string (letters and digits mixed, no path)."""
    v = value.strip()
    if _SECRET_VALUE.match(v):
        return True
    if len(v) >= 24 and not re.search(r"[\s/\\:,]", v):
        has_alpha = bool(re.search(r"[A-Za-z]", v))
        has_digit = bool(re.search(r"\d", v))
        return has_alpha and has_digit and len(set(v)) >= 12
    return False


def redact_value(name: str, value: str) -> str:
    """Redact secret-looking values; URLs keep their host but lose embedded passwords."""
    if value and _SECRET_NAME_PARTS & set(re.split(r"[_\-.]+", name.upper())):
        return REDACTED
    value = _URL_CREDS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    if looks_secret(value):
        return REDACTED
    # query-string tokens (?token=..., &api_key=...)
    query_secret = r"(?i)([?&](?:token|key|api_key|apikey|secret|password|sig)=)[^&\s]+"
    return re.sub(query_secret, rf"\1{REDACTED}", value)


def captured_env_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed variables, redacted."""
    environ = dict(os.environ if environ is None else environ)
    keep = {
        k: v
        for k, v in environ.items()
        if k in ENV_ALLOW_NAMES or any(k.startswith(p) for p in ENV_ALLOW_PREFIXES)
    }
    return {k: redact_value(k, v) for k, v in sorted(keep.items())}


def _python() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": list(platform.python_build()),
        "compiler": platform.python_compiler(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
    }


def installed_packages() -> dict[str, str]:
    """Every installed distribution -> version; the first found on sys.path wins, as for imports.

    `.dist-info` folder names already carry name and version (PEP 427/491), so only folders that do
    not (egg-info, odd installers) pay for reading METADATA: ~20x faster than importlib.metadata alone.
    """
    out: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for fname in names:
            if not fname.endswith((".dist-info", ".egg-info")):
                continue
            stem = fname.rsplit(".", 1)[0]
            name, sep, version = stem.partition("-")
            if not sep or "-" in version or not version[:1].isdigit() or fname.endswith(".egg-info"):
                try:
                    meta = md.PathDistribution(Path(entry or ".", fname)).metadata
                    name, version = meta["Name"], meta["Version"]
                except Exception:  # noqa: BLE001 - broken metadata must not break capture
                    continue
                if not name:
                    continue
            out.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version or "unknown")
    return dict(sorted(out.items()))


def _os() -> dict[str, Any]:
    info: dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
    }
    text = _read("/etc/os-release")
    if text:
        kv = dict(
            line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
        )
        info["distro"] = kv.get("PRETTY_NAME", "").strip('"') or None
    return info


def _cpu() -> dict[str, Any]:
    model = None
    text = _read("/proc/cpuinfo")
    if text:
        m = re.search(r"^(?:model name|Hardware|Processor)\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else None
    if not model:
        model = platform.processor() or None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"model": model, "logical_count": os.cpu_count(), "usable_count": usable}


def _memory() -> dict[str, Any]:
    text = _read("/proc/meminfo")
    if text:
        m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
        if m:
            return {"total_bytes": int(m.group(1)) * 1024}
    try:
        return {"total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    except (ValueError, OSError, AttributeError):
        return {"total_bytes": None}


def _torch_build_info() -> dict[str, Any] | None:
    """torch version and the CUDA it was built for, read from torch/version.py without importing torch."""
    mod = sys.modules.get("torch")
    if mod is not None:  # already imported by the caller: ask it directly (cheap)
        info: dict[str, Any] = {"version": getattr(mod, "__version__", None)}
        try:
            info["cuda"] = mod.version.cuda
            info["cuda_available"] = bool(mod.cuda.is_available())
            if info["cuda_available"]:
                info["devices"] = [mod.cuda.get_device_name(i) for i in range(mod.cuda.device_count())]
        except Exception:  # noqa: BLE001
            pass
        return info
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        text = _read(os.path.join(loc, "version.py"))
        if text:
            ver = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
            cuda = re.search(r"^cuda\s*(?::\s*\w[^=]*)?=\s*['\"]([^'\"]+)", text, re.M)
            return {"version": ver.group(1) if ver else None, "cuda": cuda.group(1) if cuda else None}
    return None


def _gpu() -> dict[str, Any]:
    gpu: dict[str, Any] = {"devices": [], "driver": None, "cuda": None, "source": None}
    if shutil.which("nvidia-smi"):
        out = _run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,uuid", "--format=csv,noheader"],
            timeout=5.0,
        )
        if out:
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpu["devices"].append(
                        {"name": parts[0], "memory": parts[1], "uuid": parts[3] if len(parts) > 3 else None}
                    )
                    gpu["driver"] = parts[2]
            gpu["source"] = "nvidia-smi"
            head = _run(["nvidia-smi"], timeout=5.0) or ""
            m = re.search(r"CUDA Version:\s*([\d.]+)", head)
            gpu["cuda"] = m.group(1) if m else None
    if gpu["driver"] is None:
        text = _read("/proc/driver/nvidia/version")
        m = re.search(r"Kernel Module\s+([\d.]+)", text or "")
        if m:
            gpu["driver"], gpu["source"] = m.group(1), gpu["source"] or "/proc/driver/nvidia"
    torch_info = _torch_build_info()
    if torch_info:
        gpu["torch"] = torch_info
        if not gpu["devices"] and torch_info.get("devices"):
            gpu["devices"] = [{"name": n} for n in torch_info["devices"]]
            gpu["source"] = "torch"
    gpu["available"] = bool(gpu["devices"])
    return gpu


def _container() -> dict[str, Any]:
    info: dict[str, Any] = {
        "in_container": False,
        "runtime": None,
        "container_id": None,
        "image": None,
        "image_digest": None,
    }
    if os.path.exists("/.dockerenv"):
        info.update(in_container=True, runtime="docker")
    podman = _read("/run/.containerenv")
    if podman is not None:
        info.update(in_container=True, runtime="podman")
        kv = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', podman, re.M))
        info["image"] = kv.get("image") or None
        info["image_digest"] = kv.get("imageid") or None
        info["container_id"] = kv.get("id") or None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        info.update(in_container=True, runtime=info["runtime"] or "kubernetes")
    cgroup = (_read("/proc/1/cgroup") or "") + (_read("/proc/self/mountinfo") or "")
    m = re.search(r"(?:docker|containers|crio|containerd|libpod)[-/]([0-9a-f]{64})", cgroup)
    if m:
        info["container_id"] = info["container_id"] or m.group(1)
        info["in_container"] = True
    for word in ("kubepods", "lxc", "containerd"):
        if not info["runtime"] and word in cgroup:
            info.update(in_container=True, runtime=word)
    # The image digest is invisible from inside Docker; deployments can pass it in explicitly.
    info["image"] = os.environ.get("EVALKEEPER_CONTAINER_IMAGE") or info["image"]
    info["image_digest"] = os.environ.get("EVALKEEPER_CONTAINER_DIGEST") or info["image_digest"]
    return info


def capture_git(repo_path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and sha256 of the uncommitted diff; None outside a git work tree."""
    if not shutil.which("git"):
        return None
    cwd = str(repo_path or os.getcwd())
    # All at once (a run waits for this before its first model call); outside a work tree they all fail fast.
    top, commit_out, branch_out, status_out, diff_out, remote_out = _run_all([
        (["git", "rev-parse", "--show-toplevel"], 2.0),
        (["git", "rev-parse", "HEAD"], 2.0),
        (["git", "rev-parse", "--abbrev-ref", "HEAD"], 2.0),
        (["git", "status", "--porcelain", "--untracked-files=normal"], 2.0),
        (["git", "diff", "HEAD", "--binary"], 5.0),
        (["git", "config", "--get", "remote.origin.url"], 2.0),
    ], cwd=cwd)
    if top is None:
        return None
    commit = (commit_out or "").strip() or None
    branch = (branch_out or "").strip() or None
    status = status_out or ""
    diff = diff_out if commit else None
    remote = (remote_out or "").strip() or None
    untracked = sorted(line[3:] for line in status.splitlines() if line.startswith("??"))
    return {
        "root": top.strip(),
        "commit": commit,
        "branch": branch,
        "dirty": bool(status.strip()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
        "untracked_files": untracked[:200],
        "remote": redact_value("remote", remote) if remote else None,
    }


def capture_environment(repo_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Snapshot of this process's environment. Each section is captured independently: one failing
    section is recorded as an error string, never raised."""
    env: dict[str, Any] = {
        "schema": ENV_SCHEMA,
        "captured_at": dt.datetime.now(dt.UTC).isoformat(),
        "hostname": platform.node() or None,
    }
    sections: dict[str, Callable[[], Any]] = {
        "python": _python,
        "packages": installed_packages,
        "os": _os,
        "cpu": _cpu,
        "memory": _memory,
        "gpu": _gpu,
        "container": _container,
        "git": lambda: capture_git(repo_path),
        "env_vars": captured_env_vars,
    }
    for key, fn in sections.items():
        try:
            env[key] = fn()
        except Exception as exc:  # noqa: BLE001 - capture must never fail a run
            env[key] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        env["evalkeeper_version"] = md.version("evalkeeper")
    except md.PackageNotFoundError:
        env["evalkeeper_version"] = None
    return env


def summarize_environment(env: dict[str, Any] | None) -> dict[str, Any]:
    """The few lines a human wants first (inspect-bundle, `evalkeeper env`)."""
    if not env:
        return {}
    py, osi, cpu, gpu = (env.get(k) or {} for k in ("python", "os", "cpu", "gpu"))
    git, cont, mem = (env.get(k) or {} for k in ("git", "container", "memory"))
    pk = env.get("packages") or {}
    total = mem.get("total_bytes")
    return {
        "captured_at": env.get("captured_at"),
        "python": py.get("version"),
        "os": osi.get("distro") or osi.get("platform"),
        "kernel": osi.get("release"),
        "cpu": f"{cpu.get('model')} x{cpu.get('logical_count')}",
        "memory_gib": round(total / 2**30, 1) if isinstance(total, int) else None,
        "gpu": ", ".join(d.get("name", "?") for d in gpu.get("devices", [])) or "none",
        "gpu_driver": gpu.get("driver"),
        "cuda": gpu.get("cuda") or (gpu.get("torch") or {}).get("cuda"),
        "container": cont.get("runtime") if cont.get("in_container") else "none",
        "image_digest": cont.get("image_digest"),
        "git": f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''} on {git.get('branch')}"
        if git.get("commit")
        else None,
        "packages": len(pk) if isinstance(pk, dict) else None,
        "evalkeeper": env.get("evalkeeper_version"),
    }


# Packages whose version changes can move scores (numerics, tokenization, generation defaults).
SCORE_RELEVANT_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "numpy",
    "scipy",
    "vllm",
    "gguf",
    "sentencepiece",
    "llama-cpp-python",
    "datasets",
    "evalkeeper",
    "safetensors",
    "flash-attn",
    "triton",
    "jinja2",
)


def diff_environments(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Human-readable differences that could explain different scores, most relevant first."""
    if not old or not new:
        return ["environment snapshot missing on one side; cannot compare environments"]
    out: list[str] = []

    def cmp(label: str, a: Any, b: Any) -> None:
        if a != b:
            out.append(f"{label}: {a} -> {b}")

    o, n = summarize_environment(old), summarize_environment(new)
    for key in ("python", "gpu", "gpu_driver", "cuda", "cpu", "os", "kernel", "container", "image_digest"):
        cmp(key, o.get(key), n.get(key))
    opk, npk = old.get("packages") or {}, new.get("packages") or {}
    for name in SCORE_RELEVANT_PACKAGES:
        cmp(f"package {name}", opk.get(name), npk.get(name))
    others = sorted(
        k for k in set(opk) | set(npk) if k not in SCORE_RELEVANT_PACKAGES and opk.get(k) != npk.get(k)
    )
    if others:
        shown = ", ".join(f"{k} {opk.get(k)}->{npk.get(k)}" for k in others[:10])
        out.append(f"{len(others)} other package(s) differ: {shown}{' ...' if len(others) > 10 else ''}")
    ov, nv = old.get("env_vars") or {}, new.get("env_vars") or {}
    for k in sorted(set(ov) | set(nv)):
        cmp(f"env {k}", ov.get(k), nv.get(k))
    og, ng = old.get("git") or {}, new.get("git") or {}
    cmp("git commit", og.get("commit"), ng.get("commit"))
    cmp("git dirty", og.get("dirty"), ng.get("dirty"))
    return out
