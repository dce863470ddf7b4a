"""Bundles (S6P1), environment capture (S6P4) and reproducibility (S7P4).

Public API below; submodules load on first use so that importing `evalkeeper.bundle.env` (done by the
runner for every run) does not pull in zstandard, cryptography or the store.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from evalkeeper.bundle.env import capture_environment, diff_environments, summarize_environment

_LAZY = {
    "create_bundle": "writer",
    "BundleResult": "writer",
    "verify_bundle": "verify",
    "inspect_bundle": "verify",
    "VerifyReport": "verify",
    "Problem": "verify",
    "safe_extract": "extract",
    "extract_to": "extract",
    "scan_bundle": "extract",
    "Limits": "extract",
    "BundleUnreadable": "extract",
    "UnsafeBundle": "extract",
    "ExtractedBundle": "extract",
    "generate_keys": "signing",
    "pae": "signing",
    "BundleImporter": "importer",
    "load_bundle_for_import": "importer",
    "reproduce_bundle": "reproduce",
    "compare_runs": "reproduce",
    "ReproductionReport": "reproduce",
    "ReproductionUnsupported": "reproduce",
    "requirements_lock": "repro",
    "dockerfile": "repro",
    "reproduce_markdown": "repro",
}

__all__ = ["capture_environment", "diff_environments", "summarize_environment", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"evalkeeper.bundle.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'evalkeeper.bundle' has no attribute {name!r}")
