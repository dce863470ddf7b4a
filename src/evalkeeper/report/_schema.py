"""The documented JSON schema of reports: generated from the pydantic models, checked into docs/."""

from __future__ import annotations

import json
from typing import Any

from ._model import REPORT_SCHEMA_VERSION, ReportData


def report_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of `evalkeeper report --format json` output."""
    schema = ReportData.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://evalkeeper.dev/schemas/report-v{REPORT_SCHEMA_VERSION}.json"
    schema["title"] = "evalkeeper run report"
    schema["description"] = (
        "One evaluation run: metrics with 95% CIs, slices by group attribute, worst samples, a paired "
        "comparison against a baseline, quality-gate verdicts and an environment summary. "
        f"report_schema_version {REPORT_SCHEMA_VERSION}; additive changes keep the version, others bump it."
    )
    return schema


def report_json_schema_text() -> str:
    return json.dumps(report_json_schema(), indent=2, sort_keys=True) + "\n"
