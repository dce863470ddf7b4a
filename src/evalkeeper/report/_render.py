"""Entry points that turn a run (or the leaderboard) into a file in one of four formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from evalkeeper.core.atomic import atomic_write_bytes
from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.store import Workspace

from ._build import build_report
from ._html import render_report_html
from ._leaderboard import leaderboard, render_leaderboard_html
from ._markdown import render_leaderboard_markdown, render_report_markdown
from ._model import Leaderboard, ReportData

Format = Literal["json", "md", "html", "pdf"]
FORMATS: tuple[str, ...] = ("json", "md", "html", "pdf")


def html_to_pdf(html: str) -> bytes:
    """Paginate the report's HTML with WeasyPrint (print CSS in the page; charts are static SVG)."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: pango/harfbuzz system libraries missing
        raise EvalkeeperError(
            f"PDF output needs WeasyPrint and its system libraries ({exc})",
            hint="pip install 'evalkeeper[report]'; on Debian/Ubuntu: apt-get install "
            "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core",
        ) from None

    def no_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        # A report never needs the network; refusing fetches keeps PDF rendering offline and SSRF-free.
        raise ValueError(f"external resource refused: {url}")

    pdf = weasyprint.HTML(string=html, url_fetcher=no_fetch).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def _check_format(fmt: str) -> str:
    f = fmt.lower()
    if f == "markdown":
        f = "md"
    if f not in FORMATS:
        raise EvalkeeperError(f"unknown report format {fmt!r}", hint=f"one of {', '.join(FORMATS)}")
    return f


def render_report_data(data: ReportData, fmt: str = "html") -> bytes:
    f = _check_format(fmt)
    if f == "json":
        return (data.model_dump_json(indent=2) + "\n").encode("utf-8")
    if f == "md":
        return render_report_markdown(data).encode("utf-8")
    html = render_report_html(data)
    return html.encode("utf-8") if f == "html" else html_to_pdf(html)


def render_leaderboard_data(board: Leaderboard, fmt: str = "html") -> bytes:
    f = _check_format(fmt)
    if f == "json":
        return (board.model_dump_json(indent=2) + "\n").encode("utf-8")
    if f == "md":
        return render_leaderboard_markdown(board).encode("utf-8")
    html = render_leaderboard_html(board)
    return html.encode("utf-8") if f == "html" else html_to_pdf(html)


def write_output(content: bytes, out: str | os.PathLike[str] | None) -> bytes:
    if out is not None:
        path = Path(out)
        if path.parent and not path.parent.exists():
            raise EvalkeeperError("output folder does not exist", path=str(path.parent))
        atomic_write_bytes(path, content)
    return content


def render_report(
    ws: Workspace,
    run_ref: str,
    fmt: str = "html",
    out: str | os.PathLike[str] | None = None,
    compare: str | None = None,
    gate_report: Any = None,
) -> bytes:
    """Build and render one run's report; writes `out` atomically when given and returns the bytes."""
    f = _check_format(fmt)
    return write_output(
        render_report_data(build_report(ws, run_ref, compare=compare, gate_report=gate_report), f), out
    )


def render_leaderboard(
    ws: Workspace,
    fmt: str = "html",
    out: str | os.PathLike[str] | None = None,
    tasks: list[str] | None = None,
    runs: list[str] | None = None,
    tag: str | None = None,
) -> bytes:
    f = _check_format(fmt)
    return write_output(render_leaderboard_data(leaderboard(ws, tasks=tasks, runs=runs, tag=tag), f), out)
