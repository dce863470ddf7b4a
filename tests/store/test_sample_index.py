"""The sample index answers exactly what DuckDB over the Parquet parts answers (rows, order, counts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from evalkeeper.core.records import ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.server import DashboardService, ExplorerQuery
from evalkeeper.server._sql import LIST_TEXT_LIMIT
from evalkeeper.store import Workspace, index_build, open_workspace
from evalkeeper.store.index_build import INDEX_DIR

WORDS = ["Alpha", "beta", "GAMMA", "50%", "snake_case", "Éclair", "naïve", "x" * 400, "", "🦆 duck"]


def _sample(run_id: str, task: str, i: int, epoch: int) -> Sample:
    scores: dict[str, float] = {"acc": float((i * 7 + epoch) % 3 == 0)}
    if i % 4:
        scores["f1"] = round((i % 10) / 10, 1)  # ties on purpose
    if i % 17 == 5:
        scores["acc"] = math.nan  # a stored NaN sorts and filters like DuckDB's NaN
    group = {"lang": ["en", "fr", "de"][i % 3]} | ({"level": "hard"} if i % 5 == 0 else {})
    return Sample(
        run_id=run_id, task=task, sample_id=f"s{(i * 37) % 120:03d}", epoch=epoch,
        input=f"{WORDS[i % len(WORDS)]} question {i} {WORDS[(i * 3) % len(WORDS)]}",
        target=None if i % 11 == 0 else WORDS[(i + 1) % len(WORDS)],
        prediction=None if i % 13 == 0 else f"{WORDS[(i + 2) % len(WORDS)]} answer",
        scores=scores, group=group,
        latency_ms=None if i % 9 == 0 else float(i % 23), tokens_in=i % 50, tokens_out=None if i % 8 == 0 else i % 5,
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = open_workspace(Path(tmp_path_factory.mktemp("idx")) / "ws")
    run = Run(run_id="run-idx", model=ModelInfo(name="m"), provenance=Provenance(producer="test"),
              tasks=[TaskInfo(name="zeta", metrics=["acc", "f1"]), TaskInfo(name="alpha", metrics=["f1"]),
                     TaskInfo(name="nometrics")])
    rows = [_sample("run-idx", task, i, epoch) for task in ("zeta", "alpha", "nometrics") for i in range(120)
            for epoch in (0, 1)]
    ws.add_run(run, [], [rows[:250], rows[250:500], rows[500:]])  # three parts
    assert ws.build_sample_index("run-idx") is not None
    return ws


def _norm(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def fix(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, tuple):
            return tuple(fix(x) for x in v)
        return v
    return [{k: fix(v) for k, v in r.items()} for r in rows]


QUERIES = [
    {},
    {"task": "zeta"},
    {"task": "nope"},
    {"search": "ALPHA"},
    {"search": "50%"},
    {"search": "e_c"},
    {"search": "éCLAIR"},
    {"search": "question 1"},
    {"search": "xxxxxxxxxxxxxxxxxxxx"},
    {"search": "🦆"},
    {"search": "a", "task": "alpha"},
    {"search": "no such text anywhere"},
]


@pytest.mark.parametrize("filters", QUERIES)
@pytest.mark.parametrize("order_by", [None, "score", "sample_id", "task", "epoch", "latency_ms", "tokens_in",
                                      "tokens_out"])
@pytest.mark.parametrize("descending", [False, True])
def test_query_samples_pages_match_duckdb(ws: Workspace, filters: dict[str, Any], order_by: str | None,
                                          descending: bool) -> None:
    run = ws.get_run("run-idx")
    parts = ws.sample_paths(run.run_id)
    assert ws._indexed(run, filters.get("task"), None, filters.get("search"), order_by) is not None
    total = ws._query.count(run, parts, **filters)
    assert ws.count_samples("run-idx", **filters) == total
    for offset, limit in ((5, 40), (total - 3, 10), (total + 5, 5)):
        offset = max(offset, 0)
        fast = ws.query_samples("run-idx", order_by=order_by, descending=descending, limit=limit, offset=offset,
                                **filters)
        slow = ws._query.select(run, parts, order_by=order_by, descending=descending, limit=limit,
                                offset=offset, **filters)
        assert fast.schema == slow.schema
        assert _norm(fast.to_pylist()) == _norm(slow.to_pylist()), (offset, limit)


def test_query_samples_columns_and_fallbacks(ws: Workspace) -> None:
    run = ws.get_run("run-idx")
    fast = ws.query_samples("run-idx", order_by="latency_ms", limit=5, columns=["sample_id", "score", "group"])
    assert fast.column_names == ["sample_id", "score", "group"]
    assert ws._indexed(run, None, "score < 1", None, None) is None  # --where: DuckDB
    assert ws._indexed(run, None, None, None, "input") is None  # text sorts: DuckDB
    assert ws.count_samples("run-idx", where="score < 1") == ws._query.count(
        run, ws.sample_paths(run.run_id), where="score < 1")


EXPLORER = [
    ExplorerQuery(sort="score", order="desc", page=2, page_size=9),
    ExplorerQuery(task="zeta", metric="f1", score_min=0.3, score_max=0.7, sort="score"),
    ExplorerQuery(metric="acc", sort="score", order="desc", page_size=500),
    ExplorerQuery(score_min=0.5, sort="latency_ms", order="desc", page_size=500),
    ExplorerQuery(group="level", sort="tokens_out", page_size=500),
    ExplorerQuery(group="lang", group_value="fr", search="ANSWER", sort="epoch", order="desc", page_size=500),
    ExplorerQuery(search="x" * 10, sort="sample_id", page_size=500),
    ExplorerQuery(task="nometrics", sort="score", page_size=500),
    ExplorerQuery(metric="missing", sort="score", order="desc", page_size=500),
]


@pytest.mark.parametrize("query", EXPLORER)
def test_explorer_pages_match_duckdb(ws: Workspace, query: ExplorerQuery) -> None:
    """Same ties as SQL's ORDER BY key, task, sample_id, epoch: whole pages agree, field by field."""
    fast = DashboardService(ws, use_index=True).samples("run-idx", query)
    slow = DashboardService(ws, use_index=False).samples("run-idx", query)
    assert fast.total == slow.total
    assert [r.model_dump() for r in fast.rows] == [r.model_dump() for r in slow.rows]


