"""Verify a bundle: every member digest, manifest completeness, the provenance statement, the signature
and the whole-file checksum trailer. Problems always name the member they concern."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.extract import BundleUnreadable, Limits, Scan, UnsafeBundle, scan_bundle
from evalkeeper.bundle.provenance import PREDICATE_TYPE, STATEMENT_TYPE
from evalkeeper.bundle.signing import PAYLOAD_TYPE, load_public_key, open_envelope
from evalkeeper.core.ids import canonical_json

EXIT_INTACT, EXIT_TAMPERED, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Problem:
    member: str
    message: str

    def __str__(self) -> str:
        return f"{self.member}: {self.message}"


@dataclass
class VerifyReport:
    path: Path
    status: str  # intact | tampered | unreadable
    problems: list[Problem] = field(default_factory=list)
    signature: str = "unsigned"  # unsigned | valid | invalid | present (not checked)
    signed_by: list[str] = field(default_factory=list)
    file_sha256: str | None = None
    members: int = 0
    manifest: dict[str, Any] | None = None
    statement: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return {"intact": EXIT_INTACT, "tampered": EXIT_TAMPERED}.get(self.status, EXIT_UNREADABLE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "status": self.status,
            "exit_code": self.exit_code,
            "problems": [{"member": p.member, "message": p.message} for p in self.problems],
            "signature": self.signature,
            "signed_by": self.signed_by,
            "sha256": self.file_sha256,
            "members": self.members,
        }


def _claims(raw: bytes | None, kind: str) -> dict[str, str]:
    """Digests a manifest/statement records per member, read leniently (even from an edited file), so a
    member can still be named when the damage also reached the manifest (zstd back-references)."""
    try:
        data = json.loads(raw or b"")
        if kind == "manifest":
            return {e["path"]: e["sha256"] for e in data["files"] if isinstance(e["sha256"], str)}
        return {
            s["name"]: s["digest"]["sha256"]
            for s in data["subject"]
            if isinstance(s["digest"]["sha256"], str)
        }
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return {}


def _check_members(scan: Scan, problems: list[Problem]) -> None:
    man, st = _claims(scan.meta.get(L.MANIFEST), "manifest"), _claims(scan.meta.get(L.STATEMENT), "statement")
    for name, m in scan.members.items():
        if name in (L.STATEMENT, L.ENVELOPE):
            continue
        claims = {c for c in (man.get(name), st.get(name)) if c}
        if claims and m.sha256 not in claims:
            problems.append(
                Problem(
                    name,
                    f"modified: sha256 {m.sha256[:16]}… differs from the digest recorded "
                    f"when the bundle was made ({sorted(claims)[0][:16]}…)",
                )
            )


def _check_run_ids(scan: Scan, problems: list[Problem]) -> None:
    """The marker, the manifest and run.json must all speak of the same run (a swapped run.json whose
    digest was also swapped into an unsigned manifest is still caught here)."""
    ids: dict[str, Any] = {}
    for member in (L.MARKER, L.MANIFEST, L.RUN):
        try:
            ids[member] = json.loads(scan.meta[member]).get("run_id")
        except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
            continue
    if len(set(map(str, ids.values()))) > 1:
        problems.append(Problem(L.RUN, f"run ids disagree between members: {ids}"))


def _check_manifest(scan: Scan, problems: list[Problem]) -> dict[str, Any] | None:
    raw = scan.meta.get(L.MANIFEST)
    if raw is None:
        problems.append(Problem(L.MANIFEST, "missing"))
        return None
    manifest, why = L.parse_manifest(raw)
    if manifest is None:
        problems.append(Problem(L.MANIFEST, why or "unreadable"))
        return None
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        if entry["path"] in listed or entry["path"] in L.UNLISTED:
            problems.append(Problem(L.MANIFEST, f"lists {entry['path']!r} twice or lists a reserved name"))
        listed[entry["path"]] = entry
    for name, entry in listed.items():
        got = scan.members.get(name)
        if got is None:
            problems.append(Problem(name, "missing from the bundle (listed in manifest.json)"))
        elif got.sha256 == entry["sha256"] and got.size != entry["size"]:
            problems.append(Problem(L.MANIFEST, f"size of {name!r} altered"))
    for name in scan.members:
        if name not in listed and name not in L.UNLISTED:
            problems.append(Problem(name, "not listed in manifest.json (added after bundling)"))
    return manifest


def _check_statement(
    scan: Scan, manifest: dict[str, Any] | None, problems: list[Problem]
) -> dict[str, Any] | None:
    raw = scan.meta.get(L.STATEMENT)
    if raw is None:
        problems.append(Problem(L.STATEMENT, "missing"))
        return None
    try:
        st = json.loads(raw)
        subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
        ok_type = st.get("_type") == STATEMENT_TYPE and st.get("predicateType") == PREDICATE_TYPE
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        problems.append(Problem(L.STATEMENT, f"not a valid in-toto statement ({type(exc).__name__}: {exc})"))
        return None
    if not ok_type:
        problems.append(Problem(L.STATEMENT, "unexpected statement or predicate type"))
    if canonical_json(st).encode() != raw:
        problems.append(Problem(L.STATEMENT, "bytes differ from the statement's canonical form (edited)"))
    man = {e["path"]: e["sha256"] for e in (manifest or {}).get("files", [])}
    if manifest is not None:
        man[L.MANIFEST] = scan.members[L.MANIFEST].sha256
    for name, digest in subjects.items():
        got = scan.members.get(name)
        if got is None:
            problems.append(Problem(L.STATEMENT, f"subject {name!r} is not in the bundle"))
        elif got.sha256 != digest and man.get(name) == got.sha256:
            problems.append(Problem(L.STATEMENT, f"subject {name!r} digest altered"))
    expected = {n for n in scan.members if n not in (L.STATEMENT, L.ENVELOPE)}
    for name in sorted(expected - set(subjects)):
        problems.append(Problem(L.STATEMENT, f"member {name!r} is not a subject of the statement"))
    return st if isinstance(st, dict) else None


def check_scan(
    scan: Scan, *, public_key_path: str | os.PathLike[str] | None = None, report: VerifyReport | None = None
) -> list[Problem]:
    """All problems found in a scanned bundle, most specific (member content) first."""
    problems: list[Problem] = []
    if scan.stream_error:
        problems.append(
            Problem(
                scan.stream_error_member or "<archive>",
                f"corrupt compressed data while reading this member ({scan.stream_error}); "
                "members after it could not be read",
            )
        )
    for offset, after in scan.gaps:
        problems.append(
            Problem(
                f"<tar header after {after}>",
                f"unparseable tar data at offset {offset} (a damaged member header, or bytes added)",
            )
        )
    names = list(scan.members)
    if not names or names[0] != L.MARKER:
        problems.append(Problem(L.MARKER, "missing or not the first member"))
    _check_members(scan, problems)
    _check_run_ids(scan, problems)
    manifest = _check_manifest(scan, problems)
    statement = _check_statement(scan, manifest, problems)
    envelope = scan.meta.get(L.ENVELOPE)
    if report is not None:
        report.manifest, report.statement = manifest, statement
    if envelope is not None:
        key = load_public_key(public_key_path) if public_key_path else None
        chk = open_envelope(envelope, key)
        if report is not None:
            report.signed_by = chk.key_ids
            report.signature = {True: "valid", False: "invalid", None: "present (not checked)"}[
                chk.signature_valid
            ]
        if chk.problem:
            problems.append(Problem(L.ENVELOPE, chk.problem))
        elif chk.payload != scan.meta.get(L.STATEMENT) or chk.payload_type != PAYLOAD_TYPE:
            problems.append(Problem(L.ENVELOPE, "signed payload differs from provenance.intoto.json"))
            if report is not None:
                report.signature = "invalid"
    elif public_key_path:
        problems.append(Problem(L.ENVELOPE, "bundle is not signed, but a public key was given"))
    if scan.trailer is None:
        problems.append(Problem("<file trailer>", "missing or damaged whole-file checksum trailer"))
    elif scan.trailer != (scan.body_crc32, scan.file_size - L.TRAILER_LEN):
        problems.append(
            Problem(
                "<compressed container>",
                "file bytes or length differ from the checksum trailer (zstd/tar bytes altered)",
            )
        )
    # Content mismatches of named members are the most specific evidence: list them first.
    return sorted(problems, key=lambda p: 0 if p.message.startswith("modified") else 1)


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    public_key_path: str | os.PathLike[str] | None = None,
    limits: Limits = Limits(),
    file_sha256: bool = False,
) -> VerifyReport:
    """Never raises for a bad bundle: the report's status/exit_code say intact, tampered or unreadable.
    `file_sha256` also reports the file's sha256 (to compare with a published digest)."""
    report = VerifyReport(Path(path), "unreadable")
    try:
        scan = scan_bundle(path, limits=limits, file_sha256=file_sha256)
    except BundleUnreadable as exc:
        report.problems.append(Problem("<file>", exc.message))
        return report
    except UnsafeBundle as exc:
        report.status = "tampered"
        report.problems.append(Problem(exc.member, exc.message))
        return report
    report.members = len(scan.members)
    report.file_sha256 = scan.file_sha256
    if public_key_path:  # a bad key file is the caller's input error, not a bundle problem
        load_public_key(public_key_path)
    report.problems = check_scan(scan, public_key_path=public_key_path, report=report)
    report.status = "tampered" if report.problems else "intact"
    ours = L.MARKER in scan.members or L.MANIFEST in scan.members or scan.trailer is not None
    if not ours:  # zstd data without a bundle marker, manifest or trailer: not a bundle at all
        report.status = "unreadable"
        report.problems.insert(
            0, Problem("<file>", "not an evalkeeper bundle (no marker, manifest or trailer)")
        )
    return report


