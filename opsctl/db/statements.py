"""Query statistics from PostgreSQL's pg_stat_statements (SQLAlchemy, no Django), through the
one engine module."""

from __future__ import annotations

from backend.ops.errors import InvalidInput, Unavailable
from opsctl.db.engine import connect, make_engine, unavailable, vendor_of
from opsctl.errors import one_line
from opsctl.telemetry import QueryStats

HOW_TO_ENABLE = (
    "pg_stat_statements is not available: add it to shared_preload_libraries "
    "(ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'), restart PostgreSQL, "
    "then CREATE EXTENSION pg_stat_statements in this database (scripts/pg-setup.sh does all "
    "three on a local server)"
)


class PgStatementsUnavailable(Unavailable):
    """pg_stat_statements is not installed or not readable here."""


def top_statements(database_url: str, by: str = "total", limit: int = 20) -> list[QueryStats]:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    if vendor_of(database_url) != "postgresql":
        raise InvalidInput("--source pg needs a PostgreSQL --database-url")
    order = {"total": "total_exec_time", "mean": "mean_exec_time", "calls": "calls",
             "p95": "max_exec_time"}[by]  # fmt: skip
    engine = make_engine(database_url)
    try:
        with connect(engine) as conn:
            present = conn.execute(
                text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            ).first()
            if not present:
                raise PgStatementsUnavailable(HOW_TO_ENABLE)
            try:
                rows = conn.execute(
                    text(
                        "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, "
                        "rows FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                        f"WHERE datname = current_database()) ORDER BY {order} DESC LIMIT :n"
                    ),
                    {"n": limit},
                ).all()
            except SQLAlchemyError as exc:
                raise PgStatementsUnavailable(f"{HOW_TO_ENABLE} ({one_line(exc.orig)})") from None
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None
    finally:
        engine.dispose()
    return _query_stats(rows)


# The statements opsctl itself sends to read the statistics and plan: never worth explaining.
_OWN = ("pg_stat_statements", "hypopg", "pg_catalog.", "pg_class", "pg_attribute", "pg_index")


def explainable_statements(database_url: str, limit: int = 1000) -> list[QueryStats]:
    """The costliest statements (total time since the statistics' reset) that ``opsctl
    explain --top --source pg`` may plan: the application's, not the tool's own reads."""
    rows = top_statements(database_url, "total", limit)
    return [q for q in rows if not is_own(q.example)]


def is_own(sql: str) -> bool:
    """Whether ``sql`` is one of the statements opsctl sends itself (statistics, catalogs)."""
    return any(own in sql for own in _OWN)


def _query_stats(rows) -> list[QueryStats]:
    from backend.ops.fingerprint import fingerprint

    return [
        QueryStats(
            fingerprint(q)[0],
            int(calls),
            round(total, 3),
            round(mean, 3),
            None,
            round(mx, 3),
            int(nrows),
            [],
            q,
        )
        for q, calls, total, mean, mx, nrows in rows
    ]
