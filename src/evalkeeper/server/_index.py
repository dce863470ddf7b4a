"""An in-memory explorer index per finished run, so filters, sorts, counts and search stay fast at 1M+ samples.

Scanning Parquet on every request means decoding map columns (scores, groups), sorting the whole run and
reading whole row groups of text for a 50-row page: seconds at 1,000,000 samples. The index loads a run
once into Arrow (texts included while they fit in a memory budget), then answers a page with numpy:
boolean masks for filters, a cached stable sort order per sort key (so ties keep storage order and paging
is deterministic), and `take` for the page's rows. Runs whose texts exceed the budget keep only the small
columns in memory; their rows are read from Parquet by row number and text search goes to DuckDB.
Runs that are still being written are never indexed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evalkeeper.core.records import Run

TEXT_COLUMNS = ("input", "target", "prediction")
SMALL_COLUMNS = ("task", "sample_id", "epoch", "scores", "group", "latency_ms", "tokens_in", "tokens_out")
TEXT_BUDGET_BYTES = 1 << 30  # texts of all cached runs together; beyond it a run's texts stay in Parquet
SEARCH_CACHE = 32  # search masks kept per run (one bool per sample each)
WARM_SORT_KEYS = ("score", "sample_id", "latency_ms", "tokens_out", "tokens_in", "task", "epoch")
FIND_LOOP_LIMIT = 30_000  # rows hit by bytes.find before a search switches to the vectorized scan


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class RunIndex:
    """One run in memory: an Arrow table (row i = i-th row of the parts in order) plus cached derived arrays."""

    table: pa.Table
    parts: list[Path]
    part_starts: np.ndarray  # first row of each part
    has_text: bool
    score: np.ndarray  # the task's primary metric, NaN where missing
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict)
    _searches: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def n_rows(self) -> int:
        return int(self.table.num_rows)

    @property
    def text_bytes(self) -> int:
        """Texts plus their lowered search copy (built on the first search)."""
        if not self.has_text:
            return 0
        return 2 * sum(int(self.table.column(c).nbytes) for c in TEXT_COLUMNS)

    def _cached(self, key: tuple[str, ...], make: Any) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
        return value

    def _entries(self, column: str) -> tuple[dict[str, int], np.ndarray, np.ndarray, pa.Array]:
        """A map column flattened once: key -> code, each entry's key code and row, and the entry values."""
        def make() -> tuple[dict[str, int], np.ndarray, np.ndarray, pa.Array]:
            col = self.table.column(column).combine_chunks()
            offsets = np.asarray(col.offsets.to_numpy(), dtype=np.int64)
            start, end = int(offsets[0]), int(offsets[-1])
            keys = pc.dictionary_encode(col.keys.slice(start, end - start))
            rows = np.repeat(np.arange(len(col), dtype=np.int64), np.diff(offsets))
            codes = np.asarray(keys.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            lookup = {str(k): i for i, k in enumerate(keys.dictionary.to_pylist())}
            return lookup, codes, rows, col.items.slice(start, end - start)

        return self._cached(("entries", column), make)  # type: ignore[no-any-return]

    def metric(self, name: str) -> np.ndarray:
        """Float values of one metric (NaN where a sample lacks it)."""
        def make() -> np.ndarray:
            lookup, codes, rows, items = self._entries("scores")
            out = np.full(self.n_rows, np.nan)
            if name in lookup:
                hit = codes == lookup[name]
                vals = np.asarray(pc.fill_null(items, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
                out[rows[hit][::-1]] = vals[hit][::-1]  # reversed: the first occurrence wins, like map_lookup
            return out

        return self._cached(("metric", name), make)  # type: ignore[no-any-return]

    def codes(self, kind: str, name: str = "") -> tuple[dict[str, int], np.ndarray]:
        """Dictionary codes per row of the task column or of one group attribute (-1: missing)."""
        def make() -> tuple[dict[str, int], np.ndarray]:
            if kind == "task":
                enc = pc.dictionary_encode(self.table.column("task")).combine_chunks()
                codes = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
                return {str(v): i for i, v in enumerate(enc.dictionary.to_pylist())}, codes
            lookup, key_codes, rows, items = self._entries("group")
            codes = np.full(self.n_rows, -1, dtype=np.int64)
            if name not in lookup:
                return {}, codes
            hit = key_codes == lookup[name]
            vals = pc.dictionary_encode(items.filter(pa.array(hit)))
            val_codes = np.asarray(pc.fill_null(vals.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
            codes[rows[hit][::-1]] = val_codes[::-1]
            return {str(v): i for i, v in enumerate(vals.dictionary.to_pylist())}, codes

        return self._cached(("codes", kind, name), make)  # type: ignore[no-any-return]

    def equals(self, kind: str, name: str, value: str | None) -> np.ndarray:
        """Rows where a string column (task, or a group attribute) equals `value` (None: is present)."""
        lookup, codes = self.codes(kind, name)
        if value is None:
            return codes >= 0
        code = lookup.get(value)
        return np.zeros(len(codes), dtype=bool) if code is None else codes == code

    def group_keys_by_task(self) -> dict[str, list[str]]:
        lookup, key_codes, rows, _ = self._entries("group")
        task_lookup, task_codes = self.codes("task")
        keys = {v: k for k, v in lookup.items()}
        tasks = {v: k for k, v in task_lookup.items()}
        out: dict[str, set[str]] = {t: set() for t in task_lookup}
        if key_codes.size:
            width = len(lookup) + 1
            for pair in np.unique(task_codes[rows] * width + key_codes):
                out[tasks[int(pair) // width]].add(keys[int(pair) % width])
        return {t: sorted(v) for t, v in sorted(out.items())}

    def slice_stats(self, task: str, attribute: str, metric: str) -> tuple[list[tuple[str, int, float, float]],
                                                                         tuple[int, float, float]]:
        """Per value of `attribute`: (value, n, mean, sample sd) of `metric` in `task`; and the overall row."""
        vals = self.metric(metric)
        valid = self.equals("task", "", task) & ~np.isnan(vals)
        lookup, codes = self.codes("group", attribute)
        v, c = vals[valid], codes[valid] + 1  # 0: missing
        n = np.bincount(c, minlength=len(lookup) + 1)
        s1 = np.bincount(c, weights=v, minlength=len(lookup) + 1)
        s2 = np.bincount(c, weights=v * v, minlength=len(lookup) + 1)
        names = {i + 1: k for k, i in lookup.items()} | {0: "(missing)"}

        def stats(cnt: int, a: float, b: float) -> tuple[int, float, float]:
            mean = a / cnt
            var = (b - cnt * mean * mean) / (cnt - 1) if cnt > 1 else float("nan")
            return cnt, mean, float(np.sqrt(max(var, 0.0))) if cnt > 1 else float("nan")

        rows = [(names[i], *stats(int(n[i]), float(s1[i]), float(s2[i]))) for i in range(len(n)) if n[i]]
        overall = stats(int(v.size), float(v.sum()), float((v * v).sum())) if v.size else (0, 0.0, float("nan"))
        return sorted(rows), overall

    def search(self, needle: str) -> np.ndarray:
        """Rows whose input, prediction or target contains `needle`, ignoring case.

        Each text column is lowered once into one contiguous byte string (plus row offsets). A needle is
        first looked for with bytes.find (memchr speed), jumping to the next row after each hit; a needle
        that hits very many rows switches to numpy: positions of its rarest byte, the other bytes checked
        at those candidates only. Matches straddling two rows are dropped.
        """
        with self._lock:
            if needle in self._searches:  # paging through one search reuses its mask
                self._searches.move_to_end(needle)
                return self._searches[needle]
        key = needle.lower().encode("utf-8")
        hit = np.zeros(self.n_rows, dtype=bool)
        if not key:
            hit[:] = True
        for name in TEXT_COLUMNS if key else ():
            text, offsets, counts = self.lowered(name)
            if not _find_rows(text, offsets, key, hit):
                _scan_rows(text, offsets, counts, key, hit)
        with self._lock:
            self._searches[needle] = hit
            while len(self._searches) > SEARCH_CACHE:
                self._searches.popitem(last=False)
        return hit

    def lowered(self, name: str) -> tuple[bytes, np.ndarray, np.ndarray]:
        """One text column lowered: (its bytes, row offsets into them, approximate byte histogram)."""
        def make() -> tuple[bytes, np.ndarray, np.ndarray]:
            col = pc.fill_null(self.table.column(name), "").combine_chunks()
            ascii_only = bool(pc.all(pc.string_is_ascii(col)).as_py() is not False)
            low = (pc.ascii_lower(col) if ascii_only else pc.utf8_lower(col)).cast(pa.large_string())
            bufs = low.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[low.offset:low.offset + len(low) + 1].copy()
            start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
            text = bufs[2].to_pybytes()[start:end] if bufs[2] is not None else b""
            offsets -= start
            raw = np.frombuffer(text, dtype=np.uint8)
            sample = raw[:: max(1, raw.size // 1_000_000)]  # byte frequencies from a strided sample
            return text, offsets, np.bincount(sample, minlength=256)

        return self._cached(("lower", name), make)  # type: ignore[no-any-return]


    def sort_key(self, sort: str, metric: str | None) -> pa.Array | np.ndarray:
        if sort == "score":
            return self.metric(metric) if metric else self.score
        return self.table.column(sort)

    def order(self, sort: str, metric: str | None, descending: bool) -> np.ndarray:
        """Row numbers sorted by the key, nulls/NaN last. Ascending is a stable sort (ties in storage
        order); descending reverses the non-null part of it, so each key is sorted only once."""
        def make_asc() -> np.ndarray:
            key = self.sort_key(sort, metric)
            arr = pa.array(key, from_pandas=True) if isinstance(key, np.ndarray) else key
            idx = pc.sort_indices(pa.table({"k": arr}), sort_keys=[("k", "ascending", "at_end")])
            return np.asarray(idx.to_numpy(), dtype=np.int64)

        asc: np.ndarray = self._cached(("order", sort, metric or "", "asc"), make_asc)
        if not descending:
            return asc

        def make_desc() -> np.ndarray:
            key = self.sort_key(sort, metric)
            arr = pa.array(key, from_pandas=True) if isinstance(key, np.ndarray) else key
            n_valid = len(arr) - arr.null_count
            return np.concatenate([asc[:n_valid][::-1], asc[n_valid:]])

        return self._cached(("order", sort, metric or "", "desc"), make_desc)  # type: ignore[no-any-return]

    def rank(self, sort: str, metric: str | None, descending: bool) -> np.ndarray:
        """Position of every row in `order(...)` (its inverse permutation)."""
        def make() -> np.ndarray:
            order = self.order(sort, metric, descending)
            rank = np.empty(order.size, dtype=np.int64)
            rank[order] = np.arange(order.size, dtype=np.int64)
            return rank

        return self._cached(("rank", sort, metric or "", "desc" if descending else "asc"), make)  # type: ignore


def _warm_orders(index: RunIndex) -> None:
    """Sort every sortable column once in the background, so the first page sorted by it is fast too."""
    for key in WARM_SORT_KEYS:
        try:
            index.order(key, None, False)
        except (KeyError, pa.ArrowException):  # a column missing from an unusual part: sorted on demand
            continue


def _find_rows(text: bytes, offsets: np.ndarray, key: bytes, hit: np.ndarray) -> bool:
    """Mark rows containing `key` using bytes.find; False (work abandoned) after FIND_LOOP_LIMIT matches."""
    found: list[int] = []
    pos = text.find(key)
    while pos != -1:
        found.append(pos)
        if len(found) > FIND_LOOP_LIMIT:
            return False
        pos = text.find(key, pos + 1)
    _mark(np.asarray(found, dtype=np.int64), offsets, len(key), hit)
    return True


def _mark(starts: np.ndarray, offsets: np.ndarray, length: int, hit: np.ndarray) -> None:
    """Set the rows of match start positions, dropping matches that straddle two rows."""
    first = np.searchsorted(offsets, starts, side="right") - 1
    last = np.searchsorted(offsets, starts + length - 1, side="right") - 1
    hit[first[first == last]] = True


def _scan_rows(text: bytes, offsets: np.ndarray, counts: np.ndarray, key_bytes: bytes, hit: np.ndarray) -> None:
    """Vectorized match for needles that hit many rows: anchor on the rarest byte, verify the others."""
    data = np.frombuffer(text, dtype=np.uint8)
    key = np.frombuffer(key_bytes, dtype=np.uint8)
    anchor = int(np.argmin(counts[key]))
    cand = np.flatnonzero(data == key[anchor]) - anchor
    cand = cand[(cand >= 0) & (cand + key.size <= data.size)]
    for k in range(key.size):
        if k != anchor and cand.size:
            cand = cand[data[cand + k] == key[k]]
    _mark(cand, offsets, key.size, hit)


def _read_part(path: Path, with_text: bool) -> pa.Table:
    cols = [*SMALL_COLUMNS, *(TEXT_COLUMNS if with_text else ())]
    return pq.read_table(path, columns=cols)


def _primary_score(run: Run, table: pa.Table, metric_of: Any) -> np.ndarray:
    """Same rule as the store's `score` column: the task's first metric, else the first score stored."""
    scores = table.column("scores").combine_chunks()
    offsets = np.asarray(scores.offsets.to_numpy(), dtype=np.int64)
    items = np.asarray(scores.items.to_numpy(zero_copy_only=False), dtype=np.float64)
    has_any = offsets[1:] > offsets[:-1]
    first = np.full(len(scores), np.nan)
    if items.size:
        first[has_any] = items[offsets[:-1][has_any]]
    out = first
    tasks = table.column("task")
    for t in run.tasks:
        if t.metrics:
            mask = np.asarray(pc.fill_null(pc.equal(tasks, t.name), False).to_numpy(zero_copy_only=False))
            out = np.where(mask, metric_of(t.metrics[0]), out)
    return out


class ExplorerIndex:
    """Builds run indexes lazily (least recently used evicted) and serves pages from them."""

    def __init__(self, max_runs: int = 4, text_budget: int = TEXT_BUDGET_BYTES) -> None:
        self._lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}
        self._indexes: OrderedDict[tuple[str, int, tuple[str, ...]], RunIndex] = OrderedDict()
        self._duck = duckdb.connect(":memory:")
        self.max_runs = max_runs
        self.text_budget = text_budget

    def get(self, run: Run, parts: list[Path]) -> RunIndex:
        # Part file names carry a random suffix, so a re-imported run with the same id is a new key.
        key = (run.run_id, run.n_samples, tuple(p.name for p in parts))
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
                return found
            build_lock = self._build_locks.setdefault(run.run_id, threading.Lock())
        with build_lock:  # concurrent first requests build once
            with self._lock:
                if key in self._indexes:
                    return self._indexes[key]
                used = sum(i.text_bytes for i in self._indexes.values())
            index = self._build(run, parts, text_room=self.text_budget - used)
            threading.Thread(target=_warm_orders, args=(index,), daemon=True, name="explorer-sort").start()
            with self._lock:
                self._indexes[key] = index
                while len(self._indexes) > self.max_runs:
                    self._indexes.popitem(last=False)
            return index

    def _build(self, run: Run, parts: list[Path], text_room: int) -> RunIndex:
        # Parquet metadata gives the uncompressed text size, so the budget is checked before reading texts.
        text_size = 0
        for p in parts:
            meta = pq.ParquetFile(p).metadata
            names = meta.schema.names
            for rg in range(meta.num_row_groups):
                group = meta.row_group(rg)
                text_size += sum(group.column(i).total_uncompressed_size for i in range(group.num_columns)
                                 if names[i] in TEXT_COLUMNS)
        with_text = 2 * text_size <= text_room  # texts + their lowered search copy
        tables = [_read_part(p, with_text) for p in parts]
        starts = np.cumsum([0] + [t.num_rows for t in tables[:-1]]).astype(np.int64)
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
        table = table.combine_chunks()  # `take` on many chunks would concatenate them on every page
        index = RunIndex(table=table, parts=list(parts), part_starts=starts, has_text=with_text,
                         score=np.empty(0))
        index.score = _primary_score(run, table, index.metric)
        if with_text:  # lower the texts now, so the first search does not pay for it
            for name in TEXT_COLUMNS:
                index.lowered(name)
        return index

    # ---- queries ----------------------------------------------------------------------------------
    def mask(self, index: RunIndex, *, task: str | None, metric: str | None, score_min: float | None,
             score_max: float | None, group: str | None, group_value: str | None,
             search: str | None) -> np.ndarray | None:
        """Boolean row mask of the filters (None: every row). `search` needs `index.has_text`."""
        masks: list[np.ndarray] = []
        if task:
            masks.append(index.equals("task", "", task))
        values = index.metric(metric) if metric else index.score
        if score_min is not None:
            masks.append(values >= score_min)
        if score_max is not None:
            masks.append(values <= score_max)
        if metric and score_min is None and score_max is None:
            masks.append(~np.isnan(values))
        if group:
            masks.append(index.equals("group", group, group_value))
        if search:
            masks.append(index.search(search))
        if not masks:
            return None
        out = masks[0]
        for m in masks[1:]:
            out = out & m
        return out

    def page(self, index: RunIndex, mask: np.ndarray | None, sort: str, metric: str | None,
             descending: bool, offset: int, limit: int) -> list[int]:
        """Row numbers of one page. With a filter only the matching rows are ranked: O(matches), not O(run)."""
        if mask is None:
            return [int(i) for i in index.order(sort, metric, descending)[offset:offset + limit]]
        cand = np.flatnonzero(mask)
        end = min(offset + limit, cand.size)
        if offset >= end:
            return []
        ranks = index.rank(sort, metric, descending)[cand]
        top = np.argpartition(ranks, end - 1)[:end] if end < cand.size else np.arange(cand.size)
        top = top[np.argsort(ranks[top])]
        return [int(i) for i in cand[top[offset:end]]]

    def rows(self, index: RunIndex, positions: list[int], parquet_columns: str) -> list[dict[str, Any]]:
        """Rows at `positions` (in that order): from memory, or from Parquet by row number."""
        if not positions:
            return []
        if index.has_text:
            return list(index.table.take(pa.array(positions, pa.int64())).to_pylist())
        parts = np.searchsorted(index.part_starts, positions, side="right") - 1
        found: dict[int, dict[str, Any]] = {}
        for part in sorted(set(int(p) for p in parts)):
            local = [pos - int(index.part_starts[part]) for pos, pp in zip(positions, parts, strict=True)
                     if pp == part]
            sql = (f"SELECT file_row_number AS rn, {parquet_columns} FROM "
                   f"read_parquet({_q(str(index.parts[part]))}, file_row_number=true) "
                   f"WHERE file_row_number IN ({', '.join(str(r) for r in local)})")
            with self._lock:
                cur = self._duck.cursor()
            for row in cur.sql(sql).to_arrow_table().to_pylist():
                found[int(index.part_starts[part]) + int(row.pop("rn"))] = row
        return [found[p] for p in positions if p in found]
