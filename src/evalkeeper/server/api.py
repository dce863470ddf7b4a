"""JSON API under /api: thin routes over DashboardService (the pages use the same service and endpoints)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from evalkeeper.server._sql import MAX_PAGE_SIZE, SORT_KEYS, ExplorerQuery
from evalkeeper.server.schemas import (
    ComparisonOut,
    RunDetail,
    RunSummary,
    SampleDetail,
    SamplePage,
    SliceReport,
)
from evalkeeper.server.services import DashboardService

router = APIRouter(prefix="/api", tags=["api"])


def service(request: Request) -> DashboardService:
    svc: DashboardService = request.app.state.service
    return svc


Service = Annotated[DashboardService, Depends(service)]


def explorer_query(
    task: str | None = None,
    metric: Annotated[
        str | None, Query(description="metric for score filters/sort; default: primary")
    ] = None,
    score_min: float | None = None,
    score_max: float | None = None,
    group: Annotated[str | None, Query(description="group attribute name")] = None,
    group_value: str | None = None,
    search: Annotated[
        str | None, Query(description="case-insensitive text in input/prediction/target")
    ] = None,
    sort: Annotated[str, Query(description=f"one of {', '.join(SORT_KEYS)}")] = "sample_id",
    order: Literal["asc", "desc"] = "asc",
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> ExplorerQuery:
    """Query parameters of the sample explorer; empty strings (from HTML forms) mean 'not set'."""
    return ExplorerQuery(
        task=task or None,
        metric=metric or None,
        score_min=score_min,
        score_max=score_max,
        group=group or None,
        group_value=group_value if group else None,
        search=search or None,
        sort=sort,
        order=order,
        page=page,
        page_size=page_size,
    )


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/runs", response_model=list[RunSummary])
def list_runs(
    svc: Service, search: str | None = None, tag: str | None = None, model: str | None = None
) -> list[RunSummary]:
    """Runs, newest first; `search` matches id, model, tasks, tags and labels."""
    return svc.list_runs(search=search, tag=tag, model=model)


@router.get("/runs/{run_ref}", response_model=RunDetail)
def run_detail(run_ref: str, svc: Service) -> RunDetail:
    """One run: metrics with CIs, tasks, generation parameters, environment summary, group attributes."""
    return svc.run_detail(run_ref)


@router.get("/runs/{run_ref}/samples", response_model=SamplePage)
def samples(run_ref: str, svc: Service, q: Annotated[ExplorerQuery, Depends(explorer_query)]) -> SamplePage:
    """One page of samples with the total count of the filter (DuckDB over the run's Parquet)."""
    return svc.samples(run_ref, q)


@router.get("/runs/{run_ref}/sample", response_model=SampleDetail)
def sample(run_ref: str, svc: Service, task: str, sample_id: str, epoch: int | None = None) -> SampleDetail:
    """Everything stored for one sample (first epoch unless `epoch` is given)."""
    return svc.sample(run_ref, task, sample_id, epoch)


@router.get("/runs/{run_ref}/slices", response_model=SliceReport)
def slices(run_ref: str, svc: Service, task: str, attribute: str, metric: str | None = None) -> SliceReport:
    """A metric per value of a group attribute, with 95% CIs."""
    return svc.slices(run_ref, task, attribute, metric)


@router.get("/compare", response_model=ComparisonOut)
def compare(
    svc: Service,
    a: str,
    b: str,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    correction: Literal["holm", "bh", "none"] = "holm",
) -> ComparisonOut:
    """Run b (candidate) against run a (baseline), paired on sample ids, p-values corrected across rows."""
    return svc.compare(a, b, alpha=alpha, correction=correction)


@router.get("/runs/{run_ref}/report.{fmt}", responses={200: {"content": {"application/octet-stream": {}}}})
def report(run_ref: str, fmt: str, svc: Service, compare: str | None = None) -> Response:
    """The run's report (html, md, json or pdf, optionally against a baseline), as a download.

    Served as an attachment: the self-contained HTML report is opened from disk, never rendered inside
    the dashboard's origin.
    """
    name, body = svc.report(run_ref, fmt, compare or None)
    media = {"html": "text/html", "md": "text/markdown", "json": "application/json", "pdf": "application/pdf"}
    return Response(body, media_type=media[fmt] + ("; charset=utf-8" if fmt != "pdf" else ""),
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
