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


@dataclass
class IndexInfo:
    """One index as the checks compare it. ``signature`` holds everything that makes two
    indexes interchangeable: table, method, key columns, operator classes, collations,
    orderings, expressions and predicate (PostgreSQL: ``pg_index`` and ``pg_am``; SQLite:
    ``PRAGMA index_xinfo`` and the partial/expression text)."""

    table: str
    index: str
    valid: bool
    unique: bool
    scans: int | None
    bytes: int
    cols: list[str]
    signature: tuple
    keep_rank: tuple = ()  # higher is better to keep: primary, constraint, unique, valid
    plain: bool = True  # no expressions, no predicate, btree: prefix comparisons hold


_PG_INDEXES = """
SELECT t.relname, i.relname, x.indisvalid, x.indisunique OR x.indisprimary,
       coalesce(s.idx_scan, 0), pg_relation_size(i.oid), array_to_string(x.indkey, ' '),
       n.nspname, am.amname, x.indclass::text, x.indcollation::text, x.indoption::text,
       coalesce(pg_get_expr(x.indexprs, x.indrelid), ''),
       coalesce(pg_get_expr(x.indpred, x.indrelid), ''), x.indisprimary,
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid
                                              AND c.conrelid = x.indrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
"""


def indexes(conn) -> list[IndexInfo]:
    """Every user index on the connection's database, comparable by ``signature``."""
    import re

    from sqlalchemy import text

    out = []
    if conn.dialect.name == "postgresql":
        for (t, i, valid, uniq, scans, size, keys, nsp, am, opclass, coll, opt, exprs, pred,
             primary, constraint) in conn.execute(text(_PG_INDEXES)):  # fmt: skip
            name = t if nsp == "public" else f"{nsp}.{t}"
            out.append(IndexInfo(
                name, i, valid, uniq, scans, size, keys.split(),
                (nsp, t, am, keys, opclass, coll, opt, exprs, pred),
                (primary, constraint, uniq, valid), not exprs and not pred and am == "btree",
            ))  # fmt: skip
        return out
    tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).all()
    for (t,) in tables:
        q = t.replace('"', '""')
        for row in conn.execute(text(f'PRAGMA index_list("{q}")')).all():
            name, uniq, origin, partial = row[1], bool(row[2]), row[3], bool(row[4])
            qi = name.replace('"', '""')
            keys = [r for r in conn.execute(text(f'PRAGMA index_xinfo("{qi}")')) if r[5]]
            cols = [r[2] for r in keys]
            exprs = any(r[1] == -2 for r in keys)
            tail = ""
            if exprs or partial:  # the indexed expressions and WHERE are only in its SQL
                sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type='index' "
                                        "AND name = :n"), {"n": name}).scalar() or ""  # fmt: skip
                m = re.search(r"\bON\b(.*)$", sql, re.S | re.I)
                tail = re.sub(r"\s+", "", m.group(1)) if m else sql
                if not any(q in tail for q in "'\"`["):  # no literal or quoted name: any case
                    tail = tail.lower()
            sig = (t, tuple((r[1], r[2], r[3], r[4]) for r in keys), tail)
            out.append(IndexInfo(t, name, True, uniq, None, 0, cols, sig,
                                 (origin == "pk", origin != "c", uniq, True),
                                 not exprs and not partial))  # fmt: skip
    return out


def exact_duplicates(infos: list[IndexInfo]) -> list[tuple[IndexInfo, IndexInfo]]:
    """(redundant, kept) for every index identical to another on the same table; the one
    kept backs the primary key or a constraint, or is unique, or comes first by name."""
    groups: dict[tuple, list[IndexInfo]] = {}
    for info in infos:
        groups.setdefault(info.signature, []).append(info)
    pairs = []
    for same in groups.values():
        if len(same) < 2:
            continue
        same.sort(key=lambda x: (tuple(not v for v in x.keep_rank), x.index))
        pairs += [(other, same[0]) for other in same[1:]]
    return pairs


def index_issues(database_url: str) -> list[IndexIssue]:
    engine = make_engine(database_url)
    try:
        with connect(engine) as conn:
            infos = indexes(conn)
    finally:
        engine.dispose()
    issues = []
    redundant = {id(r): k for r, k in exact_duplicates(infos)}
    for x in infos:
        if not x.valid:
            issues.append(IndexIssue(
                x.table, x.index, "invalid", x.bytes,
                "a failed CREATE INDEX CONCURRENTLY left it: drop it concurrently and rebuild",
            ))  # fmt: skip
        if x.scans == 0 and not x.unique:
            issues.append(IndexIssue(x.table, x.index, "unused", x.bytes, "never used since "
                                     "statistics reset: a candidate to drop (check replicas "
                                     "first)"))  # fmt: skip
        if id(x) in redundant:
            issues.append(IndexIssue(
                x.table, x.index, "duplicate", x.bytes,
                f"identical to {redundant[id(x)].index} (same columns, method, operator "
                "classes, expressions and predicate): drop one",
            ))  # fmt: skip
            continue
        for y in infos:
            if (y.table == x.table and y.index != x.index and x.plain and y.plain
                    and len(x.cols) < len(y.cols) and y.cols[: len(x.cols)] == x.cols):  # fmt: skip
                if not x.unique:
                    issues.append(IndexIssue(x.table, x.index, "duplicate", x.bytes,
                                             f"its columns are a prefix of {y.index}"))  # fmt: skip
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


__all__ = [
    "IndexInfo", "IndexIssue", "TableHealth", "VacuumResult", "exact_duplicates", "index_issues",
    "indexes", "table_health", "vacuum",
]  # fmt: skip
