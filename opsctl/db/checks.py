"""Database health checks PgHero and check_postgres users rely on, on any database URL
(SQLAlchemy, no Django), each one a status and its findings, summed up Nagios-style.

PostgreSQL:
- ``duplicate_indexes``: indexes identical to another on the same table (columns, method,
  operator classes, collations, orderings, expressions, predicate; ``opsctl.db.health``).
- ``not_valid_constraints``: constraints added ``NOT VALID`` whose ``VALIDATE CONSTRAINT``
  step never ran (``pg_constraint.convalidated``).
- ``table_bloat`` / ``index_bloat``: ESTIMATES from ``pg_stats`` widths and ``pg_class``
  sizes, the method of check_postgres and PgHero (ioguix's pgsql-bloat-estimation): the pages
  a table or B-tree index would need for its rows against the pages it has. No extension is
  needed; the figures are only as good as the last ANALYZE, and tables with columns lacking
  statistics are skipped. pgstattuple measures exactly (and reads the whole relation).
- ``cache_hit``: buffer cache hit rate of tables and indexes (``pg_statio_user_*``), judged
  only once enough blocks were read to mean something.
- ``xid_wraparound``: ``age(relfrozenxid)`` of every table, materialised view and TOAST
  table against its ``autovacuum_freeze_max_age`` (the server's, or a smaller per-table
  setting), and ``age(datfrozenxid)`` of every database: WARNING past it (anti-wraparound
  autovacuum is due and has not caught up), CRITICAL at 1.4 billion (check_postgres's
  default; PostgreSQL stops assigning XIDs near 2^31).
- ``sequences``: how much of its range a sequence has used, against its own maximum and
  the maximum of the column it feeds (an ``integer`` column fed by a ``bigint`` sequence
  fails at 2^31-1).

SQLite: only ``duplicate_indexes`` applies (``PRAGMA index_list`` / ``index_xinfo``); the
others are reported as not applicable, with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.ops.thresholds import CRITICAL, OK, UNKNOWN, WARNING, nagios
from opsctl.db.engine import connection

NOT_APPLICABLE = "n/a"
INT_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}
INT_MIN = {"smallint": -32768, "integer": -2147483648, "bigint": -9223372036854775808}


@dataclass
class Thresholds:
    bloat_pct: float = 50.0  # estimated wasted share of a relation
    bloat_min_bytes: int = 100_000_000  # ... and at least this much (PgHero: 100 MB)
    cache_hit_pct: float = 99.0  # PgHero's threshold
    cache_min_blocks: int = 100_000  # blocks read before a hit rate is judged
    xid_critical_age: int = 1_400_000_000  # check_postgres txn_wraparound default
    sequence_warn_pct: float = 75.0
    sequence_crit_pct: float = 90.0


@dataclass
class Finding:
    target: str
    severity: str  # warning | critical
    value: float | None
    detail: str


@dataclass
class CheckResult:
    check: str
    status: str  # ok | warning | critical | unknown | n/a
    summary: str
    findings: list[Finding] = field(default_factory=list)


@dataclass
class HealthReport:
    vendor: str
    exit_code: int
    summary: str
    checks: list[CheckResult]


CHECKS = ["duplicate_indexes", "not_valid_constraints", "table_bloat", "index_bloat",
          "cache_hit", "xid_wraparound", "sequences"]  # fmt: skip

SQLITE_NOT_APPLICABLE = {
    "not_valid_constraints": "SQLite has no NOT VALID constraints",
    "table_bloat": "no pg_stats to estimate from; `opsctl db tables` shows the free-list "
    "pages a VACUUM would reclaim",
    "index_bloat": "no pg_stats to estimate from; free pages are counted for the whole file "
    "(`opsctl db tables`)",
    "cache_hit": "SQLite's page cache belongs to each connection; no database-wide counters",
    "xid_wraparound": "SQLite has no transaction IDs to wrap around",
    "sequences": "SQLite rowids and AUTOINCREMENT are 64-bit; no sequences to run out",
}


def _name(schema: str, rel: str) -> str:
    return rel if schema == "public" else f"{schema}.{rel}"


def _result(check: str, findings: list[Finding], ok_summary: str) -> CheckResult:
    status = CRITICAL if any(f.severity == CRITICAL for f in findings) else (
        WARNING if findings else OK)  # fmt: skip
    summary = ok_summary if not findings else f"{len(findings)} found"
    return CheckResult(check, status, summary, findings)


def duplicate_indexes(conn, th: Thresholds) -> CheckResult:
    from opsctl.db.health import exact_duplicates, indexes

    findings = [
        Finding(
            f"{dup.table}.{dup.index}",
            WARNING,
            float(dup.bytes),
            f"identical to {kept.index}: same columns, method, operator classes, "
            f"expressions and predicate; drop {dup.index}",
        )
        for dup, kept in exact_duplicates(indexes(conn))
    ]
    return _result("duplicate_indexes", findings, "no index is identical to another")


def not_valid_constraints(conn, th: Thresholds) -> CheckResult:
    from sqlalchemy import text

    rows = conn.execute(text("""
        SELECT n.nspname, t.relname, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE NOT c.convalidated ORDER BY 1, 2, 3""")).all()  # fmt: skip
    findings = [
        Finding(
            f"{_name(s, t)}.{c}",
            WARNING,
            None,
            f"{d.removesuffix(' NOT VALID')} was added NOT VALID and never validated: "
            "existing rows are unchecked; "
            f"run ALTER TABLE {_name(s, t)} VALIDATE CONSTRAINT {c} (takes SHARE UPDATE "
            "EXCLUSIVE: reads and writes go on)",
        )
        for s, t, c, d in rows
    ]
    return _result("not_valid_constraints", findings, "every constraint is validated")


# Estimated pages a table needs for its rows (ioguix's method, as check_postgres and PgHero
# use it): tuple size from pg_stats' average widths and null fractions plus the tuple header,
# aligned to MAXALIGN (8 on 64-bit), per-page header 24 bytes, the table's fillfactor; TOAST
# counted at 4 chunks a page. Tables with a column lacking statistics are skipped.
_TABLE_BLOAT = """
WITH cols AS (
  SELECT ns.nspname, tbl.relname, tbl.reltuples, tbl.relpages AS heap_pages,
         coalesce(toast.relpages, 0) AS toast_pages, coalesce(toast.reltuples, 0) AS toast_rows,
         coalesce((SELECT option_value::int FROM pg_options_to_table(tbl.reloptions)
                   WHERE option_name = 'fillfactor'), 100) AS ff,
         23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(*)) / 8 ELSE 0 END
           AS hdr,
         sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS width,
         count(att.attname) <> count(s.attname)
           OR bool_or(att.atttypid = 'pg_catalog.name'::regtype) AS no_stats
  FROM pg_attribute att JOIN pg_class tbl ON tbl.oid = att.attrelid
  JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
  LEFT JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = tbl.relname
                      AND NOT s.inherited AND s.attname = att.attname
  LEFT JOIN pg_class toast ON toast.oid = tbl.reltoastrelid
  WHERE att.attnum > 0 AND NOT att.attisdropped AND tbl.relkind = 'r' AND tbl.relpages > 0
    AND tbl.reltuples >= 0 AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
  GROUP BY ns.nspname, tbl.oid, tbl.relname, tbl.reltuples, tbl.relpages, toast.relpages,
           toast.reltuples, tbl.reloptions
), sized AS (
  SELECT *, current_setting('block_size')::numeric AS bs,
         4 + hdr + width + 16 - CASE WHEN hdr % 8 = 0 THEN 8 ELSE hdr % 8 END
           - CASE WHEN ceil(width)::int % 8 = 0 THEN 8 ELSE ceil(width)::int % 8 END AS tuple_bytes
  FROM cols WHERE NOT no_stats
)
SELECT nspname, relname, heap_pages + toast_pages, bs,
       ceil(reltuples / ((bs - 24) * ff / (tuple_bytes * 100))) + ceil(toast_rows / 4)
