"""Records, ids, fingerprints, errors. Imports nothing else of evalkeeper."""

from evalkeeper.core.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from evalkeeper.core.errors import ConfigError, EvalkeeperError, ImportFormatError, NotFoundError
from evalkeeper.core.ids import (
    canonical_json,
    fingerprint,
    new_id,
    new_run_id,
    sha256_bytes,
    sha256_file,
    sha256_text,
    stable_sample_id,
)
from evalkeeper.core.records import (
    SCHEMA_VERSION,
    Decision,
    Event,
    Feedback,
    MetricResult,
    ModelInfo,
    Provenance,
    Run,
    Sample,
    TaskInfo,
    utcnow,
)

__all__ = [
    "SCHEMA_VERSION", "ConfigError", "Decision", "EvalkeeperError", "Event", "Feedback", "ImportFormatError",
    "MetricResult", "ModelInfo", "NotFoundError", "Provenance", "Run", "Sample", "TaskInfo", "atomic_open",
    "atomic_write_bytes", "atomic_write_text", "canonical_json", "fingerprint", "new_id", "new_run_id",
    "sha256_bytes", "sha256_file", "sha256_text", "stable_sample_id", "utcnow",
]
