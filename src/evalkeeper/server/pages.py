"""Server-rendered pages (Jinja2 with autoescape); they call the same service as the JSON API."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.server._sql import SORT_KEYS, ExplorerQuery
from evalkeeper.server.api import Service, explorer_query
from evalkeeper.server.charts import Interval, interval_chart
from evalkeeper.server.schemas import MetricOut, SliceReport

MAX_SLICE_CHARTS = 6

router = APIRouter(include_in_schema=False)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10**-digits:
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt
    env.filters["pjson"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
    env.filters["qs"] = lambda params: urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return env


templates = Jinja2Templates(env=_environment())


def render(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


def metric_chart(metrics: list[MetricOut], title: str) -> Any:
    rows = [
        Interval(
            label=f"{m.task} · {m.metric}",
            value=m.value,
            low=m.ci_low,
            high=m.ci_high,
            title=f"{m.task} {m.metric}: n={m.n}, method={m.method}",
        )
        for m in metrics
    ]
    return interval_chart(rows, title=title)


def slice_chart(rep: SliceReport) -> Any:
    rows = [
        Interval(label=f"{s.value} (n={s.n})", value=s.mean, low=s.ci_low, high=s.ci_high)
        for s in [rep.overall, *rep.slices]
    ]
    return interval_chart(rows, title=f"{rep.task} {rep.metric} by {rep.attribute}")


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    svc: Service,
    search: str | None = None,
    tag: str | None = None,
    model: str | None = None,
) -> HTMLResponse:
    every = svc.all_runs()
    return render(
        request,
        "runs.html",
        runs=svc.filter_runs(every, search=search, tag=tag or None, model=model or None),
        all_runs=every,
        tags=sorted({t for r in every for t in r.tags}),
        models=sorted({r.model for r in every}),
        f={"search": search or "", "tag": tag or "", "model": model or ""},
    )


@router.get("/runs/{run_ref}", response_class=HTMLResponse)
def run_page(request: Request, run_ref: str, svc: Service) -> HTMLResponse:
    detail = svc.run_detail(run_ref)
    run_id = detail.summary.run_id
    slice_charts: list[tuple[str, str, Any]] = []
    for task, attrs in detail.group_attributes.items():
        for attr in attrs:
            if len(slice_charts) >= MAX_SLICE_CHARTS:
                break
            try:
                slice_charts.append((task, attr, slice_chart(svc.slices(run_id, task, attr))))
            except EvalkeeperError:
                continue
    others = [r for r in svc.all_runs() if r.run_id != run_id]
    return render(
        request,
        "run.html",
        d=detail,
        s=detail.summary,
        others=others,
        slice_charts=slice_charts,
        chart=metric_chart(detail.metrics, f"Metrics of {run_id}"),
    )


@router.get("/runs/{run_ref}/samples", response_class=HTMLResponse)
def samples_page(
    request: Request, run_ref: str, svc: Service, q: Annotated[ExplorerQuery, Depends(explorer_query)]
) -> HTMLResponse:
    detail = svc.run_detail(run_ref)
    page = svc.samples(detail.summary.run_id, q)
    metrics = sorted({m for t in detail.tasks for m in t.metrics})
    groups = sorted({g for attrs in detail.group_attributes.values() for g in attrs})
    return render(
        request,
        "samples.html",
        d=detail,
        s=detail.summary,
        p=page,
        q=page.query,
        metrics=metrics,
        groups=groups,
        sort_keys=SORT_KEYS,
        base={k: v for k, v in dataclasses.asdict(page.query).items() if k != "page"},
    )


@router.get("/runs/{run_ref}/sample", response_class=HTMLResponse)
def sample_page(
    request: Request, run_ref: str, svc: Service, task: str, sample_id: str, epoch: int | None = None
) -> HTMLResponse:
    sample = svc.sample(run_ref, task, sample_id, epoch)
    summary = svc.summary(svc.get_run(sample.run_id))
    return render(request, "sample.html", x=sample, s=summary)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, svc: Service, a: str | None = None, b: str | None = None, correction: str = "holm"
) -> HTMLResponse:
    runs = svc.all_runs()
    result = chart = None
    if a and b:
        result = svc.compare(a, b, correction=correction)
        css = {"better": "better", "worse": "worse", "same": "same"}
        chart = interval_chart(
            [
                Interval(
                    label=f"{r.task} · {r.metric}",
                    value=r.diff,
                    low=r.ci_low,
                    high=r.ci_high,
                    css=css[r.direction] if r.significant else "same",
                    title=f"p corrected = {r.p_corrected:.3g} ({r.test})",
                )
                for r in result.comparison.rows
            ],
            bars=False,
            title="Paired difference (b - a) with CI",
        )
    return render(
        request, "compare.html", runs=runs, a=a or "", b=b or "", correction=correction, r=result, chart=chart
    )
