"""Turn inspect_ai `EvalSample` JSON objects into rows of the sample Parquet schema, batch by batch.

Kept apart from the importer so the hot loop (one call per sample of a million-sample log) stays small
and readable: plain dict lookups, column lists, one `pyarrow.Table` per batch.
"""

from __future__ import annotations

import json
import math
from array import array
from typing import Any

import numpy as np
import pyarrow as pa

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


# (events key, model_usage key) as inspect writes them: compact (current) and indented (older versions)
_CUT_KEYS = ((b',"events":', b',"model_usage":'), (b',\n  "events": ', b',\n  "model_usage": '))


def parse_sample(raw: bytes) -> Any:
    """Parse one `samples/*.json` member, skipping its `events` array when that can be done safely.

    Events are most of a sample's bytes and evalkeeper keeps none of them. inspect writes the fields in
    order (..., metadata, store, events, [timelines,] model_usage, ...), so the object is parsed as two
    cuts: everything before `,"events":` closed with `}`, and everything from the last `,"model_usage":`
    (events hold nested ones) opened with `{`. A cut parses only if it sits at the top level of the
    object (a cut inside a nested value leaves brackets unbalanced, and the keys cannot occur unescaped
    inside strings), so any surprise falls back to parsing the whole member. The CRC check of the zip
    member already vouches for the skipped bytes.
    """
    for events_key, usage_key in _CUT_KEYS:
        i = raw.find(events_key)
        if i <= 0:
            continue
        j = raw.rfind(usage_key, i)
        if j <= 0:
            break
        try:
            head = loads(raw[:i] + b"}")
            tail = loads(b"{" + raw[j + 1 :])
        except ValueError:
            break
        if isinstance(head, dict) and isinstance(tail, dict):
            head.update(tail)
            return head
        break
    return loads(raw)


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


def _usage_tokens(sample: dict[str, Any]) -> tuple[int | None, int | None]:
    """Tokens over all models the sample used (input counts cache reads/writes, as inspect defines it)."""
    usage = sample.get("model_usage")
    if not usage or type(usage) is not dict:
        output = sample.get("output")
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
    """Collects sample columns and per-score values; `take()` returns a table of what it holds."""

    def __init__(self, task: str, schema: pa.Schema) -> None:
        self.task = task
        self.schema = schema
        self.cols: dict[str, list[Any]] = {n: [] for n in schema.names if n != "run_id"}
        # for the CLT recompute: per score name, (row's sample-id index, value); epochs are averaged later
        self._id_index: dict[str, int] = {}
        self._score_ids: dict[str, array[int]] = {}
        self._score_vals: dict[str, array[float]] = {}
        self.n_rows = 0

    def __len__(self) -> int:
        return len(self.cols["sample_id"])

    def add(self, s: dict[str, Any]) -> None:
        sid = s["id"]
        t = type(sid)
        if t is str:
            sample_id = sid
        elif t is int:
            sample_id = str(sid)
        else:
            raise ValueError(f"sample id must be a string or integer, got {t.__name__}")
        epoch = s.get("epoch", 1)
        if type(epoch) is not int:
            raise ValueError(f"epoch must be an integer, got {type(epoch).__name__}")
        scores, extra = sample_scores(s.get("scores"))
        meta = s.get("metadata")
        if type(meta) is dict and meta:
            meta = dict(meta)
            group = [(k, v if type(v) is str else str(v).lower()) for k, v in meta.items()
                     if (type(v) is str and len(v) <= _GROUP_MAX_CHARS) or type(v) is bool]
        else:
            meta, group = {}, []
        error = s.get("error")
        if error:
            extra["error"] = error.get("message") if type(error) is dict else str(error)
        if s.get("limit"):
            extra["limit"] = s["limit"]
        uuid = s.get("uuid")
        if uuid:
            extra["uuid"] = uuid
        if extra:
            meta["inspect"] = extra
        tin, tout = _usage_tokens(s)
        total_time = s.get("total_time")
        if type(total_time) is not float and type(total_time) is not int:
            total_time = None
        inp = s.get("input")
        c = self.cols
        c["task"].append(self.task)
        c["sample_id"].append(sample_id)
        c["epoch"].append(epoch - 1)  # inspect counts epochs from 1, we from 0
        c["input"].append(inp if type(inp) is str else render_input(inp))
        c["target"].append(render_target(s.get("target")))
        c["prediction"].append(prediction(s.get("output")))
        c["scores"].append(list(scores.items()))
        c["logprobs"].append(None)
        c["group"].append(group)
        c["metadata"].append(dumps(meta) if meta else None)
        c["latency_ms"].append(None if total_time is None else total_time * 1000.0)
        c["tokens_in"].append(tin)
        c["tokens_out"].append(tout)
        idx = self._id_index.setdefault(sample_id, len(self._id_index))
        score_ids = self._score_ids
        for name, v in scores.items():
            ids = score_ids.get(name)
            if ids is None:
                ids = score_ids[name] = array("q")
                self._score_vals[name] = array("d")
            ids.append(idx)
            self._score_vals[name].append(v)

    def take(self, run_id: str) -> pa.Table:
        n = len(self)
        arrays = [pa.array([run_id] * n, pa.string())]
        for field in self.schema:
            if field.name == "task":
                arrays.append(pa.array([self.task] * n, field.type))
                self.cols["task"] = []
            elif field.name != "run_id":
                arrays.append(pa.array(self.cols[field.name], field.type))
                self.cols[field.name] = []
        self.n_rows += n
        return pa.Table.from_arrays(arrays, schema=self.schema)

    @property
    def n_unique(self) -> int:
        return len(self._id_index)

    def epoch_averaged(self) -> dict[str, CltAccumulator]:
        """Per score name, a CLT accumulator over per-sample means (epochs averaged first)."""
        out: dict[str, CltAccumulator] = {}
        n_ids = len(self._id_index)
        for name, ids_arr in self._score_ids.items():
            ids = np.frombuffer(ids_arr, dtype=np.int64)
            vals = np.frombuffer(self._score_vals[name], dtype=np.float64)
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