FROM sized
"""

# The same for B-tree indexes: index tuple header 8 bytes (12 with a null bitmap), item
# pointer 4, page header 24 and B-tree special space 16, default fillfactor 90; widths from
# the table's pg_stats (or the index's own, for expressions).
_INDEX_BLOAT = """
WITH idx AS (
  SELECT ns.nspname, tbl.relname AS tblname, ic.relname AS idxname, ic.reltuples, ic.relpages,
         x.indexrelid,
         coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions)
                   WHERE option_name = 'fillfactor'), 90) AS ff
  FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
  JOIN pg_class tbl ON tbl.oid = x.indrelid
  JOIN pg_namespace ns ON ns.oid = ic.relnamespace
  JOIN pg_am am ON am.oid = ic.relam
  WHERE am.amname = 'btree' AND x.indisvalid AND tbl.relkind = 'r' AND ic.relpages > 0
    AND ic.reltuples >= 0 AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
), widths AS (
  SELECT i.nspname, i.tblname, i.idxname, i.reltuples, i.relpages, i.ff,
         CASE WHEN max(coalesce(s.null_frac, 0)) = 0 THEN 8 ELSE 12 END AS hdr,
         sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS width,
         bool_or(s.attname IS NULL) AS no_stats
  FROM idx i JOIN pg_attribute a ON a.attrelid = i.indexrelid AND a.attnum > 0
  LEFT JOIN pg_stats s ON s.schemaname = i.nspname
       AND ((s.tablename = i.tblname AND s.attname = pg_get_indexdef(a.attrelid, a.attnum, true))
            OR (s.tablename = i.idxname AND s.attname = a.attname))
  GROUP BY 1, 2, 3, 4, 5, 6
), sized AS (
  SELECT *, current_setting('block_size')::numeric AS bs,
         hdr + 8 - CASE WHEN hdr % 8 = 0 THEN 8 ELSE hdr % 8 END
           + width + 8 - CASE WHEN width = 0 THEN 8 WHEN ceil(width)::int % 8 = 0 THEN 8
                              ELSE ceil(width)::int % 8 END AS tuple_bytes
  FROM widths WHERE NOT no_stats
)
SELECT nspname, idxname, relpages, bs,
       1 + ceil(reltuples / floor((bs - 24 - 16) * ff / (100 * (4 + tuple_bytes))))
