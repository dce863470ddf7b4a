"""Run reports (JSON, Markdown, self-contained HTML, PDF) and leaderboards (S6P2)."""

from ._build import build_report
from ._leaderboard import leaderboard
from ._model import (
    LEADERBOARD_SCHEMA_VERSION,
    REPORT_SCHEMA_VERSION,
    Comparison,
    ComparisonRow,
    Estimate,
    ExecutiveSummary,
    GateSummary,
    Leaderboard,
    LeaderboardRow,
    MetricRow,
    ReportData,
    SliceRow,
    WorstSample,
)
from ._render import (
    FORMATS,
    html_to_pdf,
    render_leaderboard,
    render_leaderboard_data,
    render_report,
    render_report_data,
)
from ._schema import report_json_schema

__all__ = [
    "FORMATS",
    "LEADERBOARD_SCHEMA_VERSION",
    "REPORT_SCHEMA_VERSION",
    "Comparison",
    "ComparisonRow",
    "Estimate",
    "ExecutiveSummary",
    "GateSummary",
    "Leaderboard",
    "LeaderboardRow",
    "MetricRow",
    "ReportData",
    "SliceRow",
    "WorstSample",
    "build_report",
    "html_to_pdf",
    "leaderboard",
    "render_leaderboard",
    "render_leaderboard_data",
    "render_report",
    "render_report_data",
    "report_json_schema",
]
