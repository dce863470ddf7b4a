"""Scored samples as plain rows, straight into Arrow: the loop's per-sample fast path.

Building a pydantic `Sample` per answer and converting those back to columns costs tens of
microseconds a sample, which at API speeds (over a thousand answers a second) is a large share of
the loop. A row here carries exactly the fields of `Sample`, in `ROW_COLUMNS` order, with the same
types: the task fields come from validated task specs and our own metric code, and the only outside
input, the backend's `Result`, is checked and coerced by `checked_result` the way `Sample` validation
would (a wrong type is an error naming the field). `rows_to_table` yields the same Arrow table that
`store.samples.samples_to_table` yields for the equivalent `Sample` records (tests compare them).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.records import Sample
from evalkeeper.runner.backends.base import Result
from evalkeeper.runner.metrics import ScoredItem, score_item
from evalkeeper.runner.tasks import Doc, TaskSpec
from evalkeeper.store.samples import SAMPLE_SCHEMA

ROW_COLUMNS = ("run_id", "task", "sample_id", "epoch", "input", "target", "prediction", "scores", "logprobs",
               "group", "metadata", "latency_ms", "tokens_in", "tokens_out")
SCORES = ROW_COLUMNS.index("scores")
Row = tuple[Any, ...]


def extract_answer(spec: TaskSpec, text: str | None) -> str | None:
    """Apply the task's `answer_regex` (first match; group 1 when the pattern has a group)."""
    if text is None or not spec.answer_regex:
        return text
    m = re.search(spec.answer_regex, text)
    if not m:
        return text
    return m.group(1) if m.groups() else m.group(0)


def score_sample(spec: TaskSpec, prediction: str | None, targets: list[str], choices: list[str] | None,
                 gold: int | None, chosen: int | None, group: dict[str, str],
                 metadata: dict[str, Any]) -> dict[str, float]:
    item = ScoredItem(prediction=extract_answer(spec, prediction), targets=targets, choices=choices,
                      gold_index=gold, chosen_index=chosen, group=group, metadata=metadata)
    return score_item(item, spec.metrics)


def _bad(name: str, value: Any) -> EvalkeeperError:
    return EvalkeeperError(f"the model backend returned an invalid {name}: {value!r}",
                           hint="this is a bug in the backend; please report it")


def _count(name: str, value: Any) -> int | None:
    """An optional token count, coerced as pydantic's lax int would (2.0 -> 2, '2' -> 2)."""
    if value is None or type(value) is int:
        return value
    if isinstance(value, int):  # bool
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise _bad(name, value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _bad(name, value)


def checked_result(res: Result) -> tuple[str | None, list[float] | None, float | None, int | None, int | None]:
    """(prediction, logprobs, latency_ms, tokens_in, tokens_out) with the types `Sample` requires."""
    text = res.text
    if text is not None and type(text) is not str:
        raise _bad("text", text)
    lps = res.choice_logprobs
    if lps is not None:
        if not isinstance(lps, list):
            raise _bad("choice_logprobs", lps)
        lps = [v if type(v) is float else _real("choice_logprobs", v) for v in lps]
    latency = res.latency_ms
    if latency is not None and type(latency) is not float:
        latency = _real("latency_ms", latency)
    return text, lps, latency, _count("tokens_in", res.tokens_in), _count("tokens_out", res.tokens_out)


def sample_row(run_id: str, spec: TaskSpec, doc: Doc, res: Result, cached: bool) -> Row:
    """One scored sample as a row in ROW_COLUMNS order (what `Sample` would hold)."""
    text, lps, latency, tokens_in, tokens_out = checked_result(res)
    meta: dict[str, Any] = dict(doc.metadata)
    if len(doc.targets) > 1:
        meta["targets"] = doc.targets
    if doc.choices is not None:
        meta.update(choices=doc.choices, gold_index=doc.gold_index, chosen_index=res.chosen_index)
    if spec.answer_regex:
        meta["extracted"] = extract_answer(spec, text)
    if res.extra:
        meta["backend"] = res.extra
    if cached:
        meta["cached"] = True
    scores = score_sample(spec, text, doc.targets, doc.choices, doc.gold_index, res.chosen_index, doc.group, meta)
    return (run_id, spec.name, doc.sample_id, 0, doc.prompt, doc.targets[0], text, scores, lps, doc.group, meta,
            latency, tokens_in, tokens_out)


def row_to_sample(row: Row) -> Sample:
    """The validated record for a row (for callers that want records; the loop does not need them)."""
    return Sample(**dict(zip(ROW_COLUMNS, row, strict=True)))


def rows_to_table(rows: list[Row]) -> pa.Table:
    """Rows -> an Arrow table with the SAMPLE_SCHEMA types (column-wise; missing schema columns are
    added as nulls by the writer)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in ROW_COLUMNS]
    arrays = []
    for name, col in zip(ROW_COLUMNS, columns, strict=True):
        values: Any
        if name in ("scores", "group"):
            values = [list(m.items()) for m in col]
        elif name == "metadata":
            values = [json.dumps(m, default=str) if m else None for m in col]
        else:
            values = col
        arrays.append(pa.array(values, type=SAMPLE_SCHEMA.field(name).type))
    return pa.Table.from_arrays(arrays, names=list(ROW_COLUMNS))
