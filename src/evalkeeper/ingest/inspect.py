"""inspect_ai logs: `.eval` (a zip: header.json, samples/<id>_epoch_<n>.json, ...) and `.json` logs.

One log is one evaluation of one task, so it becomes one `Run`. `.eval` members may be deflate (older
inspect) or zstd (current inspect, zip method 93); they are read one sample at a time by `_zipread`, so a
multi-GB log imports in bounded memory. A folder of logs imports as one run per log (`load_many`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.ids import new_run_id, sha256_file
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, TaskInfo
from evalkeeper.ingest._inspect_parallel import WorkersFailed, parallel_tables, worker_count
from evalkeeper.ingest._inspect_rows import (
    RowBuilder,
    ScoreCollector,
    decode_sample,
    member_samples,
    parse_json,
    sample_tables,
)
from evalkeeper.ingest._pipeline import in_background
from evalkeeper.ingest._zipindex import MemberTable, read_table, scan_directory
from evalkeeper.ingest._zipread import ZipReader
from evalkeeper.ingest.base import ImportedRun, apply_clt, fill_source_ci

__all__ = ["InspectImporter"]

BATCH_ROWS = 32_768
READ_AHEAD = 8  # chunks of 256 decompressed members the reader thread may hold ready
PARALLEL_MIN_SAMPLES = 20_000  # smaller logs are read in-process (starting workers costs ~1 s)
WORKER_CHUNK = 1024  # members per task sent to a worker process
_PRIMARY_METRICS = ("accuracy", "mean")
_STATUS = {"success": "complete", "started": "running", "error": "failed", "cancelled": "failed"}
_JSON_SNIFF = 64 * 1024


class InspectImporter:
    """Importer for inspect_ai `.eval` and `.json` evaluation logs."""

    name = "inspect_ai"

    def detect(self, path: Path) -> bool:
        try:
            if path.is_dir():
                return any(True for _ in _log_files(path))
            return _is_log_file(path)
        except OSError:
            return False

    def load(self, path: Path) -> ImportedRun | list[ImportedRun]:
        """One log file → one `ImportedRun`; a folder → a list, one per log (see `load_many`)."""
        if path.is_dir():
            return list(self.load_many(path))
        return self.load_file(path)

    def load_many(self, path: Path) -> Iterator[ImportedRun]:
        """One `ImportedRun` per inspect log under folder `path` (sorted by name)."""
        files = list(_log_files(path)) if path.is_dir() else [path]
        if not files:
            raise ImportFormatError("no inspect_ai .eval or .json logs found", path=str(path))
        for f in files:
            yield self.load_file(f)

    def load_file(self, path: Path) -> ImportedRun:
        path = Path(path)
        if _zip_magic(path):
            return _EvalZipLog(path).imported()
        return _JsonLog(path).imported()


# -- detection -------------------------------------------------------------------------------------------

def _zip_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _is_log_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(_JSON_SNIFF)
    if head[:4] == b"PK\x03\x04":
        # inspect writes _journal/start.json first (header.json for rewritten logs, samples/ otherwise)
        name_len = int.from_bytes(head[26:28], "little")
        name = head[30 : 30 + name_len]
        return name in (b"_journal/start.json", b"header.json") or (
            name.startswith(b"samples/") and name.endswith(b".json"))
    text = head.lstrip()
    return (text[:1] == b"{" and b'"eval"' in text and b'"status"' in text
            and (b'"task_id"' in text or b'"eval_id"' in text) and b'"task"' in text)


def _log_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.suffix in (".eval", ".json") and p.is_file() and not p.name.startswith("."):
            try:
                if _is_log_file(p):
                    yield p
            except OSError:
                continue


# -- building the run ------------------------------------------------------------------------------------

def _dict(value: Any, where: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"'{where}' should be an object, got {type(value).__name__}", path=str(path))
    return value


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _metric_name(score_name: str, metric: str) -> str:
    return score_name if metric in _PRIMARY_METRICS else f"{score_name}/{metric}"


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class _Log:
    """What both log forms share: header → Run and carried metrics; samples → batches + CLT."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = new_run_id()
        self.metrics: list[MetricResult] = []
        self.by_name: dict[str, MetricResult] = {}

    # subclasses: read the header (dict with version/status/eval/plan/results/stats) and iterate samples
    def header(self) -> dict[str, Any]:
        raise NotImplementedError

    def samples(self) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def imported(self) -> ImportedRun:
        header = self.header()
        try:
            sha = sha256_file(self.path)
        except OSError as e:
            raise ImportFormatError(f"cannot read file: {e.strerror or e}", path=str(self.path)) from None
        run = self._run(header, sha)
        return ImportedRun(run=run, metrics=self.metrics, batches=self._batches(), source_files=[self.path])

    def _run(self, h: dict[str, Any], sha: str) -> Run:
        p = self.path
        ev = _dict(h.get("eval"), "eval", p)
        if not isinstance(ev.get("task"), str) or not isinstance(ev.get("model"), str):
            raise ImportFormatError("not an inspect_ai log: 'eval' lacks 'task' / 'model'", path=str(p))
        plan = _dict(h.get("plan"), "plan", p)
        results = _dict(h.get("results"), "results", p)
        stats = _dict(h.get("stats"), "stats", p)
        config = _dict(ev.get("config"), "eval.config", p)
        generate = {**_dict(plan.get("config"), "plan.config", p),
                    **_dict(ev.get("model_generate_config"), "eval.model_generate_config", p)}
        task = ev["task"]
        self._carry_metrics(task, results)
        packages = _dict(ev.get("packages"), "eval.packages", p)
        primary = [m.metric for m in self.metrics if "/" not in m.metric]
        info = TaskInfo(
            name=task,
            version=None if ev.get("task_version") is None else str(ev.get("task_version")),
            n_shot=None,
            seed=generate.get("seed") if isinstance(generate.get("seed"), int) else None,
            metrics=list(dict.fromkeys(primary + [m.metric for m in self.metrics])),
            higher_is_better={m.metric: True for m in self.metrics if m.metric in self._accuracy_names},
            n_samples=None,
            config={k: ev.get(k) for k in ("task_id", "task_file", "task_args", "task_attribs", "dataset",
                                           "solver", "solver_args", "scorers", "sandbox") if ev.get(k)}
            | {"epochs": config.get("epochs"), "plan": plan.get("steps")},
        )
        self.task_info = info
        model = ev["model"]
        env_source = {k: ev.get(k) for k in ("packages", "revision", "metadata", "tags") if ev.get(k)}
        if h.get("version") is not None:
            env_source["log_version"] = h.get("version")
        generation = dict(generate)
        if ev.get("model_args"):
            generation["model_args"] = ev["model_args"]
        labels = {f"inspect_{k}": str(ev[k]) for k in ("run_id", "eval_id", "task_id") if ev.get(k)}
        self.status = h.get("status")
        return Run(
            run_id=self.run_id,
            model=ModelInfo(name=model, backend=f"inspect:{model.split('/', 1)[0]}", generation=generation),
            tasks=[info],
            created_at=_time(ev.get("created")) or _time(stats.get("started_at")) or dt.datetime.now(dt.UTC),
            started_at=_time(stats.get("started_at")),
            finished_at=_time(stats.get("completed_at")),
            status=_STATUS.get(str(h.get("status")), "complete"),  # type: ignore[arg-type]
            environment={"source": env_source} if env_source else None,
            provenance=Provenance(producer="inspect_ai", producer_version=packages.get("inspect_ai"),
                                  source_path=str(p.resolve()), source_sha256=sha),
            labels=labels,
            seed=info.seed,
        )

    def _carry_metrics(self, task: str, results: dict[str, Any]) -> None:
        """results.scores[].metrics → MetricResults; `stderr` attaches to the scorer's accuracy/mean."""
        self._accuracy_names: set[str] = set()
        scores = results.get("scores") or []
        if not isinstance(scores, list):
            raise ImportFormatError("'results.scores' should be a list", path=str(self.path))
        for es in scores:
            if not isinstance(es, dict) or not isinstance(es.get("name"), str):
                raise ImportFormatError("'results.scores' entry without a name", path=str(self.path))
            metrics = _dict(es.get("metrics"), "results.scores[].metrics", self.path)
            stderr_m = metrics.get("stderr")
            stderr = _float(stderr_m.get("value")) if isinstance(stderr_m, dict) else None
            n = es.get("scored_samples") if isinstance(es.get("scored_samples"), int) else None
            for mname, m in metrics.items():
                if mname == "stderr" or not isinstance(m, dict):
                    continue
                value = _float(m.get("value"))
                if value is None:
                    continue  # dict/list-valued metrics have no single number to carry
                name = _metric_name(es["name"], mname)
                if name in self.by_name:
                    continue
                mr = MetricResult(run_id=self.run_id, task=task, metric=name, value=value,
                                  stderr=stderr if mname in _PRIMARY_METRICS else None, n=n, method="source")
                if mname == "accuracy":
                    self._accuracy_names.add(name)
                self.by_name[name] = mr
                self.metrics.append(mr)

    def _batches(self) -> Iterator[pa.Table]:
        collector = ScoreCollector()
        for table in self._tables():
            collector.add(table)
            yield table
        self._finish(collector)

    def _tables(self) -> Iterator[pa.Table]:
        """The sample rows, BATCH_ROWS at a time (read in this process)."""
        from evalkeeper.store.samples import SAMPLE_SCHEMA

        rows = RowBuilder(self.task_info.name, SAMPLE_SCHEMA)
        yield from sample_tables(self.samples(), rows, self.run_id, BATCH_ROWS, str(self.path))

    def _finish(self, scores: ScoreCollector) -> None:
        """Every sample seen: recompute CLT stderr/CI where a metric is the mean of its sample scores."""
        for name, acc in scores.epoch_averaged().items():
            mr = self.by_name.get(name)
            if mr is not None:
                apply_clt(mr, acc)
        for mr in self.metrics:
            fill_source_ci(mr)  # metrics that are no mean of sample scores: a CI from the carried stderr
        self.task_info.n_samples = scores.n_unique


