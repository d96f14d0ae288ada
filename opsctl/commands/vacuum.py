"""opsctl vacuum: VACUUM / ANALYZE with before-and-after figures, audited."""

from __future__ import annotations

import sys

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json


def command(
    tables: list[str] = typer.Argument(None, help="Tables (default: all; PostgreSQL)."),
    analyze: bool = typer.Option(False, "--analyze", help="Also refresh planner statistics."),
    full: bool = typer.Option(False, "--full", help="VACUUM FULL: rewrites and LOCKS the table."),
    yes: bool = options.YES,
    lock_timeout: str = options.LOCK_TIMEOUT,
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON list per table."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """VACUUM a table (or the SQLite file), with figures before and after, audited.

    PostgreSQL: VACUUM (ANALYZE) outside a transaction with a lock timeout; --full needs
    --yes off a terminal. SQLite: the whole-file VACUUM (needs about twice the file in free
    disk, checked first) always asks. Dead rows and size before and after are shown; each
    run is an audit event (the backend's audit table, or var/audit.jsonl on a database
    without one).

    Exit 0 done, 1 failed, 2 refused (not confirmed), 3 a table's lock was not free within
    --lock-timeout (retry later).

    JSON keys: table, dead_before, dead_after, bytes_before, bytes_after, seconds, mode,
    audit."""
    lock_timeout_ms = options.duration_ms(lock_timeout, "--lock-timeout")
    actor = options.actor(actor)
    from opsctl.db.engine import vendor_of
    from opsctl.db.health import vacuum

    url = options.database_url(database_url)
    confirmed = yes
    if not yes and sys.stdin.isatty() and (full or vendor_of(url) == "sqlite"):
        confirmed = typer.confirm("this VACUUM locks while it runs; go ahead?")
        if not confirmed:
            raise CommandError("cancelled; nothing changed")
    results = vacuum(url, tables or [], analyze, full, confirmed, lock_timeout_ms, actor)
    if as_json:
        emit_json(results)
        return
    out = console()
    for r in results:
        dead = "" if r.dead_before is None else f", dead {r.dead_before} -> {r.dead_after}"
        out.print(
            f"{r.mode} {r.table}: {r.bytes_before / 1e6:.1f} MB -> {r.bytes_after / 1e6:.1f} MB"
            f"{dead} in {r.seconds:.2f}s (recorded in {r.audit})",
            markup=False,
        )
