"""Fixtures for dashboard tests: one workspace with two comparable runs whose outputs try to inject HTML."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from evalkeeper.core.records import Run
from evalkeeper.server import create_app
from evalkeeper.store import Workspace, open_workspace
from helpers import make_run

XSS_OUTPUTS = (
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=alert('xss-img')>",
    '" onmouseover="alert(\'xss-attr\')" x="',
    "plain answer",
)
GROUPS = {"lang": ["en", "fr", "de"], "level": ["easy", "hard"]}


@dataclass
class Dash:
    ws: Workspace
    a: Run  # baseline
    b: Run  # candidate (worse, with hostile outputs)


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Dash:
    ws = open_workspace(Path(tmp_path_factory.mktemp("dash")) / "ws")
    a = make_run(ws, tasks=("arith", "mc"), n=120, seed=1, p=0.85, model="base-model", tags=["baseline"],
                 run_id="run-a-baseline", groups=GROUPS)
    b = make_run(ws, tasks=("arith", "mc"), n=120, seed=2, p={"arith": 0.45, "mc": 0.8}, model="cand-model",
                 tags=["candidate"], run_id="run-b-candidate", groups=GROUPS, outputs=XSS_OUTPUTS)
    return Dash(ws=ws, a=a, b=b)


@pytest.fixture(scope="module")
def client(dash: Dash) -> Iterator[TestClient]:
    with TestClient(create_app(dash.ws), base_url="http://127.0.0.1") as c:
        yield c
