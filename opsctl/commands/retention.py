"""opsctl retention: what the policies would purge, and the purge itself (cron-safe)."""

from __future__ import annotations

import sys

import typer

from opsctl import errors, options
from opsctl.output import console, emit_json, err_console, print_table

app = typer.Typer(help="Data retention: policy status and batched purges, safe on every host.")

DB_OPT = options.DATABASE_URL
POLICY_OPT = typer.Option(
    None,
    "--policy-file",
    help="TOML overriding policies: \\[policies.NAME] days = N (a number of days, 0-36500).",
)


def _setup(database_url):
    from opsctl.service import open_backend

    open_backend(database_url)


def _policies_ok(policy_file: str | None) -> None:
    """Read and check the policy file before touching the database (bad input: one line)."""
    if policy_file:
        from backend.ops.retention_policy import DEFAULTS, build, read_policy_file

        build(read_policy_file(policy_file, DEFAULTS))


@app.command("status")
def status_cmd(
    policy_file: str = POLICY_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON list per policy."),
    database_url: str = DB_OPT,
) -> None:
    """Per policy: period, rows eligible now, oldest row's age, last run, overdue.

    A run whose process died (its job lock is free but it never finished) shows as
    "abandoned" and counts as failed.

    Exit 0 shown and the last runs succeeded, 1 could not be shown (database, policy
    file), 2 shown, and a policy's last run failed or was abandoned.

    JSON keys: name, target, period_days, guard, eligible_now, oldest_age_days,
    last_run_at, last_outcome (ok, budget, failed, running, abandoned), overdue,
    last_failed."""
    _policies_ok(policy_file)
    _setup(database_url)
    from backend.ops import retention

    rows = retention.status(policy_file)
    code = 2 if any(r.last_failed for r in rows) else 0
    if as_json:
        emit_json(rows)
        raise typer.Exit(code)
    print_table(
        "retention",
        ("policy", "period", "eligible now", "oldest (days)", "last run", "outcome", ""),
        [
            (r.name, f"{r.period_days:g}d", r.eligible_now,
             "-" if r.oldest_age_days is None else f"{r.oldest_age_days:.1f}",
             r.last_run_at.strftime("%Y-%m-%d %H:%M") if r.last_run_at else "never",
             r.last_outcome or "-", "OVERDUE" if r.overdue else "")
            for r in rows
        ],
        styles=["red" if r.last_failed else "yellow" if r.overdue else None for r in rows],
    )  # fmt: skip
    raise typer.Exit(code)


@app.command("run")
@errors.exit_policy(errors.JOB)
def run_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
    only: list[str] = typer.Option(None, "--only", help="Only this policy (repeatable)."),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Primary keys per batch (default 20000 on PostgreSQL, 2000 on SQLite).",
    ),
    max_seconds: float = typer.Option(None, "--max-seconds", min=1, help="Stop at this budget."),
    vacuum: bool = typer.Option(False, "--vacuum", help="VACUUM (ANALYZE) purged tables after."),
    lock_timeout: str = typer.Option(
        None,
        "--lock-timeout",
        help="Give up waiting for a table lock after this long (e.g. 500ms, 2s; default: "
        "the RETENTION_LOCK_TIMEOUT_MS setting, 2s).",
    ),
    actor: str = options.ACTOR,
    policy_file: str = POLICY_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON summary."),
    database_url: str = DB_OPT,
) -> None:
    """Purge what the policies say, in primary-key batches, once across all hosts.

    Each batch is one short transaction; while students are using the database
    the purge takes small batches and rests between them.

    Exit 0 done (or another host holds the job lock), 1 stopped at
    --max-seconds with work left (the next run continues), 2 failed
    (including: the database is down, the policy file is wrong).

    JSON keys: run_id, dry_run, outcome, started_at, finished_at, error,
    vacuumed, policies[{name, deleted, bytes_reclaimed, eligible_before,
    remaining, batches, seconds, error}].
    """
    lock_ms = options.duration_ms(lock_timeout, "--lock-timeout") if lock_timeout else None
    actor = options.actor(actor)
    _policies_ok(policy_file)
    _setup(database_url)
    from backend.ops import retention

    tty = sys.stdout.isatty() and not as_json
    out = console()
    progress_bar = None
    tasks: dict[str, int] = {}

    def progress(name: str, done: int, total: int) -> None:
        if progress_bar is not None:
            if name not in tasks:
                tasks[name] = progress_bar.add_task(name, total=max(total, 1))
            progress_bar.update(tasks[name], completed=done)
        elif not as_json:
            print(f"retention {name}: deleted {done} of {total}", flush=True)

    if tty and not dry_run:
        from rich.progress import Progress

        with Progress(console=out) as progress_bar:
            report = retention.run(dry_run, only, batch_size, max_seconds, vacuum, policy_file,
                                   progress, actor=actor, lock_timeout_ms=lock_ms)  # fmt: skip
    else:
        report = retention.run(dry_run, only, batch_size, max_seconds, vacuum, policy_file,
                               progress, actor=actor, lock_timeout_ms=lock_ms)  # fmt: skip
    if as_json:
        emit_json(report)
    elif report.outcome == "locked":
        out.print(f"skipped: {report.error}", markup=False)
    else:
        verb = "would delete" if dry_run else "deleted"
        for r in report.policies:
            n = r.eligible_before if dry_run else r.deleted
            extra = f", {r.bytes_reclaimed / 1e6:.1f} MB" if r.bytes_reclaimed else ""
            left = f", {r.remaining} left" if r.remaining and not dry_run else ""
            out.print(f"{r.name}: {verb} {n}{extra}{left}", markup=False)
        if report.vacuumed:
            out.print(f"vacuumed: {', '.join(report.vacuumed)}", markup=False)
        if report.outcome == "budget":
            out.print("stopped at the time budget; the rest goes next run", markup=False)
        if report.outcome == "failed":
            err_console().print(f"error: retention run failed: {report.error}", markup=False)
    raise typer.Exit(report.exit_code)
