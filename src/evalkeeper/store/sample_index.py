"""A run's sample index, memory-mapped: filters as numpy masks, stored sort orders, indexed text search.

Built by `evalkeeper.store.index_build` (format described there). Answers what the explorer and
`Workspace.query_samples` ask most: rows of a task / score range / group value / text search, sorted by
a column with the store's tie-break (task, sample_id, epoch) and paged, with the filter's total count.
"""

from __future__ import annotations

import json
import mmap
import threading
from collections import OrderedDict
from itertools import repeat
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evalkeeper.store.index_build import INDEX_VERSION, LIST_CODEC, TEXTS, gram_hashes, lower_text
from evalkeeper.store.index_build import descending as descending_order

SORTS = ("task", "sample_id", "epoch", "latency_ms", "tokens_in", "tokens_out", "score")
SEARCH_CACHE = 32  # search masks kept per run
VERIFY_LIMIT = 120_000  # candidate rows checked one by one; beyond that DuckDB scans the whole text
BLOCK_CACHE = 256  # decompressed listing blocks kept


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def _map_file(path: Path) -> mmap.mmap | bytes:
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class SampleIndex:
    """One run's index, opened read-only. Thread-safe: derived arrays are cached under a lock."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta
        self.n: int = int(meta["n"])
        self.signature: list[list[Any]] = meta["parts"]
        self.part_starts = np.cumsum([0, *meta["part_rows"]][:-1]).astype(np.int64)
        self.tasks: list[str] = meta["tasks"]
        self.metrics: dict[str, int] = {m: i for i, m in enumerate(meta["metrics"])}
        self.groups: dict[str, int] = {g: i for i, g in enumerate(meta["groups"])}
        self.has_search = bool(meta["search"])
        self.cols = _read_arrow(folder / "cols.arrow")
        self._group_values = _read_arrow(folder / "groups.arrow")
        self._list = _map_file(folder / "list.bin")
        self._list_blocks = np.load(folder / "list.npy", mmap_mode="r")
        self._list_seg = np.load(folder / "list_seg.npy", mmap_mode="r")
        if self.has_search:
            self._text = _map_file(folder / "search.bin")
            self._text_off = np.load(folder / "search.npy", mmap_mode="r")
            self._bloom = np.load(folder / "bloom.npy", mmap_mode="r")
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._searches: OrderedDict[str, np.ndarray] = OrderedDict()
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._duck: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def open(cls, folder: Path) -> SampleIndex | None:
        """The index in `folder`, or None when there is none (or one of an older format)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != INDEX_VERSION:
                return None
            return cls(folder, meta)
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None

    def warm(self) -> None:
        """Touch every page of the mapped files once and set up the text scan, so the first queries pay
        for neither page faults nor one-time imports."""
        lower_text(pa.array(["warm"], pa.large_string()))
        if self.has_search:
            with self._scan_lock:
                self._connect().sql("SELECT count(*) FROM search_text WHERE false").fetchall()
        buffers: list[Any] = [self._list_blocks, self._list_seg]
        buffers += [b for col in self.cols.columns for chunk in col.chunks for b in chunk.buffers() if b is not None]
        if self.has_search:
            buffers += [self._text, self._text_off, self._bloom]
        for buf in buffers:
            raw = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1).view(
                np.uint8)
            if raw.size:
                int(raw[::4096].sum())

    # ---- columns --------------------------------------------------------------------------------
    def _cached(self, key: tuple[Any, ...], make: Any) -> Any:
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
        return value

    def array(self, name: str) -> np.ndarray:
        """A column as numpy (zero-copy for columns without nulls; nulls become NaN otherwise)."""
        def make() -> np.ndarray:
            col = self.cols.column(name).combine_chunks()
            if col.null_count:
                return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            return np.asarray(col.to_numpy(zero_copy_only=False))
        return self._cached(("array", name), make)  # type: ignore[no-any-return]

    def metric(self, name: str) -> np.ndarray:
        """Values of one metric, NaN where a sample lacks it."""
        i = self.metrics.get(name)
        if i is None:
            return self._cached(("nan",), lambda: np.full(self.n, np.nan))  # type: ignore[no-any-return]
        return self.array(f"m{i}")

    def score(self, primary: dict[str, str]) -> np.ndarray:
        """The store's `score`: each task's primary metric, else the first score stored."""
        if primary == self.meta["primary"]:
            return self.array("score")

        def make() -> np.ndarray:
            out = np.array(self.array("first"), copy=True)
            codes = self.array("task")
            for i, t in enumerate(self.tasks):
                if t in primary:
                    rows = codes == i
                    out[rows] = self.metric(primary[t])[rows]
            return out
        return self._cached(("score", tuple(sorted(primary.items()))), make)  # type: ignore[no-any-return]

    def group_codes(self, key: str) -> tuple[dict[str, int], np.ndarray | None]:
        """Value -> code of one group attribute, and the code of every row (-1: missing)."""
        j = self.groups.get(key)
        if j is None:
            return {}, None

        def make() -> dict[str, int]:
            values = self._group_slice(j).to_pylist()
            return {str(v): i for i, v in enumerate(values)}
        return self._cached(("gvalues", j), make), self.array(f"g{j}")

    def _group_slice(self, j: int) -> pa.Array:
        keys = np.asarray(self._group_values.column("key").to_numpy())
        a, b = np.searchsorted(keys, [j, j + 1])
        return self._group_values.column("value").slice(int(a), int(b - a))

    # ---- filters --------------------------------------------------------------------------------
    def task_mask(self, task: str) -> np.ndarray:
        codes = self.array("task")
        return codes == self.tasks.index(task) if task in self.tasks else np.zeros(self.n, dtype=bool)

    def group_mask(self, key: str, value: str | None) -> np.ndarray:
        lookup, codes = self.group_codes(key)
        if codes is None:
            return np.zeros(self.n, dtype=bool)
        if value is None:
            return codes >= 0
        code = lookup.get(value)
        return np.zeros(self.n, dtype=bool) if code is None else codes == code

    def mask(self, *, primary: dict[str, str], task: str | None = None, metric: str | None = None,
             score_min: float | None = None, score_max: float | None = None, group: str | None = None,
             group_value: str | None = None, search: str | None = None) -> tuple[bool, np.ndarray | None]:
        """(answerable, row mask or None for every row); not answerable: a search this index cannot do."""
        masks: list[np.ndarray] = []
        if search:
            found = self.search(search)
            if found is None:
                return False, None
            masks.append(found)
        if task:
            masks.append(self.task_mask(task))
        values = self.metric(metric) if metric else self.score(primary)
        if score_min is not None:
            masks.append(values >= score_min)
        if score_max is not None:
            masks.append(values <= score_max)
        if metric and score_min is None and score_max is None:
            masks.append(~np.isnan(values))
        if group:
            masks.append(self.group_mask(group, group_value))
        if not masks:
            return True, None
        out = masks[0] if len(masks) > 1 else masks[0].copy()
        for m in masks[1:]:
            out = out & m
        return True, out

    # ---- search ---------------------------------------------------------------------------------
    def search(self, needle: str) -> np.ndarray | None:
        """Rows whose input, prediction or target contains `needle` ignoring case (ILIKE '%needle%').

        The 4-gram filter narrows the rows to those holding every 4-gram of the needle; they
        are checked one by one with bytes.find. Short needles, and needles whose n-grams are everywhere,
        are matched over the whole text by DuckDB (vectorized, multi-threaded). None: this index has no
        search text, or the needle holds a NUL byte (the separator between texts).
        """
        if not self.has_search:
            return None
        with self._lock:
            if needle in self._searches:
                self._searches.move_to_end(needle)
                return self._searches[needle]
        key = bytes(lower_text(pa.array([needle], pa.large_string()))[0].as_py().encode("utf-8"))
        if b"\x00" in key:
            return None
        cand = self._candidates(key) if len(key) >= 4 else None
        if cand is not None and cand.size <= VERIFY_LIMIT:
            hit = np.zeros(self.n, dtype=bool)
            starts = self._text_off[cand].tolist()
            ends = self._text_off[cand + 1].tolist()
            found = np.fromiter(map(self._text.find, repeat(key), starts, ends), dtype=np.int64, count=cand.size)
            hit[cand[found >= 0]] = True
        else:
            hit = self._scan(key)
        with self._lock:
            self._searches[needle] = hit
            while len(self._searches) > SEARCH_CACHE:
                self._searches.popitem(last=False)
        return hit

    def _candidates(self, key: bytes) -> np.ndarray:
        bits = np.unique(gram_hashes(np.frombuffer(key, dtype=np.uint8), int(self.meta["bloom_log2"])))
        acc = np.array(self._bloom[int(bits[0])], copy=True)
        for b in bits[1:]:
            np.bitwise_and(acc, self._bloom[int(b)], out=acc)
        return np.flatnonzero(np.unpackbits(acc, count=self.n, bitorder="little"))

    def _scan(self, key: bytes) -> np.ndarray:
        """Match `key` in every row with DuckDB's contains() over the mapped text (zero-copy Arrow)."""
        with self._scan_lock:  # the registered table belongs to this one connection
            found = self._connect().sql("SELECT contains(s, $1) AS m FROM search_text",
                                        params=[key.decode("utf-8")]).to_arrow_table().column("m")
        return np.asarray(found.to_numpy(), dtype=bool)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB with the search text registered as table `search_text` (call with _scan_lock held)."""
        if self._duck is None:
            text = pa.Array.from_buffers(pa.large_string(), self.n,
                                         [None, pa.py_buffer(self._text_off), pa.py_buffer(self._text)])
            self._duck = duckdb.connect(":memory:")
            self._duck.register("search_text", pa.table({"s": text}))
        return self._duck

    # ---- order and pages ------------------------------------------------------------------------
    def sort_key(self, sort: str, metric: str | None, primary: dict[str, str]) -> np.ndarray:
        if sort == "score":
            return self.metric(metric) if metric else self.score(primary)
        return self.array("r.sample_id" if sort == "sample_id" else sort).astype(np.float64, copy=False)

    def order(self, sort: str, metric: str | None, descending: bool, primary: dict[str, str]) -> np.ndarray:
        """Row numbers sorted by `sort` (NULLS LAST), ties in (task, sample_id, epoch) order."""
        if sort not in SORTS:
            raise ValueError(f"the sample index cannot sort by {sort!r}")
        if sort == "score" and metric and metric not in self.metrics:
            return self.array("o.task")  # every key is null: (task, sample_id, epoch) order
        if sort == "score" and metric:
            name = f"m{self.metrics[metric]}"
        elif sort == "score" and primary != self.meta["primary"]:
            name = ""
        else:
            name = sort
        if name:
            return self.array(f"{'d' if descending else 'o'}.{name}")

        def make_asc() -> np.ndarray:
            key = self.sort_key(sort, metric, primary)
            canonical = self.array("o.task")
            return canonical[np.argsort(key[canonical], kind="stable")].astype(np.int32)

        ident = tuple(sorted(primary.items()))
        asc: np.ndarray = self._cached(("order", ident), make_asc)
        if not descending:
            return asc
        return self._cached(("desc", ident),  # type: ignore[no-any-return]
                            lambda: descending_order(asc, self.sort_key(sort, metric, primary)))

    @staticmethod
    def page(mask: np.ndarray | None, order: np.ndarray, offset: int, limit: int) -> tuple[int, np.ndarray]:
        """(rows matching, row numbers of the page)."""
        if mask is None:
            return int(order.size), np.asarray(order[offset:offset + limit], dtype=np.int64)
        picked = np.flatnonzero(mask[order])
        return int(picked.size), np.asarray(order[picked[offset:offset + limit]], dtype=np.int64)

    def locate(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(part number, rows in that part, their places in `positions`) for each part touched."""
        parts = np.searchsorted(self.part_starts, positions, side="right") - 1
        out = []
        for p in np.unique(parts):
            where = np.flatnonzero(parts == p)
            out.append((int(p), positions[where] - self.part_starts[p], where))
        return out

    # ---- listing rows ---------------------------------------------------------------------------
    def listing(self, positions: np.ndarray, primary: dict[str, str]) -> list[dict[str, Any]]:
        """Explorer rows: texts cut to the listing limit, scores and groups as dicts, the primary score."""
        if not positions.size:
            return []
        take = pa.array(positions, pa.int64())
        picked = self.cols.select(["sample_id", "epoch", "latency_ms", "tokens_in", "tokens_out", "truncated",
                                   "target_null", "prediction_null"]).take(take).to_pylist()
        task_codes = self.array("task")[positions]
        score = self.score(primary)[positions]
        metrics = [(name, self.metric(name)[positions]) for name in self.metrics]
        groups = []
        for key in self.groups:
            lookup, codes = self.group_codes(key)
            assert codes is not None
            names = {v: k for k, v in lookup.items()}
            groups.append((key, codes[positions], names))
        rows = []
        for i, (pos, row) in enumerate(zip(positions.tolist(), picked, strict=True)):
            texts = self._texts(pos)
            rows.append({
                "task": self.tasks[int(task_codes[i])],
                "sample_id": row["sample_id"],
                "epoch": row["epoch"],
                "input": texts[0],
                "prediction": None if row["prediction_null"] else texts[1],
                "target": None if row["target_null"] else texts[2],
                "truncated": row["truncated"],
                "score": float(score[i]) if np.isfinite(score[i]) else None,
                "scores": {m: float(v[i]) for m, v in metrics if np.isfinite(v[i])},
                "group": {k: names[int(c[i])] for k, c, names in groups if c[i] >= 0},
                "latency_ms": row["latency_ms"],
                "tokens_in": row["tokens_in"],
                "tokens_out": row["tokens_out"],
            })
        return rows

    def _texts(self, pos: int) -> list[str]:
        """The listing texts of one row, in TEXTS order."""
        size = int(self.meta["list_block"])
        block = pos // size
        with self._lock:
            data = self._blocks.get(block)
            if data is not None:
                self._blocks.move_to_end(block)
        base = int(self._list_seg[3 * block * size])
        if data is None:
            a, b = int(self._list_blocks[block]), int(self._list_blocks[block + 1])
            last = min(self.n, (block + 1) * size)
            data = pa.decompress(self._list[a:b], int(self._list_seg[3 * last]) - base, codec=LIST_CODEC,
                                 asbytes=True)
            with self._lock:
                self._blocks[block] = data
                while len(self._blocks) > BLOCK_CACHE:
                    self._blocks.popitem(last=False)
        seg = self._list_seg[3 * pos:3 * pos + 4].tolist()
        return [data[seg[j] - base:seg[j + 1] - base].decode("utf-8") for j in range(len(TEXTS))]

    # ---- aggregates -----------------------------------------------------------------------------
    def group_keys_by_task(self) -> dict[str, list[str]]:
        return {t: list(v) for t, v in sorted(self.meta["group_keys_by_task"].items())}

    def slice_stats(self, task: str, attribute: str, metric: str) -> tuple[list[tuple[str, int, float, float]],
                                                                         tuple[int, float, float]]:
        """Per value of `attribute`: (value, n, mean, sample sd) of `metric` in `task`; and the overall row."""
        vals = self.metric(metric)
        valid = self.task_mask(task) & ~np.isnan(vals)
        lookup, codes = self.group_codes(attribute)
        v = vals[valid]
        c = (codes[valid] + 1) if codes is not None else np.zeros(v.size, dtype=np.int64)  # 0: missing
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
