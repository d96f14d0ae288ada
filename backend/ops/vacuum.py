"""VACUUM / ANALYZE: the one implementation, for `opsctl vacuum`, the console and the retention
purge's ``--vacuum`` alike (same lock timeout rule, same checks, each table audited by the
caller through ``backend.ops.audit``).

It runs on a DB-API connection in autocommit mode (VACUUM cannot run in a transaction):
Django's (retention) or SQLAlchemy's driver connection (opsctl, on any database URL), so it
imports neither. PostgreSQL: per table, with ``lock_timeout`` so it never queues behind exam
traffic; FULL (which locks the table for its whole run) only when confirmed. SQLite: VACUUM
rewrites the whole file and locks it, so it runs only when confirmed and with twice the
file's size free next to it; ``file_vacuum=False`` (the purge job) only ANALYZEs.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.ops.errors import InvalidInput, OpsError


class UnknownTable(InvalidInput):
    pass


class NotConfirmed(OpsError):
    """A locking VACUUM was not confirmed (exit 2: refused)."""

    exit_code = 2


class LockTimeout(OpsError):
    """The table's lock was not free within the lock timeout (exit 3: retry later)."""

    exit_code = 3


@dataclass
class VacuumResult:
    table: str
    dead_before: int | None
    dead_after: int | None
    bytes_before: int
    bytes_after: int
    seconds: float
    mode: str
    audit: str = ""
    notes: list[str] = field(default_factory=list)


def _pg_dead_and_size(cur, table: str) -> tuple[int | None, int]:
    cur.execute(
        "SELECT s.n_dead_tup, pg_total_relation_size(c.oid) FROM pg_class c "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.relname = %s AND c.relkind = 'r'",
        [table],
    )
    row = cur.fetchone()
    if row is None:
        raise UnknownTable(f"unknown table {table!r}")
    return row[0], int(row[1])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def vacuum(
    conn,
    vendor: str,
    tables: list[str],
    *,
    analyze: bool = False,
    full: bool = False,
    confirmed: bool = False,
    lock_timeout_ms: int = 5000,
    sqlite_path: str | None = None,
    file_vacuum: bool = True,
) -> list[VacuumResult]:
    """VACUUM (ANALYZE/FULL) ``tables`` (all user tables when empty) on PostgreSQL, or the
    SQLite file; ``conn`` is a DB-API connection in autocommit mode."""
    if vendor == "postgresql":
        return _vacuum_pg(conn, tables, analyze, full, confirmed, lock_timeout_ms)
    if vendor == "sqlite":
        return _vacuum_sqlite(conn, tables, analyze, confirmed, sqlite_path, file_vacuum)
    raise InvalidInput(f"VACUUM on {vendor} is not supported")


def _vacuum_pg(conn, tables, analyze, full, confirmed, lock_timeout_ms) -> list[VacuumResult]:
    import psycopg

    if full and not confirmed:
        raise NotConfirmed("VACUUM FULL locks each table for its whole run: confirm with --yes")
    results = []
    with conn.cursor() as cur:
        if not tables:
            cur.execute("SELECT relname FROM pg_stat_user_tables ORDER BY relname")
            tables = [r[0] for r in cur.fetchall()]
        for t in tables:
            _pg_dead_and_size(cur, t)  # unknown tables fail before anything runs
        cur.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        try:
            for t in tables:
                dead0, size0 = _pg_dead_and_size(cur, t)
                opts = [o for o, on in (("FULL", full), ("ANALYZE", analyze)) if on]
                t0 = time.perf_counter()
                try:
                    cur.execute(f"VACUUM {'(' + ', '.join(opts) + ') ' if opts else ''}{_quote(t)}")
                except psycopg.errors.LockNotAvailable:
                    raise LockTimeout(
                        f"VACUUM {t} could not get its lock within {lock_timeout_ms} ms "
                        "(the table is busy); retry later"
                    ) from None
                seconds = time.perf_counter() - t0
                dead1, size1 = _pg_dead_and_size(cur, t)
                results.append(VacuumResult(t, dead0, dead1, size0, size1, round(seconds, 3),
                                            " ".join(["VACUUM", *opts])))  # fmt: skip
        finally:
            cur.execute("RESET lock_timeout")
    return results


def _vacuum_sqlite(conn, tables, analyze, confirmed, sqlite_path, file_vacuum):
    known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for t in tables:
        if t not in known:
            raise UnknownTable(f"unknown table {t!r}")
    if not file_vacuum:  # the purge job: statistics only, never a whole-file lock
        results = []
        for t in tables:
            t0 = time.perf_counter()
            conn.execute(f"ANALYZE {_quote(t)}")
            results.append(VacuumResult(t, None, None, 0, 0,
                                        round(time.perf_counter() - t0, 3), "ANALYZE"))  # fmt: skip
        return results
    if not confirmed:
        raise NotConfirmed(
            "SQLite's VACUUM rewrites the whole file and locks it: confirm with --yes"
        )
    path = Path(sqlite_path or "")
    size0 = path.stat().st_size if path.is_file() else 0
    free = shutil.disk_usage(path.parent if path.is_file() else Path.cwd()).free
    if free < 2 * size0:
        raise NotConfirmed(f"VACUUM needs about {2 * size0 / 1e6:.0f} MB free next to the "
                           f"database; only {free / 1e6:.0f} MB are")  # fmt: skip
    free0 = conn.execute("PRAGMA freelist_count").fetchone()[0]
    t0 = time.perf_counter()
    conn.execute("VACUUM")
    if analyze:
        conn.execute("ANALYZE")
    # In WAL mode the shrunk file only appears after a checkpoint.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seconds = time.perf_counter() - t0
    free1 = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return [VacuumResult("(database file)", free0, free1, size0,
                         path.stat().st_size if path.is_file() else 0, round(seconds, 3),
                         "VACUUM" + (" + ANALYZE" if analyze else ""))]  # fmt: skip
