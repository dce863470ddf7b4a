"""Leaderboard numbers and ordering, and the `report` / `leaderboard` commands end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.report import leaderboard, render_leaderboard
from evalkeeper.store import Workspace
from helpers import Z95, make_run, run_cli


def test_leaderboard_cells_mean_and_order(workspace: Workspace) -> None:
    weak = make_run(workspace, tasks=("arith", "mc"), n=200, seed=1, p=0.5, model="weak")
    strong = make_run(workspace, tasks=("arith", "mc"), n=200, seed=2, p=0.9, model="strong")
    partial = make_run(workspace, tasks=("arith",), n=200, seed=3, p=0.99, model="partial")
    board = leaderboard(workspace)
    assert board.tasks == ["arith", "mc"] and board.metrics == {"arith": "acc", "mc": "acc"}
    assert [r.model for r in board.rows] == ["strong", "weak", "partial"]  # by mean; incomplete rows last
    stored = {(m.task): m for m in workspace.get_metrics(strong.run_id)}
    row = board.rows[0]
    for task in ("arith", "mc"):
        c = board.cell(row, task)
        assert c is not None and c.estimate.value == stored[task].value and c.estimate.ci_low == stored[task].ci_low
    se = math.sqrt(stored["arith"].stderr ** 2 + stored["mc"].stderr ** 2) / 2  # type: ignore[operator]
    mean = (stored["arith"].value + stored["mc"].value) / 2
    assert row.mean is not None and row.mean.value == pytest.approx(mean)
    assert row.mean.ci_low == pytest.approx(mean - Z95 * se) and row.mean.ci_high == pytest.approx(mean + Z95 * se)
    assert board.rows[2].mean is None and board.cell(board.rows[2], "mc") is None

    only = leaderboard(workspace, tasks=["mc"], runs=[weak.run_id, strong.run_id[:-1]])
    assert only.tasks == ["mc"] and {r.run_id for r in only.rows} == {weak.run_id, strong.run_id}
    with pytest.raises(EvalkeeperError, match="no run has task"):
        leaderboard(workspace, tasks=["nope"])
    assert partial.run_id in {r.run_id for r in board.rows}


def test_leaderboard_formats(workspace: Workspace) -> None:
    a = make_run(workspace, tasks=("arith",), n=100, seed=1, p=0.6, model="<script>m</script>")
    html = render_leaderboard(workspace, fmt="html").decode()
    m = workspace.get_metrics(a.run_id)[0]
    half = (m.ci_high - m.ci_low) / 2  # type: ignore[operator]
    assert f"{m.value:.3f}" in html and f"± {half:.3f}" in html and 'class="sortable"' in html
    assert "<script>m</script>" not in html and "&lt;script&gt;m&lt;/script&gt;" in html
    md = render_leaderboard(workspace, fmt="md").decode()
    assert f"{m.value:.3f} ± {half:.3f}" in md
    pypdf = pytest.importorskip("pypdf")
    pdf = pypdf.PdfReader(io.BytesIO(render_leaderboard(workspace, fmt="pdf")))
    assert f"{m.value:.3f}" in pdf.pages[0].extract_text() and f"{half:.3f}" in pdf.pages[0].extract_text()
    data = json.loads(render_leaderboard(workspace, fmt="json"))
    assert data["leaderboard_schema_version"] == 1 and data["rows"][0]["cells"][0]["estimate"]["value"] == m.value


def test_cli_report_and_leaderboard(workspace: Workspace, tmp_path: Path) -> None:
    base = make_run(workspace, tasks=("arith",), n=150, seed=1, p=0.8)
    cand = make_run(workspace, tasks=("arith",), n=150, seed=2, p=0.5)
    code, _, _ = run_cli("baseline", "set", base.run_id, "--name", "prod")
    if code != 0:  # the baseline command belongs to the gates area; set it directly if it is not there yet
        workspace.set_baseline("prod", base.run_id)
    out = tmp_path / "report.html"
    code, _, err = run_cli("report", cand.run_id, "--compare", "prod", "--format", "html", "-o", str(out))
    assert code == 0, err
    html = out.read_text()
    assert "Comparison with baseline prod" in html and "REGRESSED" in html

    code, stdout, _ = run_cli("report", cand.run_id[:-1], "--compare", "prod", "--format", "json")
    assert code == 0
    payload = json.loads(stdout)
    assert payload["comparison"]["rows"][0]["direction"] == "regressed"
    assert payload["summary"]["n_regressed"] == 1
    assert len(payload["worst_samples"]) == 5 and payload["slices"] == []
    code, stdout, _ = run_cli("report", cand.run_id, "--format", "json", "--worst", "0", "--no-gates")
    assert code == 0 and json.loads(stdout)["worst_samples"] == [] and json.loads(stdout)["gate"] is None

    md = tmp_path / "r.md"
    code, _, _ = run_cli("report", cand.run_id, "-o", str(md))  # format from the suffix
    assert code == 0 and md.read_text().startswith("# Evaluation report")

    code, _, err = run_cli("report", cand.run_id, "--format", "pdf")
    assert code == 2 and "PDF output needs a file" in err
    code, _, err = run_cli("report", cand.run_id, "--format", "docx")
    assert code == 2 and "unknown format" in err
    code, _, err = run_cli("report", "no-such-run")
    assert code == 2 and "no run or baseline named" in err

    board = tmp_path / "board.html"
    code, _, err = run_cli("leaderboard", "--tasks", "arith", "-o", str(board))
    assert code == 0, err
    assert base.run_id in board.read_text() and cand.run_id in board.read_text()
