"""lighteval detail Parquet files -> Samples, for both layouts lighteval has written.

Current versions: one struct column per part of a `Detail`: `doc` (query, choices, gold_index, id,
specific, ...), `model_response` (input, text, logprobs, output_tokens, ...) and `metric` ({name: score}).
Older versions: flat columns (`example`, `full_prompt`, `predictions`, `gold`, `choices`, `gold_index`,
`metrics`, `specifics`, ...), which lighteval stringified with `str()` whenever Arrow could not type a
nested value, so a cell may hold a Python literal like "{'em': 1.0}".
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.ids import stable_sample_id
from evalkeeper.core.records import Sample
from evalkeeper.ingest.base import as_float, validation_message

DETAIL_COLUMNS = {
    "nested": frozenset({"doc", "model_response", "metric"}),
    "flat": frozenset({"example", "full_prompt", "predictions", "gold", "choices", "gold_index", "metrics",
                       "instruction", "num_effective_few_shots", "num_asked_few_shots", "specifics"}),
}


def parse_cell(value: Any) -> Any:
    """Undo lighteval's `str()` of nested cells: Python literals back to objects; other text unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if not text or text[0] not in "[({" and text not in ("None", "True", "False"):
        return value
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return value


def _as_list(value: Any) -> list[Any]:
    value = parse_cell(value)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return [value]


def _as_dict(value: Any) -> dict[str, Any]:
    value = parse_cell(value)
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):  # Arrow map columns come back as [(key, value), ...]
        try:
            return {str(k): v for k, v in value}
        except (TypeError, ValueError):
            return {}
    return {}


