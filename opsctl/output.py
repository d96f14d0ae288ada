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
    """Stdout console; colour only on a TTY and never with NO_COLOR. Off a terminal lines are
    not wrapped at 80 columns (soft wrap), so ``| grep`` sees each value whole."""
    global _console
    if _console is None:
        _console = Console(no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False)
    # Whether stdout is a terminal is asked on every call: tests and shells swap sys.stdout.
    _console.soft_wrap = not _console.is_terminal
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
    """Every command's table goes through here.

    On a terminal: one rich table, ``columns`` by name, the ``right`` ones right-aligned,
    ``styles`` one per row (None for plain), with ``title`` and ``caption``. Off a terminal
    (piped, redirected): tab-separated values with a header row and every value in full,
    never cut to fit 80 columns (as gh does), so ``opsctl traces stats | grep answers``
    finds the route. There the title and caption (the window, the source) go to stderr, so
    stdout is only the table. Cells are printed as text, never as markup."""
    out = console()
    if not out.is_terminal:
        for line in (title, caption):
            if line:
                err_console().print(line, markup=False, highlight=False, soft_wrap=True)
        write_tsv(columns, rows)
        return
    from rich.table import Table
    from rich.text import Text

    right = set(right)
    table = Table(title=title, caption=caption)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left", overflow=overflow)
    for i, row in enumerate(rows):
        style = styles[i] if styles is not None else None
        table.add_row(*(Text("" if v is None else str(v)) for v in row), style=style)
    out.print(table)


def _tsv_cell(value: Any) -> str:
    # A tab or a line break inside a value would break the row: each becomes one space.
    return "" if value is None else " ".join(str(value).replace("\t", " ").splitlines())


def write_tsv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Header row, then one line per row; fields separated by tabs, values whole."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(_tsv_cell(v) for v in row) for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def interactive(as_json: bool = False) -> bool:
    """Progress bars are for a person: stdout and stderr both terminals and no --json."""
    return not as_json and console().is_terminal and err_console().is_terminal


def progress_bar(unit: str | None = None, *, detail: bool = False, transient: bool = True):
    """A rich progress bar on stderr (stdout stays the command's output): what, the bar, %,
    with ``unit`` done/total and the rate per second, time elapsed and time left; with
    ``detail`` a task's ``detail`` field on a line of its own below it (room at 80 columns).
    Only call it when ``interactive()``; rich leaves out colour under NO_COLOR."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            # rich's moving rate, or (a short task, a last frame) the average so far.
            speed = task.finished_speed or task.speed
            if speed is None and task.elapsed:
                speed = task.completed / task.elapsed
            return Text("" if speed is None else f"{speed:,.0f} {unit}/s", style="cyan")

    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
    ]
    if unit:
        columns += [MofNCompleteColumn(), Rate()]
    columns += [TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]

    class WithDetail(Progress):
        def get_renderables(self):
            yield self.make_tasks_table(self.tasks)
            for task in self.tasks:
                if task.fields.get("detail"):
                    yield Text("  " + task.fields["detail"], overflow="ellipsis", no_wrap=True)

    cls = WithDetail if detail else Progress
    return cls(*columns, console=err_console(), transient=transient)
