"""Reproducibility files generated per run (S7P4): pinned requirements, a Dockerfile, REPRODUCE.md.

They are derived from the environment snapshot recorded with the run, so they describe the machine
that produced the scores, not the one that happens to build the bundle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from evalkeeper.bundle.env import SCORE_RELEVANT_PACKAGES, summarize_environment
from evalkeeper.core.records import Run

# Local version labels that name a non-PyPI wheel index.
_TORCH_INDEX = "https://download.pytorch.org/whl/{label}"
_REQ_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BaselineLineage:
    name: str
    history: list[tuple[str, str]]  # (run_id, set_at ISO), oldest first


def requirements_lock(env: dict[str, Any] | None) -> str:
    """`name==version` for every distribution in the snapshot; torch-style local builds get their index."""
    packages = (env or {}).get("packages") or {}
    lines = [
        "# Pinned from the environment snapshot recorded with this run (evalkeeper).",
        f"# Python {((env or {}).get('python') or {}).get('version', 'unknown')}; "
        f"captured {(env or {}).get('captured_at', 'unknown')}.",
    ]
    if not isinstance(packages, dict) or not packages:
        lines.append("# No package list was recorded for this run: nothing to pin.")
        return "\n".join(lines) + "\n"
    labels = sorted({v.split("+", 1)[1] for v in packages.values() if "+" in str(v)})
    for label in labels:
        if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", label):
            lines.append(f"--extra-index-url {_TORCH_INDEX.format(label=label)}")
    for name, version in sorted(packages.items()):
        if not _REQ_NAME.match(name) or not version or version == "unknown":
            lines.append(f"# {name} (version unknown, not pinned)")
            continue
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def dockerfile(run: Run, env: dict[str, Any] | None) -> str:
    """A Dockerfile on the same Python version that installs the lock and re-runs via the bundle."""
    py = ((env or {}).get("python") or {}).get("version") or "3.11"
    gpu = summarize_environment(env).get("gpu") if env else None
    native = run.provenance.producer == "evalkeeper"
    cmd = (
        '["evalkeeper", "reproduce", "/bundle/run.ekb"]'
        if native
        else '["evalkeeper", "inspect-bundle", "/bundle/run.ekb"]'
    )
    lines = [
        f"# Recreates the environment of run {run.run_id} (producer: {run.provenance.producer}).",
        f"# Original hardware: GPU {gpu or 'unknown'}; build on a matching host for exact numerics.",
        f"FROM python:{py}-slim",
        "ENV PYTHONHASHSEED=0 PIP_NO_CACHE_DIR=1",
        "WORKDIR /bundle",
        "COPY requirements.lock.txt /bundle/requirements.lock.txt",
        "# A distribution installed from a source checkout (not on PyPI) must be COPY'd in and installed",
        "# from there instead; remove its line from the lock first.",
        "RUN pip install --no-deps -r /bundle/requirements.lock.txt",
        "# Put the bundle next to this Dockerfile as run.ekb before building.",
        "COPY run.ekb /bundle/run.ekb",
        "RUN evalkeeper verify /bundle/run.ekb",
        f"CMD {cmd}",
    ]
    if not native:
        lines.insert(
            2,
            f"# Scores came from {run.provenance.producer}; re-running them needs that tool "
            f"({run.provenance.producer_version or 'version unknown'}).",
        )
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return "—" if value in (None, "", [], {}) else str(value)


def reproduce_markdown(
    run: Run,
    env: dict[str, Any] | None,
    *,
    content_digest: str | None,
    lineage: list[BaselineLineage],
    previous_bundle: str | None,
) -> str:
    """The human document: exact command, versions, fingerprints, seeds, lineage, digests."""
    native = run.provenance.producer == "evalkeeper"
    s = summarize_environment(env) if env else {}
    pk = (env or {}).get("packages") or {}
    out = [f"# Reproducing run `{run.run_id}`", ""]
    out += [
        f"- Model: `{run.model.name}` (backend `{run.model.backend}`, revision {_fmt(run.model.revision)}, "
        f"digest {_fmt(run.model.digest)})",
        f"- Produced by: `{run.provenance.producer}` {_fmt(run.provenance.producer_version)}",
        f"- Started: {_fmt(run.started_at or run.created_at)}; finished: {_fmt(run.finished_at)}",
        f"- Samples: {run.n_samples}; run seed: {_fmt(run.seed)}",
        f"- Bundle data digest: `{content_digest or 'n/a'}` (sha256 over the path and sha256 of every "
        "data member: run, metrics, environment, tasks, samples, reports; see manifest.json)",
        "- The `.ekb` file's sha256 (`sha256sum run.ekb`) is printed by `evalkeeper bundle` and "
        "`evalkeeper verify --sha256`, and recorded in the run's provenance in the workspace; the file's "
        "last 28 bytes carry the CRC-32 and length of everything before them, so `verify` needs nothing "
        "external to detect damage.",
        "",
    ]
    if previous_bundle:
        out += [f"- Previous bundle of this run: `{previous_bundle}`", ""]
    out += ["## How to re-run", ""]
    if native:
        out += [
            "```sh",
            "evalkeeper verify run.ekb            # integrity (and --pubkey for the signature)",
            "evalkeeper reproduce run.ekb         # re-run the recorded task specs and test equivalence",
            "```",
            "",
        ]
        if run.provenance.command:
            out += ["Original command:", "", "```sh", run.provenance.command, "```", ""]
    else:
        out += [
            f"These scores were produced by **{run.provenance.producer}**, not by evalkeeper's runner: "
            "re-running them needs that tool, at the version below, with the original command.",
            "",
        ]
        if run.provenance.command:
            out += ["```sh", run.provenance.command, "```", ""]
        if run.provenance.source_sha256:
            out += [
                f"Imported source file sha256: `{run.provenance.source_sha256}` "
                f"({_fmt(run.provenance.source_path)})",
                "",
            ]
    out += [
        "With Docker (same Python, pinned packages):",
        "",
        "```sh",
        "docker build -t evalkeeper-repro . && docker run --rm evalkeeper-repro",
        "```",
        "",
    ]
    out += [
        "## Tasks, fingerprints and seeds",
        "",
        "| task | version | n-shot | seed | samples | dataset sha256 | prompt sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in run.tasks:
        out.append(
            f"| {t.name} | {_fmt(t.version)} | {_fmt(t.n_shot)} | {_fmt(t.seed)} | {_fmt(t.n_samples)} "
            f"| `{_fmt(t.dataset_fingerprint)}` | `{_fmt(t.prompt_fingerprint)}` |"
        )
    out += [
        "",
        "Generation parameters: "
        + (", ".join(f"{k}={v}" for k, v in sorted(run.model.generation.items())) or "not recorded"),
        "",
    ]
    out += ["## Versions", ""]
    if s:
        out += [
            f"- Python {s.get('python')} on {s.get('os')} (kernel {s.get('kernel')})",
            f"- CPU {s.get('cpu')}, memory {s.get('memory_gib')} GiB",
            f"- GPU {s.get('gpu')}, driver {_fmt(s.get('gpu_driver'))}, CUDA {_fmt(s.get('cuda'))}",
            f"- Container: {s.get('container')} (image digest {_fmt(s.get('image_digest'))})",
            f"- Code: git {_fmt(s.get('git'))}",
            f"- evalkeeper {_fmt(s.get('evalkeeper'))}; {s.get('packages')} distributions pinned in "
            "`requirements.lock.txt`",
            "",
        ]
        relevant = [f"{n}=={pk[n]}" for n in SCORE_RELEVANT_PACKAGES if n in pk]
        if relevant:
            out += ["Score-relevant packages: " + ", ".join(f"`{r}`" for r in relevant), ""]
    else:
        out += ["No environment snapshot was recorded with this run.", ""]
    out += ["## Baseline lineage", ""]
    if lineage:
        for b in lineage:
            chain = " → ".join(f"`{rid}` ({at[:19]})" for rid, at in b.history)
            out.append(f"- baseline **{b.name}**: {chain}")
    else:
        out.append("This run has never been a named baseline.")
    out.append("")
    return "\n".join(out)
