"""lm-evaluation-harness importer, on a real lm-eval 0.4.13 run (tests/fixtures/lm_eval/run1, see README)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest import ImportedRun, load_path
from evalkeeper.ingest import _lm_eval_samples as lm
from evalkeeper.ingest.base import Z95
from evalkeeper.ingest.lm_eval import LmEvalImporter

RUN = Path(__file__).parent.parent / "fixtures" / "lm_eval" / "run1"
RESULTS = next(RUN.rglob("results_*.json"))
MODEL_DIR = RESULTS.parent


def _rows(r: ImportedRun) -> list[dict]:
    out: list[dict] = []
    for b in r.batches:
        assert isinstance(b, pa.Table)
        out.extend(b.to_pylist())
    return out


def _metric(r: ImportedRun, task: str, metric: str):
    return next(m for m in r.metrics if m.task == task and m.metric == metric)


@pytest.fixture(scope="module")
def loaded() -> tuple[ImportedRun, list[dict]]:
    r = LmEvalImporter().load(RUN)
    rows = _rows(r)
    return r, rows


def test_tasks_and_groups(loaded) -> None:
    r, _ = loaded
    assert [t.name for t in r.run.tasks] == ["ek_arith", "ek_capitals", "ek_echo"]
    arith = r.run.task("ek_arith")
    assert arith.version == "1.0" and arith.n_shot == 0 and arith.n_samples == 24
    assert arith.metrics == ["acc", "acc_norm"] and arith.higher_is_better == {"acc": True, "acc_norm": True}
    assert r.run.task("ek_capitals").version == "2.0"
    assert arith.config["output_type"] == "multiple_choice"
    echo = r.run.task("ek_echo")
    assert echo.metrics == ["exact_match,strict-match", "exact_match,flexible-extract"]
    # the group aggregates its subtasks: a metric, not a task, with its members recorded
    assert r.run.task("ek_mc_suite") is None
    group = _metric(r, "ek_mc_suite", "acc")
    assert group.value == pytest.approx(13 / 36) and group.n == 36 and group.method == "source"
    assert group.stderr == pytest.approx(0.08126518627979219)
    assert group.ci_low == pytest.approx(group.value - Z95 * group.stderr)
    assert r.run.environment["source"]["groups"] == {"ek_mc_suite": ["ek_arith", "ek_capitals"]}


def test_metric_values_and_recomputed_clt(loaded) -> None:
    r, rows = loaded
    for task, metric, value, n, source_se in [
        ("ek_arith", "acc", 10 / 24, 24, 0.10279899245732686),
        ("ek_arith", "acc_norm", 10 / 24, 24, 0.10279899245732686),
        ("ek_capitals", "acc", 3 / 12, 12, 0.1305582419667734),
        ("ek_echo", "exact_match,strict-match", 8 / 20, 20, 0.11239029738980327),
        ("ek_echo", "exact_match,flexible-extract", 8 / 20, 20, 0.11239029738980327),
    ]:
        m = _metric(r, task, metric)
        assert m.value == pytest.approx(value) and m.n == n
        assert m.method == "clt" and m.source_stderr == pytest.approx(source_se)
        scores = np.array([dict(x["scores"])[metric] for x in rows if x["task"] == task])
        assert len(scores) == n and scores.mean() == pytest.approx(value)
        se = scores.std(ddof=1) / math.sqrt(n)
        assert m.stderr == pytest.approx(se) and m.stderr == pytest.approx(source_se)  # lm-eval uses ddof=1 too
        assert (m.ci_low, m.ci_high) == pytest.approx((value - Z95 * se, value + Z95 * se))
        assert m.higher_is_better is True


def test_samples(loaded) -> None:
    r, rows = loaded
    assert len(rows) == 24 + 12 + 20  # ek_echo has 2 filters x 20 lines, merged into one sample per doc
    arith0 = next(x for x in rows if x["task"] == "ek_arith" and x["sample_id"] == "0")
    assert arith0["input"] == "Question: What is 11 + 5?\nAnswer:"
    assert arith0["target"] == "16"  # gold index 1 of choices 15/16/17/21
    assert len(arith0["logprobs"]) == 4
    assert arith0["prediction"] == ["15", "16", "17", "21"][int(np.argmax(arith0["logprobs"]))]
    assert dict(arith0["scores"]) == {"acc": 1.0, "acc_norm": 1.0}
    meta = json.loads(arith0["metadata"])
    assert meta["doc"]["id"] == "arith-0" and len(meta["doc_hash"]) == 64 and meta["gold_index"] == 1
    echo = [x for x in rows if x["task"] == "ek_echo"]
    assert sorted(int(x["sample_id"]) for x in echo) == list(range(20))
    assert all(x["prediction"] == "lol" for x in echo)
    for x in echo:
        s = dict(x["scores"])
        assert set(s) == {"exact_match,strict-match", "exact_match,flexible-extract"}
        assert s["exact_match,strict-match"] == (1.0 if x["target"] == "lol" else 0.0)


def test_run_record(loaded) -> None:
    r, _ = loaded
    run = r.run
    assert run.model.backend == "lm_eval:dummy"
    assert run.provenance.producer == "lm_eval" and run.provenance.producer_version == "0.4.13"
    assert run.provenance.source_path == str(RESULTS.resolve())
    assert len(r.source_files) == 4 and RESULTS in r.source_files
    src = run.environment["source"]
    assert "PyTorch version" in src["pretty_env_info"]
    assert {"transformers_version", "git_hash", "task_hashes", "config"} <= set(src)
    assert run.seed == 0 and run.task("ek_arith").seed == 1234
    assert run.started_at is not None and run.started_at.year >= 2024


def test_ids_and_sha_stable_across_loads() -> None:
    a, b = LmEvalImporter().load(RUN), LmEvalImporter().load(RESULTS)
    assert a.run.provenance.source_sha256 == b.run.provenance.source_sha256
    assert a.run.run_id != b.run.run_id
    ids_a = [(x["task"], x["sample_id"]) for x in _rows(a)]
    ids_b = [(x["task"], x["sample_id"]) for x in _rows(b)]
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)


@pytest.mark.parametrize("where", [RUN, MODEL_DIR, RESULTS, next(MODEL_DIR.glob("samples_ek_echo_*.jsonl"))])
def test_accepts_folder_model_folder_results_or_samples_file(where: Path) -> None:
    r = load_path(where)
    assert r.run.provenance.producer == "lm_eval" and len(r.run.tasks) == 3


def test_batches_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples arrive in bounded batches from a generator: a big file is never held whole."""
    monkeypatch.setattr(lm, "BATCH_ROWS", 5)
    r = LmEvalImporter().load(RUN)
    it = iter(r.batches)
    first = next(it)
    assert first.num_rows == 5
    # stats are only final once the stream is exhausted
    assert _metric(r, "ek_arith", "acc").method == "source"
    sizes = [first.num_rows] + [b.num_rows for b in it]
    assert max(sizes) <= 5 and sum(sizes) == 56
    assert _metric(r, "ek_arith", "acc").method == "clt"


