"""opsctl db: table and index health on any database URL."""

from __future__ import annotations

import typer

from opsctl import errors, options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, print_table
from opsctl.render import megabytes

app = typer.Typer(
    help="Database health and live activity: tables (size, dead rows, vacuum state), indexes, "
    "health checks, running sessions and the blocking tree; cancel or terminate a backend."
)


@app.command("tables")
def tables_cmd(
    sort: str = typer.Option("size", "--sort", help="size, dead or name."),
    as_json: bool = typer.Option(False, "--json", help="JSON: vendor, tables[], file stats."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Table sizes, dead rows, vacuum state and wraparound headroom.

    Per table: rows, table and index size, dead rows and %, last (auto)vacuum/analyze,
    whether autovacuum is due, transaction-id wraparound headroom. SQLite: page count,
    free-list pages and the bytes a VACUUM would reclaim.

    Exit 0 shown, 1 failed."""
    if sort not in {"size", "dead", "name"}:
        raise CommandError("--sort must be size, dead or name")
    from opsctl.db.health import table_health

    health = table_health(options.database_url(database_url), sort)
    if as_json:
        emit_json(health)
        return
    pg = health.vendor == "postgresql"
    cols = ["table", "rows", "size", "indexes"]
    if pg:
        cols += ["dead", "dead %", "last vacuum", "last analyze", "av due", "xid headroom"]
    rows = []
    for t in health.tables:
        row = [t.table, f"{t.rows:.0f}", megabytes(t.table_bytes), megabytes(t.index_bytes)]
        if pg:
            row += [
                t.dead_rows, f"{t.dead_pct:.1f}",
                (t.last_vacuum or t.last_autovacuum or "never")[:16],
                (t.last_analyze or t.last_autoanalyze or "never")[:16],
                "yes" if t.autovacuum_due else "", f"{t.wraparound_headroom_pct:.1f}%",
            ]  # fmt: skip
        rows.append(row)
    print_table(
        f"tables ({health.vendor})", cols, rows, right=cols[1:],
        styles=["yellow" if t.autovacuum_due else None for t in health.tables],
    )  # fmt: skip
    if health.vendor == "sqlite":
        console().print(
            f"file {megabytes(health.file_bytes)}, {health.page_count} pages, "
            f"{health.freelist_pages} free: a VACUUM would reclaim about "
            f"{megabytes(health.reclaimable_bytes)}",
            markup=False,
        )


@app.command("indexes")
def indexes_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON list of issues."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Unused, duplicate and invalid indexes, with their sizes.

    A duplicate is identical to another index, or a prefix of one.

    Exit 0 shown, 1 failed."""
    from opsctl.db.health import index_issues

    issues = index_issues(options.database_url(database_url))
    if as_json:
        emit_json(issues)
        return
    if not issues:
        console().print("no unused, duplicate or invalid indexes")
        return
    print_table(
        "index issues",
        ("table", "index", "problem", "size", "detail"),
        [(i.table, i.index, i.problem, megabytes(i.bytes), i.detail) for i in issues],
    )


@app.command("activity")
def activity_cmd(
    long_after: str = typer.Option(
        "60s", "--long", help="Flag statements running at least this long."
    ),
    idle_after: str = typer.Option(
        "5s", "--idle-in-transaction", help="Flag sessions idle in a transaction this long."
    ),
    include_idle: bool = typer.Option(False, "--all", help="Also list idle sessions."),
    as_json: bool = typer.Option(False, "--json", help="JSON: sessions[], blocking_tree[]."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """What the server runs now: sessions, long statements, who blocks whom.

    As pg_activity shows it: each session's PID, state, wait
    event, application, client and duration, long-running statements and sessions idle in
    a transaction flagged, and the blocking tree (who blocks whom, from pg_blocking_pids).
    Idle sessions are left out unless --all (or they block someone). SQLite: the file, its
    journal mode and whether a write lock is held now (which process holds it is not
    visible).

    Exit 0 shown, 1 failed.

    JSON keys: vendor, sessions[{pid, user, database, application, client, backend_type,
    state, wait_event_type, wait_event, query, query_seconds, xact_seconds, state_seconds,
    blocked_by[], blocking[], long_running, idle_in_transaction}], blocking_tree[{pid,
    blocked[]}], long_after_s, idle_in_transaction_after_s, hidden_idle, sqlite{path,
    file_bytes, journal_mode, wal_bytes, write_lock, detail}, notes[]."""
    long_s = options.duration(long_after, "--long").total_seconds()
    idle_s = options.duration(idle_after, "--idle-in-transaction").total_seconds()
    from opsctl.db.activity import COLUMNS, activity

    act = activity(options.database_url(database_url), long_s, idle_s, include_idle)
    if as_json:
        emit_json(act)
        return

    out = console()
    if act.sqlite is not None:
        s = act.sqlite
        out.print(
            f"SQLite {s.path or '(in memory)'}: {megabytes(s.file_bytes)}, journal mode "
            f"{s.journal_mode or '?'}"
            + (f", WAL {megabytes(s.wal_bytes)}" if s.wal_bytes is not None else "")
            + f"\nwrite lock: {s.write_lock} - {s.detail}",
            markup=False,
        )
        for note in act.notes:
            out.print(note, markup=False)
        return
    print_table(
        "activity (postgresql)",
        COLUMNS,
        [s.row() for s in act.sessions],
        right=("duration",),
        styles=["red" if s.blocking or s.long_running else "yellow"
                if s.idle_in_transaction or s.blocked_by else None for s in act.sessions],
        caption=f"{act.hidden_idle} idle session(s) not shown (--all)" if act.hidden_idle
        else None,
    )  # fmt: skip
    if act.blocking_tree:
        from rich.text import Text
        from rich.tree import Tree

        by_pid = act.by_pid()

        def label(pid: int) -> Text:  # statements are text, never markup
            s = by_pid.get(pid)
            return Text(f"{pid} {s.summary(show_wait=True) if s else '(not listed)'}")

        def add(branch, node) -> None:
            for child in node.blocked:
                add(branch.add(label(child.pid)), child)

        tree = Tree("blocking tree (who blocks whom)")
        for root in act.blocking_tree:
            add(tree.add(label(root.pid)), root)
        out.print(tree, markup=False)
        out.print("to stop a blocker: opsctl db cancel PID --reason ... (its statement) or "
                  "opsctl db terminate PID --reason ... (its session)", markup=False)  # fmt: skip
    else:
        out.print("no session is waiting for a lock", markup=False)
    for note in act.notes:
        out.print(note, markup=False)


def _signal(action: str, pid: int, reason: str, yes: bool, actor: str | None, as_json: bool,
            database_url: str | None) -> None:  # fmt: skip
    import sys

    actor = options.actor(actor)
    from opsctl.db.activity import describe, session, signal

    url = options.database_url(database_url)
    if not reason.strip():
        raise CommandError("--reason must say why (it goes to the audit trail)")
    confirmed = yes
    if not yes:
        target = session(url, pid)
        if not sys.stdin.isatty():
            raise CommandError(f"refused: {action} PID {pid} needs --yes off a terminal", 2)
        console().print(describe(target), markup=False)
        what = "cancel its running statement" if action == "cancel" else (
            "end its session (its open transaction is rolled back)")  # fmt: skip
        confirmed = typer.confirm(f"{what}?")
        if not confirmed:
            raise CommandError("cancelled; nothing was sent", 2)
    result = signal(url, pid, action, reason, actor, confirmed)
    if as_json:
        emit_json(result)
        return
    done = "cancel request sent to" if action == "cancel" else "terminated"
    console().print(f"{done} PID {pid} (recorded in {result.audit})", markup=False)


@app.command("cancel")
def cancel_cmd(
    pid: int = typer.Argument(..., help="The backend's PID (from opsctl db activity)."),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    yes: bool = options.YES,
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: the result and the session."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Cancel the statement backend PID is running (PostgreSQL only).

    pg_cancel_backend: the statement fails
    with "canceling statement due to user request", the session stays. Shows the session
    and asks first; --yes off a terminal. Recorded in the audit trail with actor and reason.

    Exit 0 sent, 1 failed (no such PID, not allowed), 2 refused.

    JSON keys: pid, action, sent, reason, actor, session{...as db activity}, audit."""
    _signal("cancel", pid, reason, yes, actor, as_json, database_url)


@app.command("terminate")
def terminate_cmd(
    pid: int = typer.Argument(..., help="The backend's PID (from opsctl db activity)."),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    yes: bool = options.YES,
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: the result and the session."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """End backend PID's session (PostgreSQL only).

    pg_terminate_backend: its open transaction is rolled
    back and its locks released; the client sees its connection closed. Shows the session
    and asks first; --yes off a terminal. Recorded in the audit trail with actor and reason.

    Exit 0 sent, 1 failed (no such PID, not allowed), 2 refused.

    JSON keys: pid, action, sent, reason, actor, session{...as db activity}, audit."""
    _signal("terminate", pid, reason, yes, actor, as_json, database_url)


@app.command("check")
@errors.exit_policy(errors.CHECK)
def check_cmd(
    check: bool = typer.Option(
        False, "--check", help="One-line summary; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
    ),
    only: list[str] = typer.Option(None, "--only", help="Run only this check (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON: exit_code, summary, checks[]."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Health checks, Nagios-style: indexes, bloat, cache, wraparound, sequences.

    The checks: exact duplicate indexes, constraints left NOT VALID, table and B-tree
    index bloat (ESTIMATES from pg_stats, as check_postgres and PgHero make them; ANALYZE
    first), buffer cache hit rate, transaction ID wraparound (every table, TOAST table and
    database against autovacuum_freeze_max_age) and sequences near their maximum (or the
    maximum of the integer column they feed). SQLite: only duplicate indexes apply; the rest
    say why not.

    JSON keys: vendor, exit_code, summary, checks[{check, status (ok, warning, critical,
    unknown, n/a), summary, findings[{target, severity, value, detail}]}].

    Exit (with --check or --json) 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a check or the
    whole run could not be done; with --check "DB UNKNOWN - ..." on stdout for Nagios)."""
    try:
        from opsctl.db.checks import run_checks

        report = run_checks(options.database_url(database_url), only=only or None)
    except Exception as exc:
        if check:  # Nagios reads stdout's first line; stderr has the one-line error too
            print(f"DB UNKNOWN - {errors.handle(exc, errors.CHECK)[0]}")
        raise
    if as_json:
        emit_json(report)
    elif check:
        print(report.summary)
    else:
        colours = {"warning": "yellow", "critical": "red", "unknown": "magenta"}
        rows, styles = [], []
        for r in report.checks:
            rows.append((r.check, r.status, r.summary, "", ""))
            styles.append(colours.get(r.status, "dim" if r.status == "n/a" else None))
            for f in r.findings:
                rows.append(("", f.severity, "", f.target, f.detail))
                styles.append(colours.get(f.severity))
        cols = ("check", "status", "summary", "target", "detail")
        print_table(f"database checks ({report.vendor})", cols, rows, styles=styles)
        console().print(report.summary, markup=False)
    if check or as_json:
        raise typer.Exit(report.exit_code)
