"""Output conventions shared by every command: JSON for scripts, rich for people,
one-line errors on stderr. Imports only the standard library and rich."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import os
import sys
from collections.abc import Iterable, Sequence
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


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Iterable[str] = (),
    styles: Sequence[str | None] | None = None,
    overflow: str | None = None,
    caption: str | None = None,
) -> None:
    """One rich table on stdout: ``columns`` by name, the ``right`` ones right-aligned,
    ``styles`` one per row (None for plain). Cells are printed as text, never as markup."""
    from rich.table import Table
    from rich.text import Text

    right = set(right)
    table = Table(title=title, caption=caption)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left", overflow=overflow)
    for i, row in enumerate(rows):
        style = styles[i] if styles is not None else None
        table.add_row(*(Text("" if v is None else str(v)) for v in row), style=style)
    console().print(table)
