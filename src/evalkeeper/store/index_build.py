"""Build a run's sample index: the columns, sort orders, search text and listing texts the explorer needs.

The index lives in `<run>/.sample-index/` beside the Parquet parts and is built once per finished run (on
first use, or ahead of time with `Workspace.build_sample_index`). Every file is memory-mapped when read,
so opening it costs milliseconds and the OS page cache is shared between the dashboard and the CLI.

    meta.json     format version, the parts it was built from, names of tasks/metrics/group keys
    cols.arrow    Arrow IPC: task code, sample_id, epoch, latency, tokens, one float column per metric
                  (NaN: missing; a stored NaN becomes +inf, which orders and filters like DuckDB's NaN),
                  one int32 code column per group key (-1: missing), and int32 sort orders
    groups.arrow  group values (key index, value) in code order
    search.bin    input, prediction and target of each row, lowered, NUL-separated: "in\\0pred\\0tgt\\0"
    search.npy    byte offset of every row in search.bin
    bloom.npy     per 4-gram hash, one bit per row: does the row hold a 4-gram with that hash
    list.bin      LZ4 blocks of LIST_BLOCK rows: the first LIST_TEXT_LIMIT characters of each text
    list.npy      byte offsets of the blocks in list.bin; list_seg.npy: offset of every text in a block
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evalkeeper.core.records import Run

INDEX_VERSION = 2
INDEX_DIR = ".sample-index"
LIST_TEXT_LIMIT = 300  # characters of each text kept for listings (the explorer's LIST_TEXT_LIMIT)
LIST_BLOCK = 256  # rows per compressed listing block
LIST_CODEC = "lz4"  # fast to write and read; listing texts are small
SEARCH_BUDGET = 4 << 30  # bytes of lowered text beyond which a run's search stays with DuckDB
BATCH_ROWS = 65_536
TEXTS = ("input", "prediction", "target")  # order of the texts inside a row of search.bin
HASH_MUL = np.uint32(2654435761)
SORTED_KEYS = ("sample_id", "epoch", "latency_ms", "tokens_in", "tokens_out", "score")
_READ = ("task", "sample_id", "epoch", "input", "target", "prediction", "scores", "group", "latency_ms",
         "tokens_in", "tokens_out")


def part_signature(parts: list[Path]) -> list[list[Any]]:
    """What an index was built from: part names (random suffixes) and sizes."""
    return [[p.name, p.stat().st_size] for p in parts]


def primary_metrics(run: Run) -> dict[str, str]:
    """Task -> its primary (first declared) metric; the store's `score` column."""
    return {t.name: t.metrics[0] for t in run.tasks if t.metrics}


def bloom_log2(mean_row_bytes: float) -> int:
    """Bits per row of the 4-gram filter: about 2.5x the distinct 4-grams of a row, 64..4096."""
    want = max(64.0, min(4096.0, 2.5 * mean_row_bytes))
    return int(np.ceil(np.log2(want)))


def gram_hashes(data: np.ndarray, log2: int) -> np.ndarray:
    """Hash in [0, 2**log2) of the 4-gram starting at each byte of `data` (uint8) that has three after it."""
    if data.size < 4:
        return np.zeros(0, dtype=np.uint32)
    words = np.ndarray((data.size - 3,), dtype="<u4", buffer=np.ascontiguousarray(data), strides=(1,))
    out = words * HASH_MUL  # unaligned 4-byte reads, multiplied modulo 2**32
    np.right_shift(out, np.uint32(32 - log2), out=out)
    return out


def lower_text(arr: pa.Array) -> pa.Array:
    """Lower-case like the search needle (ASCII fast path, Unicode otherwise)."""
    if pc.all(pc.string_is_ascii(arr)).as_py() is not False:
        return pc.ascii_lower(arr)
    return pc.utf8_lower(arr)


def _buffer(arr: pa.Array) -> tuple[np.ndarray, bytes]:
    """Row offsets (from 0) and data bytes of a large_string array."""
    arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = bufs[2].to_pybytes()[start:end] if bufs[2] is not None and end > start else b""
    return offsets - start, data


