"""Importers for peer evaluation tools' outputs, chosen by content: lighteval, lm-evaluation-harness, inspect_ai.

`load_path(path)` detects the format and loads it; `detect_importer(path)` only picks the importer.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from evalkeeper.core.errors import ImportFormatError
from evalkeeper.ingest.base import CltAccumulator, ImportedRun, Importer, apply_clt, clt_metric, read_json_file

__all__ = [
    "IMPORTERS",
    "CltAccumulator",
    "ImportedRun",
    "Importer",
    "apply_clt",
    "clt_metric",
    "detect_importer",
    "importer_names",
    "load_path",
]

# "module:Class" of each importer, in detection order. Modules are imported on first use so that
# `evalkeeper --help` does not pay for them.
IMPORTER_SPECS: list[str] = [
    "evalkeeper.ingest.lighteval:LightevalImporter",
    "evalkeeper.ingest.lm_eval:LmEvalImporter",
    "evalkeeper.ingest.inspect:InspectImporter",
    "evalkeeper.bundle.importer:BundleImporter",
]


def _load_importers() -> list[Importer]:
    found: list[Importer] = []
    for spec in IMPORTER_SPECS:
        module_name, _, cls_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Only tolerate the importer module itself being absent (not yet written / trimmed install);
            # a missing dependency *inside* it is a real error and must surface.
            if e.name == module_name:
                continue
            raise
        found.append(getattr(module, cls_name)())
    return found


class _LazyImporters(list[Importer]):
    """`IMPORTERS` behaves as a plain list, filled on first access."""

    _filled = False

    def _fill(self) -> None:
        if not self._filled:
            self._filled = True
            self.extend(_load_importers())

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        self._fill()
        return super().__getitem__(i)


IMPORTERS: list[Importer] = _LazyImporters()


def importer_names() -> list[str]:
    return [imp.name for imp in IMPORTERS]


def detect_importer(path: str | Path) -> Importer:
    """The importer whose format `path` (file or folder) holds; ImportFormatError if none matches."""
    p = Path(path)
    if not p.exists():
        raise ImportFormatError("no such file or folder", path=str(p))
    if p.is_dir():
        try:
            empty = not any(p.iterdir())
        except OSError as e:
            raise ImportFormatError(f"cannot read folder: {e.strerror or e}", path=str(p)) from None
        if empty:
            raise ImportFormatError("empty folder: nothing to import", path=str(p))
    for imp in IMPORTERS:
        if imp.detect(p):
            return imp
    _raise_if_damaged(p)
    raise ImportFormatError(
        "unknown format: not output of any supported tool",
        path=str(p),
        hint="supported formats: " + ", ".join(importer_names())
        + " (lighteval results_*.json / details parquet, lm-eval results_*.json + samples_*.jsonl,"
        " inspect_ai .eval / .json logs)",
    )


def _raise_if_damaged(p: Path, limit: int = 50) -> None:
    """When nothing matched, a damaged JSON file is the likelier story than an unknown tool: say which."""
    if p.is_file():
        candidates = [p]
    else:
        try:
            candidates = sorted(x for x in p.rglob("*.json") if x.is_file())[:limit]
        except OSError:
            return
    for f in candidates:
        if f.suffix != ".json":
            continue
        try:
            if f.stat().st_size > (256 << 20):
                continue
        except OSError:
            continue
        read_json_file(f)  # raises ImportFormatError naming the file, line and column


def load_path(path: str | Path) -> ImportedRun:
    """Detect the format of `path` and load it."""
    return detect_importer(path).load(Path(path))
