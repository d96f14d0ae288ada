"""opsctl rollback: revert feature-flag change sets, newest first, as a new change set."""

from __future__ import annotations

import sys

import typer

from opsctl.commands.flags import format_value as _fmt
from opsctl.output import CommandError, console, emit_json
from opsctl.timeparse import parse_since


def command(
    last: int = typer.Option(None, "--last", help="Revert the newest N change sets."),
    to: str = typer.Option(None, "--to", help="Revert every change set after CHANGE_ID."),
    since: str = typer.Option(None, "--since", help="Revert change sets since TIME (15m, ISO)."),
    reason: str = typer.Option(None, "--reason", help="Why (required)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (needed off a terminal)."),
    actor: str = typer.Option(None, "--actor", help="Who (default: the OS user)."),
    as_json: bool = typer.Option(False, "--json", help="JSON: plan, and change_set if applied."),
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Database (default: the backend's)."
    ),
) -> None:
    """Roll back feature-flag changes: shows the plan, then applies it as one new change set
    (so the rollback itself can be rolled back). Exactly one of --last, --to, --since."""
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    from opsctl.service import setup_django

    setup_django(database_url)
    from backend.ops import flags

    try:
        plan = flags.rollback_plan(last=last, to=to, since=since_at)
        if not dry_run and not (reason and reason.strip()):
            raise flags.FlagError("a reason is required (--reason)")
    except flags.FlagError as exc:
        raise CommandError(str(exc)) from None
    out = console()
    if not as_json:
        if plan.empty:
            out.print("nothing to roll back")
        for step in plan.steps:
            out.print(
                f"  {step.key}: {_fmt(step.current)} -> {_fmt(step.target)}"
                f"  (undoes {step.undoes_change_set[:8]})",
                markup=False,
            )
    if dry_run or plan.empty:
        if as_json:
            emit_json({"plan": plan, "applied": False})
        return
    if not yes:
        if not sys.stdin.isatty():
            raise CommandError("not on a terminal: add --yes to roll back without asking")
        if not typer.confirm(f"roll back {len(plan.change_sets)} change set(s)?"):
            raise CommandError("cancelled; nothing changed")
    try:
        change_set, events = flags.rollback(plan, reason, actor=actor)
    except flags.FlagError as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        emit_json({"plan": plan, "applied": True, "change_set": change_set, "events": events})
    else:
        out.print(f"rolled back as change set {change_set}", markup=False)
