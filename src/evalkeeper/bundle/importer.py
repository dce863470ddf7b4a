"""`evalkeeper import run.ekb`: a bundle is one more importable format, behind the same Importer protocol.

The bundle is verified and extracted into a private temp folder first (see `extract.safe_extract`); the
run keeps its id, producer and environment snapshot, and its provenance gains the bundle's sha256.
Importing the same bundle twice is detected by `ws.find_run_by_source`: native runs are identified by
the bundle file, runs imported from a peer tool keep the sha256 of that tool's output.
"""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from evalkeeper.bundle import _layout as L
from evalkeeper.bundle.extract import ExtractedBundle, Limits, safe_extract
from evalkeeper.core.errors import EvalkeeperError, ImportFormatError
from evalkeeper.core.records import MetricResult, Run
from evalkeeper.ingest.base import ImportedRun


def looks_like_bundle(path: Path) -> bool:
    """zstd magic, then a tar whose first member is the bundle marker (reads a few KB, never raises)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            if f.read(4) != L.ZSTD_MAGIC:
                return False
            f.seek(0)
            import zstandard

            head = zstandard.ZstdDecompressor().stream_reader(f).read(1024)
    except Exception:  # noqa: BLE001 - detection must never raise
        return False
    return len(head) >= 512 and head[:100].rstrip(b"\0") == L.MARKER.encode()


def _batches(ex: ExtractedBundle, parts: list[str]) -> Iterator[pa.Table]:
    """Stream Parquet row groups from the extracted parts; the temp folder goes away when done."""
    try:
        for name in parts:
            pf = pq.ParquetFile(ex.path(name))
            for i in range(pf.num_row_groups):
                yield pf.read_row_group(i)
    finally:
        ex.close()


def load_bundle_for_import(path: str | Path, *, limits: Limits = Limits()) -> ImportedRun:
    """Verify + safely extract `path` and return what the store needs (`ws.add_run(r.run, ...)`)."""
    p = Path(path)
    try:
        ex = safe_extract(p, limits=limits)
    except EvalkeeperError as exc:
        raise ImportFormatError(f"bundle refused: {exc.message}", path=str(p), hint=exc.hint) from None
    try:
        run = Run.model_validate_json(ex.scan.meta[L.RUN])
        metrics = [MetricResult.model_validate(m) for m in json.loads(ex.scan.meta[L.METRICS])]
        env = json.loads(ex.scan.meta[L.ENVIRONMENT]) if L.ENVIRONMENT in ex.scan.meta else None
    except (KeyError, ValueError, ValidationError) as exc:
        ex.close()
        raise ImportFormatError(
            f"bundle run record unreadable ({type(exc).__name__}: {exc})", path=str(p)
        ) from None
    file_sha = ex.scan.file_sha256
    # A run imported from a peer tool keeps its source file's identity, so importing that file or this
    # bundle again is recognised as the same run; a native run is identified by the bundle file.
    update: dict[str, object] = {"bundle_sha256": file_sha}
    if not run.provenance.source_sha256:
        update.update(source_sha256=file_sha, source_path=str(p))
    prov = run.provenance.model_copy(update=update)
    run = run.model_copy(update={"provenance": prov, "environment": run.environment or env})
    parts = sorted(n for n in ex.scan.members if n.startswith(L.SAMPLES_DIR) and n.endswith(".parquet"))
    weakref.finalize(ex, shutil.rmtree, ex.root, True)  # if the caller never consumes the batches
    return ImportedRun(run=run, metrics=metrics, batches=_batches(ex, parts), source_files=[p])


class BundleImporter:
    """Importer for evalkeeper's own `.ekb` bundles."""

    name = "bundle"

    def detect(self, path: Path) -> bool:
        return looks_like_bundle(Path(path))

    def load(self, path: Path) -> ImportedRun:
        return load_bundle_for_import(path)
