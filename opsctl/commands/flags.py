"""opsctl flags: the kill switches, their history, and changes with a reason."""

from __future__ import annotations

import typer

from opsctl import options
from opsctl.output import console, emit_json, print_table
from opsctl.render import flag_value

app = typer.Typer(help="Feature flags: list, show, set (with a reason), history.")


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON: [{key, enabled, percent, ...}]."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Every flag with its value and what it switches."""
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    rows = flags.list_flags()
    if as_json:
        emit_json(rows)
        return
    print_table(
        "feature flags",
        ("key", "value", "updated", "description"),
        [
            (f.key, flag_value(f.value),
             f.updated_at.strftime("%Y-%m-%d %H:%M") if f.updated_at else "-",
             f.description.split(". ")[0])
            for f in rows
        ],
    )  # fmt: skip


@app.command("show")
def show_cmd(
    key: str = typer.Argument(..., help="Flag key, e.g. journal.writes."),
    as_json: bool = typer.Option(False, "--json", help="JSON: the flag and its history."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """One flag, and its recent changes."""
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    state = flags.get_flag(key)
    events = flags.history(key)[:20]
    if as_json:
        emit_json({"flag": state, "history": events})
        return
    out = console()
    out.print(f"{state.key}: {flag_value(state.value)}", markup=False)
    out.print(state.description, markup=False)
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