def _per_key(keys: pa.Array) -> list[tuple[object, np.ndarray]]:
    """Each distinct map key with the boolean mask of the entries that carry it."""
    enc = pc.dictionary_encode(keys)
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return [(name, codes == i) for i, name in enumerate(enc.dictionary.to_pylist())]


def _map_entries(col: pa.Array) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """A map column's entries: the row of each entry, its key and its value."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    rows = np.repeat(np.arange(len(col), dtype=np.int64), np.diff(offsets))
    return rows, col.keys.slice(start, end - start), col.items.slice(start, end - start)


@dataclass
class _Columns:
    """Per-batch pieces, concatenated at the end."""

    task: list[pa.Array] = field(default_factory=list)
    sample_id: list[pa.Array] = field(default_factory=list)
    epoch: list[pa.Array] = field(default_factory=list)
    latency_ms: list[pa.Array] = field(default_factory=list)
    tokens_in: list[pa.Array] = field(default_factory=list)
    tokens_out: list[pa.Array] = field(default_factory=list)
    truncated: list[np.ndarray] = field(default_factory=list)
    target_null: list[np.ndarray] = field(default_factory=list)
    prediction_null: list[np.ndarray] = field(default_factory=list)
    first: list[np.ndarray] = field(default_factory=list)
    metrics: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    groups: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    group_values: dict[str, dict[str, int]] = field(default_factory=dict)


class IndexBuilder:
    """Streams Arrow batches of one run into an index folder (see the module docstring)."""

    def __init__(self, folder: Path, with_search: bool, log2: int) -> None:
        self.folder = folder
        self.n = 0
        self.with_search = with_search
        self.log2 = log2
        self.cols = _Columns()
        self._search: BinaryIO | None = (folder / "search.bin").open("wb") if with_search else None
        self._search_off: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._search_len = 0
        self._list_raw = (folder / "list.raw").open("wb")
        self._list_seg: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self._list_len = 0

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        n = batch.num_rows
        if not n:
            return
        get = {name: batch.column(name) for name in batch.schema.names}

        def column(name: str, typ: pa.DataType) -> pa.Array:
            arr = get.get(name)
            if arr is None:
                return pa.nulls(n, typ)
            arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
            return arr if arr.type == typ else arr.cast(typ)

        c = self.cols
        c.task.append(pc.fill_null(column("task", pa.string()), ""))
        c.sample_id.append(pc.fill_null(column("sample_id", pa.large_string()), ""))
        c.epoch.append(column("epoch", pa.int32()))
        c.latency_ms.append(column("latency_ms", pa.float64()))
        c.tokens_in.append(column("tokens_in", pa.int64()))
        c.tokens_out.append(column("tokens_out", pa.int64()))
        texts = {name: column(name, pa.large_string()) for name in TEXTS}
        c.target_null.append(np.asarray(texts["target"].is_null().to_numpy(zero_copy_only=False)))
        c.prediction_null.append(np.asarray(texts["prediction"].is_null().to_numpy(zero_copy_only=False)))
        filled = [pc.fill_null(texts[name], "") for name in TEXTS]
        self._add_scores(column("scores", pa.map_(pa.string(), pa.float64())), n)
        self._add_groups(column("group", pa.map_(pa.string(), pa.string())), n)
        self._add_listing(filled, n)
        if self._search is not None:
            sep = pa.scalar("\x00", pa.large_string())
            joined = pc.binary_join_element_wise(*filled, pa.scalar("", pa.large_string()), sep)
            offsets, data = _buffer(lower_text(joined))
            self._search.write(data)
            self._search_off.append(offsets[1:] + self._search_len)
            self._search_len += len(data)
        self.n += n

    def _add_scores(self, scores: pa.Array, n: int) -> None:
        rows, keys, items = _map_entries(scores)
        vals = np.asarray(pc.fill_null(items, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64).copy()
        stored_nan = np.isnan(vals) & np.asarray(items.is_valid().to_numpy(zero_copy_only=False))
        vals[stored_nan] = np.inf  # DuckDB orders NaN above every number and counts it as present
        first = np.full(n, np.nan)
        if rows.size:
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            first[rows[starts]] = vals[starts]
        self.cols.first.append(first)
        if not rows.size:
            return
        for name, hit in _per_key(keys):
            out = np.full(n, np.nan)
            out[rows[hit][::-1]] = vals[hit][::-1]  # reversed: the first entry of a key wins, like map lookup
            self.cols.metrics.setdefault(str(name), []).append((self.n, out))

    def _add_groups(self, group: pa.Array, n: int) -> None:
        rows, keys, items = _map_entries(group)
        if not rows.size:
            return
        for name, hit in _per_key(keys):
            vals = pc.dictionary_encode(items.filter(pa.array(hit)))
            lookup = self.cols.group_values.setdefault(str(name), {})
            lut = np.array([lookup.setdefault(str(v), len(lookup)) for v in vals.dictionary.to_pylist()] + [-1],
                           dtype=np.int32)
            local = np.asarray(pc.fill_null(vals.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
            out = np.full(n, -1, dtype=np.int32)
            out[rows[hit][::-1]] = lut[local][::-1]  # a null value counts as missing
            self.cols.groups.setdefault(str(name), []).append((self.n, out))

    def _add_listing(self, texts: list[pa.Array], n: int) -> None:
        full = np.stack([np.asarray(pc.binary_length(t).to_numpy(zero_copy_only=False), dtype=np.int64)
                         for t in texts], axis=1)
        # a text of at most LIST_TEXT_LIMIT bytes has at most that many characters: nothing to cut
        cut = [pc.utf8_slice_codeunits(t, 0, LIST_TEXT_LIMIT) if int(full[:, j].max()) > LIST_TEXT_LIMIT else t
               for j, t in enumerate(texts)]
        lengths = np.stack([np.asarray(pc.binary_length(t).to_numpy(zero_copy_only=False), dtype=np.int64)
                            for t in cut], axis=1)
        self.cols.truncated.append(np.asarray((full > lengths).any(axis=1)))  # a cut text lost bytes
        lengths = lengths.reshape(-1)
        _, data = _buffer(pc.binary_join_element_wise(*cut, pa.scalar("", pa.large_string())))
        self._list_raw.write(data)
        self._list_seg.append(np.cumsum(lengths) + self._list_len)
        self._list_len += len(data)

    # ---- finishing ------------------------------------------------------------------------------
    def finish(self, run: Run, signature: list[list[Any]], part_rows: list[int]) -> None:
        self._list_raw.close()
        if self._search is not None:
            self._search.close()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sample-index") as pool:
            # the 4-gram filter and the listing blocks do not depend on the columns: built alongside them
            side = [pool.submit(self._finish_listing)]
            if self._search is not None:
                side.append(pool.submit(self._finish_search))
            self._finish_columns(run, signature, part_rows)
            for job in side:
                job.result()

    def _finish_search(self) -> None:
        offsets = np.concatenate(self._search_off)
        np.save(self.folder / "search.npy", offsets)
        np.save(self.folder / "bloom.npy", build_bloom(self.folder / "search.bin", offsets, self.log2))

    def _finish_columns(self, run: Run, signature: list[list[Any]], part_rows: list[int]) -> None:
        c = self.cols
        n = self.n
        task_names = sorted(set(pc.unique(pa.chunked_array(c.task, pa.string())).to_pylist()))
        task_codes = np.asarray(pc.index_in(pa.chunked_array(c.task, pa.string()), pa.array(task_names, pa.string()))
                                .to_numpy(), dtype=np.int32)
        metric_names = list(c.metrics)
        metrics = [self._assemble(c.metrics[m], np.nan, np.float64) for m in metric_names]
        group_names = list(c.groups)
        groups = [self._assemble(c.groups[g], -1, np.int32) for g in group_names]
        primary = primary_metrics(run)
        score = np.concatenate(c.first) if c.first else np.zeros(0)
        for i, t in enumerate(task_names):
            if t in primary:
                rows = task_codes == i
                score[rows] = metrics[metric_names.index(primary[t])][rows] if primary[t] in metric_names else np.nan
        cols: dict[str, Any] = {
            "task": pa.array(task_codes, pa.int32()),
            "sample_id": pa.chunked_array(c.sample_id, pa.large_string()).combine_chunks(),
            "epoch": pa.chunked_array(c.epoch, pa.int32()).combine_chunks(),
            "latency_ms": pa.chunked_array(c.latency_ms, pa.float64()).combine_chunks(),
            "tokens_in": pa.chunked_array(c.tokens_in, pa.int64()).combine_chunks(),
            "tokens_out": pa.chunked_array(c.tokens_out, pa.int64()).combine_chunks(),
            "truncated": pa.array(np.concatenate(c.truncated)),
            "target_null": pa.array(np.concatenate(c.target_null)),
            "prediction_null": pa.array(np.concatenate(c.prediction_null)),
            "first": pa.array(np.concatenate(c.first)),
            "score": pa.array(score),
        }
        cols.update({f"m{i}": pa.array(v) for i, v in enumerate(metrics)})
        cols.update({f"g{i}": pa.array(v) for i, v in enumerate(groups)})
        cols["r.sample_id"] = pc.rank(cols["sample_id"], sort_keys="ascending", tiebreaker="dense")
        keys = {k: sort_key(cols, k) for k in ("task", *SORTED_KEYS)}
        keys.update({f"m{i}": v for i, v in enumerate(metrics)})
        canonical = np.lexsort((keys["epoch"], keys["sample_id"], keys["task"])).astype(np.int32)
        for name, key in keys.items():
            asc = canonical if name == "task" else canonical[np.argsort(key[canonical], kind="stable")]
            cols[f"o.{name}"] = pa.array(asc.astype(np.int32))
            cols[f"d.{name}"] = pa.array(descending(asc, key).astype(np.int32))
        pa_table = pa.table(cols)
        with pa.OSFile(str(self.folder / "cols.arrow"), "wb") as sink, pa.ipc.new_file(sink, pa_table.schema) as w:
            w.write_table(pa_table)
        gvals = pa.table({
            "key": pa.array([i for i, g in enumerate(group_names) for _ in c.group_values[g]], pa.int32()),
            "value": pa.array([v for g in group_names for v in c.group_values[g]], pa.large_string()),
        })
        with pa.OSFile(str(self.folder / "groups.arrow"), "wb") as sink, pa.ipc.new_file(sink, gvals.schema) as w:
            w.write_table(gvals)
        keys_by_task = _group_keys_by_task(task_codes, task_names, groups, group_names)
        meta = {"version": INDEX_VERSION, "n": n, "parts": signature, "part_rows": part_rows, "tasks": task_names,
                "metrics": metric_names, "groups": group_names, "group_keys_by_task": keys_by_task,
                "primary": primary, "search": self._search is not None, "bloom_log2": self.log2,
                "list_block": LIST_BLOCK, "list_text_limit": LIST_TEXT_LIMIT}
        (self.folder / "meta.json").write_text(json.dumps(meta))

    def _assemble(self, pieces: list[tuple[int, np.ndarray]], fill: float, dtype: Any) -> np.ndarray:
        out = np.full(self.n, fill, dtype=dtype)
        for start, values in pieces:
            out[start:start + values.size] = values
        return out

    def _finish_listing(self) -> None:
        seg = np.concatenate(self._list_seg)
        raw_path = self.folder / "list.raw"
        blocks = [0]
        with raw_path.open("rb") as raw, (self.folder / "list.bin").open("wb") as out:
            for start in range(0, self.n, LIST_BLOCK):
                end = min(self.n, start + LIST_BLOCK)
                a, b = int(seg[3 * start]), int(seg[3 * end])
                raw.seek(a)
                blocks.append(blocks[-1] + out.write(pa.compress(raw.read(b - a), codec=LIST_CODEC, asbytes=True)))
        raw_path.unlink()
        np.save(self.folder / "list.npy", np.asarray(blocks, dtype=np.int64))
        np.save(self.folder / "list_seg.npy", seg)


def sort_key(cols: dict[str, Any], name: str) -> np.ndarray:
    """A sortable numeric key: NaN for nulls (sorted last), ranks for strings."""
    arr = cols["r.sample_id" if name == "sample_id" else name]
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def descending(asc: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The descending order from the ascending one: runs of equal keys in reverse, each run kept in tie
    order (task, sample_id, epoch ascending, as SQL's ORDER BY key DESC, task, ...); nulls (NaN) stay last."""
    ks = key[asc]
    nv = int(np.count_nonzero(~np.isnan(ks)))
    out = np.array(asc, copy=True)
    if nv:
        kv = ks[:nv]
        new = np.empty(nv, dtype=bool)
        new[0] = True
        np.not_equal(kv[1:], kv[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], nv)
        g = np.cumsum(new) - 1
        pos = (nv - ends[g]) + (np.arange(nv) - starts[g])
        out[pos] = asc[:nv]
    return out


