"""opsctl resources: probes against thresholds, alert state, and a Nagios-style check."""

from __future__ import annotations

import typer

from opsctl import errors, options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, print_table


@errors.exit_policy(errors.CHECK)
def command(
    check: bool = typer.Option(
        False,
        "--check",
        help="One line for Nagios: summary | performance data; exit 0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN.",
    ),
    warn: float = typer.Option(
        None, "--warn", help="Warning threshold in % for every percentage probe."
    ),
    crit: float = typer.Option(
        None, "--crit", help="Critical threshold in % for every percentage probe."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="JSON: exit_code, summary, perfdata, probes[], open_alerts[]."
    ),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Resources against thresholds, with alerts and a Nagios-style --check.

    Measure CPU, the load average per core, memory, swap, disks and their inodes (the app's
    var/ directory, telemetry, logs), each disk's hours until full at its current rate
    (learned from the checks of the last hour; needs 10 minutes of them), backend RSS and open
    files, and PostgreSQL connections; open or resolve alerts (after the damping interval).
    The database host's own disk comes from node_exporter (see the runbooks).

    Units: percent, except load.per_core (1.0 = every core busy; warn 1.5, crit 3) and
    disk.*.fill (hours until full; warn at 24 h or less, crit at 6 h or less).

    JSON keys: exit_code, summary, perfdata, probes[{probe, value, unit, detail, warn, crit,
    severity, alert, error}], open_alerts[{probe, host, severity, value, opened_at}].

    Exit (with --check or --json) 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN: a probe could not
    be read, or the check itself could not run (bad option, database unavailable: one line
    on stderr, and with --check "RESOURCES UNKNOWN - ..." on stdout for Nagios).
    """
    try:
        readings, code, line = _check(warn, crit, database_url)
    except Exception as exc:
        if check:  # Nagios reads stdout's first line; stderr has the one-line error too
            print(f"RESOURCES UNKNOWN - {errors.handle(exc, errors.CHECK)[0]}")
        raise
    from backend.ops import resources

    if as_json:
        emit_json({
            "exit_code": code, "summary": line, "perfdata": resources.perfdata(readings),
            "probes": readings,
            "open_alerts": [
                {"probe": a.probe, "host": a.host, "severity": a.severity, "value": a.value,
                 "opened_at": a.opened_at} for a in resources.open_alerts()
            ],
        })  # fmt: skip
    elif check:
        print(f"{line} | {resources.perfdata(readings)}")
    else:
        colours = {"warning": "yellow", "critical": "red", "unknown": "magenta"}
        print_table(
            "resources",
            ("probe", "value", "warn", "crit", "state", "alert", "detail"),
            [
                (r.probe, resources.show(r.value, r.probe), f"{r.warn:g}",
                 f"{r.crit:g}", r.severity, r.alert, r.detail)
                for r in readings
            ],
            styles=[colours.get(r.severity) for r in readings],
        )  # fmt: skip
        console().print(line, markup=False)
    if check or as_json:
        raise typer.Exit(code)


def _check(warn, crit, database_url):
    """Measure and evaluate: (readings, exit code, summary line)."""
    if warn is not None and crit is not None and warn > crit:
        raise CommandError("--warn must not be above --crit")
    from opsctl.service import open_backend

    open_backend(database_url)
    from backend.ops import resources

    readings = resources.check(warn=warn, crit=crit)
    code, line = resources.summary(readings)
    return readings, code, line
