"""Safe extraction: every unsafe construct is refused before anything leaves a fresh temp folder."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkeeper.bundle.extract import Limits, UnsafeBundle, extract_to, safe_extract
from evalkeeper.bundle.verify import verify_bundle

from ._tarkit import members, regular, rewrite, special, with_prefix


def _refused(bad: Path, tmp_path: Path, expect: str, limits: Limits = Limits()) -> UnsafeBundle:
    """The bundle is refused, the error says why, and the extraction parent folder stays empty."""
    parent = tmp_path / "extract-parent"
    parent.mkdir()
    with pytest.raises(UnsafeBundle) as info:
        safe_extract(bad, limits=limits, tmp_parent=parent)
    assert expect in str(info.value)
    assert list(parent.iterdir()) == []
    rep = verify_bundle(bad, limits=limits)
    assert rep.status == "tampered" and rep.exit_code == 1
    assert expect in str(rep.problems[0])
    return info.value


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("../escape.json", "parent-directory"),
        ("reports/../../escape.json", "parent-directory"),
        ("/tmp/evalkeeper-abs-escape.json", "absolute path"),
        ("C:/Windows/escape.json", "drive-letter"),
        ("c:escape.json", "drive-letter"),
        ("reports\\..\\escape.json", "backslash"),
        ("reports//x.json", "empty or '.'"),
        ("./x.json", "empty or '.'"),
        ("reports/\u2028odd.json", "characters outside"),
    ],
)
def test_bad_paths_are_refused(bundle_path: Path, tmp_path: Path, name: str, expect: str) -> None:
    bad = with_prefix(bundle_path, tmp_path / "bad.ekb", [regular(name)])
    err = _refused(bad, tmp_path, expect)
    assert err.member == name
    assert not Path("/tmp/evalkeeper-abs-escape.json").exists()
    assert not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize(
    ("kind", "link", "expect"),
    [
        (tarfile.SYMTYPE, "/etc/passwd", "symbolic link"),
        (tarfile.LNKTYPE, "run.json", "hard link"),
        (tarfile.CHRTYPE, "", "device file"),
        (tarfile.BLKTYPE, "", "device file"),
        (tarfile.FIFOTYPE, "", "FIFO"),
        (tarfile.DIRTYPE, "", "directory entry"),
        (tarfile.CONTTYPE, "", "unsupported tar member type"),
    ],
)
def test_links_devices_fifos_dirs_are_refused(bundle_path: Path, tmp_path: Path, kind: bytes, link: str,
                                               expect: str) -> None:
    bad = with_prefix(bundle_path, tmp_path / "bad.ekb", [special("reports/thing.json", kind, link)])
    _refused(bad, tmp_path, expect)


def test_duplicate_names_are_refused(bundle_path: Path, tmp_path: Path) -> None:
    ms = members(bundle_path)
    run_json = next(m for m in ms if m[0].name == "run.json")
    bad = with_prefix(bundle_path, tmp_path / "dup.ekb", [regular("run.json", run_json[1])], at=len(ms) - 1)
    _refused(bad, tmp_path, "duplicate member name")


def test_case_insensitive_duplicates_are_refused(bundle_path: Path, tmp_path: Path) -> None:
    bad = with_prefix(bundle_path, tmp_path / "dup.ekb", [regular("RUN.json")], at=3)
    _refused(bad, tmp_path, "duplicate member name")


def test_member_not_in_manifest_is_refused_and_nothing_is_kept(bundle_path: Path, tmp_path: Path) -> None:
    bad = with_prefix(bundle_path, tmp_path / "extra.ekb", [regular("reports/added.json", b"{}")], at=3)
    err = _refused(bad, tmp_path, "not listed in manifest.json")
    assert err.member == "reports/added.json"
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeBundle):
        extract_to(bad, dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ekb-extract-")] == []


def test_missing_member_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    ms = [m for m in members(bundle_path) if m[0].name != "metrics.json"]
    bad = rewrite(bundle_path, tmp_path / "missing.ekb", ms)
    err = _refused(bad, tmp_path, "missing from the bundle")
    assert err.member == "metrics.json"


@pytest.mark.parametrize(
    ("name", "data", "expect"),
    [
        ("reports/model.pkl", b"not even a pickle", "pickle-capable file type '.pkl'"),
        ("reports/weights.pt", b"x", "pickle-capable file type '.pt'"),
        ("reports/a.joblib", b"x", "pickle-capable"),
        ("reports/data.json", pickle.dumps({"a": 1}, protocol=4), "content is a Python pickle"),
        ("reports/data.parquet", pickle.dumps([1, 2], protocol=2), "content is a Python pickle"),
        ("reports/tool.exe", b"MZ", "not an allowed bundle data format"),
        ("reports/run.sh", b"#!/bin/sh", "not an allowed bundle data format"),
    ],
)
def test_pickles_and_unknown_types_are_refused(bundle_path: Path, tmp_path: Path, name: str, data: bytes,
                                               expect: str) -> None:
    bad = with_prefix(bundle_path, tmp_path / "pk.ekb", [regular(name, data)])
    _refused(bad, tmp_path, expect)


def test_torch_style_zip_with_pickle_inside_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": [1.0]}))
    bad = with_prefix(bundle_path, tmp_path / "zip.ekb", [regular("reports/weights.json", buf.getvalue())])
    _refused(bad, tmp_path, "content is a Python pickle")


def test_entry_count_cap(bundle_path: Path, tmp_path: Path) -> None:
    n = len(members(bundle_path))
    _refused(bundle_path, tmp_path, f"more than {n - 1} entries", Limits(max_entries=n - 1))
    assert verify_bundle(bundle_path, limits=Limits(max_entries=n)).status == "intact"


def test_member_size_cap(bundle_path: Path, tmp_path: Path) -> None:
    big = max(m[0].size for m in members(bundle_path))
    _refused(bundle_path, tmp_path, "exceeds the", Limits(max_member_bytes=big - 1))


def test_total_size_cap(bundle_path: Path, tmp_path: Path) -> None:
    total = sum(m[0].size for m in members(bundle_path))
    _refused(bundle_path, tmp_path, "more than", Limits(max_total_bytes=total - 1, ratio_slack_bytes=1 << 30))


def test_decompression_bomb_is_refused_by_ratio(bundle_path: Path, tmp_path: Path) -> None:
    # 64 MiB of zeros compresses ~5000x: the ratio cap stops reading long before it is all inflated.
    bomb = with_prefix(bundle_path, tmp_path / "bomb.ekb", [regular("reports/zeros.json", bytes(64 << 20))])
    assert bomb.stat().st_size < 1 << 20
    err = _refused(bomb, tmp_path, "decompression bomb", Limits(ratio_slack_bytes=1 << 20))
    assert err.member == "<archive>"


def test_clean_bundle_extracts_every_member(bundle_path: Path, tmp_path: Path) -> None:
    dest = extract_to(bundle_path, tmp_path / "out")
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == sorted(m[0].name for m in members(bundle_path))
    assert (dest / "run.json").read_bytes() == next(d for i, d in members(bundle_path) if i.name == "run.json")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "/", "\\", ":", "C:", "x.json", "~", "\x00", "é"]),
                min_size=1, max_size=6))
def test_accepted_names_never_leave_the_folder(parts: list[str]) -> None:
    """Property: whatever `name_problem` accepts resolves inside the extraction folder."""
    import os

    from evalkeeper.bundle._layout import name_problem

    name = "".join(parts)
    if name_problem(name) is None:
        root = "/safe/root"
        resolved = os.path.normpath(os.path.join(root, *name.split("/")))
        assert resolved.startswith(root + "/") and "\\" not in name and ":" not in name
