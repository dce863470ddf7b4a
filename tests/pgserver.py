"""A private PostgreSQL server for the store tests: Debian's binaries, a temp data dir, a free loopback port.

Used when EVALKEEPER_TEST_PG_URL is not set. Outside CI the PostgreSQL tests skip when no server can be
started; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PgServer:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ek-pg-"))
        self.data = self.tmp / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://evalkeeper@127.0.0.1:{self.port}/evalkeeper"
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args

    def start(self) -> None:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
        if self._as_postgres:
            os.chmod(self.tmp, 0o777)
        subprocess.run(self._cmd([initdb, "-D", str(self.data), "-U", "evalkeeper", "-A", "trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.tmp} -c fsync=off"
        subprocess.run(self._cmd([pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.tmp / "log"), "-w",
                                  "start"]), check=True, capture_output=True, timeout=120)
        createdb = _bin("createdb")
        assert createdb
        deadline = time.time() + 30
        while True:
            r = subprocess.run(self._cmd([createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "evalkeeper",
                                          "evalkeeper"]), capture_output=True, timeout=60)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"createdb failed: {r.stderr.decode(errors='replace')}")
            time.sleep(0.5)

    def stop(self) -> None:
        pg_ctl = _bin("pg_ctl")
        if pg_ctl:
            subprocess.run(self._cmd([pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fresh_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=evalkeeper dbname=evalkeeper",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://evalkeeper@127.0.0.1:{self.port}/{name}"
