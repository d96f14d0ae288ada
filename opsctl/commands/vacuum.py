"""opsctl vacuum: VACUUM / ANALYZE with before-and-after figures, audited."""

from __future__ import annotations

import sys

import typer

from opsctl.output import CommandError, console, emit_json


def command(
    tables: list[str] = typer.Argument(None, help="Tables (default: all; PostgreSQL)."),
    analyze: bool = typer.Option(False, "--analyze", help="Also refresh planner statistics."),
    full: bool = typer.Option(False, "--full", help="VACUUM FULL: rewrites and LOCKS the table."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm a locking vacuum off a terminal."),
    lock_timeout: int = typer.Option(5000, "--lock-timeout-ms", help="Give up waiting for a lock."),
    actor: str = typer.Option(None, "--actor", help="Who (default: the OS user)."),
    as_json: bool = typer.Option(False, "--json", help="JSON list per table."),
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Any database URL."
    ),
) -> None:
    """PostgreSQL: VACUUM (ANALYZE) outside a transaction with a lock timeout; --full needs
    --yes off a terminal. SQLite: the whole-file VACUUM (needs about twice the file in free
    disk, checked first) always asks. Dead rows and size before and after are shown; each
    run is an audit event. JSON keys: table, dead_before, dead_after, bytes_before,
    bytes_after, seconds, mode, audit."""
    from backend.config import database_url as default_url
    from opsctl.dbhealth import DatabaseUnavailable, NotConfirmed, UnknownTable, vacuum

    url = database_url or default_url()
    confirmed = yes
    if not yes and sys.stdin.isatty() and (full or url.startswith("sqlite")):
        confirmed = typer.confirm("this VACUUM locks while it runs; go ahead?")
        if not confirmed:
            raise CommandError("cancelled; nothing changed")
    try:
        results = vacuum(url, tables or [], analyze, full, confirmed, lock_timeout, actor)
    except NotConfirmed as exc:
        raise CommandError(str(exc), 2) from None
    except UnknownTable as exc:
        raise CommandError(str(exc)) from None
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:  # lock timeout and friends: one line, not a traceback
        text = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        if "lock timeout" in text:
            raise CommandError(f"VACUUM could not get its lock: {text}; retry later", 3) from None
        raise CommandError(f"VACUUM failed: {text}") from None
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
