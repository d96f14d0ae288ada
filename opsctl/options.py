"""Options shared by opsctl commands: declared once, with one name and one help text each.

Typer options are plain values, so a command takes them as defaults::

    def command(database_url: str = options.DATABASE_URL, lock_timeout: str = options.LOCK_TIMEOUT):
        url = options.database_url(database_url)
        ms = options.duration_ms(lock_timeout, "--lock-timeout")

Imports only typer and the pure duration grammar, so ``opsctl --help`` stays cheap.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from backend.durations import parse_duration, parse_since
from opsctl.errors import CommandError

DATABASE_URL = typer.Option(
    None,
    "--database-url",
    envvar="DATABASE_URL",
    help="SQLite or PostgreSQL URL (default: the backend's DATABASE_URL).",
    show_envvar=True,
)

TELEMETRY_DIR = typer.Option(
    None,
    "--telemetry-dir",
    envvar="OPS_TELEMETRY_DIR",
    help="Directory of OTLP JSON lines files (default: var/telemetry).",
)

LOCK_TIMEOUT = typer.Option(
    "5s",
    "--lock-timeout",
    help="Give up waiting for a table lock after this long (e.g. 500ms, 5s, 1m).",
)

PROMETHEUS = typer.Option(
    None,
    "--prometheus",
    envvar="OPS_PROMETHEUS_URL",
    show_envvar=True,
    help="Take route RED and SQL latency from this Prometheus (e.g. http://prometheus:9090, "
    "production, where spans go to a Collector) instead of the span files.",
)

ACTOR = typer.Option(None, "--actor", help="Who, for the audit trail (default: the OS user).")

YES = typer.Option(False, "--yes", "-y", help="Do not ask (needed off a terminal).")

# The audit trail's actor column (backend.ops.models.AuditEvent.actor, max_length=150).
ACTOR_MAX_LENGTH = 150


def database_url(value: str | None) -> str:
    """The URL given, or the backend's default (a relative SQLite path made absolute)."""
    from backend.config import absolute_sqlite_url
    from backend.config import database_url as default

    return absolute_sqlite_url(value) if value else default()


def telemetry_dir(value: Path | str | None) -> Path:
    from backend.config import telemetry_dir as default

    return Path(value) if value else default()


def duration(value: str, option: str, minimum: dt.timedelta | None = None) -> dt.timedelta:
    """A duration option parsed by the one grammar (``500ms``, ``30s``, ``1m30s``, ``7d``);
    a bad value is one clear line naming the option."""
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None
    floor = minimum if minimum is not None else dt.timedelta(milliseconds=1)
    if parsed < floor:
        raise CommandError(f"{option}: must be at least {_show(floor)}, got {value!r}")
    return parsed


def duration_ms(value: str, option: str) -> int:
    return int(duration(value, option) / dt.timedelta(milliseconds=1))


def since(value: str, option: str = "--since") -> dt.datetime:
    """A window start: a duration back from now (``15m``) or an ISO 8601 time."""
    try:
        return parse_since(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None


def actor(value: str | None) -> str | None:
    if value is not None and len(value) > ACTOR_MAX_LENGTH:
        raise CommandError(
            f"--actor is {len(value)} characters; at most {ACTOR_MAX_LENGTH} are kept"
        )
    return value


def _show(td: dt.timedelta) -> str:
    ms = td / dt.timedelta(milliseconds=1)
    return f"{ms:g}ms" if ms < 1000 else f"{td.total_seconds():g}s"
