"""opsctl: the operators' tool for the exam backend.

Each command group lives in its own module under ``opsctl.commands`` and imports only
typer/rich at module level, so ``opsctl --help`` stays fast; heavy libraries (Django,
Textual, numpy, SQLAlchemy) are imported inside the command that needs them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from opsctl.output import err_console

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
]

for _name, _module in COMMAND_MODULES:
    _mod = importlib.import_module(_module)
    if hasattr(_mod, "app"):
        app.add_typer(_mod.app, name=_name)
    else:
        app.command(name=_name, help=_mod.command.__doc__)(_mod.command)


def main() -> None:
    """Console-script entry point: user-facing errors become one line on stderr."""
    try:
        app()
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
