"""opsctl: the operators' tool for the exam backend.

Each command group lives in its own module under ``opsctl.commands`` and imports only
typer/rich at module level, so ``opsctl --help`` stays fast; heavy libraries (Django,
Textual, numpy, SQLAlchemy) are imported inside the command that needs them.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable

import typer

from opsctl.output import CommandError, err_console, fail

app = typer.Typer(
    name="opsctl",
    help="Operate the exam backend: telemetry, query plans, database health, retention, "
    "resources, feature flags, migrations, Rasch calibration and the live console.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (name, module). A module exposing ``app`` (a Typer) becomes a command group;
# one exposing ``command`` (a function) becomes a single command.
COMMAND_MODULES: list[tuple[str, str]] = [
    ("demo", "opsctl.commands.demo"),
    ("rasch", "opsctl.commands.rasch"),
    ("flags", "opsctl.commands.flags"),
    ("rollback", "opsctl.commands.rollback"),
    ("migrate", "opsctl.commands.migrate"),
    ("traces", "opsctl.commands.traces"),
    ("queries", "opsctl.commands.queries"),
    ("retention", "opsctl.commands.retention"),
    ("resources", "opsctl.commands.resources"),
    ("explain", "opsctl.commands.explain"),
    ("db", "opsctl.commands.db"),
    ("vacuum", "opsctl.commands.vacuum"),
    ("top", "opsctl.commands.top"),
    ("loadtest", "opsctl.commands.loadtest"),
]


def _guard(callback: Callable) -> Callable:
    """Turn a CommandError raised anywhere in a command into one line on stderr + exit code."""

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except CommandError as exc:
            fail(exc.message, exc.exit_code)

    return guarded


def _guard_group(group: typer.Typer) -> None:
    for cmd in group.registered_commands:
        if cmd.callback is not None:
            cmd.callback = _guard(cmd.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _guard_group(sub.typer_instance)


for _name, _module in COMMAND_MODULES:
    _mod = importlib.import_module(_module)
    if hasattr(_mod, "app"):
        _guard_group(_mod.app)
        app.add_typer(_mod.app, name=_name)
    else:
        app.command(name=_name, help=_mod.command.__doc__)(_guard(_mod.command))


def main() -> None:
    """Console-script entry point: user-facing errors become one line on stderr."""
    try:
        app()
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
