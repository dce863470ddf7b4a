"""The HTML report opened from disk in Debian's chromium: our script runs under the CSP, sorting works, outputs
stay text, and nothing is fetched. Skips without /usr/bin/chromium locally, fails in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkeeper.report import render_leaderboard, render_report
from evalkeeper.store import Workspace
from helpers import make_run

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
XSS = ["<script>alert('x1')</script>", "<img src=x onerror=alert('x2')>", '" onmouseover="alert(3)" x="']

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _open(browser: Any, path: Path, check: Any) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        check(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"report-{path.stem}.png"), full_page=True)
        assert problems == [], problems  # a CSP violation or an injected script would show up here
        assert [u for u in requests if not u.startswith("file:")] == []
    finally:
        page.close()


def _column(page: Any, table: str, index: int) -> list[str]:
    return [c.strip() for c in page.locator(f"{table} tbody tr td:nth-child({index})").all_inner_texts()]


def test_report_in_chromium(browser: Any, workspace: Workspace, tmp_path: Path) -> None:
    base = make_run(workspace, tasks=("arith", "mc"), n=120, seed=1, p=0.8, groups={"lang": ["en", "fr"]})
    cand = make_run(workspace, tasks=("arith", "mc"), n=120, seed=2, p=0.6, groups={"lang": ["en", "fr"]},
                    outputs=XSS)
    out = tmp_path / "report.html"
    render_report(workspace, cand.run_id, fmt="html", out=out, compare=base.run_id)

    def check(page: Any) -> None:
        worst = "#worst ~ .scroll table"
        preds = _column(page, worst, 6)
        assert set(preds) <= set(XSS) and preds  # the payloads are visible as text
        assert page.locator("img").count() == 0 and page.locator("script").count() == 1
        header = page.locator(f"{worst} thead th", has_text="sample")
        header.click()
        ids = _column(page, worst, 2)
        assert ids == sorted(ids) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert _column(page, worst, 2) == sorted(ids, reverse=True)

    _open(browser, out, check)


def test_leaderboard_sorts_numerically_in_chromium(browser: Any, workspace: Workspace, tmp_path: Path) -> None:
    for seed, p in ((1, 0.5), (2, 0.9), (3, 0.7)):
        make_run(workspace, tasks=("arith",), n=100, seed=seed, p=p, model=f"m{seed}")
    out = tmp_path / "board.html"
    render_leaderboard(workspace, fmt="html", out=out)

    def check(page: Any) -> None:
        col = page.locator("#board thead th", has_text="arith")
        col.click()
        values = [float(v.split()[0]) for v in _column(page, "#board", 4)]
        assert values == sorted(values) and len(values) == 3

    _open(browser, out, check)
