"""The four formats: same numbers everywhere, schema-valid JSON, escaped model outputs, offline HTML, PDF text."""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import io
import json
import re
import uuid
from pathlib import Path

import jsonschema
import pytest

from evalkeeper.core.records import Decision
from evalkeeper.report import ReportData, build_report, render_report, render_report_data, report_json_schema
from evalkeeper.report._charts import fmt
from evalkeeper.store import Workspace
from helpers import make_run

REPO = Path(__file__).resolve().parents[2]
XSS = ["<script>alert('x1')</script>", "<img src=x onerror=alert('x2')>", '" onmouseover="alert(3)" x="',
       "| broken | table\nnext `code` row", "[click](javascript:alert(4))"]


@pytest.fixture()
def report_data(workspace: Workspace) -> ReportData:
    base = make_run(workspace, tasks=("arith", "mc"), n=200, seed=11, p=0.8, groups={"lang": ["en", "fr"]})
    cand = make_run(workspace, tasks=("arith", "mc"), n=200, seed=12, p={"arith": 0.6, "mc": 0.8},
                    groups={"lang": ["en", "fr"]}, outputs=XSS, model="cand<b>model</b>")
    workspace.set_baseline("prod", base.run_id)
    workspace.append_decision(Decision(
        decision_id=uuid.uuid4().hex, kind="gate", subject=cand.run_id, verdict="fail",
        details={"policy": "gates.yaml", "rules": [
            {"name": "no-regression", "verdict": "fail", "message": "<script>gate()</script> dropped",
             "evidence": {"diff": -0.2, "p_corrected": 0.0001}}]}))
    return build_report(workspace, cand.run_id, compare="prod", worst_per_task=10)


def _numbers(data: ReportData) -> list[str]:
    """Every headline number as the renderers print it: metrics and their CI bounds, diffs, slices."""
    out = []
    for m in data.metrics:
        out += [fmt(m.estimate.value), fmt(m.estimate.ci_low), fmt(m.estimate.ci_high)]
    assert data.comparison is not None
    for r in data.comparison.rows:
        out += [f"{r.diff.value:+.3f}", f"{r.diff.ci_low:+.3f}", f"{r.diff.ci_high:+.3f}", fmt(r.baseline),
                fmt(r.candidate)]
    for s in data.slices:
        out += [fmt(s.estimate.value), fmt(s.estimate.ci_low), fmt(s.estimate.ci_high)]
    return out


def test_docs_schema_is_current_and_json_validates(report_data: ReportData) -> None:
    documented = json.loads((REPO / "docs" / "report-schema.json").read_text())
    assert documented == json.loads(json.dumps(report_json_schema())), (
        "docs/report-schema.json is stale: regenerate with "
        "python -c 'from evalkeeper.report._schema import report_json_schema_text as t; print(t(), end=\"\")'")
    payload = json.loads(render_report_data(report_data, "json"))
    jsonschema.Draft202012Validator(documented).validate(payload)
    assert payload["report_schema_version"] == 1
    assert payload["comparison"]["rows"][0]["p_adjusted"] == report_data.comparison.rows[0].p_adjusted  # type: ignore[union-attr]
    broken = dict(payload, summary={"headline": 3})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(documented).validate(broken)
    assert ReportData.model_validate(payload) == report_data  # JSON round-trips losslessly


def test_markdown_has_numbers_badges_and_escapes(report_data: ReportData) -> None:
    md = render_report_data(report_data, "md").decode()
    for number in _numbers(report_data):
        assert number in md
    assert md.index("## Summary") < md.index("## Metrics")  # executive summary first
    assert "🔴 regressed" in md and "❌ FAIL" in md and "⚪ no significant change" in md
    for raw in ("<script>", "<img", "<b>model"):
        assert raw not in md
    assert "&lt;script&gt;" in md and "&lt;img src=x onerror=alert('x2')&gt;" in md
    assert "\\[click\\](javascript:alert(4))" in md and "[click](" not in md
    # a pipe or newline in a model output must not break the table: every table row has the same cell count
    worst = md.split("## Worst samples")[1].split("\n\n")[1].splitlines()
    counts = {len(re.findall(r"(?<!\\)\|", line)) for line in worst}
    assert counts == {7}


def test_html_escapes_outputs_in_text_and_attributes(report_data: ReportData) -> None:
    html = render_report_data(report_data, "html").decode()
    for number in _numbers(report_data):
        assert number in html
    assert "<script>alert" not in html and "<img src=x" not in html and "<script>gate()" not in html
    assert "&lt;script&gt;alert(&#39;x1&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(&#39;x2&#39;)&gt;" in html
    assert "&#34; onmouseover=&#34;alert(3)&#34;" in html and '" onmouseover=' not in html
    assert "cand&lt;b&gt;model&lt;/b&gt;" in html and "<b>model" not in html
    # exactly one script element (ours), and no inline event handlers anywhere
    assert len(re.findall(r"<script\b", html)) == 1
    assert not re.search(r"<[^>]+\son\w+\s*=", html)
    assert "javascript:" not in html.split("</style>")[1].replace("[click](javascript:alert(4))", "")


def test_html_is_self_contained_with_hashed_csp(report_data: ReportData) -> None:
    html = render_report_data(report_data, "html").decode()
    for attr in re.findall(r'(?:src|href|action|xlink:href)\s*=\s*"([^"]*)"', html):
        assert not re.match(r"(https?:)?//", attr), attr
    assert "@import" not in html and "url(" not in html.split("</style>")[0]
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None
    policy = html_lib.unescape(csp.group(1))  # the browser decodes the attribute before parsing the policy
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert script and style
    for body in (script.group(1), style.group(1)):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert html.count("<svg") >= 4  # metrics, comparison, two slice charts
    assert 'class="sortable"' in html


def test_html_renders_gate_and_comparison_sections(report_data: ReportData) -> None:
    html = render_report_data(report_data, "html").decode()
    assert html.index('id="summary"') < html.index('id="metrics"') < html.index('id="comparison"')
    row = report_data.comparison.rows[0]  # type: ignore[union-attr]
    assert f"{row.p_value:.4f}" in html or "&lt; 0.0001" in html
    assert f"{row.flips_to_wrong} / {row.flips_to_right}" in html
    assert "REGRESSED" in html and "FAIL" in html and "diff=-0.200; p_corrected=0.0001" in html


def test_pdf_text_contains_the_numbers(report_data: ReportData) -> None:
    pypdf = pytest.importorskip("pypdf")
    # fewer sample rows keep WeasyPrint quick; one row still carries a script payload to check it shows as text
    few = [w for w in report_data.worst_samples if w.prediction == XSS[0]][:2]
    assert few
    pdf = render_report_data(report_data.model_copy(update={"worst_samples": few}), "pdf")
    assert pdf.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    flat = re.sub(r"\s+", " ", text)
    for number in _numbers(report_data):
        assert number in flat, number
    assert "Evaluation report" in flat and "regression" in flat and len(reader.pages) >= 2
    assert "page 1 of" in flat  # print CSS: paginated with page numbers
    assert "<script>alert('x1')</script>" in flat  # shown as text, not swallowed as markup


def test_render_report_writes_file(workspace: Workspace, tmp_path: Path) -> None:
    run = make_run(workspace, tasks=("arith",), n=30, seed=1)
    out = tmp_path / "r.html"
    content = render_report(workspace, run.run_id, fmt="html", out=out)
    assert out.read_bytes() == content and content.startswith(b"<!DOCTYPE html>")
    with pytest.raises(Exception, match="unknown report format"):
        render_report(workspace, run.run_id, fmt="docx")
