"""Import into a workspace: detect, skip what was already imported (same source sha256), store atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkeeper.core.records import Run
from evalkeeper.ingest import ImportedRun, detect_importer
from evalkeeper.store import Workspace


@dataclass
class ImportResult:
    source: str
    importer: str
    run: Run
    already: bool

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "importer": self.importer, "run_id": self.run.run_id,
                "already_imported": self.already, "n_samples": self.run.n_samples,
                "tasks": [t.name for t in self.run.tasks], "model": self.run.model.name}


def _capture_import_environment() -> dict[str, Any] | None:
    try:
        from evalkeeper.bundle.env import capture_environment
    except ImportError:
        return None
    return capture_environment()


def import_path(ws: Workspace, path: str | Path, tags: list[str] | tuple[str, ...] = ()) -> list[ImportResult]:
    """Import every run found at `path`; a run whose source sha256 is already stored is not imported again."""
    p = Path(path)
    importer = detect_importer(p)
    loaded = importer.load(p)
    items: list[ImportedRun] = loaded if isinstance(loaded, list) else [loaded]
    out: list[ImportResult] = []
    importer_env: dict[str, Any] | None = None
    for item in items:
        run = item.run
        sha = run.provenance.source_sha256
        existing = ws.find_run_by_source(sha) if sha else None
        if existing is not None:
            out.append(ImportResult(str(p), importer.name, existing, True))
            continue
        env = dict(run.environment or {})
        if "importer" not in env:
            importer_env = importer_env if importer_env is not None else _capture_import_environment()
            if importer_env is not None:
                env["importer"] = importer_env
        run = run.model_copy(update={"environment": env or None,
                                     "tags": list(dict.fromkeys([*run.tags, *tags]))})
        stored = ws.add_run(run, item.metrics, item.batches)
        out.append(ImportResult(str(p), importer.name, stored, False))
    return out