class _EvalZipLog(_Log):
    """A `.eval` zip; `header.json` when the eval finished, else `_journal/start.json` (still running)."""

    def header(self) -> dict[str, Any]:
        # one pass over the central directory: the header member, and a compact table of the samples
        with ZipReader(self.path) as z:
            self._samples: MemberTable
            self._samples, others = scan_directory(z, b"samples/", b".json")
            wanted = {m.name: m for m in others if m.name in ("header.json", "_journal/start.json")}
            member = wanted.get("header.json") or wanted.get("_journal/start.json")
            if member is None:
                raise ImportFormatError("not an inspect_ai .eval log: no header.json or _journal/start.json",
                                        path=str(self.path))
            data = parse_json(z.read(member), f"member {member.name!r}", str(self.path))
        if not isinstance(data, dict):
            raise ImportFormatError(f"{member.name} should be a JSON object", path=str(self.path))
        if member.name != "header.json":
            data = {**data, "status": "started"}
        return data

    def samples(self, start: int = 0) -> Iterator[tuple[str, Any]]:
        # reading and decompressing (GIL released) run in a thread, ahead of the parsing here
        with ZipReader(self.path) as z:
            chunks = in_background(read_table(z, self._samples, start=start), depth=READ_AHEAD,
                                   name="evalkeeper-eval-reader")
            try:
                yield from member_samples(chunks, str(self.path))
            finally:
                chunks.close()

    def _tables(self) -> Iterator[pa.Table]:
        """Big logs: rows from worker processes (see _inspect_parallel), else read here."""
        from evalkeeper.store.samples import SAMPLE_SCHEMA

        workers = worker_count(len(self._samples), PARALLEL_MIN_SAMPLES)
        if not workers:
            yield from super()._tables()
            return
        pending: list[pa.Table] = []
        n_pending = 0
        try:
            for _done, table in parallel_tables(self.path, self._samples, self.task_info.name, self.run_id,
                                               SAMPLE_SCHEMA, workers=workers, chunk=WORKER_CHUNK):
                pending.append(table)
                n_pending += table.num_rows
                if n_pending >= BATCH_ROWS:
                    yield pa.concat_tables(pending)
                    pending, n_pending = [], 0
        except WorkersFailed as e:
            # what was delivered stays; the rest is read in this process
            if pending:
                yield pa.concat_tables(pending)
            rows = RowBuilder(self.task_info.name, SAMPLE_SCHEMA)
            yield from sample_tables(self.samples(start=e.done), rows, self.run_id, BATCH_ROWS, str(self.path))
            return
        if pending:
            yield pa.concat_tables(pending)


