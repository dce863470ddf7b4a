"""Format detection by content, the registry's errors, and fuzzing: only ImportFormatError may escape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest import IMPORTERS, detect_importer, importer_names, load_path
from evalkeeper.ingest.lighteval import LightevalImporter
from evalkeeper.ingest.lm_eval import LmEvalImporter

FIX = Path(__file__).parent.parent / "fixtures"
LIGHTEVAL_RUN = FIX / "lighteval" / "run1"
LM_EVAL_RUN = FIX / "lm_eval" / "run1"
LEGACY = FIX / "lighteval" / "legacy"


def _consume(path: Path) -> int:
    imported = load_path(path)
    return sum(b.num_rows if hasattr(b, "num_rows") else len(b) for b in imported.batches)


def test_registry_lists_our_importers() -> None:
    names = importer_names()
    assert names[:2] == ["lighteval", "lm_eval"]
    assert all(hasattr(i, "detect") and hasattr(i, "load") for i in IMPORTERS)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (LIGHTEVAL_RUN, "lighteval"),
        (LEGACY, "lighteval"),
        (LM_EVAL_RUN, "lm_eval"),
    ],
)
def test_detects_output_folders_by_content(path: Path, name: str) -> None:
    assert detect_importer(path).name == name


def test_detection_ignores_file_names(tmp_path: Path) -> None:
    """A renamed results file is still recognised; a file merely *named* like one is not."""
    lm_results = next(LM_EVAL_RUN.rglob("results_*.json"))
    renamed = tmp_path / "whatever.json"
    shutil.copy(lm_results, renamed)
    assert detect_importer(renamed).name == "lm_eval"
    light_results = next(LIGHTEVAL_RUN.rglob("results_*.json"))
    renamed2 = tmp_path / "other.json"
    shutil.copy(light_results, renamed2)
    assert detect_importer(renamed2).name == "lighteval"
    impostor = tmp_path / "results_2024-01-01T00-00-00.json"
    impostor.write_text('{"results": {"a": 1}}')
    with pytest.raises(ImportFormatError) as e:
        detect_importer(impostor)
    assert str(impostor) in e.value.render()


def test_unknown_format_names_file_and_lists_formats(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(ImportFormatError) as e:
        detect_importer(f)
    text = e.value.render()
    assert str(f) in text and "unknown format" in text
    assert "lighteval" in text and "lm_eval" in text
    assert e.value.exit_code == 2


def test_empty_folder(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(ImportFormatError) as e:
        load_path(d)
    assert "empty folder" in e.value.render() and str(d) in e.value.render()


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError) as e:
        load_path(tmp_path / "nope")
    assert "no such file" in e.value.render()


def test_folder_with_two_runs_asks_for_one(tmp_path: Path) -> None:
    shutil.copytree(LM_EVAL_RUN, tmp_path / "a")
    shutil.copytree(LM_EVAL_RUN, tmp_path / "b")
    with pytest.raises(ImportFormatError) as e:
        load_path(tmp_path)
    assert "import one at a time" in e.value.render()


# --- fuzzing: random and corrupted bytes ------------------------------------------------------------------

_NAMES = ["results_2024-05-01T10-00-00.json", "samples_t_2024-05-01T10-00-00.jsonl", "x.parquet",
          "details_a|b|0_2024.parquet", "log.json"]


def _fuzz_once(tmp: Path, name: str, data: bytes) -> None:
    for imp in (LightevalImporter(), LmEvalImporter()):
        folder = tmp / imp.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        p = folder / name
        p.write_bytes(data)
        for target in (p, folder):
            assert imp.detect(target) in (True, False)  # never raises
            try:
                r = imp.load(target)
                for _ in r.batches:
                    pass
            except ImportFormatError as e:
                assert e.path  # every error names a file or folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(_NAMES), data=st.binary(max_size=2048))
def test_random_bytes_only_raise_import_format_error(tmp_path: Path, name: str, data: bytes) -> None:
    _fuzz_once(tmp_path, name, data)


def _real_files() -> list[Path]:
    files = [p for p in (FIX / "lighteval").rglob("*") if p.is_file() and p.suffix in (".json", ".parquet")]
    files += [p for p in (FIX / "lm_eval").rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    return sorted(files)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.integers(min_value=0, max_value=10_000), cut=st.floats(0, 1), flips=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8))
def test_corrupted_real_outputs_only_raise_import_format_error(
        tmp_path: Path, idx: int, cut: float, flips: list[tuple[float, int]]) -> None:
    """Copy a real run, damage one of its files (truncate and flip bytes), import: ours is the only error."""
    files = _real_files()
    victim = files[idx % len(files)]
    root = LM_EVAL_RUN if LM_EVAL_RUN in victim.parents else (LEGACY if LEGACY in victim.parents
                                                              else LIGHTEVAL_RUN)
    work = tmp_path / "copy"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root, work)
    target = work / victim.relative_to(root)
    data = bytearray(target.read_bytes())
    data = data[: max(1, int(len(data) * cut))] if cut < 0.5 else data
    for pos, byte in flips:
        if data:
            data[int(pos * len(data))] = byte
    target.write_bytes(bytes(data))
    for path in (work, target):
        try:
            _consume(path)
        except ImportFormatError as e:
            assert e.path


@pytest.mark.parametrize("path", sorted(p for p in (FIX / "inspect").glob("*") if p.is_file()),
                         ids=lambda p: p.name)
def test_inspect_logs_are_not_claimed_by_lighteval_or_lm_eval(path: Path) -> None:
    assert not LightevalImporter().detect(path)
    assert not LmEvalImporter().detect(path)
    if "inspect_ai" in importer_names():
        assert detect_importer(path).name == "inspect_ai"


_ODD_VALUES = [None, [], {}, "x", "", 0, -1, 1.5, float("nan"), float("inf"), True, [1, "a"], {"a": [None]},
               10**30, "NaN", "1"]


def _json_paths(obj: object, pre: tuple = ()) -> list[tuple]:
    out = [pre]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _json_paths(v, (*pre, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _json_paths(v, (*pre, i))
    return out


def _set_path(obj: object, path: tuple, value: object) -> object:
    if not path:
        return value
    cur = obj
    for k in path[:-1]:
        cur = cur[k]  # type: ignore[index]
    cur[path[-1]] = value  # type: ignore[index]
    return obj


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_wrong_shapes_in_real_outputs_only_raise_import_format_error(tmp_path: Path, data: st.DataObject) -> None:
    """Valid JSON of the wrong shape anywhere (results JSON or one sample line): ours is the only error, and
    whatever imports survives the store's JSON round trip."""
    from evalkeeper.core.records import MetricResult, Run

    root = data.draw(st.sampled_from([LIGHTEVAL_RUN, LEGACY, LM_EVAL_RUN]))
    work = tmp_path / "w"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root, work)
    victim = data.draw(st.sampled_from(sorted(p for p in work.rglob("*") if p.suffix in (".json", ".jsonl"))))
    lines = victim.read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1)) if victim.suffix == ".jsonl" else None
    doc = json.loads(lines[i]) if i is not None else json.loads(victim.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _set_path(doc, data.draw(st.sampled_from(_json_paths(doc))), data.draw(st.sampled_from(_ODD_VALUES)))
    if i is not None:
        lines[i] = json.dumps(doc)
        victim.write_text("\n".join(lines) + "\n")
    else:
        victim.write_text(json.dumps(doc))
    try:
        r = load_path(work)
        for _ in r.batches:
            pass
    except ImportFormatError as e:
        assert e.path
        return
    Run.model_validate_json(r.run.model_dump_json())
    for m in r.metrics:
        MetricResult.model_validate_json(m.model_dump_json())


@pytest.mark.parametrize("root", [LIGHTEVAL_RUN, LM_EVAL_RUN], ids=["lighteval", "lm_eval"])
def test_truncated_results_in_a_folder_names_the_file(tmp_path: Path, root: Path) -> None:
    work = tmp_path / "out"
    shutil.copytree(root, work)
    res = next(work.rglob("results_*.json"))
    res.write_bytes(res.read_bytes()[:200])
    for where in (work, res):
        with pytest.raises(ImportFormatError) as e:
            load_path(where)
        assert str(res) in e.value.render() and "invalid JSON" in e.value.render()
