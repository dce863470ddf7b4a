"""Round trip, tamper detection naming the member, signatures, and the 0/1/2 verdicts of verify."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import pytest

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.signing import generate_keys, pae
from evalkeeper.bundle.verify import verify_bundle
from evalkeeper.bundle.writer import create_bundle
from evalkeeper.core.records import Run
from evalkeeper.store import Workspace

from ._tarkit import compress_with_trailer, members, read_tar, rewrite


def test_round_trip_is_intact_and_complete(bundle_path: Path) -> None:
    rep = verify_bundle(bundle_path, file_sha256=True)
    assert rep.status == "intact" and rep.exit_code == 0 and rep.problems == []
    names = [i.name for i, _ in members(bundle_path)]
    assert names[0] == L.MARKER
    for required in (L.RUN, L.METRICS, L.ENVIRONMENT, L.REQUIREMENTS, L.DOCKERFILE, L.REPRODUCE, L.MANIFEST,
                     L.STATEMENT):
        assert required in names
    assert sum(n.startswith("samples/") and n.endswith(".parquet") for n in names) >= 1
    assert sum(n.startswith("tasks/") for n in names) == 2
    manifest = json.loads(dict((i.name, d) for i, d in members(bundle_path))[L.MANIFEST])
    listed = [f["path"] for f in manifest["files"]]
    assert sorted(listed) == sorted(set(names) - L.UNLISTED)  # every member, nothing else
    import hashlib

    assert rep.file_sha256 == hashlib.sha256(bundle_path.read_bytes()).hexdigest()


def test_statement_is_in_toto_v1_with_every_member_as_subject(bundle_path: Path) -> None:
    data = dict((i.name, d) for i, d in members(bundle_path))
    st = json.loads(data[L.STATEMENT])
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    import hashlib

    subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
    assert set(subjects) == set(data) - {L.STATEMENT, L.ENVELOPE}
    for name, digest in subjects.items():
        assert hashlib.sha256(data[name]).hexdigest() == digest
    params = st["predicate"]["buildDefinition"]["externalParameters"]
    assert [t["name"] for t in params["tasks"]] == ["arith", "mc"]
    assert st["predicate"]["runDetails"]["builder"]["id"].endswith("/evalkeeper")


def _edit_member(src: Path, dst: Path, name: str, offset: int) -> Path:
    """Flip one byte inside one member's data (tar rebuilt, trailer recomputed: only the digest tells)."""
    ms = []
    for info, data in members(src):
        if info.name == name:
            b = bytearray(data)
            b[offset % len(b)] ^= 0x20
            data = bytes(b)
        ms.append((info, data))
    return rewrite(src, dst, ms)


