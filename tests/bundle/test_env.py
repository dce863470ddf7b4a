"""Environment capture: fields present, fast, never failing, secrets redacted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkeeper.bundle import capture_environment, diff_environments, summarize_environment
from evalkeeper.bundle import env as E


def test_capture_has_every_section_and_is_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    env = capture_environment(tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    assert env["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["packages"]["pyarrow"]  # every installed distribution, with version
    import importlib.metadata as md

    assert env["packages"]["zstandard"] == md.version("zstandard")
    assert len(env["packages"]) >= len({d.metadata["Name"].lower() for d in md.distributions()}) - 2
    assert env["os"]["system"] and env["os"]["release"]
    assert env["cpu"]["logical_count"] >= 1
    assert env["memory"]["total_bytes"] > 2**20
    assert env["gpu"]["available"] in (True, False)
    assert "in_container" in env["container"]
    assert env["git"] is None  # tmp_path is not a repository
    json.dumps(env)  # JSON-serialisable


def test_capture_does_not_import_torch() -> None:
    code = (
        "import sys; from evalkeeper.bundle import capture_environment as c; c(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_commit_branch_dirty_and_diff_hash(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "trunk")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "c1")
    clean = E.capture_git(tmp_path)
    assert clean is not None
    assert clean["branch"] == "trunk" and len(clean["commit"]) == 40
    assert clean["dirty"] is False and clean["diff_sha256"] is None
    (tmp_path / "a.txt").write_text("two\n")
    d1 = E.capture_git(tmp_path)
    (tmp_path / "a.txt").write_text("three\n")
    d2 = E.capture_git(tmp_path)
    assert d1 and d2 and d1["dirty"] and d2["dirty"]
    assert d1["diff_sha256"] and d2["diff_sha256"] and d1["diff_sha256"] != d2["diff_sha256"]
    assert d1["commit"] == clean["commit"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HF_TOKEN", "anything"),
        ("OPENAI_API_KEY", "x"),
        ("EVALKEEPER_WEBHOOK_SECRET", "abc"),
        ("HF_HUB_SOMETHING", "hf_abcdefghijklmnopqrstuvwxyz123456"),
        ("OPENAI_BASE_URL", "sk-proj-ABCDEFGHIJKLMNOP1234567890"),
        ("EVALKEEPER_OPAQUE", "a8Fk3Lm9Qz2Xw7Vb4Nc6Rt1Yp0"),
    ],
)
def test_secret_values_are_redacted(name: str, value: str) -> None:
    got = E.captured_env_vars({name: value})
    assert got == {name: E.REDACTED}


def test_url_password_and_query_token_redacted_but_rest_kept() -> None:
    got = E.captured_env_vars({
        "EVALKEEPER_DB_URL": "postgresql://alice:s3cr3t@db.example:5432/ek",
        "OPENAI_BASE_URL": "https://api.example/v1?api_key=zzz&x=1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HF_HOME": "/data/hf-cache/models-and-datasets-2026",
        "AWS_SECRET_ACCESS_KEY": "not-allow-listed",
        "HOME": "/root",
    })
    assert got["EVALKEEPER_DB_URL"] == f"postgresql://alice:{E.REDACTED}@db.example:5432/ek"
    assert "s3cr3t" not in json.dumps(got)
    assert got["OPENAI_BASE_URL"] == f"https://api.example/v1?api_key={E.REDACTED}&x=1"
    assert got["TOKENIZERS_PARALLELISM"] == "false"
    assert got["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert got["HF_HOME"] == "/data/hf-cache/models-and-datasets-2026"
    assert "AWS_SECRET_ACCESS_KEY" not in got and "HOME" not in got


def test_capture_records_redacted_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_realLookingTokenValue1234567890")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = capture_environment()
    assert env["env_vars"]["HF_TOKEN"] == E.REDACTED
    assert env["env_vars"]["OMP_NUM_THREADS"] == "3"
    assert "hf_realLookingTokenValue1234567890" not in json.dumps(env)


def test_failing_section_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> dict[str, str]:
        raise RuntimeError("no /proc here")

    monkeypatch.setattr(E, "_cpu", boom)
    env = capture_environment()
    assert env["cpu"] == {"error": "RuntimeError: no /proc here"}
    assert env["python"]["version"]


def test_gpu_from_fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name,memory.total,driver_version,uuid" ]; then\n'
        '  echo "NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15, GPU-1234"; exit 0; fi\n'
        'echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |"\n'
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    gpu = E._gpu()
    assert gpu["available"] is True and gpu["source"] == "nvidia-smi"
    assert gpu["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["driver"] == "550.54.15" and gpu["cuda"] == "12.4"


def test_summary_and_diff_name_relevant_changes() -> None:
    a = capture_environment()
    b = json.loads(json.dumps(a))
    b["packages"]["torch"] = "9.9.9"
    b["python"]["version"] = "3.99.0"
    b["env_vars"]["OMP_NUM_THREADS"] = "64"
    diffs = diff_environments(a, b)
    assert any(d.startswith("python:") and "3.99.0" in d for d in diffs)
    assert any(d.startswith("package torch:") and "9.9.9" in d for d in diffs)
    assert any(d.startswith("env OMP_NUM_THREADS") for d in diffs)
    assert diff_environments(a, a) == []
    assert summarize_environment(a)["python"] == a["python"]["version"]


def test_torch_build_read_without_importing_torch() -> None:
    import importlib.metadata as md

    try:
        expected = md.version("torch")
    except md.PackageNotFoundError:
        pytest.skip("torch not installed")
    if "torch" in sys.modules:
        pytest.skip("torch already imported in this process")
    info = E._torch_build_info()
    assert info is not None and info["version"] == expected
    assert "torch" not in sys.modules
    assert ("+cpu" in expected) == (info["cuda"] is None)


def test_podman_containerenv_and_explicit_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "/run/.containerenv": 'engine="podman-4.9"\nname="ek"\nid="abc123"\n'
                              'image="quay.io/org/eval:1.2"\nimageid="sha256:feedbeef"\n',
        "/proc/1/cgroup": "0::/\n",
        "/proc/self/mountinfo": "",
    }
    monkeypatch.setattr(E, "_read", lambda path: files.get(path))
    monkeypatch.setattr(E.os.path, "exists", lambda path: False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("EVALKEEPER_CONTAINER_DIGEST", raising=False)
    monkeypatch.delenv("EVALKEEPER_CONTAINER_IMAGE", raising=False)
    c = E._container()
    assert c == {"in_container": True, "runtime": "podman", "container_id": "abc123",
                 "image": "quay.io/org/eval:1.2", "image_digest": "sha256:feedbeef"}
    monkeypatch.setenv("EVALKEEPER_CONTAINER_DIGEST", "sha256:0123")
    assert E._container()["image_digest"] == "sha256:0123"
    files.pop("/run/.containerenv")
    files["/proc/self/mountinfo"] = "1 2 0:1 /docker/containers/" + "ab" * 32 + "/hosts /etc/hosts rw\n"
    monkeypatch.delenv("EVALKEEPER_CONTAINER_DIGEST")
    c = E._container()
    assert c["in_container"] and c["container_id"] == "ab" * 32
    files["/proc/self/mountinfo"] = ""
    assert E._container()["in_container"] is False
