"""Turn inspect_ai `EvalSample` JSON objects into rows of the sample Parquet schema, batch by batch.

Kept apart from the importer so the hot loop (one call per sample of a million-sample log) stays small
and readable: plain dict lookups, column lists, one `pyarrow.Table` per batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest.base import CltAccumulator

try:
    import orjson

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(data: bytes) -> Any:
        """Parse JSON; bare NaN/Infinity (which orjson rejects) fall back to the stdlib."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)

except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib is only slower

    def dumps(obj: Any) -> str:
        return json.dumps(obj, default=str, ensure_ascii=False)

    def loads(data: bytes) -> Any:
        return json.loads(data)


class InspectSample(msgspec.Struct):
    """The fields of an inspect_ai `EvalSample` that become a row; every other field (events, messages,
    store, attachments, events_data, ... - most of a sample's bytes) is skipped by the decoder in C,
    without building Python objects. Values stay untyped (`Any`) so that any JSON shape decodes and the
    row builder decides what it can use."""

    id: Any
    epoch: Any = 1
    input: Any = None
    target: Any = None
    output: Any = None
    scores: Any = None
    metadata: Any = None
    model_usage: Any = None
    total_time: Any = None
    uuid: Any = None
    error: Any = None
    limit: Any = None


_DECODER = msgspec.json.Decoder(InspectSample)


def decode_sample(raw: bytes) -> InspectSample:
    """One `samples/*.json` member (or one sample of a `.json` log) as an `InspectSample`.

    JSON that msgspec rejects (bare NaN/Infinity, which Python's json module writes) is parsed again by
    the stdlib and converted; a value that is no sample object raises `msgspec.ValidationError`.
    """
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:
        return as_sample(json.loads(raw))


def as_sample(obj: Any) -> InspectSample:
    """An already parsed sample object (a dict) as an `InspectSample`."""
    if isinstance(obj, InspectSample):
        return obj
    return msgspec.convert(obj, InspectSample)


# inspect_ai's value_to_float sentinels
_SENTINELS = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}
_GROUP_MAX_CHARS = 64


def value_to_float(value: Any) -> float | None:
    """A score value as inspect_ai's `value_to_float` maps it (C=1, P=0.5, I=N=0, yes/no, numbers).

    Unlike inspect (which warns and returns 0), values that are not scalars (lists, dicts, None, text
    that is no number) give None: the sample has no such score rather than a made-up zero.
    """
    t = type(value)
    if t is str:
        hit = _SENTINELS.get(value)
        if hit is not None:
            return hit
        low = value.lower()
        if low in ("yes", "true"):
            return 1.0
        if low in ("no", "false"):
            return 0.0
        try:
            f = float(low)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    if t is int or t is float or t is bool:
        return float(value)
    if isinstance(value, int | float):  # subclasses
        return float(value)
    return None


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of content parts (text kept, others named)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text":
                    parts.append(str(part.get("text", "")))
                elif kind != "reasoning":
                    parts.append(f"[{kind}]")
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return "" if content is None else str(content)


def render_input(value: Any) -> str:
    """A sample's input: the string itself, or its chat messages as `role: text` paragraphs."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        msgs = [m for m in value if isinstance(m, dict)]
        if len(msgs) == 1 and msgs[0].get("role") == "user":
            return content_text(msgs[0].get("content"))
        return "\n\n".join(f"{m.get('role', '?')}: {content_text(m.get('content'))}" for m in msgs)
    return "" if value is None else str(value)


def render_target(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return value[0] if len(value) == 1 and isinstance(value[0], str) else dumps(value)
    return str(value)


def prediction(output: Any) -> str | None:
    """The model's answer: `output.completion` when logged, else the first choice's message text."""
    if not isinstance(output, dict):
        return None
    completion = output.get("completion")
    if isinstance(completion, str):
        return completion
    choices = output.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict):
            return content_text(message.get("content"))
    return None


def sample_scores(scores: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-scorer floats, plus the answers/explanations/raw values worth keeping in metadata."""
    out: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if type(scores) is not dict:
        return out, extra
    answers: dict[str, Any] = {}
    explanations: dict[str, Any] = {}
    for name, score in scores.items():
        if type(score) is not dict:
            continue
        value = score.get("value")
        if type(value) is dict:  # one scorer, several named values (inspect scores each key)
            for key, v in value.items():
                f = value_to_float(v)
                if f is not None:
                    out[str(key)] = f
        else:
            f = value_to_float(value)
            if f is not None:
                out[name] = f
            elif value is not None:
                extra.setdefault("values", {})[name] = value
        answer = score.get("answer")
        if answer is not None:
            answers[name] = answer
        explanation = score.get("explanation")
        if explanation is not None and explanation != answer:
            explanations[name] = explanation
    if answers:
        extra["answers"] = answers
    if explanations:
        extra["explanations"] = explanations
    return out, extra


