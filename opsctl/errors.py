"""opsctl's side of the error contract.

Every failure is an ``OpsError`` (the root lives in ``backend.ops.errors`` so backend
services can raise it without importing opsctl). ``opsctl.cli`` turns it into one line on
stderr (``error: ...``) and an exit code, in one place: ``handle``. Exceptions from the
database drivers are recognised here and become ``DatabaseUnavailable``; anything else is a
bug: one line and the command's "unexpected" code, the traceback only with ``--debug`` or
``OPS_DEBUG=1``.

Exit codes (documented in ``opsctl --help`` and the README):
  ordinary commands  0 ok, 1 failed (bad input, database unavailable, ...), 2 refused or
                     unexpected error
  scheduled jobs     0 done (or another host holds the lock), 1 only its documented meaning
                     (``retention run``: stopped at the time budget), 2 failed
  checks             0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also: could not check)

Imports only the standard library (and the pure backend root), so ``--help`` stays cheap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from backend.ops.errors import InvalidInput, OpsError, Unavailable

__all__ = [
    "CHECK",
    "COMMAND",
    "JOB",
    "CommandError",
    "DatabaseUnavailable",
    "ExitPolicy",
    "InvalidInput",
    "OpsError",
    "Unavailable",
    "exit_policy",
    "handle",
    "one_line",
    "policy_of",
]


class CommandError(OpsError):
    """A failure found by opsctl itself (bad option, nothing to do, cancelled)."""


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or used: down, missing, a bad URL or path, not
    migrated. The message names the URL with its password masked."""


class ExitPolicy:
    """What a command exits with when it fails (``failure``) and on a bug (``unexpected``)."""

    def __init__(self, failure: int, unexpected: int, kind: str):
        self.failure = failure
        self.unexpected = unexpected
        self.kind = kind

    def __repr__(self) -> str:
        return f"ExitPolicy({self.kind}: failure={self.failure}, unexpected={self.unexpected})"


COMMAND = ExitPolicy(failure=1, unexpected=2, kind="command")
JOB = ExitPolicy(failure=2, unexpected=2, kind="job")
CHECK = ExitPolicy(failure=3, unexpected=3, kind="check")

_ATTR = "__opsctl_exit_policy__"


def exit_policy(policy: ExitPolicy) -> Callable:
    """Mark a command function as a job or a check (ordinary commands need nothing)."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, _ATTR, policy)
        return fn

    return mark


def policy_of(fn: Callable | None) -> ExitPolicy:
    return getattr(fn, _ATTR, COMMAND) if fn is not None else COMMAND


def debug_enabled() -> bool:
    return os.environ.get("OPS_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped (driver messages run to many lines)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _masked_url() -> str:
    from backend.config import database_url, mask_url

    try:
        return mask_url(database_url())
    except Exception:  # pragma: no cover - the environment itself is unreadable
        return "the database"


def from_driver(exc: BaseException) -> OpsError | None:
    """A database driver's or Django's exception as an ``OpsError`` (``DatabaseUnavailable``
    when the database cannot be talked to or is not set up), else None.

    Only modules already imported are consulted, so this never imports Django or SQLAlchemy.
    """
    mods = sys.modules
    kinds: list[type] = []
    if "django.db.utils" in mods:
        kinds.append(mods["django.db.utils"].Error)
    if "sqlalchemy.exc" in mods:
        kinds.append(mods["sqlalchemy.exc"].SQLAlchemyError)
    if "psycopg" in mods:
        kinds.append(mods["psycopg"].Error)
    if "sqlite3" in mods:
        kinds.append(mods["sqlite3"].Error)
    if kinds and isinstance(exc, tuple(kinds)):
        cause = getattr(exc, "orig", None) or exc
        text = one_line(str(cause)) or type(cause).__name__
        if ("relation" in text and "does not exist" in text) or "no such table" in text:
            return DatabaseUnavailable(
                f"database {_masked_url()} is not set up ({text}): run `opsctl migrate apply`"
            )
        names = {t.__name__ for t in (type(exc).__mro__ + type(cause).__mro__)}
        if names & {"OperationalError", "InterfaceError"}:  # cannot talk to it at all
            return DatabaseUnavailable(f"database {_masked_url()} unavailable: {text}")
        return OpsError(f"database error: {text}")
    return None


def handle(exc: BaseException, policy: ExitPolicy, debug: bool = False) -> tuple[str, int]:
    """The one mapping from an exception to (stderr line, exit code)."""
    if isinstance(exc, OpsError):
        code = exc.exit_code if exc.exit_code is not None else policy.failure
        return one_line(exc.message) or type(exc).__name__, code
    translated = from_driver(exc)
    if translated is not None:
        return translated.message, policy.failure
    text = one_line(str(exc))
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    hint = "" if debug else " (run with --debug or OPS_DEBUG=1 for the traceback)"
    return f"unexpected error: {what}{hint}", policy.unexpected
