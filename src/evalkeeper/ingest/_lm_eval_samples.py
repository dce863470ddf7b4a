"""Streaming lm-eval `samples_<task>_<date>.jsonl` files into Parquet-ready tables, with CLT on the way.

The vectorised DuckDB reader (`_lm_eval_fast`) handles the common layout; this module's line reader is the
reference and takes over wherever the fast path cannot (other layouts, several filters, bad lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.records import MetricResult, TaskInfo
from evalkeeper.ingest.base import CltAccumulator, apply_clt, as_float, dumps_fast, loads_fast

BATCH_ROWS = 131_072  # rows per Parquet part (8 row groups of 16k)
FAST_PATH = True  # read samples files with DuckDB's JSON reader when the layout allows (see _lm_eval_fast)
_SAMPLE_RESERVED = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                    "doc_hash", "prompt_hash", "target_hash"}


def metric_name(metric: str, filt: str) -> str:
    """Our metric name for lm-eval's `metric,filter` pair: the filter is dropped when it is `none`."""
    return metric if filt in ("none", "") else f"{metric},{filt}"


class SamplesStream:
    """Streams one samples_<task>.jsonl into Parquet-ready tables, accumulating CLT stats on the way.

    With several filters, lines come filter by filter; the first filter's lines become the samples and the
    other filters' numeric scores are merged in by doc id (a first pass keeps only those numbers).
    """

    def __init__(self, run_id: str, info: TaskInfo, path: Path, filters: list[str],
                 by_name: dict[str, MetricResult]) -> None:
        self.run_id = run_id
        self.info = info
        self.path = path
        self.filters = filters
        self.by_name = by_name
        self.acc: dict[str, CltAccumulator] = {}

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            fh = open(self.path, "rb")
        except OSError as e:
            raise ImportFormatError(f"cannot read samples file: {e.strerror or e}", path=str(self.path)) from None
        with fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    obj = loads_fast(raw)
                except (ValueError, RecursionError):
                    tail = "" if raw.endswith(b"\n") else " (file truncated?)"
                    raise ImportFormatError(f"line {lineno}: invalid JSON{tail}", path=str(self.path)) from None
                if not isinstance(obj, dict) or "doc_id" not in obj:
                    raise ImportFormatError(f"line {lineno}: not an lm-eval sample (no 'doc_id')",
                                            path=str(self.path))
                yield lineno, obj

    def _scores(self, obj: dict[str, Any], filt: str) -> tuple[dict[str, float], dict[str, Any]]:
        names = obj.get("metrics")
        if not isinstance(names, list):
            names = [k for k in obj if k not in _SAMPLE_RESERVED]
        scores: dict[str, float] = {}
        other: dict[str, Any] = {}
        for m in names:
            if not isinstance(m, str) or m not in obj:
                continue
            num = as_float(obj[m])
            key = metric_name(m, filt)
            if num is None:
                other[key] = obj[m]
            else:
                scores[key] = num
        return scores, other

    def batches(self) -> Iterator[pa.Table]:
        from evalkeeper.store.samples import SAMPLE_SCHEMA

        seen: set[str] = set()
        delivered = 0
        if FAST_PATH and len(self.filters) <= 1:
            from evalkeeper.ingest._lm_eval_fast import FastPathUnavailable, fast_batches

            first = self._first_line()
            metrics = first.get("metrics") if first else None
            if first is not None and isinstance(metrics, list) and all(isinstance(m, str) for m in metrics):
                primary = self.filters[0] if self.filters else str(first.get("filter", "none"))
                names = [metric_name(m, primary) for m in metrics]
                ids: list[pa.Array] = []
                try:
                    with closing(fast_batches(self.path, first, metrics, names, primary, self.info.name,
                                              self.run_id, SAMPLE_SCHEMA, BATCH_ROWS)) as fast:
                        for fb in fast:
                            delivered += fb.table.num_rows
                            ids.append(fb.ids)
                            for name, values in zip(names, fb.scores, strict=True):
                                self.acc.setdefault(name, CltAccumulator()).add_many(values)
                            yield fb.table
                except FastPathUnavailable:
                    seen = _id_set(ids)
                except Exception:  # noqa: BLE001 - DuckDB/Arrow errors: the line reader judges the file
                    seen = _id_set(ids)
                else:
                    if not _all_distinct(ids):
                        self._raise_duplicate(primary)
                    self._finish(delivered)
                    return
        yield from self._python_batches(SAMPLE_SCHEMA, seen, skip=delivered)

    def _raise_duplicate(self, primary: str) -> None:
        """The fast path counted fewer distinct doc ids than rows: find the line with the repeated id."""
        seen: set[str] = set()
        for lineno, obj in self._lines():
            filt = str(obj.get("filter", "none"))
            if filt == primary:
                self._check_new(str(obj["doc_id"]), seen, lineno, filt)
        raise ImportFormatError(f"a doc_id appears twice for filter '{primary}'", path=str(self.path))

    def _check_new(self, doc_id: str, seen: set[str], lineno: int, filt: str) -> None:
        if doc_id in seen:
            raise ImportFormatError(f"line {lineno}: doc_id {doc_id} appears twice for filter '{filt}'",
                                    path=str(self.path))
        seen.add(doc_id)

    def _first_line(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as f:
                for raw in f:
                    if raw.strip():
                        obj = loads_fast(raw)
                        return obj if isinstance(obj, dict) else None
        except (OSError, ValueError, RecursionError):
            return None
        return None

    def _python_batches(self, schema: pa.Schema, seen: set[str], skip: int = 0) -> Iterator[pa.Table]:
        """The reference reader; `skip` primary-filter lines were already delivered by the fast path."""
        primary = self.filters[0] if self.filters else None
        extra: dict[str, dict[str, float]] = {}
        if len(self.filters) > 1:
            for _, obj in self._lines():
                filt = str(obj.get("filter", "none"))
                if filt != primary:
                    scores, _ = self._scores(obj, filt)
                    extra.setdefault(str(obj["doc_id"]), {}).update(scores)
        cols = _Columns()
        for lineno, obj in self._lines():
            filt = str(obj.get("filter", "none"))
            if primary is None:
                primary = filt
            if filt != primary:
                continue
            if skip:
                skip -= 1
                continue
            doc_id = str(obj["doc_id"])
            self._check_new(doc_id, seen, lineno, filt)
            scores, other = self._scores(obj, filt)
            scores.update(extra.pop(doc_id, {}))
            for k, v in scores.items():
                acc = self.acc.get(k)
                if acc is None:
                    acc = self.acc[k] = CltAccumulator()
                acc.add(v)
            _append_row(cols, obj, scores, other)
            if len(cols.sample_id) >= BATCH_ROWS:
                yield self._table(cols, schema)
        if extra:  # other filters' scores for docs the primary filter never had: still count them
            for scores in extra.values():
                for k, v in scores.items():
                    self.acc.setdefault(k, CltAccumulator()).add(v)
        if cols.sample_id:
            yield self._table(cols, schema)
        self._finish(len(seen))

    def _table(self, cols: _Columns, schema: pa.Schema) -> pa.Table:
        try:
            return cols.table(schema, self.run_id, self.info.name)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ImportFormatError(f"unexpected sample values: {str(e)[:200]}", path=str(self.path)) from None

    def _finish(self, n_docs: int) -> None:
        """Now that every score was seen: CLT stderr/CI for mean-type metrics, and the real n."""
        for name, acc in self.acc.items():
            mr = self.by_name.get(name)
            if mr is not None:
                apply_clt(mr, acc)
        self.info.n_samples = n_docs
        for mr in self.by_name.values():
            if mr.method != "clt":
                mr.n = n_docs if mr.n is None else mr.n


def _id_set(chunks: list[pa.Array]) -> set[str]:
    """The doc ids the fast path delivered, for the line reader that takes over."""
    return {i for c in chunks for i in c.to_pylist()}


def _all_distinct(chunks: list[pa.Array]) -> bool:
    """Whether the delivered doc ids are all different. lm-eval's are integers, mostly in order: distinct
    integers mean distinct id texts, and checking them is much cheaper than hashing the texts."""
    import numpy as np
    import pyarrow.compute as pc

    ids = pa.chunked_array(chunks, pa.string())
    if len(ids) < 2:
        return True
    try:
        ints = pc.cast(ids, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    else:
        if bool(np.all(ints[1:] > ints[:-1])) or np.unique(ints).size == ints.size:
            return True
    return len(pc.unique(ids)) == len(ids)


def _first_args(obj: dict[str, Any]) -> list[list[Any]]:
    """Request arguments as lists: `{"gen_args_0": {"arg_0": ..}}` (0.4.3+) or `[[ctx, cont], ...]` (older)."""
    args = obj.get("arguments")
    out: list[list[Any]] = []
    if isinstance(args, dict):
        for v in args.values():
            if isinstance(v, dict):
                out.append(list(v.values()))
            elif isinstance(v, list):
                out.append(v)
    elif isinstance(args, list):
        for v in args:
            out.append(v if isinstance(v, list) else [v])
    return out


def _append_row(cols: _Columns, obj: dict[str, Any], scores: dict[str, float], other: dict[str, Any]) -> None:
    args = _first_args(obj)
    ctx = args[0][0] if args and args[0] else ""
    filtered = obj.get("filtered_resps")
    target = obj.get("target")
    meta: dict[str, Any] = {"doc_id": obj["doc_id"]}
    logprobs: list[float] | None = None
    prediction: str | None = None
    choices = [a[1] for a in args if len(a) > 1 and isinstance(a[1], str)]
    lls = _loglikelihoods(filtered)
    if lls is not None and len(args) > 0 and len(choices) == len(lls):
        # multiple choice: one loglikelihood request per choice; the prediction is the argmax choice
        logprobs = lls
        best = max(range(len(lls)), key=lambda i: lls[i])
        prediction = choices[best].strip()
        meta["pred_index"] = best
        gold = _gold_index(target, choices)
        if gold is not None:
            meta["gold_index"] = gold
            target = choices[gold].strip()
    elif isinstance(filtered, list) and filtered:
        first = filtered[0]
        prediction = first if isinstance(first, str) else dumps_fast(first)
    elif isinstance(filtered, str):
        prediction = filtered
    for key in ("doc_hash", "prompt_hash", "target_hash", "filter"):
        if key in obj:
            meta[key] = obj[key]
    if other:
        meta["unaggregated"] = other
    if "doc" in obj:
        meta["doc"] = obj["doc"]
    cols.sample_id.append(str(obj["doc_id"]))
    cols.input.append(ctx if isinstance(ctx, str) else dumps_fast(ctx))
    cols.target.append(None if target is None else target if isinstance(target, str) else dumps_fast(target))
    cols.prediction.append(prediction)
    cols.score_keys.extend(scores)
    cols.score_values.extend(scores.values())
    cols.score_offsets.append(len(cols.score_keys))
    cols.logprobs.append(logprobs)
    cols.metadata.append(dumps_fast(meta))


def _number(value: Any) -> float | None:
    """A float from a number or a numeric string (lm-eval 0.4.13 writes loglikelihoods as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _gold_index(target: Any, choices: list[str]) -> int | None:
    """The gold choice of a multiple-choice doc: lm-eval logs the index as an int or as its string."""
    if isinstance(target, bool):
        return None
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target.strip())
    if isinstance(target, int) and 0 <= target < len(choices):
        return target
    if isinstance(target, str):
        stripped = [c.strip() for c in choices]
        if target.strip() in stripped:
            return stripped.index(target.strip())
    return None


def _loglikelihoods(filtered: Any) -> list[float] | None:
    """Per-choice loglikelihoods from filtered_resps `[[ll, is_greedy], ...]` (or `[ll, ...]`), else None."""
    if not isinstance(filtered, list) or not filtered:
        return None
    out: list[float] = []
    for item in filtered:
        num = _number(item[0]) if isinstance(item, list) and item else _number(item)
        if num is None or (isinstance(item, str) and not isinstance(filtered[0], list)):
            return None
        out.append(num)
    return out


class _Columns:
    """Column buffers for one batch; scores are kept flat (keys, values, offsets) to build the map fast."""

    def __init__(self) -> None:
        self.sample_id: list[str] = []
        self.input: list[str] = []
        self.target: list[str | None] = []
        self.prediction: list[str | None] = []
        self.score_keys: list[str] = []
        self.score_values: list[float] = []
        self.score_offsets: list[int] = [0]
        self.logprobs: list[list[float] | None] = []
        self.metadata: list[str] = []

    def table(self, schema: pa.Schema, run_id: str, task: str) -> pa.Table:
        n = len(self.sample_id)
        scores = pa.MapArray.from_arrays(pa.array(self.score_offsets, pa.int32()),
                                         pa.array(self.score_keys, pa.string()),
                                         pa.array(self.score_values, pa.float64()))
        given = {
            "run_id": pa.array([run_id] * n, pa.string()),
            "task": pa.array([task] * n, pa.string()),
            "sample_id": pa.array(self.sample_id, pa.string()),
            "epoch": pa.array([0] * n, pa.int32()),
            "input": pa.array(self.input, pa.large_string()),
            "target": pa.array(self.target, pa.large_string()),
            "prediction": pa.array(self.prediction, pa.large_string()),
            "scores": scores,
            "logprobs": pa.array(self.logprobs, pa.list_(pa.float64())),
            "metadata": pa.array(self.metadata, pa.large_string()),
        }
        arrays = [given[f.name].cast(f.type) if f.name in given and given[f.name].type != f.type
                  else given.get(f.name, pa.nulls(n, f.type)) for f in schema]
        self.__init__()  # type: ignore[misc]
        return pa.Table.from_arrays(arrays, schema=schema)