FROM sized
"""


# Relations whose size statistics were never gathered (reltuples -1 until the first VACUUM or
# ANALYZE): no estimate can be made for them, and the summary says so.
_NEVER_ANALYZED = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = :kind AND c.reltuples < 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
"""


def _bloat(conn, th: Thresholds, check: str, sql: str, what: str) -> CheckResult:
    from sqlalchemy import text

    findings = []
    for schema, rel, pages, bs, expected in conn.execute(text(sql)):
        pages, bs, expected = float(pages), float(bs), float(expected or 0)
        wasted = (pages - expected) * bs
        pct = 100 * (pages - expected) / pages if pages else 0.0
        if wasted >= th.bloat_min_bytes and pct >= th.bloat_pct:
            findings.append(Finding(
                _name(schema, rel), WARNING, round(pct, 1),
                f"estimated {pct:.0f}% bloat, about {wasted / 1e6:.1f} MB of "
                f"{pages * bs / 1e6:.1f} MB (an estimate from pg_stats; ANALYZE first)",
            ))  # fmt: skip
    findings.sort(key=lambda f: -(f.value or 0))
    result = _result(check, findings, f"no {what} estimated over {th.bloat_pct:g}% and "
                     f"{th.bloat_min_bytes / 1e6:g} MB bloat (an estimate)")  # fmt: skip
    kind = "r" if check == "table_bloat" else "i"
    never = conn.execute(text(_NEVER_ANALYZED), {"kind": kind}).scalar() or 0
    if never:
        result.summary += (f"; {never} {'tables' if kind == 'r' else 'indexes'} never "
                           "analyzed, not estimated (run ANALYZE)")  # fmt: skip
    return result


def table_bloat(conn, th: Thresholds) -> CheckResult:
    return _bloat(conn, th, "table_bloat", _TABLE_BLOAT, "table")


def index_bloat(conn, th: Thresholds) -> CheckResult:
    return _bloat(conn, th, "index_bloat", _INDEX_BLOAT, "B-tree index")