def test_listing_limit_matches_the_explorer() -> None:
    assert index_build.LIST_TEXT_LIMIT == LIST_TEXT_LIMIT


def test_index_is_rebuilt_when_parts_change_and_skipped_while_running(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    run = Run(run_id="run-grow", model=ModelInfo(name="m"), provenance=Provenance(producer="test"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    ws.add_run(run, [], [[_sample("run-grow", "t", i, 0) for i in range(10)]])
    assert ws.sample_index("run-grow", build=False) is None  # nothing built yet
    first = ws.sample_index("run-grow")
    assert first is not None and first.n == 10
    assert (ws.run_dir("run-grow") / INDEX_DIR / "meta.json").exists()
    ws.sample_writer("run-grow").write([_sample("run-grow", "t", i, 1) for i in range(5)])  # a resumed run
    ws.save_run(ws.get_run("run-grow").model_copy(update={"n_samples": 15, "status": "running"}))
    assert ws.sample_index("run-grow") is None
    assert ws.count_samples("run-grow") == 15
    ws.save_run(ws.get_run("run-grow").model_copy(update={"status": "complete"}))
    again = ws.sample_index("run-grow")
    assert again is not None and again.n == 15
    assert ws.count_samples("run-grow", search="question 3 ") == 2


def test_only_searches_and_sorts_of_large_runs_build_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evalkeeper.store.workspace as workspace_module

    ws = open_workspace(tmp_path / "ws")
    run = Run(run_id="run-auto", model=ModelInfo(name="m"), provenance=Provenance(producer="test"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    ws.add_run(run, [], [[_sample("run-auto", "t", i, 0) for i in range(30)]])
    folder = ws.run_dir("run-auto") / INDEX_DIR
    assert ws.count_samples("run-auto", search="question") == 30  # small run: DuckDB, nothing written
    assert not folder.exists()
    monkeypatch.setattr(workspace_module, "AUTO_INDEX_ROWS", 10)
    assert ws.count_samples("run-auto", task="t") == 30 and not folder.exists()  # DuckDB is quick at this
    assert len(ws.query_samples("run-auto", limit=3)) == 3 and not folder.exists()
    assert len(ws.query_samples("run-auto", order_by="latency_ms", limit=3)) == 3 and folder.exists()
