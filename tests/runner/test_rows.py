"""The loop's per-sample fast paths give exactly what the slow, validated paths give: rows vs `Sample`
records and `samples_to_table`, request keys vs `dataclasses.asdict`, in-memory metrics vs stored."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pytest

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.ids import fingerprint
from evalkeeper.runner.backends.base import ChoiceRequest, GenerateRequest, Result, request_key
from evalkeeper.runner.rows import checked_result, row_to_sample, rows_to_table, sample_row
from evalkeeper.runner.tasks import Doc, TaskSpec
from evalkeeper.store.samples import normalize_table, samples_to_table

GEN = TaskSpec.model_validate({"name": "gen", "dataset": {"path": "x.jsonl"}, "prompt": "{{ q }}", "target": "a",
                               "metrics": ["exact_match", "token_f1"], "answer_regex": r"answer: (\w+)"})
MC = TaskSpec.model_validate({"name": "mc", "dataset": {"path": "x.jsonl"}, "prompt": "{{ q }}", "target": "a",
                              "kind": "multiple_choice", "choices": "c", "metrics": ["accuracy"]})


def _rows() -> list[tuple[object, ...]]:
    gen_doc = Doc(sample_id="g1", prompt="Q? é", targets=["Paris", "paris france"], group={"lang": "fr"},
                  metadata={"source": "atlas", "n": 3, "nested": {"a": [1, 2]}})
    mc_doc = Doc(sample_id="m1", prompt="Pick", targets=["green"], choices=["red", "green"], gold_index=1)
    return [
        sample_row("run-1", GEN, gen_doc, Result(text="the answer: Paris", tokens_in=12, tokens_out=4,
                                                 latency_ms=51.5, extra={"finish": "stop"}), cached=False),
        sample_row("run-1", GEN, gen_doc, Result(text="no idea"), cached=True),
        sample_row("run-1", MC, mc_doc, Result(text="green", chosen_index=1, choice_logprobs=[-2.5, -0.1],
                                               latency_ms=3, tokens_in=7.0, tokens_out="1"), cached=False),
        sample_row("run-1", MC, mc_doc, Result(text="?", chosen_index=None), cached=False),
    ]


def test_rows_make_the_same_table_as_validated_samples() -> None:
    rows = _rows()
    samples = [row_to_sample(r) for r in rows]  # pydantic validation accepts every row as it is
    for row, sample in zip(rows, samples, strict=True):
        assert tuple(sample.model_dump(exclude={"schema_version"}).values()) == row
    fast = normalize_table(rows_to_table(rows), "run-1")
    slow = normalize_table(samples_to_table(samples), "run-1")
    assert fast.schema == slow.schema and fast.equals(slow)
    meta = json.loads(fast.column("metadata")[0].as_py())
    assert meta["extracted"] == "Paris" and meta["targets"] == ["Paris", "paris france"]
    assert dict(fast.column("scores")[0].as_py()) == {"exact_match": 1.0, "token_f1": 1.0}
    assert fast.column("tokens_in").to_pylist() == [12, None, 7, None]
    assert rows_to_table([]).num_rows == 0 and isinstance(rows_to_table([]), pa.Table)


@pytest.mark.parametrize(("field", "value"), [("text", 42), ("tokens_in", "many"), ("tokens_out", 1.5),
                                              ("latency_ms", "slow"), ("choice_logprobs", ["x"]),
                                              ("choice_logprobs", (1.0,))])
def test_bad_backend_results_are_named(field: str, value: object) -> None:
    res = Result(text="ok")
    setattr(res, field, value)
    with pytest.raises(EvalkeeperError, match=f"invalid {field}"):
        checked_result(res)


@pytest.mark.parametrize("req", [
    GenerateRequest(prompt="é\n", system="sys", chat=False, max_new_tokens=9, temperature=0.5, top_p=0.9,
                    stop=("\n", "Q:"), seed=3),
    GenerateRequest(prompt="x"),
    ChoiceRequest(prompt="p", choices=("a", "b", "c"), system=None, seed=1),
])
def test_request_key_matches_the_asdict_digest(req: GenerateRequest | ChoiceRequest) -> None:
    """Cache keys must not change: old caches keep serving the same requests."""
    assert request_key("openai:m", req) == fingerprint({"model": "openai:m", "kind": req.kind,
                                                        "request": asdict(req)})


def test_loop_metrics_equal_metrics_recomputed_from_storage(workspace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from evalkeeper.runner import RunOptions, compute_metrics, evaluate, load_task
    from evalkeeper.runner.backends.fake import FakeBackend

    rows = [{"id": f"q{i}", "q": f"{i} words here", "a": f"{i % 7} words"} for i in range(50)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("name: t\ndataset: {path: t.jsonl}\nprompt: '{{ q }}'\ntarget: a\n"
                                     "id_field: id\nmetrics: [exact_match, token_f1]\n")
    out = evaluate(workspace, FakeBackend(responder=lambda r: r.prompt.split()[0][-1] + " words"),
                   [load_task(tmp_path / "t.yaml")], RunOptions(progress=False, flush_every=9))
    stored = compute_metrics(workspace, workspace.get_run(out.run.run_id))
    assert [m.model_dump() for m in out.metrics] == [m.model_dump() for m in stored]
    assert [m.model_dump() for m in workspace.get_metrics(out.run.run_id)] == [m.model_dump() for m in stored]
    assert {m.metric for m in stored} == {"exact_match", "token_f1"} and 0 < stored[1].value < 1
