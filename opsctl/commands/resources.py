"""opsctl resources: probes against thresholds, alert state, and a Nagios-style check."""

from __future__ import annotations

import typer

from opsctl.output import CommandError, console, emit_json


def command(
    check: bool = typer.Option(
        False, "--check", help="One-line summary; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
    ),
    warn: float = typer.Option(None, "--warn", help="Warning threshold in % for every probe."),
    crit: float = typer.Option(None, "--crit", help="Critical threshold in % for every probe."),
    as_json: bool = typer.Option(False, "--json", help="JSON: exit_code, summary, probes[]."),
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Database (default: the backend's)."
    ),
) -> None:
    """Measure CPU, memory, swap, disks (database, telemetry, logs), backend RSS and open
    files, and PostgreSQL connections; open or resolve alerts (after the damping interval).

    JSON keys: exit_code, summary, probes[{probe, value, detail, warn, crit, severity,
    alert, error}], open_alerts[{probe, host, severity, value, opened_at}].
    """
    if warn is not None and crit is not None and warn > crit:
        raise CommandError("--warn must not be above --crit")
    from opsctl.service import setup_django

    setup_django(database_url)
    from backend.ops import resources

    readings = resources.check(warn=warn, crit=crit)
    code, line = resources.summary(readings)
    if as_json:
        emit_json({
            "exit_code": code, "summary": line, "probes": readings,
            "open_alerts": [
                {"probe": a.probe, "host": a.host, "severity": a.severity, "value": a.value,
                 "opened_at": a.opened_at} for a in resources.open_alerts()
            ],
        })  # fmt: skip
    elif check:
        print(line)
    else:
        from rich.table import Table

        colours = {"warning": "yellow", "critical": "red", "unknown": "magenta"}
        table = Table(title="resources")
        for col in ("probe", "value", "warn", "crit", "state", "alert", "detail"):
            table.add_column(col)
        for r in readings:
            table.add_row(
                r.probe, "?" if r.value is None else f"{r.value:.1f}%", f"{r.warn:g}",
                f"{r.crit:g}", r.severity, r.alert, r.detail, style=colours.get(r.severity),
            )  # fmt: skip
        out = console()
        out.print(table)
        out.print(line, markup=False)
    if check or as_json:
        raise typer.Exit(code)
