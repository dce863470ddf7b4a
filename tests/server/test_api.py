"""JSON API behaviour and numbers, in process (FastAPI TestClient over the ASGI app)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from evalkeeper.core.records import ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.server import DashboardService, ExplorerQuery, create_app
from evalkeeper.server._sql import LIST_TEXT_LIMIT
from evalkeeper.store import open_workspace

from .conftest import GROUPS, Dash


def _scores(dash: Dash, run_id: str, task: str) -> dict[str, float]:
    ids, vals = dash.ws.scores(run_id, task, "acc")
    return dict(zip(ids.tolist(), vals.tolist(), strict=True))


def test_runs_list_filters_and_headline(client: TestClient, dash: Dash) -> None:
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs] == ["run-b-candidate", "run-a-baseline"]  # newest first
    head = {h["task"]: h for h in runs[1]["headline"]}
    stored = {m.task: m for m in dash.ws.get_metrics("run-a-baseline")}
    assert head["arith"]["value"] == pytest.approx(stored["arith"].value)
    assert head["arith"]["ci_low"] == pytest.approx(stored["arith"].ci_low)
    assert [r["run_id"] for r in client.get("/api/runs", params={"tag": "baseline"}).json()] == ["run-a-baseline"]
    assert [r["run_id"] for r in client.get("/api/runs", params={"model": "cand-model"}).json()] == [
        "run-b-candidate"]
    assert [r["run_id"] for r in client.get("/api/runs", params={"search": "CAND"}).json()] == ["run-b-candidate"]
    assert client.get("/api/runs", params={"search": "no-such-thing"}).json() == []


def test_run_detail_metrics_and_group_attributes(client: TestClient, dash: Dash) -> None:
    d = client.get("/api/runs/run-a").json()  # unique prefix resolves
    assert d["summary"]["run_id"] == "run-a-baseline"
    assert d["summary"]["n_samples"] == 240
    by_key = {(m["task"], m["metric"]): m for m in d["metrics"]}
    for m in dash.ws.get_metrics("run-a-baseline"):
        got = by_key[(m.task, m.metric)]
        assert (got["value"], got["ci_low"], got["ci_high"], got["n"]) == pytest.approx(
            (m.value, m.ci_low, m.ci_high, m.n))
    assert d["group_attributes"] == {"arith": ["lang", "level"], "mc": ["lang", "level"]}
    assert client.get("/api/runs/nope").status_code == 404
    assert "hint" in client.get("/api/runs/nope").json()


def test_samples_counts_match_ground_truth(client: TestClient, dash: Dash) -> None:
    truth = _scores(dash, "run-b-candidate", "arith")
    wrong = sorted(k for k, v in truth.items() if v == 0.0)
    url = "/api/runs/run-b-candidate/samples"
    page = client.get(url, params={"task": "arith", "score_max": 0, "page_size": 500}).json()
    assert page["total"] == len(wrong)
    assert sorted(r["sample_id"] for r in page["rows"]) == wrong
    assert all(r["score"] == 0.0 for r in page["rows"])
    # group attribute: i % 3 == 1 is "fr" in make_run
    fr = client.get(url, params={"task": "mc", "group": "lang", "group_value": "fr"}).json()
    assert fr["total"] == sum(1 for i in range(120) if i % 3 == 1)
    assert all(r["group"]["lang"] == "fr" for r in fr["rows"])
    # text search (case-insensitive) in prediction
    hits = client.get(url, params={"search": "ONERROR", "page_size": 500}).json()
    assert hits["total"] == 2 * sum(1 for i in range(120) if i % 4 == 1)
    assert all("onerror" in r["prediction"] for r in hits["rows"])
    assert client.get(url, params={"search": "question 7 of arith"}).json()["total"] == 1


def test_samples_sorting_and_paging_cover_every_row_once(client: TestClient, dash: Dash) -> None:
    url = "/api/runs/run-a-baseline/samples"
    seen: list[str] = []
    scores: list[float] = []
    page_no = 1
    while True:
        p = client.get(url, params={"sort": "score", "order": "desc", "page": page_no, "page_size": 37}).json()
        seen += [f'{r["task"]}/{r["sample_id"]}' for r in p["rows"]]
        scores += [r["score"] for r in p["rows"]]
        if page_no >= p["pages"]:
            break
        page_no += 1
    assert p["pages"] == math.ceil(240 / 37)
    assert len(seen) == len(set(seen)) == 240
    assert scores == sorted(scores, reverse=True)
    lat = client.get(url, params={"sort": "latency_ms", "order": "asc", "page_size": 500}).json()["rows"]
    assert [r["latency_ms"] for r in lat] == sorted(r["latency_ms"] for r in lat)
    beyond = client.get(url, params={"page": 99}).json()
    assert beyond["rows"] == [] and beyond["total"] == 240


def test_samples_rejects_bad_parameters(client: TestClient) -> None:
    url = "/api/runs/run-a-baseline/samples"
    assert client.get(url, params={"sort": "input; drop table x"}).status_code == 400
    assert client.get(url, params={"page_size": 100000}).status_code == 422
    assert client.get(url, params={"page": 0}).status_code == 422
    assert client.get(url, params={"task": "nope"}).status_code == 404
    # hostile values are bound parameters, not SQL: they just match nothing
    r = client.get(url, params={"group": "lang') OR 1=1 --", "group_value": "x' OR '1'='1"})
    assert r.status_code == 200 and r.json()["total"] == 0


@pytest.mark.parametrize(
    "query",
    [
        ExplorerQuery(),
        ExplorerQuery(task="mc", sort="sample_id", order="desc"),
        ExplorerQuery(score_max=0, sort="latency_ms", order="desc"),
        ExplorerQuery(group="level", group_value="hard", sort="score"),
        ExplorerQuery(group="lang", metric="acc", score_min=1),
        ExplorerQuery(search="Question 1", sort="tokens_out"),
        ExplorerQuery(search="<IMG", task="arith", page=2, page_size=7),
        ExplorerQuery(metric="missing-metric"),
        ExplorerQuery(group="missing-attr", group_value="x"),
    ],
)
def test_index_and_parquet_paths_agree(dash: Dash, query: ExplorerQuery) -> None:
    """The in-memory index and DuckDB over Parquet must return the same totals and rows."""
    fast = DashboardService(dash.ws, use_index=True).samples("run-b-candidate", query)
    slow = DashboardService(dash.ws, use_index=False).samples("run-b-candidate", query)
    assert fast.total == slow.total
    if query.sort == "sample_id":  # unique key: identical pages, field by field
        assert [r.model_dump() for r in fast.rows] == [r.model_dump() for r in slow.rows]
    elif query.page == 1 and fast.total <= query.page_size:
        assert sorted(r.model_dump_json() for r in fast.rows) == sorted(r.model_dump_json() for r in slow.rows)
    key = {"score": "score", "latency_ms": "latency_ms", "tokens_out": "tokens_out"}.get(query.sort)
    if key:  # ties may be broken differently; the sort key sequence may not
        assert [getattr(r, key) for r in fast.rows] == [getattr(r, key) for r in slow.rows]


def test_sample_detail_and_listing_truncation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = open_workspace(tmp_path / "ws")
    long_text = "x" * 1000 + " tail"
    run = Run(run_id="run-long", model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["acc", "f1"])])
    samples = [Sample(run_id="run-long", task="t", sample_id=f"s/{e}?&#", epoch=e, input=long_text,
                      prediction="p", target="t", scores={"acc": 1.0, "f1": 0.5}, group={"g": "a"},
                      metadata={"source": "unit", "k": [1, 2]}) for e in (0, 1)]
    ws.add_run(run, [], [samples])
    for use_index in (True, False):
        page = DashboardService(ws, use_index=use_index).samples("run-long", ExplorerQuery())
        assert page.rows[0].truncated and len(page.rows[0].input) == LIST_TEXT_LIMIT
    with TestClient(create_app(ws), base_url="http://127.0.0.1") as c:
        d = c.get("/api/runs/run-long/sample", params={"task": "t", "sample_id": "s/1?&#", "epoch": 1}).json()
        assert d["input"] == long_text and d["epoch"] == 1 and d["epochs"] == [1]
        assert d["scores"] == {"acc": 1.0, "f1": 0.5} and d["metadata"] == {"source": "unit", "k": [1, 2]}
        miss = c.get("/api/runs/run-long/sample", params={"task": "t", "sample_id": "nope"})
        assert miss.status_code == 404


def test_slices_match_numpy(client: TestClient, dash: Dash) -> None:
    rep = client.get("/api/runs/run-a-baseline/slices", params={"task": "arith", "attribute": "lang"}).json()
    truth = _scores(dash, "run-a-baseline", "arith")
    langs = GROUPS["lang"]
    for row in rep["slices"]:
        vals = np.array([v for k, v in truth.items() if langs[int(k.split("-")[1]) % 3] == row["value"]])
        assert row["n"] == vals.size
        assert row["mean"] == pytest.approx(vals.mean())
        half = 1.959963984540054 * vals.std(ddof=1) / math.sqrt(vals.size)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((vals.mean() - half, vals.mean() + half))
    assert rep["overall"]["n"] == 120
    assert sorted(r["value"] for r in rep["slices"]) == sorted(langs)


def test_compare_paired_differences_and_flips(client: TestClient, dash: Dash) -> None:
    c = client.get("/api/compare", params={"a": "run-a-baseline", "b": "run-b-candidate"}).json()
    assert c["run_a"]["run_id"] == "run-a-baseline" and c["run_b"]["run_id"] == "run-b-candidate"
    rows = {r["task"]: r for r in c["comparison"]["rows"]}
    a, b = _scores(dash, "run-a-baseline", "arith"), _scores(dash, "run-b-candidate", "arith")
    ids = sorted(a)
    va, vb = np.array([a[i] for i in ids]), np.array([b[i] for i in ids])
    arith = rows["arith"]
    assert arith["diff"] == pytest.approx(vb.mean() - va.mean())
    assert set(arith["right_to_wrong"]) == {i for i in ids if a[i] == 1 and b[i] == 0}
    assert set(arith["wrong_to_right"]) == {i for i in ids if a[i] == 0 and b[i] == 1}
    assert arith["significant"] and arith["direction"] == "worse"  # 0.85 -> 0.45 on 120 paired items
    assert all(r["p_corrected"] >= r["p_value"] - 1e-12 for r in rows.values())
    assert client.get("/api/compare", params={"a": "run-a-baseline", "b": "nope"}).status_code == 404
    assert client.get("/api/compare", params={"a": "x", "b": "y", "alpha": 2}).status_code == 422


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    for path in ("/api/runs", "/api/runs/{run_ref}", "/api/runs/{run_ref}/samples", "/api/runs/{run_ref}/sample",
                 "/api/runs/{run_ref}/slices", "/api/compare"):
        assert path in spec["paths"], path
    assert not any(p.startswith("/runs") for p in spec["paths"])  # pages are not API
    assert client.get("/docs").status_code == 404  # no CDN-backed Swagger UI


@pytest.mark.parametrize(("task", "attribute"), [("arith", "lang"), ("mc", "level"), ("mc", "no-such-attr")])
def test_slices_and_group_keys_agree_between_index_and_parquet(dash: Dash, task: str, attribute: str) -> None:
    fast = DashboardService(dash.ws, use_index=True)
    slow = DashboardService(dash.ws, use_index=False)
    a, b = fast.slices("run-b-candidate", task, attribute), slow.slices("run-b-candidate", task, attribute)
    assert [s.value for s in a.slices] == [s.value for s in b.slices]
    for x, y in zip([a.overall, *a.slices], [b.overall, *b.slices], strict=True):
        assert (x.n, x.mean, x.ci_low, x.ci_high) == pytest.approx((y.n, y.mean, y.ci_low, y.ci_high))
    run = dash.ws.get_run("run-b-candidate")
    assert fast.group_attributes(run) == slow.group_attributes(run)


@pytest.mark.parametrize("verify", [0, 1_000_000])  # 0: DuckDB scans every row; else n-gram candidates
@pytest.mark.parametrize("needle", ["question 1", "ANSWER 11", "<IMG SRC", "f arith", "1", "é", "zzz-none",
                                    "arithquestion", "onerror=alert('XSS", "n 1"])  # arithquestion: spans two rows
def test_index_search_matches_brute_force(dash: Dash, monkeypatch: pytest.MonkeyPatch, needle: str,
                                          verify: int) -> None:
    """Both search strategies (n-gram candidates checked with bytes.find, DuckDB over the whole text)
    find exactly the rows a case-insensitive substring test finds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import evalkeeper.store.sample_index as index_module

    monkeypatch.setattr(index_module, "VERIFY_LIMIT", verify)
    run = dash.ws.get_run("run-b-candidate")
    assert dash.ws.sample_index(run) is not None
    idx = index_module.SampleIndex.open(dash.ws.run_dir(run.run_id) / ".sample-index")  # no cached masks
    assert idx is not None
    got = idx.search(needle)
    assert got is not None
    parts = dash.ws.sample_paths(run.run_id)
    texts = pa.concat_tables([pq.read_table(p, columns=["input", "prediction", "target"]) for p in parts]).to_pylist()
    want = [any(needle.lower() in (row[c] or "").lower() for c in row) for row in texts]
    assert got.tolist() == want


