"""inspect_ai importer: real logs from inspect 0.3.285 (zstd .eval) and 0.3.160 (deflate .eval), both
as .eval and .json, must give the same numbers; broken or hostile files fail with ImportFormatError only."""

from __future__ import annotations

import json
import math
import shutil
import zlib
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest import detect_importer
from evalkeeper.ingest._inspect_rows import InspectSample, decode_sample, value_to_float
from evalkeeper.ingest._zipread import ZipReader
from evalkeeper.ingest.inspect import InspectImporter
from evalkeeper.ingest.service import import_path
from ingest._evalzip import methods, read_members, write_zip

FIX = Path(__file__).parent.parent / "fixtures" / "inspect"
NEW_EVAL, NEW_JSON = FIX / "arith_0.3.285.eval", FIX / "arith_0.3.285.json"
OLD_EVAL, OLD_JSON = FIX / "arith_0.3.160.eval", FIX / "arith_0.3.160.json"
ALL = [NEW_EVAL, NEW_JSON, OLD_EVAL, OLD_JSON]

# Per-sample scores worked out by hand from the replies in tests/fixtures/make/inspect/make_inspect.py,
# epochs averaged: q01..q08.
MATCH = [0.5, 1.0, 1.0, 0.0, 0.5, 0.5, 0.0, 0.5]
INCLUDES = [0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.5]
DIGITS = [0.5, 1.0, 0.75, 0.25, 0.5, 0.5, 0.0, 0.5]  # C=1, P=0.5, I=0
LENGTH = [1.0, 2.0, 8.0, 5.0, 2.0, 2.0, 12.5, 2.0]


def _load(path: Path) -> tuple[object, pa.Table]:
    imported = InspectImporter().load(path)
    assert not isinstance(imported, list)
    table = pa.concat_tables(list(imported.batches))
    return imported, table


def _clt(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_fixture_numbers(path: Path) -> None:
    imported, table = _load(path)
    run = imported.run  # type: ignore[attr-defined]
    assert run.provenance.producer == "inspect_ai"
    assert run.provenance.producer_version in ("0.3.285", "0.3.160")
    assert run.model.name == "mockllm/model" and run.model.backend == "inspect:mockllm"
    assert run.status == "complete" and run.seed == 7
    assert run.environment["source"]["packages"]["inspect_ai"] == run.provenance.producer_version
    assert "revision" in run.environment["source"]
    [task] = run.tasks
    assert task.name == "arith" and task.n_samples == 8
    assert task.metrics[:4] == ["match", "includes", "digits_credit", "answer_length"]
    assert table.num_rows == 16
    assert sorted(set(table.column("epoch").to_pylist())) == [0, 1]
    metrics = {m.metric: m for m in imported.metrics}  # type: ignore[attr-defined]
    for name, per_sample in [("match", MATCH), ("includes", INCLUDES), ("digits_credit", DIGITS),
                             ("answer_length", LENGTH)]:
        mean, se = _clt(per_sample)
        m = metrics[name]
        assert m.value == pytest.approx(mean, abs=1e-12)
        # recomputed CLT stderr (epochs averaged first) equals what inspect itself logged
        assert m.method == "clt" and m.n == 8
        assert m.stderr == pytest.approx(se, rel=1e-12)
        assert m.source_stderr == pytest.approx(se, rel=1e-12)  # inspect's own logged stderr agrees
        assert m.ci_low == pytest.approx(mean - 1.959964 * se) and m.ci_high == pytest.approx(mean + 1.959964 * se)


def test_rows_of_one_sample() -> None:
    _, table = _load(NEW_EVAL)
    rows = {(r["sample_id"], r["epoch"]): r for r in table.to_pylist()}
    r = rows[("q03", 0)]
    assert r["input"] == "What is 15 - 9? Answer with the number only."
    assert r["target"] == "6" and r["prediction"] == "The answer is 6"
    assert dict(r["scores"]) == {"match": 1.0, "includes": 1.0, "digits_credit": 0.5, "answer_length": 15.0}
    assert dict(r["group"]) == {"level": "easy", "lang": "fr"}
    meta = json.loads(r["metadata"])
    assert meta["level"] == "easy"
    assert meta["inspect"]["explanations"]["digits_credit"] == "target inside a longer answer"
    assert r["tokens_in"] == 22 and r["tokens_out"] == 4
    assert r["latency_ms"] is not None and r["latency_ms"] > 0
    assert rows[("q04", 1)]["prediction"] == "9 exactly"


def test_versions_and_formats_agree() -> None:
    def key(table: pa.Table) -> list[tuple[object, ...]]:
        return sorted((r["sample_id"], r["epoch"], r["input"], r["target"], r["prediction"],
                       tuple(sorted(r["scores"])), r["tokens_in"], r["tokens_out"]) for r in table.to_pylist())

    tables = [_load(p) for p in ALL]
    first = key(tables[0][1])
    for _, table in tables[1:]:
        assert key(table) == first
    values = [{m.metric: (m.value, m.stderr) for m in imp.metrics} for imp, _ in tables]  # type: ignore[attr-defined]
    assert all(v == values[0] for v in values)


def test_json_log_in_any_layout(tmp_path: Path) -> None:
    """Indented (as inspect writes it) streams sample by sample; compact JSON is parsed whole: same rows."""
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(json.loads(NEW_JSON.read_text())))
    a, b = _load(NEW_JSON)[1], _load(compact)[1]
    assert a.drop(["run_id"]).to_pylist() == b.drop(["run_id"]).to_pylist()


