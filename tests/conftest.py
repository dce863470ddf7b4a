"""Shared fixtures: a fresh workspace per test, never the user's real one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from helpers import make_run` and `tests.helpers`

from evalkeeper.store import Workspace, open_workspace  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    home = tmp_path / "ws"
    monkeypatch.setenv("EVALKEEPER_HOME", str(home))
    monkeypatch.delenv("EVALKEEPER_DB_URL", raising=False)
    yield open_workspace(home)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """A PostgreSQL server: EVALKEEPER_TEST_PG_URL if set, else a private one started from Debian's binaries."""
    if os.environ.get("EVALKEEPER_TEST_PG_URL"):
        yield None
        return
    from pgserver import PgServer

    server = PgServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        server.stop()
        if IN_CI:
            pytest.fail(f"CI must test the store on PostgreSQL, but no server could be started: {exc}")
        pytest.skip(f"no PostgreSQL server could be started here: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("pg_server")
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:50].lower()
    if server is None:
        import psycopg
        from sqlalchemy.engine import make_url

        base = make_url(os.environ["EVALKEEPER_TEST_PG_URL"])
        with psycopg.connect(host=base.host, port=base.port, user=base.username, password=base.password,
                             dbname=base.database, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return base.set(database=name).render_as_string(hide_password=False)
    return server.fresh_database(name)  # type: ignore[attr-defined,no-any-return]


@pytest.fixture()
def any_workspace(tmp_path: Path, db_url: str) -> Workspace:
    """A workspace whose SQL store is SQLite or PostgreSQL (parametrized)."""
    return open_workspace(tmp_path / "ws", db_url=db_url)
