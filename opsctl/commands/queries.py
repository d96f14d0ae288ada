"""opsctl queries: the costliest SQL by fingerprint, and N+1 offenders."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl import options
from opsctl.output import CommandError, console, emit_json, err_console, print_table

EXIT_CODES = (
    "Exit codes: 0 spans were read (even if none matched); 1 bad input; 3 no data: no span "
    "at all was read from the telemetry files in the window (telemetry off, wrong directory)."
)

app = typer.Typer(
    help="SQL statistics by fingerprint (telemetry files or pg_stat_statements).\n\n" + EXIT_CODES
)


def _read_files(reader, directory, since: str, *args, as_json: bool = False):
    """Run a one-shot telemetry reader over the window; no span read at all is "no data"
    (exit 3), not an empty answer."""
    from opsctl import telemetry

    d = options.telemetry_dir(directory)
    stats = telemetry.ReadStats()
    rows = reader(d, options.since(since), *args, stats=stats)
    if stats.corrupt_lines:
        err_console().print(
            f"warning: skipped {stats.corrupt_lines} corrupt or truncated line(s)", markup=False
        )
    if not stats.in_window:
        if as_json:  # valid JSON still; the exit code says "no data"
            emit_json([])
        raise CommandError(telemetry.empty_hint(d, since), telemetry.NO_DATA_EXIT)
    return d, stats, rows


@app.command("top", epilog=EXIT_CODES)
def top_cmd(
    since: str = typer.Option("1h", "--since", help="Window: 1h, 30m, or an ISO time."),
    by: str = typer.Option("total", "--by", help="Order by total, mean, p95 or calls."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many fingerprints."),
    source: str = typer.Option("files", "--source", help="files (telemetry) or pg."),
    database_url: str = options.DATABASE_URL,
    directory: Path = options.TELEMETRY_DIR,
    as_json: bool = typer.Option(False, "--json", help="JSON list per fingerprint."),
) -> None:
    """Per fingerprint: calls, total, mean, p95, max (ms), rows, routes, an example.

    JSON keys: fingerprint, calls, total_ms, mean_ms, p95_ms, max_ms, rows, routes, example
    (p95 is null with --source pg, which keeps no distribution)."""
    if by not in {"total", "mean", "p95", "calls"}:
        raise CommandError("--by must be total, mean, p95 or calls")
    if source == "pg":
        from opsctl.db.statements import PgStatementsUnavailable, top_statements

        try:
            rows = top_statements(options.database_url(database_url), by, limit)
        except PgStatementsUnavailable as exc:  # no pg_stat_statements: no data (3)
            raise CommandError(str(exc), 3) from None
    elif source == "files":
        from opsctl import telemetry

        _, stats, rows = _read_files(
            telemetry.query_stats, directory, since, by, limit, as_json=as_json
        )
        if not rows and not as_json:
            console().print(f"no SQL (DB client spans) among {stats.in_window} spans since "
                            f"{since}", markup=False)  # fmt: skip
            return
    else:
        raise CommandError("--source must be files or pg")
    if as_json:
        emit_json(rows)
        return
    cols = ("fingerprint", "calls", "total ms", "mean ms", "p95 ms", "max ms", "rows")
    print_table(
        f"top SQL by {by} ({source})",
        cols,
        [(q.fingerprint, q.calls, f"{q.total_ms:.1f}", f"{q.mean_ms:.2f}",
          "-" if q.p95_ms is None else f"{q.p95_ms:.2f}",
          "-" if q.max_ms is None else f"{q.max_ms:.2f}", q.rows) for q in rows],
        right=cols[1:],
    )  # fmt: skip
    out = console()
    for q in rows:
        routes = f" [{', '.join(q.routes)}]" if q.routes else ""
        out.print(f"{q.fingerprint}{routes}", markup=False, style="bold")
        out.print(f"  {' '.join(q.example.split())}", markup=False, overflow="ellipsis",
                  no_wrap=True)  # fmt: skip


@app.command("nplusone", epilog=EXIT_CODES)
def nplusone_cmd(
    since: str = typer.Option("1h", "--since", help="Window: 1h, 30m, or an ISO time."),
    directory: Path = options.TELEMETRY_DIR,
    as_json: bool = typer.Option(False, "--json", help="JSON list of offenders."),
) -> None:
    """Routes that ran one statement shape more than the N+1 threshold within a request.

    JSON keys: route, fingerprint, requests, example, trace_id."""
    from opsctl import telemetry

    d, _, rows = _read_files(telemetry.n_plus_one, directory, since, as_json=as_json)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(f"no N+1 patterns flagged in {d} since {since}", markup=False)
        return
    print_table(
        f"N+1 offenders since {since}",
        ("route", "fingerprint", "requests", "example trace", "statement"),
        [(n.route, n.fingerprint, n.requests, n.trace_id, " ".join(n.example.split())[:160])
         for n in rows],
        overflow="fold",
    )  # fmt: skip