def test_fixture_compression_methods() -> None:
    assert methods(NEW_EVAL) == {93}  # zstd: what current inspect writes, Python 3.11 zipfile cannot read
    assert methods(OLD_EVAL) == {8}  # deflate


def test_store_round_trip_and_reimport_is_noop(workspace) -> None:  # type: ignore[no-untyped-def]
    [first] = import_path(workspace, NEW_EVAL)
    assert not first.already and first.run.n_samples == 16
    ids, values = workspace.scores(first.run.run_id, "arith", "match")
    assert list(ids) == [f"q0{i}" for i in range(1, 9)]
    assert values.tolist() == MATCH
    assert workspace.count_samples(first.run.run_id, where="score < 1") == 8  # primary metric = match
    [again] = import_path(workspace, NEW_EVAL)
    assert again.already and again.run.run_id == first.run.run_id
    assert len(workspace.list_runs()) == 1


def test_folder_is_one_run_per_log(tmp_path: Path, workspace) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    shutil.copy(NEW_EVAL, logs / "a.eval")
    shutil.copy(OLD_JSON, logs / "old" / "b.json")
    (logs / "notes.json").write_text('{"hello": 1}')
    assert detect_importer(logs).name == "inspect_ai"
    loaded = InspectImporter().load(logs)
    assert isinstance(loaded, list) and len(loaded) == 2
    results = import_path(workspace, logs)
    assert len(results) == 2 and len(workspace.list_runs()) == 2


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_detected_by_content_not_name(path: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.bin"
    shutil.copy(path, renamed)
    assert detect_importer(renamed).name == "inspect_ai"
    assert InspectImporter().detect(path)


def test_unrelated_json_and_zip_are_not_inspect(tmp_path: Path) -> None:
    other = tmp_path / "x.json"
    other.write_text('{"results": {"a": {"acc,none": 1}}, "configs": {}}')
    assert not InspectImporter().detect(other)
    z = write_zip(tmp_path / "x.eval", [("readme.txt", b"hello")])
    assert not InspectImporter().detect(z)


def test_value_to_float_matches_inspect() -> None:
    cases = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0, "yes": 1.0, "No": 0.0, "TRUE": 1.0, "false": 0.0,
             "0.25": 0.25, "-3": -3.0, "1e2": 100.0, True: 1.0, False: 0.0, 3: 3.0, 0.75: 0.75}
    for value, expected in cases.items():
        assert value_to_float(value) == expected, value
    for value in ("nan", "inf", "maybe", None, [1], {"a": 1}):
        assert value_to_float(value) is None


def test_dict_valued_scores_and_chat_input(tmp_path: Path) -> None:
    members = read_members(NEW_EVAL)
    sample = json.loads(dict(members)["samples/q01_epoch_1.json"])
    sample["input"] = [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "2+2?"}, {"type": "image", "image": "x"}]}]
    sample["scores"] = {"multi": {"value": {"correct": "C", "fluency": 0.25, "notes": [1]}}}
    sample["target"] = ["4", "four"]
    keep = [(n, d) for n, d in members if not n.startswith("samples/")]
    path = write_zip(tmp_path / "m.eval", [*keep, ("samples/q01_epoch_1.json", json.dumps(sample).encode())])
    _, table = _load(path)
    [row] = table.to_pylist()
    assert dict(row["scores"]) == {"correct": 1.0, "fluency": 0.25}
    assert row["input"] == "system: Be brief.\n\nuser: 2+2?\n[image]"
    assert json.loads(row["target"]) == ["4", "four"]


