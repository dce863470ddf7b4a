"""Fixtures for publish tests: a run with a gate verdict and a report, local peers (MLflow server, Hub, receiver)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evalkeeper.core.ids import new_id
from evalkeeper.core.records import Decision, Run
from evalkeeper.store import Workspace
from helpers import make_run


@pytest.fixture()
def run_with_gate(workspace: Workspace) -> Run:
    """A 2-task run (40 samples each) with a failing gate decision and a Markdown report in its run folder."""
    run = make_run(workspace, tasks=("arith", "mc"), n=40, seed=3, p={"arith": 0.6, "mc": 0.8}, model="smol-135m")
    workspace.append_decision(Decision(decision_id=new_id("dec"), kind="gate", subject=run.run_id, verdict="pass",
                                       details={"policy_name": "old-policy", "n_verdicts": 1, "n_failed": 0,
                                                "failed": []}))
    # the shape `evalkeeper gate` records (gates/record.py)
    workspace.append_decision(Decision(decision_id=new_id("dec"), kind="gate", subject=run.run_id, verdict="fail",
                                       details={"policy_name": "release", "policy_sha256": "ab" * 32,
                                                "n_verdicts": 3, "n_failed": 1, "failed": ["min-acc/arith"],
                                                "verdicts": [{"rule": "min-acc", "task": "arith",
                                                              "status": "fail", "estimate": 0.6}]}))
    (workspace.run_dir(run.run_id) / "report.md").write_text("# Report\n\narith acc 0.6\n")
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """What a local HTTP peer received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, **kw: Any) -> None:
        with self.lock:
            self.requests.append(kw)


def serve(handler_factory: Any, host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer((host, 0), handler_factory)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


@pytest.fixture()
def receiver() -> Iterator[tuple[str, Recorder, dict[str, Any]]]:
    """A webhook receiver on loopback. `behaviour` maps a path to (status, headers) to answer with."""
    rec = Recorder()
    behaviour: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.add(path=self.path, headers=dict(self.headers), body=body)
            plan = behaviour.get(self.path, (200, {}))
            if isinstance(plan, list):  # a sequence of answers, one per request
                plan = plan.pop(0) if len(plan) > 1 else plan[0]
            status, headers = plan
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server, port = serve(Handler)
    yield f"http://127.0.0.1:{port}", rec, behaviour
    server.shutdown()


_MLFLOW: dict[str, Any] = {}


def _start_mlflow(root: Path) -> None:
    """Launch `mlflow server` (not waiting for it): it takes many seconds to boot, so start it early."""
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    log = open(root / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    _MLFLOW.update(proc=proc, url=f"http://127.0.0.1:{port}", root=root, log=log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Boot the MLflow server while the other tests run (those tests go last), if a selected test needs it."""
    items = session.items
    needs = [i for i in items if "mlflow_server" in getattr(i, "fixturenames", ())]
    if needs and not _MLFLOW and not session.config.option.collectonly:
        import tempfile

        _start_mlflow(Path(tempfile.mkdtemp(prefix="evalkeeper-mlflow-")))
        items[:] = [i for i in items if i not in needs] + needs


def _stop_mlflow() -> None:
    proc = _MLFLOW.get("proc")
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Never leave the server behind (e.g. when its tests were interrupted or skipped)."""
    _stop_mlflow()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """A real `mlflow server` on a free loopback port (one per session), its URL."""
    import shutil

    import httpx

    if not _MLFLOW:
        import tempfile

        _start_mlflow(Path(tempfile.mkdtemp(prefix="evalkeeper-mlflow-")))
    proc, url, root = _MLFLOW["proc"], _MLFLOW["url"], _MLFLOW["root"]
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not become healthy in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        _stop_mlflow()
        _MLFLOW["log"].close()
        shutil.rmtree(root, ignore_errors=True)


def read_json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))