def test_results_without_samples(tmp_path: Path) -> None:
    shutil.copy(RESULTS, tmp_path / RESULTS.name)
    r = load_path(tmp_path)
    assert sum(b.num_rows for b in r.batches) == 0
    m = _metric(r, "ek_arith", "acc")
    assert m.method == "source" and m.n == 24 and m.stderr == pytest.approx(0.10279899245732686)
    assert m.ci_high == pytest.approx(m.value + Z95 * m.stderr)


def _copy_run(tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(RUN, dest)
    return next(dest.rglob("results_*.json"))


def test_truncated_results_json(tmp_path: Path) -> None:
    res = _copy_run(tmp_path)
    res.write_bytes(res.read_bytes()[:500])
    with pytest.raises(ImportFormatError) as e:
        LmEvalImporter().load(res)
    assert str(res) in e.value.render() and "invalid JSON" in e.value.render()


def test_truncated_samples_file(tmp_path: Path) -> None:
    res = _copy_run(tmp_path)
    samples = next(res.parent.glob("samples_ek_capitals_*.jsonl"))
    data = samples.read_bytes()
    samples.write_bytes(data[: len(data) - 40])
    r = LmEvalImporter().load(res)
    with pytest.raises(ImportFormatError) as e:
        list(r.batches)
    text = e.value.render()
    assert str(samples) in text and "line 12" in text and "truncated" in text


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(results=[1, 2]), "'results' must be an object"),
    (lambda d: d["results"]["ek_arith"].update({"acc,none": "high"}), "is not a number"),
    (lambda d: d.update(configs="x"), "field 'configs' must be an object"),
    (lambda d: d.update(results={}), "'results' is empty"),
])
def test_wrong_schema(tmp_path: Path, mutate, message: str) -> None:
    res = _copy_run(tmp_path)
    data = json.loads(res.read_text())
    mutate(data)
    res.write_text(json.dumps(data))
    with pytest.raises(ImportFormatError) as e:
        LmEvalImporter().load(res)
    assert str(res) in e.value.render()
    assert message in e.value.render() or "not an lm-eval results file" in e.value.render()


def test_bad_sample_line(tmp_path: Path) -> None:
    res = _copy_run(tmp_path)
    samples = next(res.parent.glob("samples_ek_arith_*.jsonl"))
    lines = samples.read_text().splitlines()
    lines[3] = "[1, 2, 3]"
    samples.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError) as e:
        list(LmEvalImporter().load(res).batches)
    assert "line 4" in e.value.render() and str(samples) in e.value.render()