def _usage_tokens(sample: InspectSample) -> tuple[int | None, int | None]:
    """Tokens over all models the sample used (input counts cache reads/writes, as inspect defines it)."""
    usage = sample.model_usage
    if not usage or type(usage) is not dict:
        output = sample.output
        u = output.get("usage") if type(output) is dict else None
        if type(u) is not dict:
            return None, None
        usage = {"": u}
    tin = tout = 0
    for u in usage.values():
        if type(u) is dict:
            tin += int(u.get("input_tokens") or 0)
            tout += int(u.get("output_tokens") or 0)
            if len(u) > 3:
                tin += int(u.get("input_tokens_cache_read") or 0) + int(u.get("input_tokens_cache_write") or 0)
    return tin, tout


class RowBuilder:
    """Collects sample columns; `take()` returns a table of what it holds (maps kept flat until then)."""

    def __init__(self, task: str, schema: pa.Schema) -> None:
        self.task = task
        self.schema = schema
        self._clear()

    def _clear(self) -> None:
        self.sample_id: list[str] = []
        self.epoch: list[int] = []
        self.input: list[str] = []
        self.target: list[str | None] = []
        self.prediction: list[str | None] = []
        self.metadata: list[str | None] = []
        self.latency_ms: list[float | None] = []
        self.tokens_in: list[int | None] = []
        self.tokens_out: list[int | None] = []
        self.score_keys: list[str] = []
        self.score_vals: list[float] = []
        self.score_ends: list[int] = [0]
        self.group_keys: list[str] = []
        self.group_vals: list[str] = []
        self.group_ends: list[int] = [0]

    def __len__(self) -> int:
        return len(self.sample_id)

    def add(self, s: InspectSample) -> None:
        sid = s.id
        t = type(sid)
        if t is str:
            sample_id = sid
        elif t is int:
            sample_id = str(sid)
        else:
            raise ValueError(f"sample id must be a string or integer, got {t.__name__}")
        epoch = s.epoch
        if type(epoch) is not int:
            raise ValueError(f"epoch must be an integer, got {type(epoch).__name__}")
        scores, extra = sample_scores(s.scores)
        meta = s.metadata
        if type(meta) is dict and meta:
            meta = dict(meta)
            for k, v in meta.items():
                if (type(v) is str and len(v) <= _GROUP_MAX_CHARS) or type(v) is bool:
                    self.group_keys.append(k)
                    self.group_vals.append(v if type(v) is str else str(v).lower())
        else:
            meta = {}
        self.group_ends.append(len(self.group_keys))
        error = s.error
        if error:
            extra["error"] = error.get("message") if type(error) is dict else str(error)
        if s.limit:
            extra["limit"] = s.limit
        uuid = s.uuid
        if uuid:
            extra["uuid"] = uuid
        if extra:
            meta["inspect"] = extra
        tin, tout = _usage_tokens(s)
        total_time: Any = s.total_time
        inp = s.input
        self.sample_id.append(sample_id)
        self.epoch.append(epoch - 1)  # inspect counts epochs from 1, we from 0
        self.input.append(inp if type(inp) is str else render_input(inp))
        self.target.append(render_target(s.target))
        self.prediction.append(prediction(s.output))
        self.score_keys.extend(scores)
        self.score_vals.extend(scores.values())
        self.score_ends.append(len(self.score_keys))
        self.metadata.append(dumps(meta) if meta else None)
        t = type(total_time)
        self.latency_ms.append(total_time * 1000.0 if t is float or t is int else None)
        self.tokens_in.append(tin)
        self.tokens_out.append(tout)

    def take(self, run_id: str) -> pa.Table:
        n = len(self)
        given = {
            "run_id": pa.array([run_id] * n, pa.string()),
            "task": pa.array([self.task] * n, pa.string()),
            "sample_id": pa.array(self.sample_id, pa.string()),
            "epoch": pa.array(self.epoch, pa.int32()),
            "input": pa.array(self.input, pa.large_string()),
            "target": pa.array(self.target, pa.large_string()),
            "prediction": pa.array(self.prediction, pa.large_string()),
            "scores": pa.MapArray.from_arrays(pa.array(self.score_ends, pa.int32()),
                                              pa.array(self.score_keys, pa.string()),
                                              pa.array(self.score_vals, pa.float64())),
            "group": pa.MapArray.from_arrays(pa.array(self.group_ends, pa.int32()),
                                             pa.array(self.group_keys, pa.string()),
                                             pa.array(self.group_vals, pa.string())),
            "metadata": pa.array(self.metadata, pa.large_string()),
            "latency_ms": pa.array(self.latency_ms, pa.float64()),
            "tokens_in": pa.array(self.tokens_in, pa.int64()),
            "tokens_out": pa.array(self.tokens_out, pa.int64()),
        }
        arrays = []
        for field in self.schema:
            col = given.get(field.name)
            if col is None:
                col = pa.nulls(n, field.type)
            arrays.append(col if col.type == field.type else col.cast(field.type))
        self._clear()
        return pa.Table.from_arrays(arrays, schema=self.schema)


