"""The provenance statement: in-toto Statement v1 whose predicate is SLSA Provenance v1 shaped.

Subjects are every bundle member with its sha256; the predicate says what produced the run (evalkeeper's
runner or a peer tool via an importer), with which model, tasks, seeds and dataset/prompt fingerprints.
"""

from __future__ import annotations

from typing import Any

from evalkeeper.bundle._layout import MemberDigest
from evalkeeper.core.ids import canonical_json
from evalkeeper.core.records import Run

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://evalkeeper.dev/eval-run/v1"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def build_statement(
    run: Run, members: list[MemberDigest], *, manifest_sha256: str, bundled_by: str | None, created_at: str
) -> bytes:
    """Canonical JSON bytes of the statement (these exact bytes are what a DSSE signature covers)."""
    deps: list[dict[str, Any]] = []
    for t in run.tasks:
        if t.dataset_fingerprint:
            deps.append({"name": f"dataset:{t.name}", "digest": {"sha256": t.dataset_fingerprint}})
        if t.prompt_fingerprint:
            deps.append({"name": f"prompt:{t.name}", "digest": {"sha256": t.prompt_fingerprint}})
    if run.model.digest:
        deps.append(
            {
                "name": f"model:{run.model.name}",
                "digest": {"sha256": run.model.digest.removeprefix("sha256:")},
            }
        )
    if run.provenance.source_sha256:
        deps.append(
            {
                "name": f"source:{run.provenance.source_path or run.provenance.producer}",
                "digest": {"sha256": run.provenance.source_sha256},
            }
        )
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": m.path, "digest": {"sha256": m.sha256}} for m in members],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "model": run.model.model_dump(mode="json"),
                    "tasks": [
                        {
                            "name": t.name,
                            "version": t.version,
                            "n_shot": t.n_shot,
                            "seed": t.seed,
                            "metrics": t.metrics,
                            "n_samples": t.n_samples,
                        }
                        for t in run.tasks
                    ],
                    "seed": run.seed,
                    "command": run.provenance.command,
                },
                "internalParameters": {"manifest_sha256": manifest_sha256},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": f"https://evalkeeper.dev/producer/{run.provenance.producer}",
                    "version": {
                        run.provenance.producer: run.provenance.producer_version or "unknown",
                        "evalkeeper-bundler": bundled_by or "unknown",
                    },
                },
                "metadata": {
                    "invocationId": run.run_id,
                    "startedOn": _iso(run.started_at or run.created_at),
                    "finishedOn": _iso(run.finished_at),
                },
                "byproducts": [
                    {"name": "bundle", "annotations": {"created_at": created_at, "n_samples": run.n_samples}}
                ],
            },
        },
    }
    return canonical_json(statement).encode()
