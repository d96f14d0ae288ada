"""opsctl rollback: revert feature-flag change sets, newest first, as a new change set."""

from __future__ import annotations

import sys

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json
from opsctl.render import flag_value


def command(
    last: int = typer.Option(None, "--last", min=1, help="Revert the newest N change sets."),
    to: str = typer.Option(None, "--to", help="Revert every change set after CHANGE_ID."),
    since: str = typer.Option(None, "--since", help="Revert change sets since TIME (15m, ISO)."),
    reason: str = typer.Option(None, "--reason", help="Why (required)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = options.YES,
    actor: str = options.ACTOR,
    as_json: bool = typer.Option(False, "--json", help="JSON: plan, and change_set if applied."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Roll back feature-flag changes, as one new change set.

    Shows the plan, then applies it as one new change set
    (so the rollback itself can be rolled back). Exactly one of --last, --to, --since.

    Exit 0 rolled back (or nothing to roll back), 1 failed or cancelled."""
    since_at = options.since(since) if since else None
    actor = options.actor(actor)
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import flags

    plan = flags.rollback_plan(last=last, to=to, since=since_at)
    if not dry_run and not plan.empty and not (reason and reason.strip()):
        raise CommandError("a reason is required (--reason)")
    out = console()
    if not as_json:
        if plan.empty:
            out.print("nothing to roll back")
        for step in plan.steps:
            out.print(
                f"  {step.key}: {flag_value(step.current)} -> {flag_value(step.target)}"
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
    change_set, events = flags.rollback(plan, reason, actor=actor)
    if as_json:
        emit_json({"plan": plan, "applied": True, "change_set": change_set, "events": events})
    else:
        out.print(f"rolled back as change set {change_set}", markup=False)
