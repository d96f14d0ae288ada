"""opsctl traces: recent and slow traces, one trace's waterfall, RED per route."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl import options
from opsctl.output import CommandError, console, emit_json, print_table

EXIT_CODES = (
    "Exit codes: 0 spans were read (even if none matched the filters); 1 bad input; "
    "3 no data: no span at all was read in the window (telemetry off, wrong directory), "
    "so a script or a runbook check never passes on an empty folder."
)

app = typer.Typer(
    help="Traces from the telemetry files: list, show one, stats per route.\n\n" + EXIT_CODES
)


def no_data(message: str, as_json: bool) -> CommandError:
    """Exit 3 with ``message``; with --json an empty list is printed first, so the output
    stays valid JSON and the exit code tells "no data" from "nothing matched"."""
    from opsctl.telemetry import NO_DATA_EXIT

    if as_json:
        emit_json([])
    return CommandError(message, NO_DATA_EXIT)


def report_corrupt(stats) -> None:
    from opsctl.output import err_console

    if stats.corrupt_lines:
        err_console().print(
            f"warning: skipped {stats.corrupt_lines} corrupt or truncated line(s)", markup=False
        )


def covers(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@app.command("list", epilog=EXIT_CODES)
def list_cmd(
    since: str = typer.Option("15m", "--since", help="Window: 15m, 2h, or an ISO time."),
    route: str = typer.Option(None, "--route", help="Only routes containing this text."),
    min_ms: float = typer.Option(0, "--min-ms", help="Only traces at least this slow."),
    errors: bool = typer.Option(False, "--errors", help="Only failed requests (5xx)."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many, slowest first."),
    directory: Path = options.TELEMETRY_DIR,
    as_json: bool = typer.Option(False, "--json", help="JSON list of trace summaries."),
) -> None:
    """Recent traces, slowest first.

    JSON keys: trace_id, route, name, start, duration_ms,
    status_code, error, spans, db_spans, n_plus_one."""
    from opsctl import telemetry

    d = options.telemetry_dir(directory)
    window = options.since(since)
    stats = telemetry.ReadStats()
    rows = telemetry.list_traces(d, window, route, min_ms, errors, limit, stats)
    report_corrupt(stats)
    if not stats.in_window:
        raise no_data(telemetry.empty_hint(d, since), as_json)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(f"no traces matched ({stats.in_window} spans read since {since})",
                        markup=False)  # fmt: skip
        return
    print_table(
        f"traces since {since} ({stats.in_window} spans read)",
        ("trace id", "route", "status", "ms", "db", "n+1", "start"),
        [(t.trace_id, t.route, t.status_code or "-", f"{t.duration_ms:.1f}", t.db_spans,
          "yes" if t.n_plus_one else "", t.start[11:23]) for t in rows],
        styles=["red" if t.error else None for t in rows],
    )  # fmt: skip


@app.command("show")
def show_cmd(
    trace_id: str = typer.Argument(..., help="A trace id from `opsctl traces list`."),
    directory: Path = options.TELEMETRY_DIR,
    as_json: bool = typer.Option(False, "--json", help="JSON list of spans in tree order."),
) -> None:
    """One trace as a waterfall: offsets, durations, the SQL of each DB span, N+1 marked.

    Exits 1 when the trace is not in the files."""
    from opsctl import telemetry

    d = options.telemetry_dir(directory)
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


@app.command("stats", epilog=EXIT_CODES)
def stats_cmd(
    since: str = typer.Option("15m", "--since", help="Window: 15m, 2h, or an ISO time."),
    directory: Path = options.TELEMETRY_DIR,
    prometheus: str = options.PROMETHEUS,
    as_json: bool = typer.Option(False, "--json", help="JSON list per route."),
) -> None:
    """Per route: requests, req/s, error %, p50/p95/p99 (ms); the save route first.

    req/s is over the time the data in the window covers (a backend up for 2 minutes has
    2 minutes of data in a 15-minute window). From files, percentiles are exact; from
    Prometheus, interpolated in the histogram's buckets.

    instances: how many app hosts (service.instance.id) served the route (files only).

    JSON keys: route, requests, rps, error_pct, p50_ms, p95_ms, p99_ms, instances."""
    import datetime as dt

    from opsctl import telemetry

    window = options.since(since)
    if prometheus:
        from opsctl.telemetry import prometheus as prom

        seconds = (dt.datetime.now(dt.UTC) - window).total_seconds()
        try:
            rows, cov = prom.route_stats(prometheus, seconds)
        except prom.PrometheusError as exc:
            raise CommandError(str(exc)) from None
        source, spans, covered = f"Prometheus {prometheus}", cov.spans, cov.covered_seconds
        if cov.empty:
            raise no_data(f"no data: no requests counted by {prometheus} since {since}", as_json)
    else:
        d = options.telemetry_dir(directory)
        stats = telemetry.ReadStats()
        rows = telemetry.route_stats(d, window, stats)
        report_corrupt(stats)
        if not stats.in_window:
            raise no_data(telemetry.empty_hint(d, since), as_json)
        source, spans, covered = str(d), stats.in_window, stats.covered_seconds
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console().print(f"no requests (server spans) among {spans} spans since {since}",
                        markup=False)  # fmt: skip
        return
    what = "requests" if prometheus else "spans"
    cols = ["route", "requests", "req/s", "errors %", "p50 ms", "p95 ms", "p99 ms"]
    print_table(
        f"routes since {since}: {spans} {what}, data covers {covers(covered)}",
        cols + ([] if prometheus else ["instances"]),
        [(r.route, r.requests, f"{r.rps:.2f}", f"{r.error_pct:.1f}", f"{r.p50_ms:.1f}",
          f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}", *([] if prometheus else [r.instances]))
         for r in rows],
        right=[*cols[1:], "instances"],
        caption=source,
    )  # fmt: skip
