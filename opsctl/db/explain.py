"""Run EXPLAIN safely on any database URL (SQLAlchemy, no Django) and gather the planner
statistics the advisor needs.

Safety: one statement only; the transaction is READ ONLY on PostgreSQL (``PRAGMA query_only``
on SQLite), has a statement timeout, and is always rolled back. ``--analyze`` (which
executes) is allowed only for a single SELECT / WITH ... SELECT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from opsctl.db.engine import connect, make_engine
from opsctl.db.plan_advice import ColumnStats, Finding, TableInfo, advise
from opsctl.db.plan_model import PlanNode, from_postgres, from_sqlite
from opsctl.db.sqlsafety import (
    Calls,
    Refused,
    analyzable_calls,
    check_analyze,
    check_plain,
    number_placeholders,
    refuse_volatile,
    single_statement,
)
from opsctl.errors import DatabaseUnavailable  # noqa: F401  (re-exported: callers catch it)

# --analyze runs as this role: it reads everything (pg_read_all_data) and may signal, reset or
# create nothing. scripts/pg-setup.sh creates it; without it --analyze is refused rather than
# run with the connecting user's (often superuser) rights.
ANALYZE_ROLE = "opsctl_explain"

_INERROR = 3  # psycopg.pq.TransactionStatus.INERROR, without importing psycopg at load time


@dataclass
class ExplainResult:
    vendor: str
    sql: str
    analyzed: bool
    raw_plan: object
    root: PlanNode
    findings: list[Finding] = field(default_factory=list)


def engine_for(url: str):
    """The engine for ``url`` from the one database module (a missing SQLite file refused)."""
    return make_engine(url)


def _pg_tables(conn, relations: set[str]) -> dict[str, TableInfo]:
    from sqlalchemy import text

    tables = {}
    for rel in relations:
        row = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE relname = :r AND relkind = 'r'"), {"r": rel}
        ).first()
        if row is None:
            continue
        info = TableInfo(rows=max(float(row[0]), 0.0))
        for name, nd in conn.execute(
            text("SELECT a.attname, s.n_distinct FROM pg_attribute a "
                 "JOIN pg_class c ON c.oid = a.attrelid "
                 "LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = a.attname "
                 "WHERE c.relname = :r AND a.attnum > 0 AND NOT a.attisdropped"), {"r": rel},
        ):  # fmt: skip
            info.columns[name] = ColumnStats(None if nd is None else float(nd))
        for idx, cols in conn.execute(
            text("SELECT i.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index x "
                 "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid "
                 "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) "
                 "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
                 "WHERE t.relname = :r AND x.indisvalid GROUP BY i.relname"), {"r": rel},
        ):  # fmt: skip
            info.indexes[idx] = list(cols)
        tables[rel] = info
    return tables


def _sqlite_tables(conn, relations: set[str]) -> dict[str, TableInfo]:
    from sqlalchemy import text

    tables = {}
    known = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    for rel in relations & known:
        q = rel.replace('"', '""')
        info = TableInfo(rows=float(conn.execute(text(f'SELECT COUNT(*) FROM "{q}"')).scalar()))
        for row in conn.execute(text(f'PRAGMA table_info("{q}")')):
            info.columns[row[1]] = ColumnStats()
        for row in conn.execute(text(f'PRAGMA index_list("{q}")')):
            name = row[1]
            cols = [r[2] for r in conn.execute(text(f'PRAGMA index_info("{name}")'))]
            info.indexes[name] = cols
        tables[rel] = info
    return tables


def explain(
    database_url: str,
    sql: str,
    params: list | dict | None = None,
    analyze: bool = False,
    buffers: bool = False,
    timeout_s: float = 10.0,
) -> ExplainResult:
    statement = single_statement(sql)
    if analyze:
        check_analyze(statement)
    else:
        check_plain(statement)
    engine = engine_for(database_url)
    try:
        conn = connect(engine)
        try:
            vendor = conn.dialect.name
            raw_conn = conn.connection.driver_connection
            if vendor == "postgresql":
                calls = analyzable_calls(statement) if analyze else None
                result = _explain_pg(
                    raw_conn, statement, params, analyze, buffers, timeout_s, calls
                )
            elif vendor == "sqlite":
                result = _explain_sqlite(raw_conn, statement, params, timeout_s)
            else:
                raise Refused(f"EXPLAIN on {vendor} is not supported")
            relations = {n.relation for n in result.root.walk() if n.relation}
            tables = (_pg_tables if vendor == "postgresql" else _sqlite_tables)(conn, relations)
            result.findings = advise(result.root, tables, vendor, statement)
            if vendor == "postgresql" and any(f.index for f in result.findings):
                from opsctl.db.hypothetical import verify_findings

                conn.rollback()
                result.findings = verify_findings(
                    raw_conn, statement, params, result.findings, timeout_s
                )
            return result
        finally:
            conn.rollback()
            conn.close()
    finally:
        engine.dispose()


def _guard_analyze(cur, calls: Calls) -> None:
    """Before --analyze executes: refuse volatile calls, then drop to the read-only role."""
    names = sorted({name for _, name in calls.functions})
    cur.execute(
        "SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.provolatile = 'v' AND p.proname = ANY(%s)",
        [names],
    )
    volatile = {(schema, name) for schema, name in cur.fetchall()}
    cur.execute(
        "SELECT o.oprname, n.nspname || '.' || p.proname || '()' FROM pg_operator o"
        " JOIN pg_proc p ON p.oid = o.oprcode JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.provolatile = 'v' AND o.oprname = ANY(%s)",
        [sorted(calls.operators)],
    )
    operators = dict(cur.fetchall())
    cur.execute("SELECT current_schemas(true)")
    refuse_volatile(calls, volatile, operators, list(cur.fetchone()[0]))
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ANALYZE_ROLE])
    if cur.fetchone() is None:
        raise Refused(
            f"--analyze runs as the read-only role {ANALYZE_ROLE}, which this server lacks; "
            f"create it with scripts/pg-setup.sh (CREATE ROLE {ANALYZE_ROLE} NOLOGIN; "
            f"GRANT pg_read_all_data TO {ANALYZE_ROLE})"
        )
    import psycopg

    try:
        cur.execute(f"SET LOCAL ROLE {ANALYZE_ROLE}")
    except psycopg.errors.InsufficientPrivilege:
        raise Refused(
            f"--analyze runs as the role {ANALYZE_ROLE}, and this user may not switch to it: "
            f"GRANT {ANALYZE_ROLE} TO <this user>"
        ) from None


def _explain_pg(raw, sql, params, analyze, buffers, timeout_s, calls=None) -> ExplainResult:
    import psycopg

    options = ["FORMAT JSON"]
    if analyze:
        options.append("ANALYZE")
    if buffers:
        options.append("BUFFERS")
    opts = ", ".join(options)
    with raw.cursor() as cur:
        try:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}")
            if analyze:
                _guard_analyze(cur, calls or analyzable_calls(sql))
            plan = pg_plan(cur, sql, params, opts, analyze)
        except psycopg.errors.QueryCanceled:
            raise Refused(
                f"EXPLAIN took longer than the {timeout_s:g}s statement timeout"
            ) from None
        except psycopg.Error as exc:
            raise Refused(
                f"PostgreSQL refused the statement: {str(exc).strip().splitlines()[0]}"
            ) from None
        finally:
            raw.rollback()
    return ExplainResult("postgresql", sql, analyze, plan, from_postgres(plan))


def pg_plan(cur, sql, params, opts="FORMAT JSON", analyze=False, name="opsctl_explain"):
    """EXPLAIN (``opts``) ``sql`` on ``cur`` (inside the caller's guarded transaction): the
    plan as PostgreSQL's JSON. Statements with placeholders and no values get the generic
    plan through a statement prepared as ``name``, deallocated after."""
    values = list(params.values()) if isinstance(params, dict) else list(params or [])
    numbered, n = number_placeholders(sql)
    # prepare=True: the extended protocol, where the server refuses a second statement
    # whatever the text looks like (sqlparse and PostgreSQL can disagree on where a
    # string ends, e.g. 'a\'; COMMIT; DELETE ...'), so nothing can run after COMMIT.
    if n and not analyze and all(v is None for v in values):
        # Values unknown (the telemetry never records them): PostgreSQL's generic plan,
        # which does not depend on the NULL arguments. Binding NULLs into a custom plan
        # would show "WHERE a = NULL" folded to nothing. (PG 16: EXPLAIN (GENERIC_PLAN).)
        cur.execute(f"PREPARE {name} AS {numbered}", prepare=True)
        try:
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            nulls = ", ".join(["NULL"] * n)
            cur.execute(f"EXPLAIN ({opts}) EXECUTE {name}({nulls})", prepare=True)
            plan = cur.fetchone()[0]
        finally:
            # A prepared statement outlives the transaction; the name is free for the next.
            if cur.connection.info.transaction_status != _INERROR:
                cur.execute(f"DEALLOCATE {name}")
    else:
        cur.execute(f"EXPLAIN ({opts}) {sql}", params or None, prepare=True)
        plan = cur.fetchone()[0]
    return json.loads(plan) if isinstance(plan, str) else plan


def _explain_sqlite(raw, sql, params, timeout_s) -> ExplainResult:
    import sqlite3

    raw.execute("PRAGMA query_only = ON")
    try:
        text_sql = sql.replace("%s", "?")
        rows = raw.execute(f"EXPLAIN QUERY PLAN {text_sql}", params or ()).fetchall()
    except sqlite3.Error as exc:
        raise Refused(f"SQLite refused the statement: {exc}") from None
    finally:
        raw.execute("PRAGMA query_only = OFF")
    raw_plan = [{"id": r[0], "parent": r[1], "detail": r[3]} for r in rows]
    return ExplainResult("sqlite", sql, False, raw_plan, from_sqlite(rows))
