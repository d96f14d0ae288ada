"""opsctl traces: recent and slow traces, one trace's waterfall, RED per route."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import CommandError, console, emit_json

app = typer.Typer(help="Traces from the telemetry files: list, show one, stats per route.")

DIR_OPT = typer.Option(
    None, "--telemetry-dir", envvar="OPS_TELEMETRY_DIR",
    help="OTLP JSON lines directory (default var/telemetry).",
)  # fmt: skip


def telemetry_dir(value: Path | None) -> Path:
    from backend.config import telemetry_dir as default

    return Path(value) if value else default()


def since_or_fail(window: str):
    from opsctl.timeparse import parse_since

    try:
        return parse_since(window)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def report_corrupt(stats) -> None:
    from opsctl.output import err_console

    if stats.corrupt_lines:
        err_console().print(
            f"warning: skipped {stats.corrupt_lines} corrupt or truncated line(s)", markup=False
        )


@app.command("list")
def list_cmd(
    since: str = typer.Option("15m", "--since", help="Window: 15m, 2h, or an ISO time."),
    route: str = typer.Option(None, "--route", help="Only routes containing this text."),
    min_ms: float = typer.Option(0, "--min-ms", help="Only traces at least this slow."),
    errors: bool = typer.Option(False, "--errors", help="Only failed requests (5xx)."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many, slowest first."),
    directory: Path = DIR_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON list of trace summaries."),
) -> None:
    """Recent traces, slowest first. JSON keys: trace_id, route, name, start, duration_ms,
    status_code, error, spans, db_spans, n_plus_one."""
    from opsctl import telemetry

    d = telemetry_dir(directory)
    stats = telemetry.ReadStats()
    rows = telemetry.list_traces(d, since_or_fail(since), route, min_ms, errors, limit, stats)
    report_corrupt(stats)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(telemetry.empty_hint(d, since), markup=False)
        return
    from rich.table import Table

    table = Table(title=f"traces since {since}")
    for col in ("trace id", "route", "status", "ms", "db", "n+1", "start"):
        table.add_column(col)
    for t in rows:
        table.add_row(
            t.trace_id, t.route, str(t.status_code or "-"), f"{t.duration_ms:.1f}",
            str(t.db_spans), "yes" if t.n_plus_one else "", t.start[11:23],
            style="red" if t.error else None,
        )  # fmt: skip
    console().print(table)


@app.command("show")
def show_cmd(
    trace_id: str = typer.Argument(..., help="A trace id from `opsctl traces list`."),
    directory: Path = DIR_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON list of spans in tree order."),
) -> None:
    """One trace as a waterfall: offsets, durations, the SQL of each DB span, N+1 marked."""
    from opsctl import telemetry

    d = telemetry_dir(directory)
    nodes = telemetry.trace_tree(d, trace_id)
    if not nodes:
        raise CommandError(f"no trace {trace_id} in {d}")
    if as_json:
        emit_json(nodes)
        return
    out = console()
    total = max(n.offset_ms + n.duration_ms for n in nodes) or 1.0
    width = 30
    for n in nodes:
        start = int(width * n.offset_ms / total)
        bar = " " * start + "█" * max(1, int(width * n.duration_ms / total))
        label = ("  " * n.depth) + n.name
        out.print(
            f"{bar:<{width + 1}} {n.offset_ms:8.2f} +{n.duration_ms:7.2f} ms  {label}",
            markup=False, style="red" if n.error else None,
        )  # fmt: skip
        if n.sql:
            out.print(f"{'':{width + 1}} {'':>20}  {'  ' * n.depth}  {' '.join(n.sql.split())}",
                      markup=False, style="dim")  # fmt: skip
        for event in n.n_plus_one:
            out.print(
                f"{'':{width + 1}} N+1: fingerprint {event.get('db.query.fingerprint')} ran more "
                f"than {event.get('threshold')} times in this request",
                markup=False, style="yellow",
            )  # fmt: skip


@app.command("stats")
def stats_cmd(
    since: str = typer.Option("15m", "--since", help="Window: 15m, 2h, or an ISO time."),
    directory: Path = DIR_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON list per route."),
) -> None:
    """Per route: requests/s, error %, p50/p95/p99 (ms). The save route comes first.
    JSON keys: route, requests, rps, error_pct, p50_ms, p95_ms, p99_ms."""
    from opsctl import telemetry

    d = telemetry_dir(directory)
    stats = telemetry.ReadStats()
    rows = telemetry.route_stats(d, since_or_fail(since), stats)
    report_corrupt(stats)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(telemetry.empty_hint(d, since), markup=False)
        return
    from rich.table import Table

    table = Table(title=f"routes since {since} ({stats.spans} spans)")
    for col in ("route", "requests", "req/s", "errors %", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "route" else "right")
    for r in rows:
        table.add_row(
            r.route, str(r.requests), f"{r.rps:.2f}", f"{r.error_pct:.1f}", f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}",
        )  # fmt: skip
    console().print(table)
