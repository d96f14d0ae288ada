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


# What a run recorded as "running" is when its job lock is free: its process died (kill -9,
# OOM, a host lost) before it could record how it ended. It counts as a failure.
ABANDONED = "abandoned"


def is_held(name: str) -> bool:
    """Whether some process holds the job lock ``name`` now, without taking it.

    PostgreSQL: ``pg_locks`` lists the advisory lock (a bigint key is held as classid = high
    32 bits, objid = low 32 bits, objsubid = 1). SQLite: a shared flock taken and released at
    once succeeds only when no one holds the exclusive one.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        key = _key(name) & 0xFFFFFFFFFFFFFFFF
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
                [key >> 32, key & 0xFFFFFFFF],
            )
            return cur.fetchone()[0] > 0
    path = config.var_dir() / "locks" / f"{name}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def outcome_now(outcome: str, lock_name: str) -> str:
    """A recorded outcome as it stands now: "running" without its lock held is abandoned."""
    if outcome == "running" and not is_held(lock_name):
        return ABANDONED
    return outcome


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
