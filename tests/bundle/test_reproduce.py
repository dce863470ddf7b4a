"""reproduce: paired TOST verdicts on synthetic pairs, real re-runs through the runner, imported runs refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalkeeper.bundle.reproduce import (
    ReproductionUnsupported,
    compare_task,
    reproduce_bundle,
)
from evalkeeper.bundle.writer import create_bundle
from evalkeeper.core.records import MetricResult, ModelInfo, Provenance, Run, Sample, TaskInfo
from evalkeeper.stats import tost_equivalence
from evalkeeper.store import Workspace, open_workspace
from helpers import make_run


def _copy_with_flips(ws: Workspace, src: Run, frac: float, seed: int) -> Run:
    """A run with `src`'s samples, where a fraction `frac` of the binary scores is flipped at random."""
    rng = np.random.default_rng(seed)
    samples = []
    rid = f"{src.run_id}-copy{seed}"
    for task in src.tasks:
        ids, vals = ws.scores(src.run_id, task.name, "acc")
        flips = rng.random(vals.size) < frac
        for sid, v, f in zip(ids, vals, flips, strict=True):
            samples.append(Sample(run_id=rid, task=task.name, sample_id=str(sid),
                                  scores={"acc": float(1 - v if f else v)}))
    run = src.model_copy(update={"run_id": rid, "tags": []})
    return ws.add_run(run, [], [samples])


def test_identical_scores_are_equivalent(workspace: Workspace, tmp_path: Path) -> None:
    a = make_run(workspace, n=400, seed=1)
    b = make_run(workspace, n=400, seed=1)
    path = create_bundle(workspace, a.run_id, tmp_path / "a.ekb").path
    rep = reproduce_bundle(path, workspace, against=b.run_id)
    assert rep.exit_code == 0 and rep.equivalent and not rep.rerun
    assert [t.verdict for t in rep.tasks] == ["equivalent", "equivalent"]
    assert all(t.n_shared == 400 and t.mean_diff == 0.0 for t in rep.tasks)


def test_small_random_differences_are_equivalent_with_the_tost_numbers(workspace: Workspace,
                                                                       tmp_path: Path) -> None:
    a = make_run(workspace, tasks=("arith",), n=3000, seed=2)
    b = _copy_with_flips(workspace, a, frac=0.01, seed=5)
    rep = reproduce_bundle(create_bundle(workspace, a.run_id, tmp_path / "a.ekb").path, workspace,
                           against=b.run_id, margin=0.02)
    [t] = rep.tasks
    ids_a, va = workspace.scores(a.run_id, "arith", "acc")
    ids_b, vb = workspace.scores(b.run_id, "arith", "acc")
    ref = tost_equivalence(va, vb, 0.02, 0.05)
    assert t.verdict == "equivalent" and rep.exit_code == 0
    assert t.mean_diff == pytest.approx(ref.mean_diff) and t.p_value == pytest.approx(ref.p_value)
    assert t.ci_low == pytest.approx(ref.ci_low) and t.ci_high == pytest.approx(ref.ci_high)
    assert -0.02 < t.ci_low < t.ci_high < 0.02


def test_a_real_shift_is_different_and_exits_1(workspace: Workspace, tmp_path: Path) -> None:
    a = make_run(workspace, tasks=("arith",), n=1000, seed=3, p=0.8)
    b = _copy_with_flips(workspace, a, frac=0.25, seed=6)  # accuracy 0.8 -> about 0.65
    rep = reproduce_bundle(create_bundle(workspace, a.run_id, tmp_path / "a.ekb").path, workspace,
                           against=b.run_id)
    [t] = rep.tasks
    assert t.verdict == "different" and rep.exit_code == 1
    assert t.ci_high < -0.02


def test_too_few_shared_samples_is_inconclusive(workspace: Workspace, tmp_path: Path) -> None:
    a = make_run(workspace, tasks=("arith",), n=30, seed=4)
    b = _copy_with_flips(workspace, a, frac=0.2, seed=8)
    rep = reproduce_bundle(create_bundle(workspace, a.run_id, tmp_path / "a.ekb").path, workspace,
                           against=b.run_id)
    assert rep.tasks[0].verdict == "inconclusive" and rep.exit_code == 1


def test_compare_task_pairs_by_sample_id_only() -> None:
    ids_a = np.array(["x", "y", "z", "w"], dtype=object)
    ids_b = np.array(["z", "y", "q"], dtype=object)
    t = compare_task("t", "acc", (ids_a, np.array([1.0, 0.0, 1.0, 1.0])), (ids_b, np.array([1.0, 0.0, 0.0])),
                     0.02, 0.05)
    assert t.n_shared == 2 and t.mean_diff == 0.0 and t.verdict == "equivalent"
    none = compare_task("t", "acc", (ids_a, np.ones(4)), (np.array(["k"], dtype=object), np.ones(1)), 0.02, 0.05)
    assert none.verdict == "no shared samples"


def test_imported_run_needs_the_original_tool(workspace: Workspace, tmp_path: Path) -> None:
    run = make_run(workspace, tasks=("arith",), n=20)
    prov = Provenance(producer="lm_eval", producer_version="0.4.5", source_sha256="b" * 64)
    workspace.save_run(run.model_copy(update={"provenance": prov}))
    path = create_bundle(workspace, run.run_id, tmp_path / "l.ekb").path
    with pytest.raises(ReproductionUnsupported, match="needs the original tool") as info:
        reproduce_bundle(path, open_workspace(tmp_path / "fresh"))
    assert info.value.exit_code == 2 and "lm_eval" in str(info.value)
    # ... but it can still be compared against a run the user produced with that tool
    assert reproduce_bundle(path, workspace, against=run.run_id).equivalent


