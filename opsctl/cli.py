"""opsctl: the operators' tool for the exam backend.

Each command group lives in its own module under ``opsctl.commands`` and imports only
typer/rich at module level, so ``opsctl --help`` stays fast; heavy libraries (Django,
Textual, numpy, SQLAlchemy) are imported inside the command that needs them.

Errors are mapped to one stderr line and an exit code here and nowhere else: every command
callback is wrapped by ``_guard`` (so CliRunner sees the same as a shell), and ``main`` adds
the same treatment for click's own usage errors.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import traceback
from collections.abc import Callable

import typer
from typer.exceptions import Abort, Exit, TyperException

from opsctl import errors
from opsctl.output import err_console

app = typer.Typer(
    name="opsctl",
    help="Operate the exam backend: telemetry, query plans, database health, retention, "
    "resources, feature flags, migrations, Rasch calibration and the live console.\n\n"
    "Exit codes: commands 0 ok, 1 failed, 2 refused/usage error/unexpected; scheduled jobs "
    "(retention run, rasch auto) 0 done or skipped, 2 failed (retention run: 1 = stopped at "
    "the time budget); checks (resources --check) 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. "
    "A failure is always one line on stderr; --debug (or OPS_DEBUG=1) adds the traceback "
    "of an unexpected error.\n\n"
    "Output: on a terminal, rich tables and progress bars for long work (demo seed, "
    "loadtest). Piped or redirected, a table is tab-separated values with a header row and "
    "every value in full (its title goes to stderr), and there is no progress bar; every "
    "command also has --json. NO_COLOR=1 turns colour off.\n\n"
    "Shell completion: opsctl --install-completion (bash, zsh or fish: the shell it is run "
    "from); opsctl --show-completion prints the script instead.",
    no_args_is_help=True,
    add_completion=True,
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
    ("rehearse", "opsctl.commands.rehearse"),
]


_debug = False


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", envvar="OPS_DEBUG", help="Show the traceback of an unexpected error."
    ),
) -> None:
    global _debug
    _debug = debug


def _report(line: str, code: int, exc: BaseException | None = None) -> typer.Exit:
    """Print the one stderr line (and, with --debug, the traceback); the Exit to raise."""
    err = err_console()
    if exc is not None and (_debug or errors.debug_enabled()):
        err.print("".join(traceback.format_exception(exc)).rstrip(), markup=False)
    err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _guard(callback: Callable) -> Callable:
    """Every failure inside a command: one line on stderr and the command's exit code."""
    policy = errors.policy_of(callback)

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except (Exit, TyperException, Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            line, code = errors.handle(exc, policy, _debug or errors.debug_enabled())
            unexpected = not isinstance(exc, errors.OpsError) and errors.from_driver(exc) is None
            raise _report(line, code, exc if unexpected else None) from None

    return guarded


def reflow(text: str | None) -> str | None:
    """Help text as paragraphs rich can wrap to any width.

    Typer's rich help keeps a docstring's single line breaks after its first paragraph and in
    the command list, so a docstring wrapped at 100 columns in the source prints ragged at 80
    ("latency counts from each request's scheduled" / "time, so ..."). The lines of each
    paragraph are joined here, once for every command; blank lines still separate paragraphs,
    lines starting with "- " stay list items and a paragraph starting with \\b (click's
    "keep as is" mark) is kept as it is. Anything after \\f is not help and is left alone."""
    if not text:
        return text
    head, sep, tail = inspect.cleandoc(text).partition("\f")
    paragraphs = []
    for paragraph in head.split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.split("\n"):
            line = line.strip()
            if lines and not line.startswith("- "):
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs) + sep + tail


def _reflow_params(callback: Callable) -> None:
    for param in inspect.signature(callback).parameters.values():
        info = param.default
        if isinstance(info, typer.models.ParameterInfo) and info.help:
            info.help = reflow(info.help)


def _guard_group(group: typer.Typer) -> None:
    group.info.help = reflow(group.info.help)
    for cmd in group.registered_commands:
        if cmd.callback is not None:
            cmd.help = reflow(cmd.help or inspect.getdoc(cmd.callback))
            cmd.epilog = reflow(cmd.epilog)
            _reflow_params(cmd.callback)
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
        _reflow_params(_mod.command)
        app.command(name=_name, help=reflow(_mod.command.__doc__))(_guard(_mod.command))


def main() -> None:
    """Console-script entry point. Failures inside commands are handled by ``_guard``; here
    click's usage errors (a bad option value, a missing argument) become one line too, with
    exit 2, or 3 UNKNOWN for a check."""
    try:
        rv = app(standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        policy = errors.policy_of(ctx.command.callback if ctx and ctx.command else None)
        code = policy.failure if policy is errors.CHECK else exc.exit_code
        message = errors.one_line(exc.format_message())
        if message:  # empty for a bare group name: its help was printed already
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _report(f"{message}{hint}", code)
        sys.exit(code)
    except Abort:
        err_console().print("error: aborted", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
