"""opsctl flags: the kill switches, their history, and changes with a reason."""

from __future__ import annotations

import typer

from opsctl.output import CommandError, console, emit_json
from opsctl.timeparse import parse_since

app = typer.Typer(help="Feature flags: list, show, set (with a reason), history.")

DB_OPT = typer.Option(
    None, "--database-url", envvar="DATABASE_URL", help="Database (default: the backend's)."
)


def _setup(database_url):
    from opsctl.service import setup_django

    setup_django(database_url)


def format_value(value: dict | None) -> str:
    """A flag value as on-call reads it: on, off or a percentage."""
    if value is None:
        return "-"
    if not value.get("enabled"):
        return "off"
    return "on" if value.get("percent", 100) >= 100 else f"{value['percent']}%"


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON: [{key, enabled, percent, ...}]."),
    database_url: str = DB_OPT,
) -> None:
    """Every flag with its value and what it switches."""
    _setup(database_url)
    from backend.ops import flags

    rows = flags.list_flags()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title="feature flags")
    for col in ("key", "value", "updated", "description"):
        table.add_column(col)
    for f in rows:
        when = f.updated_at.strftime("%Y-%m-%d %H:%M") if f.updated_at else "-"
        table.add_row(f.key, format_value(f.value), when, f.description.split(". ")[0])
    console().print(table)


@app.command("show")
def show_cmd(
    key: str = typer.Argument(..., help="Flag key, e.g. journal.writes."),
    as_json: bool = typer.Option(False, "--json", help="JSON: the flag and its history."),
    database_url: str = DB_OPT,
) -> None:
    """One flag, and its recent changes."""
    _setup(database_url)
    from backend.ops import flags

    try:
        state = flags.get_flag(key)
    except flags.FlagError as exc:
        raise CommandError(str(exc)) from None
    events = flags.history(key)[:20]
    if as_json:
        emit_json({"flag": state, "history": events})
        return
    out = console()
    out.print(f"{state.key}: {format_value(state.value)}", markup=False)
    out.print(state.description, markup=False)
    for e in events:
        out.print(
            f"  {e.at:%Y-%m-%d %H:%M:%S} {e.actor}: {format_value(e.old_value)} -> "
            f"{format_value(e.new_value)}  ({e.reason}) [{e.change_set[:8]}]",
            markup=False,
        )


@app.command("set")
def set_cmd(
    key: str = typer.Argument(..., help="Flag key."),
    value: str = typer.Argument(..., help="on, off, or a rollout percentage (0-100)."),
    reason: str = typer.Option(None, "--reason", help="Why (required; kept in the audit trail)."),
    actor: str = typer.Option(None, "--actor", help="Who (default: the OS user)."),
    as_json: bool = typer.Option(False, "--json", help="JSON: the recorded change."),
    database_url: str = DB_OPT,
) -> None:
    """Change a flag. Every worker on every host sees it within the cache TTL (5 s)."""
    _setup(database_url)
    from backend.ops import flags

    try:
        ev = flags.set_flag(key, value, reason, actor=actor)
    except flags.FlagError as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        emit_json(ev)
        return
    console().print(
        f"{key}: {format_value(ev.old_value)} -> {format_value(ev.new_value)} "
        f"(change set {ev.change_set})",
        markup=False,
    )


@app.command("history")
def history_cmd(
    key: str = typer.Argument(None, help="Only this flag."),
    since: str = typer.Option(None, "--since", help="e.g. 1h, 2d, or an ISO time."),
    as_json: bool = typer.Option(False, "--json", help="JSON list of changes, newest first."),
    database_url: str = DB_OPT,
) -> None:
    """Flag changes, newest first, with who, why and the change set."""
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    _setup(database_url)
    from backend.ops import flags

    events = flags.history(key, since_at)
    if as_json:
        emit_json(events)
        return
    if not events:
        console().print("no flag changes" + (f" since {since}" if since else ""))
        return
    from rich.table import Table

    table = Table(title="flag history")
    for col in ("when", "change set", "actor", "flag", "change", "reason"):
        table.add_column(col)
    for e in events:
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.change_set[:8], e.actor, e.key,
            f"{format_value(e.old_value)} -> {format_value(e.new_value)}", e.reason,
        )  # fmt: skip
    console().print(table)
