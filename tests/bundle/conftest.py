"""A small stored run and its bundle, shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkeeper.bundle.writer import create_bundle
from evalkeeper.core.records import Run
from evalkeeper.store import Workspace, open_workspace
from helpers import make_run


@pytest.fixture()
def stored_run(workspace: Workspace) -> Run:
    return make_run(workspace, tasks=("arith", "mc"), n=300, seed=3)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only bundle per test module (tests write edited copies elsewhere)."""
    root = tmp_path_factory.mktemp("bundle-src")
    ws = open_workspace(root / "ws")
    run = make_run(ws, tasks=("arith", "mc"), n=300, seed=3)
    path = create_bundle(ws, run.run_id, root / "run.ekb").path
    path.chmod(0o444)
    return path
