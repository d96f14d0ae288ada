"""opsctl flags: the kill switches, their history, and changes with a reason."""

from __future__ import annotations

import typer

from opsctl import errors, options
from opsctl.output import console, emit_json, print_table
from opsctl.render import flag_value

app = typer.Typer(
    help="Feature flags: list, show, set (with a reason), history, scheduled changes, "
    "evaluation counts, stale flags."
)


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


def _open(database_url) -> None:
    from opsctl.service import open_backend

    open_backend(database_url)


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: [{key, enabled, percent, description, owner, updated_at, evaluations_7d: "
        "{on, off}, last_seen_at, scheduled: [{id, value, apply_at}]}].",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Every flag with its value, what it switches, how often it was evaluated (last 7 days,
    as flushed by the processes every 30 s) and its pending scheduled changes."""
    _open(database_url)
    import dataclasses

    from backend.ops import flags

    rows = flags.list_flags()
    used = flags.usage(days=7)
    pending: dict[str, list] = {}
    for c in flags.scheduled():
        pending.setdefault(c.key, []).append(c)
    if as_json:
        emit_json(
            [
                {**dataclasses.asdict(f), "value": f.value,
                 "evaluations_7d": {"on": used[f.key].on, "off": used[f.key].off}
                 if f.key in used else {"on": 0, "off": 0},
                 "last_seen_at": used[f.key].last_seen_at if f.key in used else None,
                 "scheduled": [{"id": c.id, "value": c.value, "apply_at": c.apply_at}
                               for c in pending.get(f.key, [])]}
                for f in rows
            ]
        )  # fmt: skip
        return
    print_table(
        "feature flags",
        ("key", "value", "updated", "evals 7d on/off", "last seen", "scheduled", "description"),
        [
            (f.key, flag_value(f.value), _when(f.updated_at),
             f"{used[f.key].on}/{used[f.key].off}" if f.key in used else "0/0",
             _when(used[f.key].last_seen_at) if f.key in used else "-",
             ", ".join(f"{flag_value(c.value)} at {_when(c.apply_at)} (#{c.id})"
                       for c in pending.get(f.key, [])) or "-",
             f.description.split(". ")[0])
            for f in rows
        ],
    )  # fmt: skip


@app.command("show")
def show_cmd(
    key: str = typer.Argument(..., help="Flag key, e.g. journal.writes."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: {flag, history, scheduled, evaluations_7d: {on, off}, last_seen_at}.",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """One flag: its value, recent changes, pending scheduled changes and evaluations."""
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    state = flags.get_flag(key)
    events = flags.history(key)[:20]
    pending = [c for c in flags.scheduled() if c.key == key]
    used = flags.usage(days=7).get(key)
    on, off = (used.on, used.off) if used else (0, 0)
    if as_json:
        emit_json({"flag": state, "history": events, "scheduled": pending,
                   "evaluations_7d": {"on": on, "off": off},
                   "last_seen_at": used.last_seen_at if used else None})  # fmt: skip
        return
    out = console()
    out.print(f"{state.key}: {flag_value(state.value)}", markup=False)
    out.print(state.description, markup=False)
    out.print(
        f"evaluated (7 days): {on} on, {off} off; last seen "
        f"{_when(used.last_seen_at) if used else 'never'}",
        markup=False,
    )
    for c in pending:
        out.print(
            f"  scheduled #{c.id}: -> {flag_value(c.value)} at {_when(c.apply_at)} "
            f"({c.reason}, {c.actor})",
            markup=False,
        )
    for e in events:
        out.print(
            f"  {e.at:%Y-%m-%d %H:%M:%S} {e.actor}: {flag_value(e.old_value)} -> "
            f"{flag_value(e.new_value)}  ({e.reason}) [{e.change_set[:8]}]",
            markup=False,
        )


@app.command("set")
def set_cmd(
    key: str = typer.Argument(..., help="Flag key."),
    value: str = typer.Argument(..., help="on, off, or a rollout percentage (0-100)."),
    reason: str = typer.Option(None, "--reason", help="Why (required; kept in the audit trail)."),
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: the recorded change."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Change a flag. Every worker on every host sees it within the cache TTL (5 s)."""
    actor = options.actor(actor)
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    ev = flags.set_flag(key, value, reason, actor=actor)
    if as_json:
        emit_json(ev)
        return
    console().print(
        f"{key}: {flag_value(ev.old_value)} -> {flag_value(ev.new_value)} "
        f"(change set {ev.change_set})",
        markup=False,
    )


@app.command("history")
def history_cmd(
    key: str = typer.Argument(None, help="Only this flag."),
    since: str = typer.Option(None, "--since", help="e.g. 1h, 2d, or an ISO time."),
    as_json: bool = typer.Option(False, "--json", help="JSON list of changes, newest first."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Flag changes, newest first, with who, why and the change set."""
    since_at = options.since(since) if since else None
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    events = flags.history(key, since_at)
    if as_json:
        emit_json(events)
        return
    if not events:
        console().print("no flag changes" + (f" since {since}" if since else ""))
        return
    print_table(
        "flag history",
        ("when", "change set", "actor", "flag", "change", "reason"),
        [
            (f"{e.at:%Y-%m-%d %H:%M:%S}", e.change_set[:8], e.actor, e.key,
             f"{flag_value(e.old_value)} -> {flag_value(e.new_value)}", e.reason)
            for e in events
        ],
    )  # fmt: skip


@app.command("schedule")
def schedule_cmd(
    key: str = typer.Argument(..., help="Flag key."),
    value: str = typer.Argument(..., help="on, off, or a rollout percentage (0-100)."),
    at: str = typer.Option(
        ..., "--at", help="When: an ISO time (UTC unless it names a zone), or +30m / 'in 2h'."
    ),
    reason: str = typer.Option(None, "--reason", help="Why (required; kept in the audit trail)."),
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: {id, key, value, apply_at, reason, actor, created_at, status, ...}.",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Change a flag at a given time (e.g. the exam start). `opsctl flags apply-due`, run
    every minute from cron on every host, applies it once, through the same audited change
    as `flags set`. Cancel with `flags cancel-scheduled ID`."""
    actor = options.actor(actor)
    _open(database_url)
    from backend.ops import flags

    change = flags.schedule(key, value, flags.parse_apply_at(at), reason, actor=actor)
    if as_json:
        emit_json(change)
        return
    console().print(
        f"scheduled #{change.id}: {key} -> {flag_value(change.value)} at "
        f"{change.apply_at:%Y-%m-%d %H:%M:%S %Z}",
        markup=False,
    )


@app.command("scheduled")
def scheduled_cmd(
    all_: bool = typer.Option(False, "--all", help="Also applied, failed and cancelled ones."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: [{id, key, value, apply_at, reason, actor, created_at, status, applied_at, "
        "change_set, result, cancelled_at, cancelled_by, cancel_reason}].",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Scheduled flag changes: pending ones, soonest first (with --all, then the rest)."""
    _open(database_url)
    from backend.ops import flags

    rows = flags.scheduled(include_done=all_)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print("no scheduled flag changes" + ("" if all_ else " pending"))
        return
    print_table(
        "scheduled flag changes",
        ("id", "apply at", "flag", "value", "status", "actor", "reason", "result"),
        [
            (c.id, _when(c.apply_at), c.key, flag_value(c.value), c.status, c.actor, c.reason,
             c.result or (f"cancelled by {c.cancelled_by}: {c.cancel_reason}"
                          if c.status == "cancelled" else "-"))
            for c in rows
        ],
    )  # fmt: skip


@app.command("cancel-scheduled")
def cancel_scheduled_cmd(
    change_id: int = typer.Argument(..., metavar="ID", help="The scheduled change's id."),
    reason: str = typer.Option(None, "--reason", help="Why (required; kept in the audit trail)."),
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: the cancelled change."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Cancel a pending scheduled change (one already applied is refused: roll it back with
    `opsctl rollback`)."""
    actor = options.actor(actor)
    _open(database_url)
    from backend.ops import flags

    change = flags.cancel_scheduled(change_id, reason, actor=actor)
    if as_json:
        emit_json(change)
        return
    console().print(
        f"cancelled #{change.id}: {change.key} -> {flag_value(change.value)} at "
        f"{_when(change.apply_at)}",
        markup=False,
    )


@app.command("apply-due")
@errors.exit_policy(errors.JOB)
def apply_due_cmd(
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: {lock_held, applied: [scheduled change], failed: [scheduled change]}.",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Apply the scheduled flag changes whose time has come (a scheduled job: run it every
    minute on every host; a job lock lets one run, and each change applies exactly once).

    Exit 0 done (or another host holds the job lock), 2 failed (a change could not apply,
    e.g. its flag no longer exists; it is marked failed and not retried).
    """
    _open(database_url)
    from backend.ops import flags

    report = flags.apply_due()
    if as_json:
        emit_json(report)
    elif report.lock_held:
        console().print("another host or process is applying scheduled flag changes")
    else:
        for c in report.applied:
            console().print(f"applied #{c.id}: {c.key} {c.result} ({c.change_set})", markup=False)
        if not report.applied and not report.failed:
            console().print("no scheduled flag change is due")
    if report.failed:
        raise errors.OpsError(
            f"{len(report.failed)} scheduled change(s) failed: "
            + "; ".join(f"#{c.id} {c.key}: {c.result}" for c in report.failed)
        )


@app.command("stale")
def stale_cmd(
    days: int = typer.Option(30, "--days", min=1, help="Unchanged and one-valued this long."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: [{key, value, unchanged_since, on, off, last_seen_at, verdict}].",
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Flags that are candidates for removal: not changed for --days, and every evaluation in
    those days had the same result (or none happened). Evaluations are counted per UTC day;
    a flag is only judged once the counts reach back --days."""
    _open(database_url)
    from backend.ops import flags

    rows = flags.stale(days)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(f"no stale flags (unchanged and one-valued for {days} days)")
        return
    print_table(
        f"stale flags ({days} days)",
        ("key", "value", "unchanged since", "verdict", "evaluations", "last seen"),
        [
            (f.key, flag_value(f.value), _when(f.unchanged_since) if f.unchanged_since
             else "never changed", f.verdict, f.on + f.off, _when(f.last_seen_at))
            for f in rows
        ],
    )  # fmt: skip
