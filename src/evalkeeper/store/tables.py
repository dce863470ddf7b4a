"""SQL tables (SQLAlchemy Core). The schema is created and changed only by Alembic migrations."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String(512), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("producer", String(64), nullable=False),
    Column("source_sha256", String(64), index=True),
    Column("n_samples", Integer, nullable=False, default=0),
    Column("record", Text, nullable=False),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("tag", String(128), primary_key=True, index=True),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(128), nullable=False, index=True),
    Column("task", String(512), nullable=False),
    Column("metric", String(256), nullable=False),
    Column("value", Float),
    Column("stderr", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer),
    Column("method", String(32)),
    Column("record", Text, nullable=False),
)

baselines = Table(
    "baselines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("run_id", String(128), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(256)),
)

decisions = Table(
    "decisions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("decision_id", String(128), nullable=False, unique=True),
    Column("kind", String(32), nullable=False, index=True),
    Column("subject", String(256), nullable=False, index=True),
    Column("verdict", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("timestamp", DateTime(timezone=True), nullable=False, index=True),
    Column("model", String(512), nullable=False, index=True),
    Column("record", Text, nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("feedback_id", String(128), primary_key=True),
    Column("idempotency_key", String(256), nullable=False),
    Column("target_id", String(256), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("record", Text, nullable=False),
    UniqueConstraint("idempotency_key", name="uq_feedback_idempotency_key"),
)