def test_running_and_empty_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A run still being written is queried from Parquet each time; a run without samples shows nothing."""
    ws = open_workspace(tmp_path / "ws")
    tasks = [TaskInfo(name="t", metrics=["acc"])]
    live = Run(run_id="run-live", model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
               tasks=tasks, status="running")
    ws.add_run(live, [], [[Sample(run_id="run-live", task="t", sample_id=f"s{i}", scores={"acc": float(i % 2)})
                           for i in range(10)]])
    ws.add_run(Run(run_id="run-empty", model=ModelInfo(name="m"), provenance=Provenance(producer="x"),
                   tasks=tasks), [], [])
    ws.add_run(Run(run_id="run-done", model=ModelInfo(name="m"), provenance=Provenance(producer="x"), tasks=tasks),
               [], [[Sample(run_id="run-done", task="t", sample_id="s0", scores={"acc": 1.0})]])
    svc = DashboardService(ws)
    svc.prebuild().join(timeout=60)  # what `serve` starts: indexes of finished runs with samples only
    assert (ws.run_dir("run-done") / ".sample-index" / "meta.json").exists()
    assert not (ws.run_dir("run-empty") / ".sample-index").exists()
    assert svc.samples("run-live", ExplorerQuery(score_min=1)).total == 5
    assert ws.sample_index("run-live") is None  # never indexed while running
    assert not (ws.run_dir("run-live") / ".sample-index").exists()
    with TestClient(create_app(ws), base_url="http://127.0.0.1") as c:
        assert c.get("/api/runs/run-empty/samples").json()["total"] == 0
        assert c.get("/runs/run-empty/samples").status_code == 200
        assert c.get("/runs/run-empty").status_code == 200
        assert c.get("/runs/run-live").status_code == 200
        assert c.get("/api/runs/run-empty/sample", params={"task": "t", "sample_id": "x"}).status_code == 404


def test_report_downloads_use_the_report_package(client: TestClient, dash: Dash) -> None:
    r = client.get("/api/runs/run-b-candidate/report.json", params={"compare": "run-a-baseline"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="evalkeeper-report-run-b-candidate.json"'
    body = r.json()
    assert body["run"]["run_id"] == "run-b-candidate"
    assert "run-a-baseline" in r.text  # the comparison baseline is in the report
    html = client.get("/api/runs/run-b-candidate/report.html")
    assert html.headers["content-type"].startswith("text/html") and "attachment" in html.headers[
        "content-disposition"]
    assert "<script>alert('xss-script')</script>" not in html.text  # the report escapes outputs too
    assert client.get("/api/runs/run-b-candidate/report.exe").status_code == 400


def test_reimported_run_is_not_served_from_a_stale_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ws = open_workspace(tmp_path / "ws")
    svc = DashboardService(ws)

    def add(pred: str) -> None:
        run = Run(run_id="run-x", model=ModelInfo(name="m"), provenance=Provenance(producer="evalkeeper"),
                  tasks=[TaskInfo(name="t", metrics=["acc"])])
        ws.add_run(run, [], [[Sample(run_id="run-x", task="t", sample_id="s", prediction=pred, scores={"acc": 1.0})]])

    add("first")
    assert svc.samples("run-x", ExplorerQuery()).rows[0].prediction == "first"
    ws.delete_run("run-x")
    add("second")
    assert svc.samples("run-x", ExplorerQuery()).rows[0].prediction == "second"
