"""initial schema: runs, tags, metrics, baselines, audit log, events, feedback

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_name", sa.String(512), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("producer", sa.String(64), nullable=False),
        sa.Column("source_sha256", sa.String(64), index=True),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True, index=True),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(128), nullable=False, index=True),
        sa.Column("task", sa.String(512), nullable=False),
        sa.Column("metric", sa.String(256), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("stderr", sa.Float),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
        sa.Column("n", sa.Integer),
        sa.Column("method", sa.String(32)),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, index=True),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256)),
    )
    op.create_table(
        "decisions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("decision_id", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("subject", sa.String(256), nullable=False, index=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model", sa.String(512), nullable=False, index=True),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("feedback_id", sa.String(128), primary_key=True),
        sa.Column("idempotency_key", sa.String(256), nullable=False),
        sa.Column("target_id", sa.String(256), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_feedback_idempotency_key"),
    )


def downgrade() -> None:
    for name in ("feedback", "events", "decisions", "baselines", "metrics", "run_tags", "runs"):
        op.drop_table(name)