def test_relogged_sample_keeps_last_and_running_log(tmp_path: Path) -> None:
    members = read_members(NEW_EVAL)
    start = [(n, d) for n, d in members if n == "_journal/start.json"]
    samples = [(n, d) for n, d in members if n.startswith("samples/")]
    redo = json.loads(dict(samples)["samples/q01_epoch_1.json"])
    redo["output"]["completion"] = "four"
    path = write_zip(tmp_path / "running.eval",
                     [*start, *samples, ("samples/q01_epoch_1.json", json.dumps(redo).encode())], method=8)
    imported, table = _load(path)
    assert imported.run.status == "running"  # type: ignore[attr-defined]
    assert imported.metrics == []  # type: ignore[attr-defined]
    assert table.num_rows == 16
    q01 = [r for r in table.to_pylist() if r["sample_id"] == "q01" and r["epoch"] == 0]
    assert [r["prediction"] for r in q01] == ["four"]


def test_decode_sample_keeps_the_row_fields_and_skips_the_rest() -> None:
    kept = set(InspectSample.__struct_fields__)
    for path in (NEW_EVAL, OLD_EVAL):
        for name, raw in read_members(path):
            if name.startswith("samples/"):
                full = json.loads(raw)
                got = decode_sample(raw)
                assert "events" in full and "messages" in full
                assert msgspec.structs.asdict(got) == {k: full.get(k, getattr(InspectSample(id=0), k))
                                                       for k in kept}
    # nested keys that share a name with a kept field do not leak into it; events are never decoded
    sample = (b'{"id":"a","store":{},"events":[{"model_usage":{"x":1},"limit":2}],'
              b'"model_usage":{"m":{"input_tokens":3}},"total_time":1.5,"uuid":"u","error":{"message":"boom"},'
              b'"attachments":{"h":"text"},"events_data":{"calls":[{"attachments":1,"limit":2}]},'
              b'"limit":{"type":"token","limit":9},"turn_count":2}')
    got = decode_sample(sample)
    assert got.limit == {"type": "token", "limit": 9} and got.error == {"message": "boom"}
    assert got.model_usage == {"m": {"input_tokens": 3}} and got.total_time == 1.5 and got.epoch == 1
    assert decode_sample(sample.replace(b',"limit":{"type":"token","limit":9}', b"")).limit is None
    # bare NaN (Python's json writes it) falls back to the stdlib parser
    assert math.isnan(decode_sample(b'{"id":1,"scores":{"s":{"value":NaN}}}').scores["s"]["value"])
    for bad in (b'[{"id":1}]', b'{"epoch":1}', b'"text"'):
        with pytest.raises(msgspec.ValidationError):
            decode_sample(bad)


# -- bad input ----------------------------------------------------------------------------------------------

def _import_all(path: Path) -> int:
    imported = InspectImporter().load(path)
    items = imported if isinstance(imported, list) else [imported]
    return sum(b.num_rows for item in items for b in item.batches)


def _expect_error(path: Path, *needles: str) -> str:
    with pytest.raises(ImportFormatError) as e:
        _import_all(path)
    text = e.value.render()
    assert str(path) in text
    for n in needles:
        assert n in text, text
    return text


@pytest.mark.parametrize("src", [NEW_EVAL, OLD_EVAL], ids=["zstd", "deflate"])
def test_truncated_eval(src: Path, tmp_path: Path) -> None:
    data = src.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        p = tmp_path / f"cut{cut}.eval"
        p.write_bytes(data[:cut])
        _expect_error(p)


