"""opsctl top: the SRE's terminal console."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    refresh: float = typer.Option(2.0, "--refresh", min=0.5, help="Seconds between refreshes."),
    read_only: bool = typer.Option(False, "--read-only", help="Hide every action (wall screen)."),
    telemetry_dir: Path = typer.Option(None, "--telemetry-dir", envvar="OPS_TELEMETRY_DIR"),
    database_url: str = typer.Option(
        None, "--database-url", envvar="DATABASE_URL", help="Database (default: the backend's)."
    ),
) -> None:
    """The live console: routes, traces, SQL, database, resources, retention, flags, jobs.
    Number keys switch panes, ? shows every key, q quits."""
    from backend.config import database_url as default_url
    from backend.config import telemetry_dir as default_dir
    from opsctl.service import setup_django
    from opsctl.tui.app import OpsApp
    from opsctl.tui.sources import Sources

    url = database_url or default_url()
    setup_django(url)
    sources = Sources(Path(telemetry_dir) if telemetry_dir else default_dir(), url)
    OpsApp(sources, refresh, read_only).run()