def inspect_bundle(path: str | os.PathLike[str], *, public_key_path: str | None = None) -> dict[str, Any]:
    """Manifest, environment summary, provenance and verification status, for humans and --json."""
    from evalkeeper.bundle.env import summarize_environment

    report = VerifyReport(Path(path), "unreadable")
    scan = scan_bundle(path, file_sha256=True)
    report.problems = check_scan(scan, public_key_path=public_key_path, report=report)
    report.status = "tampered" if report.problems else "intact"
    report.members = len(scan.members)
    report.file_sha256 = scan.file_sha256
    env = json.loads(scan.meta[L.ENVIRONMENT]) if L.ENVIRONMENT in scan.meta else None
    run = json.loads(scan.meta[L.RUN]) if L.RUN in scan.meta else {}
    pred = (report.statement or {}).get("predicate", {})
    return {
        "verification": report.to_dict(),
        "run": {
            "run_id": run.get("run_id"),
            "model": (run.get("model") or {}).get("name"),
            "producer": (run.get("provenance") or {}).get("producer"),
            "n_samples": run.get("n_samples"),
            "tasks": [t.get("name") for t in run.get("tasks", [])],
        },
        "files": [{"path": m.name, "size": m.size, "sha256": m.sha256} for m in scan.members.values()],
        "uncompressed_bytes": scan.uncompressed_bytes,
        "environment": summarize_environment(env),
        "provenance": {
            "predicateType": (report.statement or {}).get("predicateType"),
            "builder": pred.get("runDetails", {}).get("builder"),
            "externalParameters": pred.get("buildDefinition", {}).get("externalParameters"),
            "resolvedDependencies": pred.get("buildDefinition", {}).get("resolvedDependencies"),
        },
    }
