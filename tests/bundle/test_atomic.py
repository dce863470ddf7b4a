"""kill -9 in the middle of `bundle` never leaves a truncated .ekb behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from evalkeeper.bundle.verify import verify_bundle
from evalkeeper.core.records import Run
from evalkeeper.store import Workspace

CHILD = textwrap.dedent("""
    import sys, time
    from evalkeeper.bundle import writer
    from evalkeeper.store import open_workspace

    real = writer.TarZstdWriter.add_file

    def slow_add_file(self, name, path):  # make the kill land mid-stream, after bytes hit the temp file
        out = real(self, name, path)
        self.z.flush()
        sys.stdout.write("member written\\n"); sys.stdout.flush()
        time.sleep(30)
        return out

    writer.TarZstdWriter.add_file = slow_add_file
    ws = open_workspace(sys.argv[1])
    writer.create_bundle(ws, sys.argv[2], sys.argv[3])
""")


def test_sigkill_during_bundle_leaves_no_ekb(workspace: Workspace, stored_run: Run, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "run.ekb"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(workspace.home), stored_run.run_id, str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "member written", proc.stderr.read() if proc.stderr else ""
        temps = [p for p in out_dir.iterdir() if p.name != "run.ekb"]
        assert temps and temps[0].stat().st_size > 0  # the kill really lands mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    # The same command completes normally afterwards and the result verifies.
    from evalkeeper.bundle.writer import create_bundle

    t0 = time.time()
    create_bundle(workspace, stored_run.run_id, target)
    assert time.time() - t0 < 30
    assert verify_bundle(target).status == "intact"