class ScoreCollector:
    """Per-sample scores of the delivered tables, for the CLT recompute (epochs are averaged per id)."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._ids: dict[str, list[np.ndarray]] = {}
        self._vals: dict[str, list[np.ndarray]] = {}

    @property
    def n_unique(self) -> int:
        return len(self._index)

    def add(self, table: pa.Table) -> None:
        index = self._index
        ids = table.column("sample_id").to_pylist()
        rows = np.fromiter((index.setdefault(i, len(index)) for i in ids), dtype=np.int64, count=len(ids))
        for chunk, start in _chunks(table.column("scores")):
            offsets = chunk.offsets.to_numpy()
            lo, hi = int(offsets[0]), int(offsets[-1])
            if hi == lo:
                continue
            keys = chunk.keys.slice(lo, hi - lo).dictionary_encode()
            codes = keys.indices.to_numpy(zero_copy_only=False)
            values = chunk.items.slice(lo, hi - lo).to_numpy(zero_copy_only=False)
            parent = rows[start + np.repeat(np.arange(len(chunk)), np.diff(offsets))]
            for code, name in enumerate(keys.dictionary.to_pylist()):
                mask = codes == code
                self._ids.setdefault(name, []).append(parent[mask])
                self._vals.setdefault(name, []).append(values[mask])

    def epoch_averaged(self) -> dict[str, CltAccumulator]:
        """Per score name, a CLT accumulator over per-sample means (epochs averaged first)."""
        out: dict[str, CltAccumulator] = {}
        n_ids = len(self._index)
        for name, id_parts in self._ids.items():
            ids = np.concatenate(id_parts)
            vals = np.concatenate(self._vals[name])
            counts = np.bincount(ids, minlength=n_ids)
            sums = np.bincount(ids, weights=vals, minlength=n_ids)
            have = counts > 0
            means = sums[have] / counts[have]
            acc = CltAccumulator()
            acc.n = int(means.size)
            if acc.n:
                acc.mean = float(means.mean())
                acc.m2 = float(((means - acc.mean) ** 2).sum())
            out[name] = acc
        return out


def parse_json(raw: bytes, where: str, path: str, parse: Callable[[bytes], Any] = loads) -> Any:
    """Parse a member / a sample; errors become ImportFormatError naming `where` and the file."""
    try:
        return parse(raw)
    except msgspec.ValidationError as e:  # decode_sample: JSON, but no sample object
        raise ImportFormatError(f"{where}: not an inspect_ai sample ({e})", path=path) from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"{where} is not UTF-8 JSON", path=path) from None
    except ValueError as e:
        raise ImportFormatError(f"{where} is not valid JSON ({e}); truncated?", path=path) from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply", path=path) from None


def member_samples(chunks: Iterable[list[tuple[str, bytes]]], path: str) -> Iterator[tuple[str, Any]]:
    """(where, decoded sample) for the `samples/*.json` members read by `_zipindex.read_table`."""
    for chunk in chunks:
        for name, raw in chunk:
            where = f"member {name!r}"
            yield where, parse_json(raw, where, path, decode_sample)


def sample_tables(samples: Iterable[tuple[str, Any]], rows: RowBuilder, run_id: str, batch_rows: int,
                  path: str) -> Iterator[pa.Table]:
    """Tables of up to `batch_rows` rows from decoded samples (or parsed sample objects); a sample of the
    wrong shape raises ImportFormatError saying which one."""
    for where, sample in samples:
        if type(sample) is not InspectSample and not isinstance(sample, dict):
            raise ImportFormatError(f"{where}: a sample should be a JSON object", path=path)
        try:
            rows.add(as_sample(sample))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ImportFormatError(f"{where}: not an inspect_ai sample ({e})", path=path) from None
        if len(rows) >= batch_rows:
            yield _take(rows, run_id, path)
    if len(rows):
        yield _take(rows, run_id, path)


def _take(rows: RowBuilder, run_id: str, path: str) -> pa.Table:
    try:
        return rows.take(run_id)
    except (pa.ArrowException, OverflowError) as e:
        raise ImportFormatError(f"sample values out of range for the sample table ({e})", path=path) from None


def _chunks(col: pa.ChunkedArray) -> Iterator[tuple[Any, int]]:
    start = 0
    for chunk in col.chunks:
        yield chunk, start
        start += len(chunk)
