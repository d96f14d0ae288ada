"""Table and index health on any database URL (SQLAlchemy, no Django), and VACUUM through
the one implementation in ``backend.ops.vacuum`` (audited through ``backend.ops.audit``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from backend.ops.vacuum import VacuumResult
from opsctl.db.engine import connect, make_engine

WRAPAROUND_LIMIT = 2_000_000_000


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


def _iso(v) -> str | None:
    return v.isoformat() if v is not None else None


def table_health(database_url: str, sort: str = "size") -> DatabaseHealth:
    from sqlalchemy import text

    engine = make_engine(database_url)
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

    engine = make_engine(database_url)
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


def vacuum(
    database_url: str, tables: list[str], analyze: bool = False, full: bool = False,
    confirmed: bool = False, lock_timeout_ms: int = 5000, actor: str | None = None,
) -> list[VacuumResult]:  # fmt: skip
    """VACUUM on any database URL with the one implementation (``backend.ops.vacuum``); each
    table's run is an audit event through the backend's audit trail."""
    from sqlalchemy import inspect

    from backend.ops import audit
    from backend.ops.vacuum import vacuum as run_vacuum

    audit.check_actor(actor)
    engine = make_engine(database_url)
    try:
        with connect(engine) as conn:
            raw = conn.execution_options(isolation_level="AUTOCOMMIT").connection
            results = run_vacuum(
                raw.driver_connection, conn.dialect.name, list(tables), analyze=analyze,
                full=full, confirmed=confirmed, lock_timeout_ms=lock_timeout_ms,
                sqlite_path=engine.url.database,
            )  # fmt: skip
            has_audit_table = inspect(conn).has_table("ops_auditevent")
    finally:
        engine.dispose()
    for r in results:
        r.audit = _audit(database_url, has_audit_table, r, actor)
    return results


def _audit(database_url: str, has_audit_table: bool, result: VacuumResult, actor) -> str:
    """Through the backend's audit trail: its table when this database has one, else the
    audit file (a database that is not the backend's)."""
    from backend.ops import audit

    details = asdict(result)
    details.pop("audit", None)
    if has_audit_table:
        from opsctl.service import open_backend

        open_backend(database_url)
        audit.record("vacuum", target=result.table, actor=actor, details=details)
        return "ops_auditevent"
    return audit.record_file("vacuum", target=result.table, actor=actor, details=details)


__all__ = ["IndexIssue", "TableHealth", "VacuumResult", "index_issues", "table_health", "vacuum"]
