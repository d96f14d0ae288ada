"""opsctl migrate: Django's migration state, the SQL a deploy will run, its safety findings,
and a guarded apply/rollback that never queues behind exam traffic."""

from __future__ import annotations

import sys

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, print_table

app = typer.Typer(help="Migrations under guard: status, plan (SQL + findings), apply, rollback.")

DB_OPT = options.DATABASE_URL


def _setup(database_url, create: bool = False):
    from opsctl.service import open_backend

    # The migration commands work on a database without the backend's tables (a new one).
    open_backend(database_url, create=create, migrated=False)


def _print_plan(plan, show_sql: bool = True) -> None:
    out = console()
    if not plan.steps:
        out.print("nothing to do: every migration is applied")
        return
    colours = {"blocking": "red", "warning": "yellow", "info": "dim"}
    for step in plan.steps:
        arrow = "unapply" if step.backwards else "apply"
        out.print(f"[bold]{arrow} {step.app}.{step.name}[/bold]")
        if show_sql:
            for sql in step.sql:
                out.print(f"    {sql}", markup=False, highlight=False, soft_wrap=True)
        for f in step.findings:
            out.print(f"  [{colours.get(f.severity, '')}]{f.severity.upper()} {f.rule}[/]: {f.why}")
            out.print(f"      safe pattern: {f.safe_pattern}", markup=False, soft_wrap=True)


@app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON: [{app, applied, unapplied}]."),
    database_url: str = DB_OPT,
) -> None:
    """Applied and unapplied migrations per app (Django's own migration table).

    Exit 0 shown, 1 failed."""
    _setup(database_url)
    from backend.ops import schema_changes

    rows = schema_changes.status()
    if as_json:
        emit_json(rows)
        return
    print_table(
        "migrations",
        ("app", "applied", "unapplied", "latest applied"),
        [(r.app, len(r.applied), ", ".join(r.unapplied) or "-",
          r.applied[-1] if r.applied else "-") for r in rows],
    )  # fmt: skip


@app.command("plan")
def plan_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON: steps with sql and findings."),
    database_url: str = DB_OPT,
) -> None:
    """The SQL each unapplied migration will run here, with safety findings.

    Exit 0 when nothing blocks, 1 failed (e.g. database unavailable), 2 when a blocking
    finding is present.
    """
    _setup(database_url)
    from backend.ops import schema_changes

    plan = schema_changes.plan()
    if as_json:
        emit_json({"vendor": plan.vendor, "steps": plan.steps})
    else:
        _print_plan(plan)
    if plan.blocking():
        raise typer.Exit(2)


@app.command("apply")
def apply_cmd(
    yes: bool = options.YES,
    lock_timeout: str = options.LOCK_TIMEOUT,
    statement_timeout: str = typer.Option(
        "60s", "--statement-timeout", help="Stop a statement after this long (PostgreSQL)."
    ),
    allow: list[str] = typer.Option(
        None, "--allow", help="Allow a blocking rule by name (repeatable)."
    ),
    lock_retries: int = typer.Option(
        2,
        "--lock-retries",
        min=0,
        help="Try a migration whose lock was not free this many more times.",
    ),
    retry_delay: str = typer.Option(
        "1s",
        "--retry-delay",
        help="Wait this long before the first retry, twice as long before the next, ...",
    ),
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: {applied: [app.name], attempts: [{attempt, outcome, migration, error, "
        "retry_in_seconds}]} (also when every attempt timed out, with exit 3).",
    ),
    database_url: str = DB_OPT,
) -> None:
    """Apply unapplied migrations, refusing while a blocking finding is not --allow'ed.

    On PostgreSQL lock_timeout and statement_timeout are set so a migration fails fast
    instead of queueing behind exam traffic; a migration whose lock was not free is rolled
    back and tried again (--lock-retries, with a doubling --retry-delay), each attempt
    reported. Every apply is an audit event.

    Exit 0 applied (or nothing to do), 1 failed or cancelled, 2 refused (a blocking
    finding), 3 a lock was not free within --lock-timeout on the last attempt (nothing of
    that migration ran).
    """
    options.duration(lock_timeout, "--lock-timeout")
    options.duration(statement_timeout, "--statement-timeout")
    options.duration(retry_delay, "--retry-delay")
    actor = options.actor(actor)
    _setup(database_url, create=True)
    from backend.ops import schema_changes

    plan = schema_changes.plan()
    if not plan.steps:
        if as_json:
            emit_json({"applied": []})
        else:
            console().print("nothing to do: every migration is applied")
        return
    if not as_json:
        _print_plan(plan, show_sql=False)
    blocking = plan.blocking(set(allow or ()))
    if not blocking and not yes:
        if not sys.stdin.isatty():
            raise CommandError("not on a terminal: add --yes to apply without asking")
        if not typer.confirm(f"apply {len(plan.steps)} migration(s)?"):
            raise CommandError("cancelled; nothing applied")
    try:
        done = schema_changes.apply(
            allow=set(allow or ()), lock_timeout=lock_timeout,
            statement_timeout=statement_timeout, actor=actor, lock_retries=lock_retries,
            retry_delay=retry_delay, on_attempt=None if as_json else _print_attempt,
        )  # fmt: skip
    except schema_changes.LockTimeout as exc:
        if as_json:  # what happened, on stdout; the error stays one line on stderr
            emit_json({"applied": exc.applied, "attempts": exc.attempts})
        raise
    applied = [f"{s.app}.{s.name}" for s in done.steps]
    if as_json:
        emit_json({"applied": applied, "attempts": done.attempts})
    else:
        console().print(f"applied {len(applied)} migration(s)")


def _print_attempt(attempt) -> None:
    """One line per attempt, as it ends (the last failed one is the command's error)."""
    if attempt.outcome == "ok":
        if attempt.attempt > 1:
            console().print(f"attempt {attempt.attempt}: applied")
        return
    line = f"attempt {attempt.attempt}: lock timeout on {attempt.migration} ({attempt.error})"
    if attempt.retry_in_seconds:
        line += f"; retrying in {attempt.retry_in_seconds:g}s"
    console().print(line, markup=False, highlight=False)


@app.command("rollback")
def rollback_cmd(
    app_label: str = typer.Argument(..., metavar="APP", help="The app, e.g. exams."),
    target: str = typer.Argument(..., help="Migrate back to this migration (or 'zero')."),
    yes: bool = options.YES,
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: what was unapplied."),
    database_url: str = DB_OPT,
) -> None:
    """Show what migrating APP back to TARGET will run, then do it.

    Exit 0 done (or nothing to do), 1 failed or cancelled, 2 refused (no such migration)."""
    actor = options.actor(actor)
    _setup(database_url)
    from backend.ops import schema_changes

    plan = schema_changes.rollback_plan(app_label, target)
    if not plan.steps:
        console().print(f"{app_label} is already at {target}")
        return
    if not as_json:
        _print_plan(plan)
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError("not on a terminal: add --yes to roll back without asking")
        if not typer.confirm(f"unapply {len(plan.steps)} migration(s)?"):
            raise CommandError("cancelled; nothing changed")
    done = schema_changes.rollback(app_label, target, actor=actor)
    if as_json:
        emit_json({"unapplied": [f"{s.app}.{s.name}" for s in done.steps]})
    else:
        console().print(f"unapplied {len(done.steps)} migration(s)")