def _text(value: Any) -> str | None:
    value = parse_cell(value)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        if not value:
            return None
        if len(value) == 1:
            return _text(value[0])
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _scores(metric: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    scores: dict[str, float] = {}
    other: dict[str, Any] = {}
    for k, v in metric.items():
        num = as_float(parse_cell(v))
        if num is not None:
            scores[k] = num
        elif v is not None:
            other[k] = v
    return scores, other


BATCH_ROWS = 4096  # rows decoded at a time: memory stays bounded whatever the file's size


class DetailsFile:
    """One details Parquet file: opened and checked now (readable, a known layout), rows streamed later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
            names = set(self._file.schema_arrow.names)  # a damaged footer can hold names that are not UTF-8
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise ImportFormatError(f"unreadable Parquet file: {str(e)[:200]}", path=str(path)) from None
        if DETAIL_COLUMNS["nested"] <= names:
            self._convert = _from_nested
        elif len(names & DETAIL_COLUMNS["flat"]) >= 4:
            self._convert = _from_flat
        else:
            raise ImportFormatError(
                "not a lighteval details file: expected columns doc/model_response/metric (current) or "
                f"example/predictions/metrics/... (older); found {sorted(names)[:12]}", path=str(path))

    def samples(self, run_id: str, task: str, batch_rows: int = BATCH_ROWS) -> Iterator[list[Sample]]:
        """The rows as Samples (files are per task, one row per doc), `batch_rows` at a time."""
        path = self.path
        used: dict[str, int] = {}
        i = 0
        batches = self._file.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches, None)
                rows = [] if batch is None else batch.to_pylist()
            except Exception as e:  # noqa: BLE001 - pyarrow raises many types for damaged pages
                raise ImportFormatError(f"cannot decode Parquet rows: {str(e)[:200]}", path=str(path)) from None
            if batch is None:
                return
            samples: list[Sample] = []
            for row in rows:
                try:
                    fields = self._convert(row)
                except (TypeError, ValueError, AttributeError) as e:
                    raise ImportFormatError(f"row {i}: unexpected cell value ({e})", path=str(path)) from None
                sid = fields.pop("sample_id")
                # identical docs get distinct ids in order of appearance, so ids stay unique and stable
                k = used.get(sid, 0)
                used[sid] = k + 1
                if k:
                    sid = f"{sid}-{k + 1}"
                fields["metadata"]["row"] = i
                try:
                    samples.append(Sample(run_id=run_id, task=task, sample_id=sid, **fields))
                except ValidationError as e:
                    raise ImportFormatError(f"row {i}: {validation_message(e)}", path=str(path)) from None
                i += 1
            if samples:
                yield samples


def read_details(path: Path, run_id: str, task: str) -> list[Sample]:
    """All rows of one details Parquet file as Samples (small files; importers stream `DetailsFile`)."""
    return [s for batch in DetailsFile(path).samples(run_id, task) for s in batch]


def _sample_id(doc_id: Any, query: str, golds: Any) -> str:
    if doc_id not in (None, "") and not (isinstance(doc_id, float) and math.isnan(doc_id)):
        return str(doc_id)
    return stable_sample_id(query, golds)


def _from_nested(row: dict[str, Any]) -> dict[str, Any]:
    doc = _as_dict(row.get("doc"))
    resp = _as_dict(row.get("model_response"))
    scores, other = _scores(_as_dict(row.get("metric")))
    query = _text(doc.get("query")) or ""
    choices = [str(c).strip() for c in _as_list(doc.get("choices")) if c is not None]
    gold_index = _as_list(doc.get("gold_index"))
    golds = [choices[g] for g in gold_index if isinstance(g, int) and 0 <= g < len(choices)]
    texts = _as_list(resp.get("text"))
    logprobs = [float(x) for x in _as_list(resp.get("logprobs")) if as_float(x) is not None]
    prediction: str | None
    meta: dict[str, Any] = {}
    if texts:
        prediction = _text(texts)
    elif logprobs and len(logprobs) == len(choices):
        best = max(range(len(logprobs)), key=lambda i: logprobs[i])
        prediction = str(choices[best])
        meta["pred_index"] = best
    else:
        prediction = None
    input_text = _text(resp.get("input")) or query
    out_tokens = _as_list(resp.get("output_tokens"))
    in_tokens = _as_list(resp.get("input_tokens"))
    for key in ("id", "specific", "instruction", "num_asked_few_shots", "num_effective_few_shots",
                "original_query", "task_name"):
        if doc.get(key) not in (None, "", {}, []):
            meta[key] = doc[key]
    meta["query"] = query
    _add_answers(meta, choices, gold_index, other)
    return {
        "sample_id": _sample_id(doc.get("id"), query, golds or gold_index),
        "input": input_text,
        "target": _text(golds) if golds else None,
        "prediction": prediction,
        "scores": scores,
        "logprobs": logprobs or None,
        "metadata": _jsonable(meta),
        "tokens_in": _count_tokens(in_tokens),
        "tokens_out": _count_tokens(out_tokens),
    }


def _from_flat(row: dict[str, Any]) -> dict[str, Any]:
    scores, other = _scores(_as_dict(row.get("metrics")))
    query = _text(row.get("example")) or ""
    choices = [str(c).strip() for c in _as_list(row.get("choices")) if c is not None]
    gold = [str(g).strip() for g in _as_list(row.get("gold"))]
    gold_index = _as_list(row.get("gold_index"))
    preds = _as_list(row.get("predictions"))
    meta: dict[str, Any] = {"query": query}
    logprobs: list[float] | None = None
    prediction: str | None = None
    if preds and all(isinstance(p, list | tuple) and p and as_float(p[0]) is not None for p in preds):
        # loglikelihood requests: [(logprob, is_greedy), ...] per choice
        logprobs = [float(p[0]) for p in preds]
        if choices and len(choices) == len(logprobs):
            best = max(range(len(logprobs)), key=lambda i: logprobs[i])
            prediction = str(choices[best])
            meta["pred_index"] = best
    elif preds:
        prediction = _text(preds)
    for key in ("specifics", "instruction", "num_asked_few_shots", "num_effective_few_shots", "hashes"):
        if row.get(key) not in (None, "", {}, []):
            meta[key] = parse_cell(row[key])
    _add_answers(meta, choices, gold_index, other)
    hashes = _as_dict(row.get("hashes"))
    golds = gold or [choices[g] for g in gold_index if isinstance(g, int) and 0 <= g < len(choices)]
    sid = str(hashes["example"]) if hashes.get("example") else _sample_id(None, query, golds)
    return {
        "sample_id": sid,
        "input": _text(row.get("full_prompt")) or query,
        "target": _text(golds) if golds else None,
        "prediction": prediction,
        "scores": scores,
        "logprobs": logprobs,
        "metadata": _jsonable(meta),
        "tokens_in": _count_tokens(_as_list(row.get("input_tokens"))),
        "tokens_out": _count_tokens(_as_list(row.get("cont_tokens"))),
    }


def _add_answers(meta: dict[str, Any], choices: list[str], gold_index: list[Any], other: dict[str, Any]) -> None:
    if choices:
        meta["choices"] = choices
    if gold_index:
        meta["gold_index"] = gold_index
    if other:
        meta["unaggregated"] = other


def _count_tokens(tokens: list[Any]) -> int | None:
    """Token count from lighteval's token-id lists (a list of ids, or one list per request)."""
    if not tokens:
        return None
    if all(isinstance(t, list | tuple) for t in tokens):
        return sum(len(t) for t in tokens) or None
    if all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        return len(tokens)
    return None


def _jsonable(value: Any) -> Any:
    """Metadata must survive JSON: numpy/bytes/NaN-containing values become plain Python."""
    return json.loads(json.dumps(value, default=str, allow_nan=True))
