"""Output conventions shared by every command: JSON for scripts, rich for people,
one-line errors on stderr. Imports only the standard library and rich."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from opsctl import errors as _errors

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    """Stdout console; colour only on a TTY and never with NO_COLOR."""
    global _console
    if _console is None:
        _console = Console(no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False)
    return _console


def err_console() -> Console:
    global _err_console
    if _err_console is None:
        _err_console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
    return _err_console


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_default))


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (dataclasses, datetimes and numpy values allowed)."""
    sys.stdout.write(json.dumps(obj, default=_default, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


# The error root is in opsctl.errors; re-exported for commands that import it from here.
CommandError = _errors.CommandError


def fail(message: str, exit_code: int = 1) -> NoReturn:
    """Stop the command with ``message`` and ``exit_code`` (mapped by ``opsctl.cli``)."""
    raise CommandError(message, exit_code)
