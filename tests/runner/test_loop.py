"""The loop with the fake backend: stored runs, metrics numbers, cache, resume after a failure, rescore."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.runner import RunOptions, evaluate, load_task, rescore, run_evaluation
from evalkeeper.runner.backends.base import Request, Result
from evalkeeper.runner.backends.fake import FakeBackend
from evalkeeper.store import Workspace

OPTS = dict(progress=False, flush_every=7)


def add_task(tmp: Path, n: int = 30) -> Path:
    rows = [{"id": f"q{i:03d}", "q": f"{i}+{i}", "a": str(2 * i), "g": "low" if i < n // 2 else "high"}
            for i in range(n)]
    (tmp / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp / "add.yaml"
    path.write_text(textwrap.dedent("""\
        name: add
        dataset: {path: add.jsonl}
        prompt: "{{ q }}="
        target: a
        id_field: id
        group_fields: [g]
        metrics: [exact_match, token_f1]
        generation: {max_new_tokens: 4}
        """))
    return path


def oracle(wrong_every: int = 3):
    """Right answer except for every `wrong_every`-th question (by operand)."""

    def answer(req: Request) -> str:
        i = int(req.prompt.split("+")[0])
        return str(2 * i) if i % wrong_every else "nope"

    return answer


def test_run_stores_samples_and_exact_metrics(workspace: Workspace, tmp_path: Path) -> None:
    task = load_task(add_task(tmp_path))
    out = evaluate(workspace, FakeBackend(responder=oracle()), [task], RunOptions(**OPTS))
    run = workspace.get_run(out.run.run_id)
    assert run.status == "complete" and run.n_samples == 30 and out.model_calls == 30
    assert run.tasks[0].dataset_fingerprint == task.dataset_fingerprint
    assert run.labels["config_fingerprint"]
    m = {x.metric: x for x in workspace.get_metrics(run.run_id)}
    assert m["exact_match"].value == pytest.approx(20 / 30)  # i % 3 == 0 wrong: 10 of 30
    assert m["exact_match"].n == 30 and m["exact_match"].ci_low < 20 / 30 < m["exact_match"].ci_high
    t = workspace.query_samples(run.run_id, columns=["sample_id", "prediction", "scores", "group"])
    rows = {r["sample_id"]: r for r in t.to_pylist()}
    assert len(rows) == 30
    assert rows["q004"]["prediction"] == "8" and dict(rows["q004"]["scores"])["exact_match"] == 1.0
    assert dict(rows["q003"]["group"]) == {"g": "low"}
    assert len(workspace.sample_paths(run.run_id)) == 5  # flush_every=7 -> parts of 7,7,7,7,2


def test_second_run_is_served_from_cache(workspace: Workspace, tmp_path: Path) -> None:
    path = add_task(tmp_path)
    backend = FakeBackend(responder=oracle())
    first = evaluate(workspace, backend, [load_task(path)], RunOptions(**OPTS))
    second = evaluate(workspace, backend, [load_task(path)], RunOptions(**OPTS))
    assert backend.calls == 30 and second.model_calls == 0 and second.cache_hits == 30
    assert second.run.run_id != first.run.run_id
    assert [m.value for m in second.metrics] == [m.value for m in first.metrics]
    # a change of generation parameter is a different request: no stale answers
    third = evaluate(workspace, backend, [load_task(path)], RunOptions(**OPTS, max_new_tokens=9))
    assert third.model_calls == 30
    nocache = evaluate(workspace, backend, [load_task(path)], RunOptions(**OPTS, use_cache=False))
    assert nocache.model_calls == 30


class Crashing(FakeBackend):
    """Fails after `after` answers, like an endpoint that dies mid-run."""

    def __init__(self, after: int) -> None:
        super().__init__(responder=oracle())
        self.after = after

    async def run(self, requests: Sequence[Request]) -> AsyncIterator[tuple[int, Result]]:
        async for i, res in super().run(requests):
            if self.calls > self.after:
                raise EvalkeeperError("endpoint went away")
            yield i, res


def test_resume_after_failure_stores_each_sample_once(workspace: Workspace, tmp_path: Path) -> None:
    path = add_task(tmp_path)
    with pytest.raises(EvalkeeperError, match="went away"):
        evaluate(workspace, Crashing(after=17), [load_task(path)], RunOptions(**OPTS, use_cache=False))
    [failed] = workspace.list_runs()
    assert failed.status == "failed" and "went away" in failed.labels["error"]
    assert workspace.get_metrics(failed.run_id) == []
    stored = workspace.count_samples(failed.run_id)
    assert stored == 17  # two full parts of 7, plus the 3 answers buffered when it failed

    backend = FakeBackend(responder=oracle())
    out = evaluate(workspace, backend, [load_task(path)], RunOptions(**OPTS, use_cache=False))
    assert out.resumed and out.run.run_id == failed.run_id and backend.calls == 30 - stored
    t = workspace.query_samples(out.run.run_id, columns=["sample_id"])
    ids = t.column("sample_id").to_pylist()
    assert len(ids) == 30 and len(set(ids)) == 30
    assert workspace.get_run(out.run.run_id).status == "complete"
    assert {m.metric: m.value for m in out.metrics}["exact_match"] == pytest.approx(20 / 30)


def test_limit_and_rescore(workspace: Workspace, tmp_path: Path) -> None:
    path = add_task(tmp_path)
    out = run_evaluation(workspace, FakeBackend(responder=oracle()), tasks=[str(path)],
                         options=RunOptions(**OPTS, limit=12))
    assert out.run.n_samples == 12 and out.run.tasks[0].n_samples == 12
    assert list(out.timings) == ["load", "prepare", "answer", "finish"] and min(out.timings.values()) >= 0
    before = {m.metric: m.value for m in workspace.get_metrics(out.run.run_id)}
    fresh = rescore(workspace, out.run.run_id)
    assert {m.metric: m.value for m in fresh} == pytest.approx(before)
    assert workspace.count_samples(out.run.run_id) == 12
    with pytest.raises(EvalkeeperError, match="no task"):
        rescore(workspace, out.run.run_id, "nope")


def test_bundled_quickstart_suite_with_fake_model(workspace: Workspace) -> None:
    out = run_evaluation(workspace, "fake", suite="quickstart", options=RunOptions(progress=False, limit=20))
    names = {m.task for m in out.metrics}
    assert names == {"arith", "capitals", "general_knowledge", "safety", "bbq"}
    assert out.run.n_samples == 100 and out.run.labels["suite"] == "quickstart"
    got = {(m.task, m.metric) for m in out.metrics}
    assert ("bbq", "bias_score_ambig") in got and ("general_knowledge", "accuracy") in got
