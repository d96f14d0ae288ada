"""opsctl queries: the costliest SQL by fingerprint, and N+1 offenders."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl import errors, options
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
    since: str = typer.Option(
        None,
        "--since",
        help="Window: 1h, 30m, or an ISO time (files: default 1h; pg: default the totals "
        "since the statistics' last reset, and with --since the change since the stored "
        "snapshot at or just before that time).",
    ),
    by: str = typer.Option("total", "--by", help="Order by total, mean, p95 or calls."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many fingerprints."),
    source: str = typer.Option("files", "--source", help="files (telemetry) or pg."),
    database_url: str = options.DATABASE_URL,
    directory: Path = options.TELEMETRY_DIR,
    as_json: bool = typer.Option(False, "--json", help="JSON list per fingerprint."),
) -> None:
    """Per fingerprint: calls, total, mean, p95, max (ms), rows, routes, an example.

    With --source pg the figures are pg_stat_statements' totals since its last reset; with
    --source pg --since they are what ran since the stored snapshot at or just before that
    time (`queries snapshot` takes them), the interval covered is printed, and a statement
    whose counters were reset inside it counts from the reset (marked *).

    JSON keys: fingerprint, calls, total_ms, mean_ms, p95_ms, max_ms, rows, routes, example
    (p95 is null with --source pg, which keeps no distribution). With --source pg --since an
    object: source, requested_from, from, to, shorter (no snapshot that old), stats_reset_at
    (the whole view was reset inside the window), statements[{those keys, reset,
    shared_blks_hit, shared_blks_read, queryids}]; --by p95 is refused there."""
    if by not in {"total", "mean", "p95", "calls"}:
        raise CommandError("--by must be total, mean, p95 or calls")
    if source == "pg" and since is not None:
        _pg_window(since, by, limit, database_url, as_json)
        return
    since = since or "1h"
    caption = None
    if source == "pg":
        from opsctl.db.statements import PgStatementsUnavailable, top_statements

        try:
            rows = top_statements(options.database_url(database_url), by, limit)
        except PgStatementsUnavailable as exc:  # no pg_stat_statements: no data (3)
            raise CommandError(str(exc), 3) from None
        caption = "totals since pg_stat_statements was last reset (--since 1h: the last hour)"
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
        caption=caption,
    )  # fmt: skip
    _examples(rows)


def _print_sql(out, sql: str) -> None:
    """One statement on one line: cut to the terminal's width on a terminal, whole when
    piped (so ``| grep`` finds any part of it)."""
    text = f"  {' '.join(sql.split())}"
    if out.is_terminal:
        out.print(text, markup=False, overflow="ellipsis", no_wrap=True)
    else:
        out.print(text, markup=False, soft_wrap=True)


def _examples(rows) -> None:
    out = console()
    for q in rows:
        routes = f" [{', '.join(q.routes)}]" if getattr(q, "routes", None) else ""
        out.print(f"{q.fingerprint}{routes}", markup=False, style="bold")
        _print_sql(out, q.example)


def _pg_backend(database_url):
    """Django on --database-url, refusing SQLite in one line (pg_stat_statements is
    PostgreSQL's)."""
    from opsctl.db.engine import vendor_of

    url = options.database_url(database_url)
    if vendor_of(url) != "postgresql":
        from backend.ops.statement_stats import NEEDS_POSTGRES

        raise CommandError(NEEDS_POSTGRES)
    from opsctl.service import open_backend

    open_backend(url)


def _when(t) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _pg_window(since: str, by: str, limit: int, database_url, as_json: bool) -> None:
    start = options.since(since)
    _pg_backend(database_url)
    from backend.ops import statement_snapshots

    w = statement_snapshots.window(start, by, limit)
    if as_json:
        emit_json({
            "source": "pg", "requested_from": w.requested_from, "from": w.start, "to": w.end,
            "shorter": w.shorter, "stats_reset_at": w.stats_reset_at,
            "statements": [
                {"fingerprint": r.fingerprint, "calls": r.calls, "total_ms": r.total_ms,
                 "mean_ms": r.mean_ms, "p95_ms": None, "max_ms": None, "rows": r.rows,
                 "routes": [], "example": r.example, "reset": r.reset,
                 "shared_blks_hit": r.shared_blks_hit, "shared_blks_read": r.shared_blks_read,
                 "queryids": r.queryids}
                for r in w.statements
            ],
        })  # fmt: skip
        return
    notes = [f"from the snapshot of {_when(w.start)} to now ({_when(w.end)})"]
    if w.shorter:
        notes.append(f"no snapshot as old as {_when(w.requested_from)}: the window is shorter")
    if w.stats_reset_at:
        notes.append(f"statistics were reset at {_when(w.stats_reset_at)}: figures count "
                     "from then")  # fmt: skip
    elif any(r.reset for r in w.statements):
        notes.append("* counters went down (reset or evicted): figures since then")
    cols = ("fingerprint", "calls", "total ms", "mean ms", "rows", "blocks read")
    print_table(
        f"top SQL by {by} (pg, {_when(w.start)} .. {_when(w.end)})",
        cols,
        [(r.fingerprint + (" *" if r.reset else ""), r.calls, f"{r.total_ms:.1f}",
          f"{r.mean_ms:.2f}", r.rows, r.shared_blks_read) for r in w.statements],
        right=cols[1:],
        caption="; ".join(notes),
    )  # fmt: skip
    _examples(w.statements)


@app.command("snapshot")
@errors.exit_policy(errors.JOB)
def snapshot_cmd(
    keep: str = typer.Option(
        "14d",
        "--keep",
        envvar="OPS_STATEMENT_SNAPSHOT_KEEP",
        show_envvar=True,
        help="Drop snapshots older than this (e.g. 7d, 30d).",
    ),
    min_interval: str = typer.Option(
        "1m",
        "--min-interval",
        help="Take none when another host took one less than this long ago.",
    ),
    database_url: str = options.DATABASE_URL,
    as_json: bool = typer.Option(False, "--json", help="JSON summary."),
) -> None:
    """Store a pg_stat_statements snapshot; drop old ones (a scheduled job).

    Reads pg_stat_statements of this database into the app's database. Run it every 5
    minutes from cron or a systemd timer on every host: a job lock lets one take it, and
    one younger than --min-interval counts as this run's. `queries top --source pg --since`
    and `queries history` read the snapshots.

    Exit 0 taken (or skipped: another host holds the lock or took one within
    --min-interval), 2 failed (SQLite, no pg_stat_statements, the database is down).

    JSON keys: outcome (ok, skipped, locked), taken_at, statements, new_texts,
    purged_snapshots, keep_days, detail."""
    keep_td = options.duration(keep, "--keep")
    min_td = options.duration(min_interval, "--min-interval")
    _pg_backend(database_url)
    from backend.ops import statement_snapshots

    report = statement_snapshots.take_snapshot(keep_td, min_td)
    if as_json:
        emit_json(report)
        return
    if report.outcome == "ok":
        console().print(
            f"snapshot of {report.statements} statements at {_when(report.taken_at)} "
            f"({report.new_texts} new); dropped {report.purged_snapshots} older than "
            f"{report.keep_days:g} days",
            markup=False,
        )
    else:
        console().print(f"skipped: {report.detail}", markup=False)


@app.command("history")
def history_cmd(
    statement: str = typer.Argument(
        ...,
        help="A fingerprint (or a prefix of one) or a pg_stat_statements queryid (a negative "
        "one after --: queries history -- -4242).",
    ),
    since: str = typer.Option(
        None, "--since", help="From this long ago (1d, 6h) or an ISO time (default: all kept)."
    ),
    database_url: str = options.DATABASE_URL,
    as_json: bool = typer.Option(False, "--json", help="JSON object."),
) -> None:
    """One statement's calls and mean time between snapshots, over time.

    From the stored pg_stat_statements snapshots: calls, total and mean time between each
    snapshot and the next, so a step shows when a deploy or a flag flip changed it. An
    interval marked reset counts only from a statistics reset.

    Exit 0 shown, 1 failed (unknown statement, SQLite, the database is down).

    JSON keys: fingerprint, queryids, query, intervals[{start, end, calls, total_ms,
    mean_ms, rows, reset}]."""
    start = options.since(since) if since else None
    _pg_backend(database_url)
    from backend.ops import statement_snapshots

    h = statement_snapshots.history(statement, start)
    if as_json:
        emit_json(h)
        return
    out = console()
    out.print(f"{h.fingerprint}  queryid {', '.join(map(str, h.queryids))}", markup=False,
              style="bold")  # fmt: skip
    _print_sql(out, h.query)
    if not h.intervals:
        out.print("fewer than two snapshots in the window: nothing to compare yet", markup=False)
        return
    cols = ("from", "to", "calls", "total ms", "mean ms", "rows", "")
    print_table(
        f"history of {h.fingerprint}",
        cols,
        [(_when(i.start), _when(i.end), i.calls, f"{i.total_ms:.1f}", f"{i.mean_ms:.3f}",
          i.rows, "reset" if i.reset else "") for i in h.intervals],
        right=("calls", "total ms", "mean ms", "rows"),
    )  # fmt: skip


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
