"""The importer interface every foreign-format module implements, and the shared statistics they use.

An importer turns a peer tool's output (a file or a folder) into an `ImportedRun`: the `Run` record, its
metric results, and the per-sample rows as a stream of batches, so a million-sample log never has to be in
memory at once. Stderr / CI are recomputed from per-sample scores with the same CLT formula everywhere
(`clt_metric`), so numbers from different tools are comparable.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import pyarrow as pa

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.records import MetricResult, Run, Sample

__all__ = [
    "CLT_METHOD",
    "Z95",
    "CltAccumulator",
    "ImportFormatError",
    "ImportedRun",
    "Importer",
    "apply_clt",
    "clt_metric",
    "fill_source_ci",
    "read_json_file",
]

Z95 = 1.959964  # two-sided 95% normal quantile
CLT_METHOD = "clt"

Batch: TypeAlias = "pa.Table | list[Sample]"


@dataclass
class ImportedRun:
    """What an importer hands to the store: `ws.add_run(r.run, r.metrics, r.batches)`.

    `batches` may be a one-shot generator that streams the source file. Importers that stream may refine
    `metrics` *in place* (recomputed CLT stderr/CI, n) once `batches` is exhausted, because the per-sample
    scores are only seen while streaming; consume `batches` before persisting `metrics`. Until then the
    metric objects hold the values carried over from the source (method "source").
    """

    run: Run
    metrics: list[MetricResult]
    batches: Iterable[Batch]
    source_files: list[Path] = field(default_factory=list)


@runtime_checkable
class Importer(Protocol):
    """One foreign format. `detect` looks at content (JSON keys, Parquet columns), not just the name."""

    name: str

    def detect(self, path: Path) -> bool:
        """True when `path` (file or folder) holds output of this format; never raises."""
        ...

    def load(self, path: Path) -> ImportedRun:
        """Read `path`; raise `ImportFormatError` naming the file and what is wrong."""
        ...


def clt_metric(values: Sequence[float] | Any) -> tuple[float, float | None, float | None, float | None, int]:
    """Mean, CLT standard error (sample std, ddof=1, over sqrt(n)) and 95% CI of per-sample scores.

    NaN values are dropped (they mark samples without that metric). With n < 2 the standard error and CI
    are undefined and returned as None.
    """
    acc = CltAccumulator()
    for v in values:
        acc.add(float(v))
    return acc.result()


class CltAccumulator:
    """Streaming (Welford) version of `clt_metric`, for scores seen one sample at a time."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, value: float) -> None:
        if math.isnan(value):
            return
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    def add_many(self, values: Any) -> None:
        """Fold in a batch of (non-NaN) values at once (Chan et al.'s parallel update)."""
        import numpy as np

        arr = np.asarray(values, dtype=np.float64)
        nb = int(arr.size)
        if nb == 0:
            return
        mean_b = float(arr.mean())
        m2_b = float(((arr - mean_b) ** 2).sum())
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean += delta * nb / n
        self.m2 += m2_b + delta * delta * self.n * nb / n
        self.n = n

    def result(self) -> tuple[float, float | None, float | None, float | None, int]:
        n = self.n
        if n == 0:
            return (math.nan, None, None, None, 0)
        if n < 2:
            return (self.mean, None, None, None, n)
        se = math.sqrt(max(self.m2, 0.0) / (n - 1)) / math.sqrt(n)
        return (self.mean, se, self.mean - Z95 * se, self.mean + Z95 * se, n)


def apply_clt(metric: MetricResult, acc: CltAccumulator | Sequence[float], *, rel_tol: float = 1e-6) -> bool:
    """Recompute `metric`'s stderr/CI/n from per-sample scores, in place, when they explain its value.

    The per-sample mean must match the carried value (within `rel_tol`, or the source value is missing):
    corpus-level metrics (BLEU, F1 over the corpus) are not means of per-sample numbers, and a CLT
    interval around them would be wrong, so those keep the source's numbers. Returns True if applied.
    """
    mean, se, lo, hi, n = acc.result() if isinstance(acc, CltAccumulator) else clt_metric(acc)
    if n == 0:
        return False
    if not math.isnan(metric.value) and not math.isclose(mean, metric.value, rel_tol=rel_tol, abs_tol=1e-9):
        return False
    if math.isnan(metric.value):
        metric.value = mean
    if metric.method != CLT_METHOD:
        metric.source_stderr = metric.stderr
    metric.stderr = se
    metric.ci_low = lo
    metric.ci_high = hi
    metric.n = n
    metric.method = CLT_METHOD
    return True