def test_older_layout_and_nan(tmp_path: Path) -> None:
    """Older lm-eval logged arguments as [[ctx, cont], ...] and numeric loglikelihoods; NaN may appear."""
    res = _copy_run(tmp_path)
    samples = next(res.parent.glob("samples_ek_capitals_*.jsonl"))
    out = []
    for i, line in enumerate(samples.read_text().splitlines()):
        obj = json.loads(line)
        obj["arguments"] = [[a["arg_0"], a["arg_1"]] for a in obj["arguments"].values()]
        obj["filtered_resps"] = [[float(ll), greedy == "True"] for ll, greedy in obj["filtered_resps"]]
        obj["target"] = int(obj["target"])
        if i == 0:
            obj["acc"] = float("nan")
        out.append(json.dumps(obj))  # json.dumps writes bare NaN, as Python-written logs do
    samples.write_text("\n".join(out) + "\n")
    r = LmEvalImporter().load(res)
    rows = [x for x in _rows(r) if x["task"] == "ek_capitals"]
    assert len(rows) == 12 and rows[1]["input"].startswith("What is the capital of")
    assert rows[1]["prediction"] in json.loads(rows[1]["metadata"])["doc"]["choices"]
    m = _metric(r, "ek_capitals", "acc")
    # the NaN sample carries no score: 11 scored docs, whose mean no longer equals the reported 0.25
    # unless the dropped doc was wrong, so CLT applies only when it still explains the value
    scores = [dict(x["scores"])["acc"] for x in rows]
    assert math.isnan(scores[0])
    kept = [s for s in scores if not math.isnan(s)]
    if np.mean(kept) == pytest.approx(0.25):
        assert m.method == "clt" and m.n == 11
    else:
        assert m.method == "source" and m.stderr == pytest.approx(0.1305582419667734)


def test_import_into_workspace_and_reimport_is_detected(workspace) -> None:
    from evalkeeper.ingest.service import import_path

    first = import_path(workspace, RUN)
    assert len(first) == 1 and not first[0].already
    run = workspace.get_run(first[0].run.run_id)
    assert run.n_samples == 56 and run.provenance.producer == "lm_eval"
    assert workspace.count_samples(run.run_id, task="ek_echo") == 20
    stored = {(m.task, m.metric): m for m in workspace.get_metrics(run.run_id)}
    assert stored[("ek_arith", "acc")].method == "clt" and stored[("ek_arith", "acc")].n == 24
    assert stored[("ek_arith", "acc")].source_stderr == pytest.approx(0.10279899245732686)
    ids, values = workspace.scores(run.run_id, "ek_capitals", "acc")
    assert len(ids) == 12 and values.mean() == pytest.approx(0.25)
    again = import_path(workspace, RESULTS)
    assert again[0].already and again[0].run.run_id == run.run_id
    assert len(workspace.list_runs()) == 1


def _all_rows(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], list[tuple]]:
    monkeypatch.setattr(lm, "FAST_PATH", fast)
    r = LmEvalImporter().load(path)
    rows = [{k: v for k, v in x.items() if k != "run_id"} for x in _rows(r)]
    return rows, [(m.task, m.metric, m.value, m.stderr, m.ci_low, m.n, m.method, m.source_stderr)
                  for m in r.metrics]


def test_duckdb_reader_matches_line_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised reader and the reference line reader give the same rows and the same statistics."""
    fast_rows, fast_metrics = _all_rows(RUN, True, monkeypatch)
    slow_rows, slow_metrics = _all_rows(RUN, False, monkeypatch)
    assert fast_rows == slow_rows and len(fast_rows) == 56
    for a, b in zip(fast_metrics, slow_metrics, strict=True):  # batch vs one-by-one variance: equal to rounding
        assert a[:2] == b[:2] and a[5:7] == b[5:7]
        for x, y in zip(a[2:5] + a[7:], b[2:5] + b[7:], strict=True):
            assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12)


def test_bad_line_after_fast_batches_falls_back_with_line_number(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed line late in the file: rows already delivered stay, the line reader names the line."""
    monkeypatch.setattr(lm, "BATCH_ROWS", 4)
    res = _copy_run(tmp_path)
    samples = next(res.parent.glob("samples_ek_arith_*.jsonl"))
    lines = samples.read_text().splitlines()
    lines[21] = lines[21][:-30]  # line 22 of 24 is cut short
    samples.write_text("\n".join(lines) + "\n")
    r = LmEvalImporter().load(res)
    got = 0
    with pytest.raises(ImportFormatError) as e:
        for b in r.batches:
            got += b.num_rows
    assert "line 22: invalid JSON" in e.value.render() and str(samples) in e.value.render()
    assert got <= 21


def test_duplicate_doc_id_is_reported(tmp_path: Path) -> None:
    res = _copy_run(tmp_path)
    samples = next(res.parent.glob("samples_ek_capitals_*.jsonl"))
    lines = samples.read_text().splitlines()
    lines[5] = lines[5].replace('"doc_id": 5,', '"doc_id": 2,', 1)
    samples.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError) as e:
        list(LmEvalImporter().load(res).batches)
    assert "line 6: doc_id 2 appears twice" in e.value.render()


def test_older_file_names(tmp_path: Path) -> None:
    """lm-eval 0.4.0-0.4.2 wrote results.json and <results stem>_<task>.jsonl."""
    res = _copy_run(tmp_path)
    folder = res.parent
    res.rename(folder / "results.json")
    for task in ("ek_arith", "ek_capitals", "ek_echo"):
        next(folder.glob(f"samples_{task}_*.jsonl")).rename(folder / f"results_{task}.jsonl")
    r = load_path(folder)
    assert sum(b.num_rows for b in r.batches) == 56
    assert _metric(r, "ek_capitals", "acc").method == "clt"
