"""Shared fixtures: a fresh workspace per test, never the user's real one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from helpers import make_run` and `tests.helpers`

from evalkeeper.store import Workspace, open_workspace  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    home = tmp_path / "ws"
    monkeypatch.setenv("EVALKEEPER_HOME", str(home))
    monkeypatch.delenv("EVALKEEPER_DB_URL", raising=False)
    yield open_workspace(home)