def test_flipped_byte_in_any_member_names_that_member(bundle_path: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    for info, data in members(bundle_path):
        bad = _edit_member(bundle_path, tmp_path / "edited.ekb", info.name, rng.randrange(len(data)))
        rep = verify_bundle(bad)
        assert rep.status == "tampered" and rep.exit_code == 1, info.name
        named = {p.member for p in rep.problems}
        assert info.name in named, (info.name, rep.problems)


def test_flipped_byte_anywhere_in_the_file_is_never_intact(bundle_path: Path, tmp_path: Path) -> None:
    raw = bundle_path.read_bytes()
    rng = random.Random(11)
    positions = sorted({0, 4, 5, 6, len(raw) - 1, len(raw) - L.TRAILER_LEN, len(raw) - L.TRAILER_LEN - 1}
                       | {rng.randrange(len(raw)) for _ in range(150)})
    named_members = 0
    for pos in positions:
        b = bytearray(raw)
        b[pos] ^= 1 << rng.randrange(8)
        p = tmp_path / "flip.ekb"
        p.write_bytes(b)
        rep = verify_bundle(p)
        assert rep.status != "intact", pos
        assert rep.exit_code in (1, 2)
        assert rep.problems
        if rep.exit_code == 1:
            first = rep.problems[0].member
            named_members += not first.startswith("<")
    assert named_members > len(positions) // 2  # most flips are attributed to a named member


def test_trailer_catches_changes_members_cannot_see(bundle_path: Path, tmp_path: Path) -> None:
    tar = bytearray(read_tar(bundle_path))
    assert tar[-1] == 0
    tar[-1] = 1  # inside the end-of-archive padding: no member changes
    body = compress_with_trailer(bytes(tar))[: -L.TRAILER_LEN]
    bad = tmp_path / "pad.ekb"
    bad.write_bytes(body + bundle_path.read_bytes()[-L.TRAILER_LEN:])  # keep the original trailer
    rep = verify_bundle(bad)
    assert rep.status == "tampered"
    named = {p.member for p in rep.problems}
    assert "<compressed container>" in named  # the trailer digest no longer matches
    assert named <= {"<compressed container>", "<tar header after provenance.intoto.json>"}  # no member blamed


def test_appended_bytes_and_truncation_are_detected(bundle_path: Path, tmp_path: Path) -> None:
    raw = bundle_path.read_bytes()
    p = tmp_path / "x.ekb"
    p.write_bytes(raw + b"\0" * 16)
    assert verify_bundle(p).status == "tampered"
    p.write_bytes(raw[: len(raw) // 2])
    rep = verify_bundle(p)
    assert rep.status == "tampered" and rep.problems


def test_manifest_edit_is_named(bundle_path: Path, tmp_path: Path) -> None:
    ms = []
    for info, data in members(bundle_path):
        if info.name == L.MANIFEST:
            m = json.loads(data)
            m["files"] = m["files"][:-1]  # forger drops REPRODUCE.md from the manifest, keeps the self-digest
            data = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        ms.append((info, data))
    rep = verify_bundle(rewrite(bundle_path, tmp_path / "m.ekb", ms))
    assert rep.exit_code == 1
    assert L.MANIFEST in {p.member for p in rep.problems}


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    assert verify_bundle(tmp_path / "nope.ekb").exit_code == 2
    (tmp_path / "text.ekb").write_text("hello")
    assert verify_bundle(tmp_path / "text.ekb").exit_code == 2
    import zstandard

    (tmp_path / "notar.ekb").write_bytes(zstandard.ZstdCompressor().compress(b"just text, not a tar" * 40))
    assert verify_bundle(tmp_path / "notar.ekb").exit_code == 2


def test_signature_ok_wrong_key_and_tampered_statement(workspace: Workspace, stored_run: Run,
                                                       tmp_path: Path) -> None:
    good = generate_keys(tmp_path / "k1")
    other = generate_keys(tmp_path / "k2")
    signed = create_bundle(workspace, stored_run.run_id, tmp_path / "s.ekb", sign_key=good.private_path)
    assert signed.key_id == good.key_id
    ok = verify_bundle(signed.path, public_key_path=good.public_path)
    assert ok.exit_code == 0 and ok.signature == "valid" and ok.signed_by == [good.key_id]
    assert verify_bundle(signed.path).signature == "present (not checked)"

    wrong = verify_bundle(signed.path, public_key_path=other.public_path)
    assert wrong.exit_code == 1 and wrong.signature == "invalid"
    assert [p.member for p in wrong.problems] == [L.ENVELOPE]

    # A forger edits the statement (e.g. claims another model) and re-signs nothing: the envelope no
    # longer matches, even though they kept the statement's own structure valid.
    ms = []
    for info, data in members(signed.path):
        if info.name == L.STATEMENT:
            data = data.replace(b'"name":"test-model"', b'"name":"gpt-9000000"')
        ms.append((info, data))
    forged = rewrite(signed.path, tmp_path / "forged.ekb", ms)
    rep = verify_bundle(forged, public_key_path=good.public_path)
    assert rep.exit_code == 1
    assert L.ENVELOPE in {p.member for p in rep.problems}

    unsigned = create_bundle(workspace, stored_run.run_id, tmp_path / "u.ekb")
    rep = verify_bundle(unsigned.path, public_key_path=good.public_path)
    assert rep.exit_code == 1 and rep.problems[0].member == L.ENVELOPE


def test_envelope_signature_covers_pae_not_raw_payload(workspace: Workspace, stored_run: Run,
                                                       tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    kp = generate_keys(tmp_path / "k")
    res = create_bundle(workspace, stored_run.run_id, tmp_path / "s.ekb", sign_key=kp.private_path)
    env = json.loads(dict((i.name, d) for i, d in members(res.path))[L.ENVELOPE])
    pub = load_pem_public_key(kp.public_path.read_bytes())
    payload = base64.b64decode(env["payload"])
    sig = base64.b64decode(env["signatures"][0]["sig"])
    pub.verify(sig, pae(env["payloadType"], payload))  # raises if not over PAE  # type: ignore[union-attr]
    assert env["payloadType"] == "application/vnd.in-toto+json"


def test_pae_matches_dsse_spec_vector() -> None:
    # From the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


def test_keys_are_not_overwritten_and_private_key_is_0600(tmp_path: Path) -> None:
    from evalkeeper.core.errors import EvalkeeperError

    kp = generate_keys(tmp_path / "keys")
    assert kp.private_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(EvalkeeperError, match="refusing to overwrite"):
        generate_keys(tmp_path / "keys")


def test_tar_members_are_plain_files_with_fixed_metadata(bundle_path: Path) -> None:
    for info, _ in members(bundle_path):
        assert info.type == tarfile.REGTYPE and info.mode == 0o644 and info.uid == 0 and info.uname == ""


def test_swapped_run_record_is_caught_even_with_a_rewritten_manifest(bundle_path: Path, tmp_path: Path) -> None:
    """A forger replaces run.json by another run's record and fixes the unsigned manifest and statement."""
    import hashlib

    from evalkeeper.core.ids import canonical_json

    ms = {i.name: (i, d) for i, d in members(bundle_path)}
    run = json.loads(ms[L.RUN][1])
    run["run_id"] = "run-someone-else"
    new_run = json.dumps(run).encode()
    digest = hashlib.sha256(new_run).hexdigest()
    manifest = json.loads(ms[L.MANIFEST][1])
    for f in manifest["files"]:
        if f["path"] == L.RUN:
            f["sha256"], f["size"] = digest, len(new_run)
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    manifest["manifest_sha256"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    new_manifest = canonical_json(manifest).encode()
    st = json.loads(ms[L.STATEMENT][1])
    for s in st["subject"]:
        if s["name"] == L.RUN:
            s["digest"]["sha256"] = digest
        if s["name"] == L.MANIFEST:
            s["digest"]["sha256"] = hashlib.sha256(new_manifest).hexdigest()
    out = []
    for name, (info, data) in ms.items():
        data = {L.RUN: new_run, L.MANIFEST: new_manifest, L.STATEMENT: canonical_json(st).encode()}.get(name, data)
        out.append((info, data))
    rep = verify_bundle(rewrite(bundle_path, tmp_path / "swap.ekb", out))
    assert rep.exit_code == 1
    assert [p.member for p in rep.problems] == [L.RUN] and "run ids disagree" in rep.problems[0].message