def cache_hit(conn, th: Thresholds) -> CheckResult:
    from sqlalchemy import text

    parts, findings = [], []
    for what, sql in (
        ("tables", "SELECT sum(heap_blks_hit), sum(heap_blks_read) FROM pg_statio_user_tables"),
        ("indexes", "SELECT sum(idx_blks_hit), sum(idx_blks_read) FROM pg_statio_user_indexes"),
    ):
        hit, read = (int(v or 0) for v in conn.execute(text(sql)).one())
        total = hit + read
        if total == 0:
            parts.append(f"{what}: no blocks read yet")
            continue
        rate = 100 * hit / total
        parts.append(f"{what} {rate:.2f}% of {total:,} blocks")
        if total >= th.cache_min_blocks and rate < th.cache_hit_pct:
            findings.append(Finding(what, WARNING, round(rate, 2),
                                    f"{rate:.2f}% of {total:,} block reads hit the buffer cache "
                                    f"(under {th.cache_hit_pct:g}%): shared_buffers or memory "
                                    "may be too small for the working set"))  # fmt: skip
        elif total < th.cache_min_blocks:
            parts[-1] += " (too few to judge)"
    result = _result("cache_hit", findings, "")
    result.summary = "; ".join(parts)
    return result


def xid_wraparound(conn, th: Thresholds) -> CheckResult:
    from sqlalchemy import text

    rels = conn.execute(text("""
        SELECT n.nspname, c.relname, c.relkind, age(c.relfrozenxid),
               least(coalesce((SELECT option_value::bigint FROM pg_options_to_table(c.reloptions)
                               WHERE option_name = 'autovacuum_freeze_max_age'),
                              current_setting('autovacuum_freeze_max_age')::bigint),
                     current_setting('autovacuum_freeze_max_age')::bigint),
               owner_ns.nspname, owner.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class owner ON c.relkind = 't' AND owner.reltoastrelid = c.oid
        LEFT JOIN pg_namespace owner_ns ON owner_ns.oid = owner.relnamespace
        WHERE c.relkind IN ('r', 'm', 't') AND n.nspname NOT LIKE 'pg_temp%'
          AND n.nspname NOT LIKE 'pg_toast_temp%'
        ORDER BY 4 DESC""")).all()  # fmt: skip
    dbs = conn.execute(text("""
        SELECT datname, age(datfrozenxid), current_setting('autovacuum_freeze_max_age')::bigint
        FROM pg_database ORDER BY 2 DESC""")).all()  # fmt: skip
    findings = []

    def judge(target: str, age: int, limit: int) -> None:
        if age >= th.xid_critical_age:
            sev, why = CRITICAL, f"at {th.xid_critical_age:,}: near wraparound, VACUUM (FREEZE) now"
        elif age > limit:
            sev = WARNING
            why = (f"past autovacuum_freeze_max_age {limit:,}: anti-wraparound autovacuum is "
                   "due and has not caught up (blocked or too slow?)")  # fmt: skip
        else:
            return
        findings.append(Finding(target, sev, float(age), f"XID age {age:,}, {why}"))

    for nsp, rel, kind, age, limit, owner_nsp, owner in rels:
        target = _name(nsp, rel)
        if kind == "t" and owner:
            target += f" (TOAST of {_name(owner_nsp, owner)})"
        judge(target, int(age), int(limit))
    for db, age, limit in dbs:
        judge(f"database {db}", int(age), int(limit))
    oldest = max([int(r[3]) for r in rels] + [0])
    oldest_db = max([int(r[1]) for r in dbs] + [0])
    result = _result("xid_wraparound", findings, "")
    result.summary = (f"oldest relation XID age {oldest:,}, oldest database {oldest_db:,}; "
                      f"autovacuum_freeze_max_age {int(dbs[0][2]) if dbs else 0:,}")  # fmt: skip
    return result