_SAMPLES_OPEN = b'  "samples": [\n'
_SAMPLES_CLOSE = (b"  ]\n", b"  ],\n")
_SAMPLE_OPEN = b"    {\n"
_SAMPLE_CLOSE = (b"    }\n", b"    },\n")


class _JsonLog(_Log):
    """A `.json` log: the whole EvalLog, samples included, in one JSON document.

    inspect writes it indented by 2, so the `samples` array and each sample in it sit on lines of their
    own: the header is parsed without the samples, and the samples are parsed one at a time in a second
    pass, so a large log streams like a `.eval` does. Any other layout is parsed whole.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._inline: list[Any] | None = None

    def _open(self) -> Any:
        try:
            return open(self.path, "rb")  # noqa: SIM115 - the callers close it
        except OSError as e:
            raise ImportFormatError(f"cannot read file: {e.strerror or e}", path=str(self.path)) from None

    def header(self) -> dict[str, Any]:
        kept: list[bytes] = []
        in_samples = False
        with self._open() as f:
            for line in f:
                if in_samples:
                    if line in _SAMPLES_CLOSE:
                        kept.append(line)
                        in_samples = False
                elif line == _SAMPLES_OPEN:
                    kept.append(line)
                    in_samples = True
                else:
                    kept.append(line)
        data = parse_json(b"".join(kept), "the log", str(self.path))
        if not isinstance(data, dict) or not isinstance(data.get("eval"), dict):
            raise ImportFormatError("not an inspect_ai log: no 'eval' object", path=str(self.path))
        samples = data.pop("samples", None)
        if samples is not None and not isinstance(samples, list):
            raise ImportFormatError("'samples' should be a list", path=str(self.path))
        self._inline = samples or None  # non-empty only when the layout was not the indented one
        return data

    def samples(self) -> Iterator[tuple[str, Any]]:
        if self._inline is not None:
            samples, self._inline = self._inline, None
            samples.reverse()  # pop from the end: each sample's memory is freed once it is a row
            i = 0
            while samples:
                yield f"samples[{i}]", samples.pop()
                i += 1
            return
        with self._open() as f:
            in_samples = False
            chunk: list[bytes] | None = None
            i = 0
            for lineno, line in enumerate(f, 1):
                if not in_samples:
                    in_samples = line == _SAMPLES_OPEN
                    continue
                if chunk is None:
                    if line in _SAMPLES_CLOSE:
                        return
                    if line != _SAMPLE_OPEN:
                        raise ImportFormatError(f"line {lineno}: unexpected text between samples",
                                                path=str(self.path))
                    chunk = [line]
                elif line in _SAMPLE_CLOSE:
                    chunk.append(b"    }")
                    yield f"samples[{i}]", parse_json(b"".join(chunk), f"samples[{i}] (ending line {lineno})",
                                                      str(self.path), decode_sample)
                    chunk = None
                    i += 1
                else:
                    chunk.append(line)
