"""A throwaway PostgreSQL cluster of its own, for drills that stop and restart the server.

The shared server on 127.0.0.1:5432 serves other tests and helpers and must never be
restarted; a drill gets a private cluster (``initdb`` into a temporary directory, its own port
and socket directory), restarts it as often as it likes and deletes it afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.e2e.gunicorn_server import ROOT, free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class ThrowawayPostgres:
    """``start()`` creates and starts the cluster; ``restart()``/``stop()``/``start_server()``
    drive the outage; ``destroy()`` stops it and removes every file."""

    def __init__(self, dbname: str = "drill") -> None:
        self.port = free_port()
        self.dbname = dbname
        self.dir = Path(tempfile.mkdtemp(prefix="drill-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            # PostgreSQL refuses to run as root; the cluster belongs to the postgres OS user.
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", action, *extra
        )

    def start(self) -> ThrowawayPostgres:
        if self._as_postgres:
            shutil.chown(self.dir, user="postgres", group="postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")
        self._pg_ctl("start")
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        return self

    def restart(self) -> None:
        """A fast restart: sessions are cut, in-flight transactions roll back."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def start_server(self) -> None:
        self._pg_ctl("start")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()


_SEED = """
import datetime as dt, json, sys
from opsctl.service import setup_django
setup_django()
from django.core.management import call_command
from django.utils import timezone
from backend.exams.seed import create_exam
from opsctl.loadtest import provision
call_command("migrate", verbosity=0, interactive=False)
now = timezone.now()
exam = create_exam("Drill", now - dt.timedelta(minutes=5), now + dt.timedelta(hours=3),
                   duration_min=120, questions=int(sys.argv[2]))
target = provision(int(sys.argv[1]), exam.id, duration=600)
json.dump({"exam_id": target.exam_id, "questions": target.questions,
           "tokens": target.tokens}, sys.stdout)
"""


def seed_database(database_url: str, students: int, questions: int = 20) -> dict:
    """Migrate ``database_url``, add an open exam and provision ``students`` through
    ``opsctl.loadtest.provision``; in a subprocess, so this process's Django (connected to
    the test database) is left alone. Returns ``{"exam_id", "questions", "tokens"}``."""
    proc = subprocess.run(
        [sys.executable, "-c", _SEED, str(students), str(questions)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"seeding {database_url} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