def test_truncated_and_wrong_json(tmp_path: Path) -> None:
    data = NEW_JSON.read_bytes()
    p = tmp_path / "t.json"
    p.write_bytes(data[: len(data) // 2])
    _expect_error(p, "not valid JSON")
    p.write_text('{"version": 2, "status": "success", "eval": {"task_id": "x", "task": 3}, "samples": []}')
    _expect_error(p, "'task'")
    d = json.loads(data)
    d["samples"][3] = {"epoch": 1}
    p.write_text(json.dumps(d))
    _expect_error(p, "samples[3]", "missing required field `id`")


def test_wrong_member_json(tmp_path: Path) -> None:
    members = dict(read_members(NEW_EVAL))
    bad = {**members, "samples/q02_epoch_1.json": b'{"id": "q02", "epoch": '}
    _expect_error(write_zip(tmp_path / "a.eval", list(bad.items())), "samples/q02_epoch_1.json", "not valid JSON")
    bad = {**members, "samples/q02_epoch_1.json": b"[1, 2]"}
    _expect_error(write_zip(tmp_path / "b.eval", list(bad.items())), "samples/q02_epoch_1.json", "Expected `object`, got `array`")
    bad = {**members, "samples/q02_epoch_1.json": b'{"id": {"x": 1}, "epoch": 1}'}
    _expect_error(write_zip(tmp_path / "c.eval", list(bad.items())), "sample id must be")
    sample = json.loads(members["samples/q02_epoch_1.json"])
    sample["epoch"] = 2**40
    bad = {**members, "samples/q02_epoch_1.json": json.dumps(sample).encode()}
    _expect_error(write_zip(tmp_path / "e.eval", list(bad.items())), "out of range")
    bad = {**members, "header.json": b'{"eval": []}'}
    _expect_error(write_zip(tmp_path / "d.eval", list(bad.items())), "'eval' should be an object")


@pytest.mark.parametrize("method", [93, 8])
def test_oversize_member_claims_are_refused(method: int, tmp_path: Path) -> None:
    members = read_members(NEW_EVAL)
    p = write_zip(tmp_path / "bomb.eval", members, method=method,
                  size_override={"samples/q05_epoch_1.json": 4_000_000_000})
    _expect_error(p, "samples/q05_epoch_1.json", "refusing")
    # a smaller lie: the data inflates to more than the directory says
    p = write_zip(tmp_path / "lie.eval", members, method=method, size_override={"samples/q05_epoch_1.json": 100})
    _expect_error(p, "samples/q05_epoch_1.json")


def test_zstd_frame_claiming_more_than_directory(tmp_path: Path) -> None:
    import zstandard

    members = read_members(NEW_EVAL)
    p = write_zip(tmp_path / "x.eval", members, method=93)
    raw = p.read_bytes()
    payload = dict(members)["samples/q06_epoch_1.json"]
    framed = zstandard.ZstdCompressor().compress(payload * 4)  # states its (4x) content size
    with ZipReader(p) as z:
        m = next(m for m in z.members() if m.name == "samples/q06_epoch_1.json")
    # rewrite that member's data with the frame that lies, keeping all offsets valid by padding
    start = m.header_offset + 30 + len(m.name)
    if len(framed) <= m.compressed_size:
        raw = raw[:start] + framed + b"\0" * (m.compressed_size - len(framed)) + raw[start + m.compressed_size:]
        p.write_bytes(raw)
        _expect_error(p, "samples/q06_epoch_1.json")


def test_crc_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "crc.eval"
    data = bytearray(OLD_EVAL.read_bytes())
    name = b"samples/q04_epoch_1.json"
    entry = data.rfind(name) - 46  # the last copy of the name is in the central directory
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + 16 : entry + 20] = zlib.crc32(b"x").to_bytes(4, "little")
    p.write_bytes(bytes(data))
    _expect_error(p, "samples/q04_epoch_1.json", "CRC")


def test_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFormatError):
        InspectImporter().load(tmp_path / "empty")
    p = tmp_path / "e.eval"
    p.write_bytes(b"")
    assert not InspectImporter().detect(p)
    with pytest.raises(ImportFormatError):
        _import_all(p)


def _corrupt(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, byte in edits:
        buf[pos % len(buf)] = byte
    return bytes(buf[:cut] if cut is not None else buf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(ALL),
       edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
       cut=st.one_of(st.none(), st.integers(min_value=0, max_value=300_000)))
def test_fuzz_only_import_format_error_escapes(tmp_path: Path, which: Path, edits: list[tuple[int, int]],
                                               cut: int | None) -> None:
    p = tmp_path / f"fuzz{which.suffix}"
    p.write_bytes(_corrupt(which.read_bytes(), edits, cut))
    try:
        _import_all(p)
    except ImportFormatError as e:
        assert str(p) in e.render()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2000), zip_head=st.booleans())
def test_fuzz_random_bytes(tmp_path: Path, blob: bytes, zip_head: bool) -> None:
    p = tmp_path / "rand.eval"
    p.write_bytes((b"PK\x03\x04" if zip_head else b"") + blob)
    try:
        _import_all(p)
    except ImportFormatError:
        pass
