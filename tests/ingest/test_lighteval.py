"""lighteval importer on a real lighteval 0.13.0 run and on a hand-written older layout (see fixtures README)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.core.records import Sample
from evalkeeper.ingest import ImportedRun, load_path
from evalkeeper.ingest._lighteval_details import parse_cell
from evalkeeper.ingest.base import Z95
from evalkeeper.ingest.lighteval import LightevalImporter, is_aggregate_key, split_task_key

FIX = Path(__file__).parent.parent / "fixtures" / "lighteval"
RUN = FIX / "run1"
RESULTS = next(RUN.rglob("results_*.json"))
LEGACY = FIX / "legacy"
LEGACY_RESULTS = next(LEGACY.rglob("results_*.json"))


def _samples(r: ImportedRun) -> list[Sample]:
    out: list[Sample] = []
    for b in r.batches:
        assert isinstance(b, list)
        out.extend(b)
    return out


def _metric(r: ImportedRun, task: str, metric: str):
    return next(m for m in r.metrics if m.task == task and m.metric == metric)


@pytest.fixture(scope="module")
def real() -> tuple[ImportedRun, list[Sample]]:
    r = LightevalImporter().load(RUN)
    return r, _samples(r)


@pytest.fixture(scope="module")
def legacy() -> tuple[ImportedRun, list[Sample]]:
    r = LightevalImporter().load(LEGACY)
    return r, _samples(r)


def test_task_key_forms() -> None:
    assert split_task_key("leaderboard|arc:easy|25") == ("leaderboard", "arc:easy", 25)
    assert split_task_key("lighteval|arc:easy|0|0") == ("lighteval", "arc:easy", 0)
    assert split_task_key("ekgen|0") == (None, "ekgen", 0)
    assert is_aggregate_key("all") and is_aggregate_key("ekmc:_average|0")
    assert is_aggregate_key("leaderboard|mmlu:_average|5") and not is_aggregate_key("ekmc:arith|0")


def test_real_run_tasks_and_aggregates(real) -> None:
    r, _ = real
    assert sorted(t.name for t in r.run.tasks) == ["ekgen|0", "ekmc:arith|0", "ekmc:capitals|0"]
    arith = r.run.task("ekmc:arith|0")
    # the JSON says effective_num_docs -1 and non_truncated 0: the count comes from the Parquet rows
    assert arith.config["effective_num_docs"] == -1
    assert arith.n_samples == 24 and arith.n_shot == 0
    assert arith.metrics == ["acc", "loglikelihood_f1"]
    assert arith.higher_is_better == {"acc": True, "loglikelihood_f1": True}
    assert arith.dataset_fingerprint == "31dacf3474806737"  # lighteval's hash_examples
    assert r.run.task("ekgen|0").n_samples == 16 and r.run.task("ekmc:capitals|0").n_samples == 12
    # aggregates are metrics but not tasks
    avg = _metric(r, "ekmc:_average|0", "acc")
    assert avg.value == pytest.approx((4 / 24 + 3 / 12) / 2) and avg.method == "source"
    assert avg.ci_low == pytest.approx(avg.value - Z95 * avg.stderr)
    assert _metric(r, "all", "em").value == pytest.approx(0.3125)
    assert set(r.run.environment["source"]["aggregates"]) == {"ekmc:_average|0", "all"}


def test_real_run_numbers(real) -> None:
    r, samples = real
    for task, metric, value, n, source_se in [
        ("ekmc:arith|0", "acc", 4 / 24, 24, 0.07770873402002615),
        ("ekmc:capitals|0", "acc", 3 / 12, 12, 0.1305582419667734),
        ("ekgen|0", "em", 5 / 16, 16, 0.11967838846954226),
    ]:
        m = _metric(r, task, metric)
        vals = np.array([s.scores[metric] for s in samples if s.task == task])
        assert len(vals) == n and vals.mean() == pytest.approx(value)
        assert m.value == pytest.approx(value) and m.n == n and m.method == "clt"
        se = vals.std(ddof=1) / math.sqrt(n)
        assert m.stderr == pytest.approx(se) and m.source_stderr == pytest.approx(source_se)
        assert m.ci_low == pytest.approx(value - Z95 * se) and m.ci_high == pytest.approx(value + Z95 * se)
    # corpus-level F1 is not a mean of per-sample numbers: its source stderr is kept, no CLT
    f1 = _metric(r, "ekmc:arith|0", "loglikelihood_f1")
    assert f1.method == "source" and f1.value == pytest.approx(0.2857142857142857)
    assert f1.stderr == pytest.approx(0.003532767399562561) and f1.n == 24


def test_real_run_samples(real) -> None:
    r, samples = real
    assert len(samples) == 52
    by_id = {(s.task, s.sample_id): s for s in samples}
    assert len(by_id) == 52
    s = by_id[("ekmc:arith|0", "15")]  # lighteval's doc id is the row index in the dataset
    assert s.input == "Question: What is 19 + 2?\nAnswer:"
    assert s.metadata["choices"] == ["20", "21", "22", "24"] and s.target == "21"
    assert s.logprobs is not None and len(s.logprobs) == 4
    assert s.prediction == s.metadata["choices"][int(np.argmax(s.logprobs))]
    assert s.scores == {"acc": float(s.prediction == s.target)}
    assert "loglikelihood_f1" in s.metadata["unaggregated"]
    gen = [x for x in samples if x.task == "ekgen|0"]
    assert all(x.prediction == "random baseline" for x in gen)
    assert all(x.scores["em"] == float(x.target == "random baseline") for x in gen)


def test_real_run_record(real) -> None:
    r, _ = real
    run = r.run
    assert run.model.name == "evalkeeper/dummy-lighteval" and run.model.backend == "lighteval"
    assert run.model.generation == {"temperature": 0}
    assert run.provenance.producer == "lighteval" and len(run.provenance.source_sha256) == 64
    assert run.environment["source"]["config_general"]["model_config"]["seed"] == 7
    assert run.finished_at is not None and run.finished_at.year == 2026 and run.started_at < run.finished_at
    assert len(r.source_files) == 4


def test_legacy_layout(legacy) -> None:
    r, samples = legacy
    names = {t.name for t in r.run.tasks}
    assert names == {"leaderboard|arc:easy|25", "leaderboard|mmlu:anatomy|5", "leaderboard|mmlu:astronomy|5",
                     "gsm8k|5", "leaderboard|truthfulqa:mc|0"}
    assert r.run.task("leaderboard|arc:easy|25").n_shot == 25 and r.run.task("gsm8k|5").n_shot == 5
    assert r.run.task("gsm8k|5").n_samples == 9  # -1 in the JSON, 9 rows in the Parquet
    assert r.run.task("leaderboard|mmlu:anatomy|5").config["suite"] == ["leaderboard"]
    assert r.run.model.revision == "0123456789abcdef0123456789abcdef01234567"
    assert len(samples) == 10 + 8 + 6 + 9
    # numbers: every reported value is the mean of its rows; NaN stderrs are recomputed by CLT
    data = json.loads(LEGACY_RESULTS.read_text())  # Python's json reads the bare NaN
    for task in ("leaderboard|arc:easy|25", "leaderboard|mmlu:anatomy|5", "leaderboard|mmlu:astronomy|5"):
        for metric in ("acc", "acc_norm"):
            m = _metric(r, task, metric)
            vals = np.array([s.scores[metric] for s in samples if s.task == task])
            assert m.value == pytest.approx(data["results"][task][metric]) == pytest.approx(vals.mean())
            assert m.method == "clt" and m.stderr == pytest.approx(vals.std(ddof=1) / math.sqrt(len(vals)))
    anatomy = _metric(r, "leaderboard|mmlu:anatomy|5", "acc")
    assert math.isnan(data["results"]["leaderboard|mmlu:anatomy|5"]["acc_stderr"])
    assert anatomy.source_stderr is None and anatomy.stderr > 0
    qem = _metric(r, "gsm8k|5", "qem")
    assert qem.value == pytest.approx(3 / 9) and qem.n == 9 and qem.method == "clt"
    # a NaN value with no samples to recompute it is dropped; the other metric of the task stays
    assert not any(m.task == "leaderboard|truthfulqa:mc|0" and m.metric == "mc1" for m in r.metrics)
    mc2 = _metric(r, "leaderboard|truthfulqa:mc|0", "mc2")
    assert mc2.value == pytest.approx(0.4123) and mc2.method == "source" and mc2.stderr == pytest.approx(0.0312)
    avg = _metric(r, "leaderboard|mmlu:_average|5", "acc")
    assert avg.stderr is None and avg.ci_low is None  # NaN stderr in the source
    assert r.run.task("leaderboard|mmlu:_average|5") is None and r.run.task("all") is None
    for m in r.metrics:
        assert not math.isnan(m.value)
        assert m.stderr is None or not math.isnan(m.stderr)


def test_legacy_stringified_and_typed_rows(legacy) -> None:
    _, samples = legacy
    arc = [s for s in samples if s.task == "leaderboard|arc:easy|25"]  # typed flat columns
    anatomy = [s for s in samples if s.task == "leaderboard|mmlu:anatomy|5"]  # str() of every cell
    for s in arc + anatomy:
        assert s.logprobs is not None and len(s.logprobs) == 4
        assert s.prediction == s.metadata["choices"][int(np.argmax(s.logprobs))]
        assert set(s.scores) == {"acc", "acc_norm"}
        assert s.scores["acc"] == float(s.prediction == s.target)
        assert s.input.startswith("[") and "Question" in s.input
    gsm = [s for s in samples if s.task == "gsm8k|5"]
    assert gsm[0].prediction == "The answer is 10" and gsm[0].target == "10"
    assert gsm[0].metadata["specifics"] == {"extracted": "10"} and gsm[0].tokens_out == 2
    assert parse_cell("{'em': 1.0}") == {"em": 1.0}
    assert parse_cell("[(-1.5, False), (-0.2, True)]") == [(-1.5, False), (-0.2, True)]
    assert parse_cell("plain text") == "plain text"


def test_sample_ids_stable_across_loads() -> None:
    for root in (RUN, LEGACY):
        a = _samples(LightevalImporter().load(root))
        b = _samples(LightevalImporter().load(root))
        ids = [(s.task, s.sample_id) for s in a]
        assert ids == [(s.task, s.sample_id) for s in b] and len(set(ids)) == len(ids)


def test_accepts_output_folder_results_file_model_folder_or_details_folder() -> None:
    details_dir = next(RUN.rglob("details_*.parquet")).parent
    for where in (RUN, RESULTS, RESULTS.parent, RUN / "results", details_dir, LEGACY_RESULTS.parent.parent):
        r = load_path(where)
        assert r.run.provenance.producer == "lighteval"
        assert r.run.provenance.source_sha256 == LightevalImporter().load(
            RESULTS if RUN in where.parents or where == RUN else LEGACY_RESULTS).run.provenance.source_sha256


def test_results_only(tmp_path: Path) -> None:
    shutil.copy(RESULTS, tmp_path / RESULTS.name)
    r = load_path(tmp_path)
    assert _samples(r) == []
    m = _metric(r, "ekmc:arith|0", "acc")
    assert m.method == "source" and m.stderr == pytest.approx(0.07770873402002615) and m.n is None


def _copy(tmp_path: Path, root: Path = RUN) -> Path:
    dest = tmp_path / "out"
    shutil.copytree(root, dest)
    return dest


def test_truncated_json(tmp_path: Path) -> None:
    out = _copy(tmp_path)
    res = next(out.rglob("results_*.json"))
    res.write_bytes(res.read_bytes()[:300])
    with pytest.raises(ImportFormatError) as e:
        LightevalImporter().load(res)
    assert str(res) in e.value.render() and "invalid JSON" in e.value.render()


def test_unreadable_parquet(tmp_path: Path) -> None:
    out = _copy(tmp_path)
    det = next(out.rglob("details_ekgen*.parquet"))
    det.write_bytes(b"PAR1" + b"\x00garbage" * 20)
    with pytest.raises(ImportFormatError) as e:
        LightevalImporter().load(out)
    assert str(det) in e.value.render() and "Parquet" in e.value.render()


def test_parquet_with_foreign_columns(tmp_path: Path) -> None:
    out = _copy(tmp_path)
    det = next(out.rglob("details_ekgen*.parquet"))
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), det)
    with pytest.raises(ImportFormatError) as e:
        LightevalImporter().load(out)
    assert str(det) in e.value.render() and "not a lighteval details file" in e.value.render()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["results"].update({"ekgen|0": [0.5]}), "must be an object"),
    (lambda d: d["results"]["ekgen|0"].update(em="high"), "is not a number"),
    (lambda d: d.update(results={}), "'results' is empty"),
    (lambda d: d.pop("config_general"), "not a lighteval results file"),
])
def test_wrong_schema(tmp_path: Path, mutate, message: str) -> None:
    out = _copy(tmp_path)
    res = next(out.rglob("results_*.json"))
    data = json.loads(res.read_text())
    mutate(data)
    res.write_text(json.dumps(data))
    with pytest.raises(ImportFormatError) as e:
        LightevalImporter().load(res)
    assert str(res) in e.value.render() and message in e.value.render()


def test_import_into_workspace_and_reimport_is_detected(workspace) -> None:
    from evalkeeper.ingest.service import import_path

    first = import_path(workspace, RUN)
    run = workspace.get_run(first[0].run.run_id)
    assert run.n_samples == 52 and run.provenance.producer == "lighteval"
    assert workspace.count_samples(run.run_id, task="ekmc:arith|0") == 24
    assert workspace.count_samples(run.run_id, task="ekgen|0", where="score = 1") == 5
    ids, values = workspace.scores(run.run_id, "ekmc:capitals|0", "acc")
    assert len(ids) == 12 and values.mean() == pytest.approx(0.25)
    again = import_path(workspace, RESULTS)
    assert again[0].already and again[0].run.run_id == run.run_id
    legacy = import_path(workspace, LEGACY)
    assert not legacy[0].already
    assert len(workspace.list_runs()) == 2
