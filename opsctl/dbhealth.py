"""Table and index health, and VACUUM/ANALYZE, on any database URL (SQLAlchemy, no Django)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opsctl.explain import DatabaseUnavailable, connect, engine_for

WRAPAROUND_LIMIT = 2_000_000_000


class UnknownTable(ValueError):
    pass


class NotConfirmed(ValueError):
    pass


@dataclass
class TableHealth:
    table: str
    rows: float
    table_bytes: int
    index_bytes: int
    dead_rows: int | None = None
    dead_pct: float | None = None
    last_vacuum: str | None = None
    last_autovacuum: str | None = None
    last_analyze: str | None = None
    last_autoanalyze: str | None = None
    autovacuum_due: bool | None = None
    xid_age: int | None = None
    wraparound_headroom_pct: float | None = None


@dataclass
class DatabaseHealth:
    vendor: str
    tables: list[TableHealth]
    page_count: int | None = None
    freelist_pages: int | None = None
    reclaimable_bytes: int | None = None
    file_bytes: int | None = None


@dataclass
class IndexIssue:
    table: str
    index: str
    problem: str  # unused | duplicate | invalid
    bytes: int
    detail: str


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


def _iso(v) -> str | None:
    return v.isoformat() if v is not None else None


def table_health(database_url: str, sort: str = "size") -> DatabaseHealth:
    from sqlalchemy import text

    engine = engine_for(database_url)
    try:
        with connect(engine) as conn:
            if conn.dialect.name == "postgresql":
                rows = conn.execute(text("""
                    SELECT c.relname, c.reltuples, pg_table_size(c.oid), pg_indexes_size(c.oid),
                           s.n_dead_tup, s.n_live_tup, s.last_vacuum, s.last_autovacuum,
                           s.last_analyze, s.last_autoanalyze, age(c.relfrozenxid),
                           coalesce((SELECT option_value::float
                                     FROM pg_options_to_table(c.reloptions)
                                     WHERE option_name = 'autovacuum_vacuum_threshold'),
                                    current_setting('autovacuum_vacuum_threshold')::float),
                           coalesce((SELECT option_value::float
                                     FROM pg_options_to_table(c.reloptions)
                                     WHERE option_name = 'autovacuum_vacuum_scale_factor'),
                                    current_setting('autovacuum_vacuum_scale_factor')::float)
                    FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                    WHERE c.relkind = 'r'""")).all()  # fmt: skip
                tables = []
                for (name, reltuples, tbytes, ibytes, dead, live, lv, lav, la, laa, xid_age,
                     thr, scale) in rows:  # fmt: skip
                    total = (live or 0) + (dead or 0)
                    tables.append(TableHealth(
                        name, max(float(reltuples), float(live or 0)), tbytes, ibytes, dead,
                        round(100 * dead / total, 2) if total else 0.0, _iso(lv), _iso(lav),
                        _iso(la), _iso(laa), dead > thr + scale * max(float(reltuples), 0),
                        int(xid_age), round(100 * (1 - int(xid_age) / WRAPAROUND_LIMIT), 2),
                    ))  # fmt: skip
                health = DatabaseHealth("postgresql", tables)
            else:
                names = [r[0] for r in conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                ))]  # fmt: skip
                dbstat = True
                tables = []
                for name in names:
                    q = name.replace('"', '""')
                    n = conn.execute(text(f'SELECT COUNT(*) FROM "{q}"')).scalar()
                    size = 0
                    if dbstat:
                        try:
                            size = (
                                conn.execute(
                                    text("SELECT SUM(pgsize) FROM dbstat WHERE name = :n"),
                                    {"n": name},
                                ).scalar()
                                or 0
                            )
                        except Exception:  # dbstat is a compile-time option of SQLite
                            dbstat = False
                    tables.append(TableHealth(name, float(n), int(size), 0))
                pages = conn.execute(text("PRAGMA page_count")).scalar()
                free = conn.execute(text("PRAGMA freelist_count")).scalar()
                page_size = conn.execute(text("PRAGMA page_size")).scalar()
                path = engine.url.database
                health = DatabaseHealth(
                    "sqlite", tables, pages, free, free * page_size,
                    os.path.getsize(path) if path and os.path.exists(path) else None,
                )  # fmt: skip
    finally:
        engine.dispose()
    key = {"size": lambda t: -(t.table_bytes + t.index_bytes),
           "dead": lambda t: -(t.dead_rows or 0),
           "name": lambda t: t.table}[sort]  # fmt: skip
    health.tables.sort(key=key)
    return health


def index_issues(database_url: str) -> list[IndexIssue]:
    from sqlalchemy import text

    engine = engine_for(database_url)
    issues = []
    try:
        with connect(engine) as conn:
            if conn.dialect.name == "postgresql":
                rows = conn.execute(
                    text("""
                    SELECT t.relname, i.relname, x.indisvalid, x.indisunique OR x.indisprimary,
                           coalesce(s.idx_scan, 0), pg_relation_size(i.oid),
                           array_to_string(x.indkey, ' ')
                    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                    JOIN pg_class t ON t.oid = x.indrelid
                    JOIN pg_namespace n ON n.oid = t.relnamespace
                    LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')""")
                ).all()
                indexes = [(t, i, valid, uniq, scans, size, keys.split())
                           for t, i, valid, uniq, scans, size, keys in rows]  # fmt: skip
            else:
                indexes = []
                for (t,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")):
                    for row in conn.execute(text(f'PRAGMA index_list("{t}")')):
                        cols = [r[2] for r in conn.execute(text(f'PRAGMA index_info("{row[1]}")'))]
                        indexes.append((t, row[1], True, bool(row[2]), None, 0, cols))
    finally:
        engine.dispose()
    for t, i, valid, uniq, scans, size, cols in indexes:
        if not valid:
            issues.append(IndexIssue(
                t, i, "invalid", size,
                "a failed CREATE INDEX CONCURRENTLY left it: drop it concurrently and rebuild",
            ))  # fmt: skip
        if scans == 0 and not uniq:
            issues.append(IndexIssue(t, i, "unused", size, "never used since statistics reset: "
                                     "a candidate to drop (check replicas first)"))  # fmt: skip
        for t2, i2, _v, _u, _s, _z, cols2 in indexes:
            if t2 == t and i2 != i and len(cols) < len(cols2) and cols2[: len(cols)] == cols:
                if not uniq:
                    issues.append(IndexIssue(t, i, "duplicate", size,
                                             f"its columns are a prefix of {i2}"))  # fmt: skip
                break
    return issues


def _pg_dead_and_size(conn, table: str) -> tuple[int | None, int]:
    from sqlalchemy import text

    row = conn.execute(text(
        "SELECT s.n_dead_tup, pg_total_relation_size(c.oid) FROM pg_class c "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.relname = :t AND c.relkind = 'r'"
    ), {"t": table}).first()  # fmt: skip
    if row is None:
        raise UnknownTable(f"unknown table {table!r}")
    return row[0], int(row[1])


def vacuum(
    database_url: str, tables: list[str], analyze: bool = False, full: bool = False,
    confirmed: bool = False, lock_timeout_ms: int = 5000, actor: str | None = None,
) -> list[VacuumResult]:  # fmt: skip
    """VACUUM (ANALYZE/FULL) tables on PostgreSQL, or the whole file on SQLite; audited."""
    from sqlalchemy import text

    engine = engine_for(database_url)
    results = []
    try:
        with connect(engine) as conn:
            vendor = conn.dialect.name
        if vendor == "postgresql":
            if full and not confirmed:
                raise NotConfirmed(
                    "VACUUM FULL locks each table for its whole run: confirm with --yes"
                )
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if not tables:
                    tables = [r[0] for r in conn.execute(
                        text("SELECT relname FROM pg_stat_user_tables ORDER BY relname")
                    )]  # fmt: skip
                for t in tables:
                    _pg_dead_and_size(conn, t)  # unknown tables fail before anything runs
                conn.execute(text(f"SET lock_timeout = {int(lock_timeout_ms)}"))
                for t in tables:
                    dead0, size0 = _pg_dead_and_size(conn, t)
                    opts = [o for o, on in (("FULL", full), ("ANALYZE", analyze)) if on]
                    t0 = time.perf_counter()
                    quoted = conn.dialect.identifier_preparer.quote(t)
                    conn.execute(
                        text(f"VACUUM {'(' + ', '.join(opts) + ') ' if opts else ''}{quoted}")
                    )
                    seconds = time.perf_counter() - t0
                    dead1, size1 = _pg_dead_and_size(conn, t)
                    results.append(VacuumResult(t, dead0, dead1, size0, size1, round(seconds, 3),
                                                " ".join(["VACUUM", *opts])))  # fmt: skip
        else:
            with connect(engine) as conn:
                known = {r[0] for r in conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table'"))}  # fmt: skip
            for t in tables:
                if t not in known:
                    raise UnknownTable(f"unknown table {t!r}")
            if not confirmed:
                raise NotConfirmed(
                    "SQLite's VACUUM rewrites the whole file and locks it: confirm with --yes"
                )
            path = Path(engine.url.database or "")
            size0 = path.stat().st_size if path.exists() else 0
            free = shutil.disk_usage(path.parent if path.exists() else Path.cwd()).free
            if free < 2 * size0:
                raise NotConfirmed(f"VACUUM needs about {2 * size0 / 1e6:.0f} MB free next to the "
                                   f"database; only {free / 1e6:.0f} MB are")  # fmt: skip
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                free0 = conn.execute(text("PRAGMA freelist_count")).scalar()
                t0 = time.perf_counter()
                conn.execute(text("VACUUM"))
                if analyze:
                    conn.execute(text("ANALYZE"))
                # In WAL mode the shrunk file only appears after a checkpoint.
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                seconds = time.perf_counter() - t0
                free1 = conn.execute(text("PRAGMA freelist_count")).scalar()
            results.append(VacuumResult("(database file)", free0, free1, size0,
                                        path.stat().st_size, round(seconds, 3),
                                        "VACUUM" + (" + ANALYZE" if analyze else "")))  # fmt: skip
        for r in results:
            r.audit = _audit(engine, r, actor)
    finally:
        engine.dispose()
    return results


def _audit(engine, result: VacuumResult, actor: str | None) -> str:
    """Recorded in ops_auditevent where that table exists, else in var/audit.jsonl."""
    from sqlalchemy import inspect, text

    from backend.config import var_dir

    try:
        who = actor or getpass.getuser()
    except Exception:
        who = "unknown"
    details = asdict(result)
    details.pop("audit", None)
    with engine.begin() as conn:
        if inspect(conn).has_table("ops_auditevent"):
            conn.execute(text(
                "INSERT INTO ops_auditevent (created_at, actor, action, target, change_set, "
                "reason, details, host) VALUES (CURRENT_TIMESTAMP, :a, 'vacuum', :t, '', '', "
                ":d, :h)"), {"a": who, "t": result.table[:200], "d": json.dumps(details),
                             "h": socket.gethostname()})  # fmt: skip
            return "ops_auditevent"
    path = var_dir() / "audit.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({"at": time.time(), "actor": who, "action": "vacuum",
                             "details": details}) + "\n")  # fmt: skip
    return str(path)


__all__ = ["DatabaseUnavailable", "index_issues", "table_health", "vacuum"]
