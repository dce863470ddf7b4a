"""The run store on SQLAlchemy 2: SQLite by default, PostgreSQL by URL, same code."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.core.ids import canonical_json, sha256_text
from evalkeeper.core.records import Decision, MetricResult, Run, utcnow
from evalkeeper.store import tables as T

GENESIS_HASH = "0" * 64
_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()


def decision_hash(prev_hash: str, decision: Decision) -> str:
    """Hash of a decision's content chained to the previous entry (seq/prev_hash/hash excluded)."""
    body = decision.model_dump(mode="json", exclude={"seq", "prev_hash", "hash"})
    return sha256_text(prev_hash + canonical_json(body))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    key = str(engine.url)
    with _MIGRATE_LOCK:
        if key in _MIGRATED:
            return
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        _MIGRATED.add(key)


class SqlStore:
    """Runs, metrics, tags, baselines, the audit log, events and feedback in SQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        try:
            self.engine = create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            migrate(self.engine)
        except (SQLAlchemyError, ImportError) as exc:
            raise EvalkeeperError(
                f"cannot open the run store at {self.engine_url_safe(url)}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}",
                hint="check EVALKEEPER_DB_URL (and that the database server is running)",
            ) from None

    @staticmethod
    def engine_url_safe(url: str) -> str:
        """The URL with any password hidden, for messages."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001
            return "<unparseable database URL>"

    # runs -----------------------------------------------------------------
    def _run_row(self, run: Run) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "created_at": run.created_at,
            "model_name": run.model.name,
            "status": run.status,
            "producer": run.provenance.producer,
            "source_sha256": run.provenance.source_sha256,
            "n_samples": run.n_samples,
            "record": run.model_dump_json(),
        }

    def save_run(self, run: Run, metrics: list[MetricResult] | None = None, conn: Any = None) -> None:
        """Upsert the run (and its tags); replace its metrics when given."""
        def do(c: Any) -> None:
            exists = c.execute(select(T.runs.c.run_id).where(T.runs.c.run_id == run.run_id)).first()
            row = self._run_row(run)
            if exists:
                c.execute(update(T.runs).where(T.runs.c.run_id == run.run_id).values(**row))
            else:
                c.execute(insert(T.runs).values(**row))
            c.execute(delete(T.run_tags).where(T.run_tags.c.run_id == run.run_id))
            for tag in sorted(set(run.tags)):
                c.execute(insert(T.run_tags).values(run_id=run.run_id, tag=tag))
            if metrics is not None:
                self._replace_metrics(c, run.run_id, metrics)

        if conn is not None:
            do(conn)
        else:
            with self.engine.begin() as c:
                do(c)

    def _replace_metrics(self, c: Any, run_id: str, metrics: Iterable[MetricResult]) -> None:
        c.execute(delete(T.metrics).where(T.metrics.c.run_id == run_id))
        rows = [
            {
                "run_id": run_id, "task": m.task, "metric": m.metric, "value": m.value, "stderr": m.stderr,
                "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n, "method": m.method,
                "record": m.model_dump_json(),
            }
            for m in metrics
        ]
        if rows:
            c.execute(insert(T.metrics), rows)

    def save_metrics(self, run_id: str, metrics: list[MetricResult]) -> None:
        with self.engine.begin() as c:
            self._replace_metrics(c, run_id, metrics)

    def get_metrics(self, run_id: str) -> list[MetricResult]:
        with self.engine.connect() as c:
            rows = c.execute(select(T.metrics.c.record).where(T.metrics.c.run_id == run_id)
                             .order_by(T.metrics.c.id)).all()
        return [MetricResult.model_validate_json(r[0]) for r in rows]

    def run_exists(self, run_id: str) -> bool:
        with self.engine.connect() as c:
            return c.execute(select(T.runs.c.run_id).where(T.runs.c.run_id == run_id)).first() is not None

    def load_run(self, run_id: str) -> Run | None:
        with self.engine.connect() as c:
            row = c.execute(select(T.runs.c.record).where(T.runs.c.run_id == run_id)).first()
        return Run.model_validate_json(row[0]) if row else None

    def runs_with_prefix(self, prefix: str, limit: int = 5) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self.engine.connect() as c:
            rows = c.execute(select(T.runs.c.run_id).where(T.runs.c.run_id.like(escaped + "%", escape="\\"))
                             .order_by(T.runs.c.run_id).limit(limit)).all()
        return [r[0] for r in rows]

    def list_runs(self, tag: str | None = None, model: str | None = None, limit: int | None = None) -> list[Run]:
        q = select(T.runs.c.record).order_by(T.runs.c.created_at.desc(), T.runs.c.run_id)
        if tag:
            q = q.where(T.runs.c.run_id.in_(select(T.run_tags.c.run_id).where(T.run_tags.c.tag == tag)))
        if model:
            q = q.where(T.runs.c.model_name == model)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [Run.model_validate_json(r[0]) for r in c.execute(q).all()]

    def find_run_by_source(self, sha256: str) -> Run | None:
        with self.engine.connect() as c:
            row = c.execute(select(T.runs.c.record).where(T.runs.c.source_sha256 == sha256)).first()
        return Run.model_validate_json(row[0]) if row else None

    def delete_run(self, run_id: str) -> None:
        with self.engine.begin() as c:
            for table in (T.metrics, T.run_tags, T.runs):
                c.execute(delete(table).where(table.c.run_id == run_id))

    # baselines --------------------------------------------------------------
    def set_baseline(self, name: str, run_id: str, actor: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(insert(T.baselines).values(name=name, run_id=run_id, set_at=utcnow(), actor=actor))

    def resolve_baseline(self, name: str) -> str | None:
        with self.engine.connect() as c:
            row = c.execute(select(T.baselines.c.run_id).where(T.baselines.c.name == name)
                            .order_by(T.baselines.c.id.desc()).limit(1)).first()
        return row[0] if row else None

    def baseline_history(self, name: str) -> list[tuple[str, dt.datetime]]:
        with self.engine.connect() as c:
            rows = c.execute(select(T.baselines.c.run_id, T.baselines.c.set_at)
                             .where(T.baselines.c.name == name).order_by(T.baselines.c.id)).all()
        return [(r[0], _aware(r[1])) for r in rows]

    def baseline_names(self) -> list[str]:
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(select(T.baselines.c.name).distinct().order_by(T.baselines.c.name))]

    # audit log ----------------------------------------------------------------
    def append_decision(self, decision: Decision) -> Decision:
        """Append to the hash chain; concurrent writers race on the primary key and retry."""
        for _ in range(20):
            try:
                with self.engine.begin() as c:
                    last = c.execute(select(T.decisions.c.seq, T.decisions.c.hash)
                                     .order_by(T.decisions.c.seq.desc()).limit(1)).first()
                    seq = (last[0] + 1) if last else 1
                    prev = last[1] if last else GENESIS_HASH
                    entry = decision.model_copy(update={"seq": seq, "prev_hash": prev, "hash": None})
                    entry.hash = decision_hash(prev, entry)
                    c.execute(insert(T.decisions).values(
                        seq=seq, decision_id=entry.decision_id, kind=entry.kind, subject=entry.subject,
                        verdict=entry.verdict, created_at=entry.created_at, record=entry.model_dump_json(),
                        prev_hash=prev, hash=entry.hash))
                return entry
            except (IntegrityError, OperationalError) as exc:
                if "decision_id" in str(exc) or "decisions_decision_id" in str(exc):
                    raise EvalkeeperError(f"decision {decision.decision_id} is already in the audit log") from None
                continue
        raise EvalkeeperError("could not append to the audit log (too much contention); try again")

    def list_decisions(self, subject: str | None = None, kind: str | None = None) -> list[Decision]:
        q = select(T.decisions.c.record).order_by(T.decisions.c.seq)
        if subject:
            q = q.where(T.decisions.c.subject == subject)
        if kind:
            q = q.where(T.decisions.c.kind == kind)
        with self.engine.connect() as c:
            return [Decision.model_validate_json(r[0]) for r in c.execute(q).all()]

    def verify_audit_log(self) -> tuple[bool, str | None]:
        """Recompute the chain from the stored content; name the first entry that does not match."""
        prev = GENESIS_HASH
        expected_seq = 1
        with self.engine.connect() as c:
            rows = c.execute(select(T.decisions.c.seq, T.decisions.c.record, T.decisions.c.prev_hash,
                                    T.decisions.c.hash).order_by(T.decisions.c.seq)).all()
        for seq, record, prev_col, hash_col in rows:
            if seq != expected_seq:
                return False, f"entry {expected_seq} is missing (next stored entry is {seq})"
            try:
                d = Decision.model_validate_json(record)
            except ValueError:
                return False, f"entry {seq}: record is not valid JSON for a Decision"
            if prev_col != prev or d.prev_hash != prev:
                return False, f"entry {seq}: previous-hash link is broken"
            if decision_hash(prev, d) != hash_col or d.hash != hash_col:
                return False, f"entry {seq}: content does not match its hash (edited after it was written)"
            prev = hash_col
            expected_seq += 1
        return True, None

    def count(self, table: str) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(T.metadata.tables[table])).scalar_one())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