def fill_source_ci(metric: MetricResult) -> None:
    """A normal-approximation 95% CI from a carried-over stderr (method stays "source")."""
    if metric.method == CLT_METHOD or metric.stderr is None or metric.ci_low is not None:
        return
    if not (math.isfinite(metric.value) and math.isfinite(metric.stderr)):
        return
    metric.ci_low = metric.value - Z95 * metric.stderr
    metric.ci_high = metric.value + Z95 * metric.stderr


def validation_message(exc: Exception) -> str:
    """One line from a pydantic ValidationError: which field had which unexpected value."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ()))
            return f"unexpected value for {loc}: {first.get('msg', '')}"
        except (IndexError, TypeError, AttributeError):
            pass
    return f"unexpected value: {str(exc)[:200]}"


def read_json_file(path: Path) -> Any:
    """Parse a JSON file (bare NaN/Infinity accepted, as Python writes them); errors name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImportFormatError(f"cannot read file: {e.strerror or e}", path=str(path)) from None
    try:
        return json.loads(data)
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"not UTF-8 text: {e.reason} at byte {e.start}", path=str(path)) from None
    except json.JSONDecodeError as e:
        raise ImportFormatError(
            f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg} (truncated or not JSON?)",
            path=str(path),
        ) from None
    except RecursionError:
        raise ImportFormatError("JSON nested too deeply", path=str(path)) from None


def peek_json(path: Path, limit: int = 64 << 20) -> Any:
    """Parse a JSON file for format detection: None when it is missing, too large, or not JSON."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def warm_imports(*modules: str) -> None:
    """Import `modules` in a background thread, for an importer about to hash its source files.

    Hashing releases the GIL, so the import (pandas, which pyarrow pulls in on first use, and DuckDB: about
    a second together) runs on the other core instead of after the hash. Missing modules are skipped;
    a later `import` of the same module simply waits for this one.
    """

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - only a warm-up: the real import reports problems
                continue

    threading.Thread(target=run, name="evalkeeper-warm-imports", daemon=True).start()


def iter_files(path: Path, pattern: str) -> Iterator[Path]:
    """Files under folder `path` matching a glob, sorted, skipping unreadable entries."""
    try:
        yield from sorted(p for p in path.rglob(pattern) if p.is_file())
    except OSError:
        return


try:  # orjson parses JSON lines several times faster; stdlib json is the fallback (and handles bare NaN)
    import orjson as _orjson

    def loads_fast(data: bytes) -> Any:
        """Parse one JSON document; bare NaN/Infinity (which orjson rejects) fall back to the stdlib."""
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            return json.loads(data)

    def dumps_fast(obj: Any) -> str:
        """Compact JSON text (NaN becomes null; unknown types become their str())."""
        try:
            return _orjson.dumps(obj, default=str, option=_orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # integers beyond 64 bits, exotic keys: the stdlib writes them
            return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))

except ImportError:  # pragma: no cover - orjson is a dependency, but stay usable without it

    def loads_fast(data: bytes) -> Any:
        return json.loads(data)

    def dumps_fast(obj: Any) -> str:
        return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))


def as_object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (for optional sections of a source file)."""
    return value if isinstance(value, dict) else {}


def first_string(data: dict[str, Any], *keys: str) -> str | None:
    """The first of `keys` whose value in `data` is a string (a tool's version under its old or new name)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str):
            return value
    return None


def as_float(value: Any) -> float | None:
    """A per-sample score as float (bools count as 0/1); None for anything that is not a plain number."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None