def _user_task(tmp_path: Path) -> Path:
    d = tmp_path / "usertasks"
    d.mkdir()
    rows = [{"id": f"q{i}", "question": f"Pick option {i % 4}", "choices": ["a", "b", "c", "d"], "answer": i % 4}
            for i in range(60)]
    (d / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "picks.yaml").write_text(
        "name: picks\nkind: multiple_choice\ndataset: {path: rows.jsonl}\nprompt: '{{ question }}'\n"
        "choices: choices\ntarget: answer\nid_field: id\nmetrics: [accuracy]\n")
    return d / "picks.yaml"


def test_native_run_is_really_rerun_through_the_runner(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.runner import RunOptions, run_evaluation
    from evalkeeper.runner.backends.fake import FakeBackend

    task_file = _user_task(tmp_path)  # dataset path is relative to the task file
    original = run_evaluation(workspace, FakeBackend(), tasks=["general_knowledge", str(task_file)],
                              options=RunOptions(progress=False, limit=40)).run
    bundle = create_bundle(workspace, original.run_id, tmp_path / "n.ekb").path
    # The task file is edited afterwards: reproduce must use the spec recorded in the bundle.
    task_file.write_text(task_file.read_text().replace("prompt: '{{ question }}'", "prompt: 'Q: {{ question }}'"))
    fresh = open_workspace(tmp_path / "fresh")
    same = FakeBackend()
    rep = reproduce_bundle(bundle, fresh, model=same)
    assert rep.rerun and rep.new_run_id != original.run_id
    assert same.calls == 80  # every item asked again: no cache, no resume
    assert rep.equivalent and rep.exit_code == 0
    assert {t.task: t.n_shared for t in rep.tasks} == {"general_knowledge": 40, "picks": 40}
    assert rep.spec_differences == []  # same dataset/prompt fingerprints, seeds and model
    new = fresh.get_run(rep.new_run_id)
    assert new.labels["reproduces"] == original.run_id and "reproduction" in new.tags
    assert new.task("picks").config["source"] == str(task_file.resolve())

    always_a = FakeBackend(responder=lambda req: 0)
    worse = reproduce_bundle(bundle, open_workspace(tmp_path / "fresh2"), model=always_a)
    assert worse.exit_code == 1
    assert {t.task: t.verdict for t in worse.tasks}["picks"] in ("different", "inconclusive")


def test_reproduce_uses_the_recorded_model_by_default(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.runner import RunOptions, run_evaluation

    original = run_evaluation(workspace, "fake", tasks=["general_knowledge"],
                              options=RunOptions(progress=False, limit=15)).run
    rep = reproduce_bundle(create_bundle(workspace, original.run_id, tmp_path / "f.ekb").path,
                           open_workspace(tmp_path / "fresh"))
    assert rep.rerun and rep.equivalent


def test_unknown_backend_asks_for_model(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.core.errors import ConfigError

    rid = "run-hf-1"
    run = Run(run_id=rid, model=ModelInfo(name="m", backend="hf"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["acc"], config={"spec": {}, "source": "bundled:arith"})])
    workspace.add_run(run, [MetricResult(run_id=rid, task="t", metric="acc", value=1.0)],
                      [[Sample(run_id=rid, task="t", sample_id="s1", scores={"acc": 1.0})]])
    path = create_bundle(workspace, rid, tmp_path / "h.ekb").path
    with pytest.raises(ConfigError, match="--model"):
        reproduce_bundle(path, open_workspace(tmp_path / "fresh"))


def test_environment_differences_are_reported(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.bundle import capture_environment

    now = capture_environment()
    old = json.loads(json.dumps(now))
    old["packages"]["torch"] = "2.0.0+cu118"
    old["gpu"] = {"devices": [{"name": "NVIDIA A100-SXM4-80GB"}], "driver": "535.104.05", "cuda": "12.2"}
    a = make_run(workspace, tasks=("arith",), n=50, seed=1)
    workspace.save_run(a.model_copy(update={"environment": old}))
    b = make_run(workspace, tasks=("arith",), n=50, seed=1)
    workspace.save_run(b.model_copy(update={"environment": now}))
    rep = reproduce_bundle(create_bundle(workspace, a.run_id, tmp_path / "a.ekb").path, workspace,
                           against=b.run_id)
    diffs = "\n".join(rep.env_differences)
    assert "gpu: NVIDIA A100-SXM4-80GB -> none" in diffs
    assert "cuda: 12.2 -> " in diffs and "gpu_driver: 535.104.05 -> None" in diffs
    assert "package torch: 2.0.0+cu118 -> " in diffs


def test_bundle_without_samples_cannot_be_tested(workspace: Workspace, tmp_path: Path) -> None:
    from evalkeeper.core.errors import EvalkeeperError

    rid = "run-nosamples"
    run = Run(run_id=rid, model=ModelInfo(name="m", backend="fake"), provenance=Provenance(producer="evalkeeper"),
              tasks=[TaskInfo(name="t", metrics=["acc"])])
    workspace.add_run(run, [MetricResult(run_id=rid, task="t", metric="acc", value=1.0)], [])
    path = create_bundle(workspace, rid, tmp_path / "e.ekb").path
    with pytest.raises(EvalkeeperError, match="no per-sample scores"):
        reproduce_bundle(path, workspace, against=rid)