def sequences(conn, th: Thresholds) -> CheckResult:
    from sqlalchemy import text

    rows = conn.execute(text("""
        SELECT s.schemaname, s.sequencename, s.last_value, s.min_value, s.max_value,
               s.increment_by, tn.nspname, t.relname, a.attname, a.atttypid::regtype::text
        FROM pg_sequences s
        JOIN pg_namespace sn ON sn.nspname = s.schemaname
        JOIN pg_class sc ON sc.relnamespace = sn.oid AND sc.relname = s.sequencename
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = sc.oid
             AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
             AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.last_value IS NOT NULL
        ORDER BY 1, 2""")).all()  # fmt: skip
    findings = []
    for nsp, seq, last, lo, hi, inc, tnsp, table, col, coltype in rows:
        last, lo, hi = int(last), int(lo), int(hi)
        limit_by = "its maximum"
        if inc > 0:
            top = hi
            if coltype in INT_MAX and INT_MAX[coltype] < hi:
                top, limit_by = INT_MAX[coltype], f"the {coltype} column {table}.{col}"
            used = 100 * (last - lo) / (top - lo) if top > lo else 100.0
            left = top - last
        else:
            bottom = lo
            if coltype in INT_MIN and INT_MIN[coltype] > lo:
                bottom, limit_by = INT_MIN[coltype], f"the {coltype} column {table}.{col}"
            used = 100 * (hi - last) / (hi - bottom) if hi > bottom else 100.0
            left = last - bottom
        if used >= th.sequence_warn_pct:
            sev = CRITICAL if used >= th.sequence_crit_pct else WARNING
            feeds = f" (feeds {_name(tnsp, table)}.{col})" if table else ""
            findings.append(Finding(
                _name(nsp, seq) + feeds, sev, round(used, 2),
                f"{used:.1f}% used: {left:,} values left before {limit_by}; widen the "
                "column to bigint (and the sequence) before it runs out",
            ))  # fmt: skip
    ok = f"{len(rows)} sequences in use, none past {th.sequence_warn_pct:g}%"
    return _result("sequences", findings, ok)


PG_CHECKS = {
    "duplicate_indexes": duplicate_indexes,
    "not_valid_constraints": not_valid_constraints,
    "table_bloat": table_bloat,
    "index_bloat": index_bloat,
    "cache_hit": cache_hit,
    "xid_wraparound": xid_wraparound,
    "sequences": sequences,
}


def run_checks(database_url: str, thresholds: Thresholds | None = None,
               only: list[str] | None = None) -> HealthReport:  # fmt: skip
    """Every check (or ``only`` those) on the database; one that cannot run (permissions,
    an old server) is UNKNOWN with its error, the others go on."""
    from sqlalchemy.exc import SQLAlchemyError

    from opsctl.errors import one_line

    th = thresholds or Thresholds()
    names = only or CHECKS
    bad = [n for n in names if n not in CHECKS]
    if bad:
        from backend.ops.errors import InvalidInput

        raise InvalidInput(f"unknown check {bad[0]!r}; checks: {', '.join(CHECKS)}")
    results = []
    with connection(database_url, autocommit=True) as conn:
        vendor = conn.dialect.name
        for name in names:
            if vendor != "postgresql" and name != "duplicate_indexes":
                results.append(CheckResult(name, NOT_APPLICABLE, SQLITE_NOT_APPLICABLE[name]))
                continue
            try:
                results.append(PG_CHECKS[name](conn, th))
            except SQLAlchemyError as exc:
                cause = getattr(exc, "orig", None) or exc
                results.append(CheckResult(name, UNKNOWN, f"could not check: {one_line(cause)}"))
    code = nagios([r.status for r in results])
    word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code]
    bad_checks = [r for r in results if r.status in (WARNING, CRITICAL, UNKNOWN)]
    if not bad_checks:
        applied = sum(r.status != NOT_APPLICABLE for r in results)
        skipped = len(results) - applied
        line = f"DB {word} - {applied} check{'s' if applied != 1 else ''} passed" + (
            f" ({skipped} do not apply)" if skipped else "")  # fmt: skip
    else:
        line = f"DB {word} - " + ", ".join(
            f"{r.check}: {r.summary} ({r.status})" for r in bad_checks
        )
    return HealthReport(vendor, code, line, results)


__all__ = ["CHECKS", "CheckResult", "Finding", "HealthReport", "Thresholds", "run_checks"]