def build_bloom(search_path: Path, offsets: np.ndarray, log2: int) -> np.ndarray:
    """bloom[h] = packed bits over rows: row r holds a 4-gram hashing to h (bit r % 8 of byte r // 8)."""
    n = offsets.size - 1
    m = 1 << log2
    bloom = np.zeros((m, (n + 7) // 8), dtype=np.uint8)
    if not n or not offsets[-1]:
        return bloom
    text = np.memmap(search_path, dtype=np.uint8, mode="r")
    step = max(8, (1 << 22) // m // 8 * 8)  # rows per pass: a (rows x m) matrix of 4 MiB stays in cache
    for start in range(0, n, step):
        end = min(n, start + step)
        rows = end - start
        a, b = int(offsets[start]), int(offsets[end])
        h = gram_hashes(np.asarray(text[a:b]), log2)
        flat = np.repeat(np.arange(0, rows * m, m, dtype=np.intp), np.diff(offsets[start:end + 1]))[:h.size]
        flat += h
        padded = (rows + 7) // 8 * 8
        hits = np.zeros((padded, m), dtype=np.uint8)
        hits.reshape(-1)[flat] = 1
        groups = hits.reshape(padded // 8, 8, m)
        packed = groups[:, 0, :].copy()
        for k in range(1, 8):
            packed |= groups[:, k, :] << np.uint8(k)
        bloom[:, start // 8:start // 8 + padded // 8] = packed.T
    del text
    return bloom


def _group_keys_by_task(task_codes: np.ndarray, tasks: list[str], groups: list[np.ndarray],
                        names: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i, t in enumerate(tasks):
        rows = task_codes == i
        out[t] = sorted(names[j] for j, codes in enumerate(groups) if bool((codes[rows] >= 0).any()))
    return out


def build_index(run: Run, parts: list[Path], folder: Path) -> None:
    """Read the run's Parquet parts once and write its index to `folder` atomically (a temp folder renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    signature = part_signature(parts)
    text_bytes, part_rows = 0, []
    for p in parts:
        meta = pq.ParquetFile(p).metadata
        part_rows.append(meta.num_rows)
        names = meta.schema.names
        for rg in range(meta.num_row_groups):
            g = meta.row_group(rg)
            text_bytes += sum(g.column(i).total_uncompressed_size for i in range(g.num_columns)
                              if names[i] in TEXTS)
    tmp = Path(tempfile.mkdtemp(prefix=".sample-index-", dir=folder.parent))
    try:
        builder = IndexBuilder(tmp, with_search=text_bytes <= SEARCH_BUDGET,
                               log2=bloom_log2(text_bytes / max(sum(part_rows), 1)))
        for p in parts:
            pf = pq.ParquetFile(p)
            present = [c for c in _READ if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=present):
                builder.add(batch)
        pa.default_memory_pool().release_unused()  # decoded batches are gone; keep peak RSS down
        builder.finish(run, signature, part_rows)
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, folder: Path) -> None:
    """Put `tmp` in place of `folder`; an old folder is moved aside first and removed after."""
    old = None
    if folder.exists():
        old = folder.with_name(f".old-{os.getpid()}-{folder.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
