"""Job locks, so the same cron entry can run on every host and exactly one does the work.

PostgreSQL: a session-level advisory lock on a dedicated connection (released if the process
dies, because the connection does). SQLite (one host by definition): an flock on a file
under var/locks/, also released by the kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator

from backend import config

# Named so that load checks (the retention engine's) can tell a lock holder from traffic.
LOCK_APPLICATION_NAME = "exam-job-lock"


class LockHeld(Exception):
    """Another process holds the job lock."""


def _key(name: str) -> int:
    # Stable across processes and hosts (Python's hash() is randomised per process).
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def job_lock(name: str) -> Iterator[None]:
    """Hold the lock ``name`` for the duration of the block, or raise LockHeld at once."""
    from django.db import connection

    if connection.vendor == "postgresql":
        import psycopg

        s = connection.settings_dict
        conn = psycopg.connect(
            dbname=s["NAME"],
            user=s.get("USER") or None,
            password=s.get("PASSWORD") or None,
            host=s.get("HOST") or None,
            port=s.get("PORT") or None,
            autocommit=True,
            connect_timeout=5,
            application_name=LOCK_APPLICATION_NAME,
        )
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)]).fetchone()[0]
            if not got:
                raise LockHeld(f"job '{name}' is already running on another host or process")
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
        finally:
            conn.close()
        return
    lock_dir = config.var_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"job '{name}' is already running in another process") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
