"""opsctl top: the SRE's terminal console."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import typer

from opsctl import options

WINDOW_CHOICES = {"5m": 5, "15m": 15, "1h": 60, "60m": 60}


def command(
    refresh: float = typer.Option(2.0, "--refresh", min=0.5, help="Seconds between refreshes."),
    read_only: bool = typer.Option(False, "--read-only", help="Hide every action (wall screen)."),
    window: str = typer.Option(
        "15m", "--window", help="Telemetry window at start: 5m, 15m or 1h (w cycles them)."
    ),
    telemetry_dir: Path = options.TELEMETRY_DIR,
    prometheus: str = options.PROMETHEUS,
    database_url: str = options.DATABASE_URL,
) -> None:
    """The live console: routes, traces, SQL, database, resources, retention, flags, jobs,
    activity (sessions and the blocking tree).

    Number keys switch panes, w changes the telemetry window, ? shows every key, q quits.

    Telemetry is read incrementally: a refresh costs the spans written since the last one."""
    from opsctl.errors import CommandError

    if window not in WINDOW_CHOICES:
        raise CommandError(f"--window must be 5m, 15m or 1h, got {window!r}")
    from opsctl.service import setup_django
    from opsctl.tui.app import OpsApp
    from opsctl.tui.sources import Sources

    url = options.database_url(database_url)
    setup_django(url)
    sources = Sources(
        options.telemetry_dir(telemetry_dir), url, WINDOW_CHOICES[window], prometheus or None
    )
    app = OpsApp(sources, refresh, read_only)
    app.run()
    if os.environ.get("OPS_TOP_STATS"):  # per-pane load counts and durations, for make bench
        app.write_stats(os.environ["OPS_TOP_STATS"])
    # The process ends now: its objects are frozen so that the interpreter's final garbage
    # collections skip them (they took 0.4-2.3 s of the quit on a busy host, longer than the
    # console's own shutdown); the memory goes back to the system with the process.
    gc.freeze()
