"""opsctl explain: a statement's plan, its problems, and what to do about them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, err_console


def command(
    sql: str = typer.Argument(None, help="The statement (or use --fingerprint / --top)."),
    params: str = typer.Option(None, "--params", help="JSON list (or object) of parameters."),
    analyze: bool = typer.Option(
        False, "--analyze", help="Execute it (single SELECT only) for real timings; rolled back."
    ),
    buffers: bool = typer.Option(False, "--buffers", help="Include buffer usage (PostgreSQL)."),
    fmt: str = typer.Option("text", "--format", help="text (a tree) or json (raw plan)."),
    fingerprint: str = typer.Option(
        None,
        "--fingerprint",
        help="Explain this fingerprint's example statement from the query statistics.",
    ),
    top: int = typer.Option(None, "--top", min=1, help="Explain the N costliest fingerprints."),
    since: str = typer.Option(
        None,
        "--since",
        help="Window for --fingerprint / --top (1h, 30m; files: default 1h; pg: what ran since "
        "the stored snapshot at or before then, see `queries snapshot`).",
    ),
    source: str = typer.Option(
        "files",
        "--source",
        help="Where --fingerprint / --top find statements: files (telemetry spans) or pg "
        "(pg_stat_statements of --database-url, costliest by total time since its reset, or "
        "in --since).",
    ),
    timeout: str = typer.Option(
        "10s", "--timeout", help="Statement timeout: a duration of at least 1ms (500ms, 10s, 1m)."
    ),
    telemetry_dir: Path = options.TELEMETRY_DIR,
    database_url: str = options.DATABASE_URL,
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """EXPLAIN a statement safely and say what its plan does wrong.

    The statement runs in a read-only transaction, always rolled back, with a statement
    timeout. The advisor flags seq scans of large tables (with a CREATE INDEX CONCURRENTLY
    suggestion), misestimates, spills, lossy bitmaps, heap fetches and dominant nodes.

    Index suggestions are proven on PostgreSQL with HypoPG (hypothetical indexes, planned
    without ANALYZE in a read-only, rolled-back transaction): suggested only when the plan's
    estimated cost drops by at least half, with the cost before and after; otherwise
    "no index suggested" with the numbers. Without HypoPG (SQLite, or the extension missing)
    the suggestion is marked unverified, saying why.

    Statements from the query statistics carry placeholders: give --params, or without them
    PostgreSQL plans them with NULLs (a generic shape, good for spotting scans).

    JSON keys: vendor, sql, analyzed, plan (as the database returned it: PostgreSQL's is
    accepted by plan visualisers), findings[{severity, node_id, node, problem, evidence, action,
    index}]; index is null or {relation, columns, statement, status (verified, rejected,
    unverified), reason, cost_before, cost_after, cost_drop (0.75 = 75% cheaper), used}.
    With --top: {window (--source pg --since: {from, to, shorter, stats_reset_at}, else null),
    statements[{fingerprint, sql, error, and the keys above}], indexes[{relation,
    columns, statement, status, helps[fingerprints], statements[{fingerprint, status,
    cost_before, cost_after, cost_drop}]}]}: suggestions on the same table and columns merged.

    Exit 0 explained, 1 failed (bad input, database unavailable), 2 refused (not allowed
    to run, or the database refused the statement / timed out; with --top: every statement).
    """
    from opsctl.db.explain import explain
    from opsctl.db.sqlsafety import Refused

    if fmt not in {"text", "json"}:
        raise CommandError("--format must be text or json")
    if source not in {"files", "pg"}:
        raise CommandError("--source must be files or pg")
    timeout_s = options.duration(timeout, "--timeout").total_seconds()
    as_json = as_json or fmt == "json"
    try:
        bound = json.loads(params) if params else None
    except ValueError as exc:
        raise CommandError(f"--params is not valid JSON: {exc}") from None
    url = options.database_url(database_url)
    statements, window = _statements(sql, fingerprint, top, since, telemetry_dir, source, url)
    if top is None:
        (fp, stmt, stmt_params), *_ = statements
        r = explain(url, stmt, bound if bound is not None else stmt_params, analyze, buffers,
                    timeout_s)  # fmt: skip
        if as_json:
            emit_json(_payload(r))
            return
        from opsctl.render_plan import render

        console().print(render(r))
        return
    results: list[tuple[str, str, object]] = []
    for fp, stmt, stmt_params in statements:
        try:
            results.append((fp, stmt, explain(url, stmt, stmt_params, analyze, buffers,
                                              timeout_s)))  # fmt: skip
        except Refused as exc:  # one statement that cannot be explained does not stop the rest
            results.append((fp, stmt, exc))
    _show_top(results, as_json, window)
    if all(isinstance(r, Refused) for _, _, r in results):
        raise typer.Exit(2)


def _payload(r) -> dict:
    return {"vendor": r.vendor, "sql": r.sql, "analyzed": r.analyzed, "plan": r.raw_plan,
            "findings": r.findings}  # fmt: skip


def _show_top(results, as_json: bool, window: dict | None) -> None:
    from opsctl.db.plan_advice import merge_index_advice
    from opsctl.db.sqlsafety import Refused

    merged = merge_index_advice(
        [(fp, r.findings) for fp, _, r in results if not isinstance(r, Refused)]
    )
    if as_json:
        emit_json({
            "window": window,
            "statements": [
                {"fingerprint": fp, "sql": stmt, "error": str(r)} if isinstance(r, Refused)
                else {"fingerprint": fp, **_payload(r), "error": None}
                for fp, stmt, r in results
            ],
            "indexes": merged,
        })  # fmt: skip
        return
    from rich.text import Text

    from opsctl.output import print_table
    from opsctl.render_plan import render

    out = console()
    if window:
        err_console().print(f"costliest from {window['from']:%Y-%m-%d %H:%M:%S} to "
                            f"{window['to']:%H:%M:%S} (pg_stat_statements snapshots)",
                            markup=False)  # fmt: skip
    for fp, stmt, r in results:
        out.rule(Text(f"{fp}  {' '.join(stmt.split())[:60]}"), style="dim")  # no markup
        if isinstance(r, Refused):
            out.print(f"not explained: {r}", markup=False)
        else:
            out.print(render(r))
    if not merged:
        out.print(f"no index suggestions across {len(results)} statement(s)", markup=False)
        return

    def costs(m) -> str:
        return "; ".join(
            f"{s.fingerprint} {s.cost_before:.1f}->{s.cost_after:.1f}"
            if s.cost_before is not None else f"{s.fingerprint} -" for s in m.statements
        )  # fmt: skip

    print_table(
        f"index suggestions across {len(results)} statements",
        ("status", "index", "helps", "cost before->after per statement"),
        [(m.status, m.statement, ", ".join(m.helps) or "-", costs(m)) for m in merged],
        overflow="fold",
        styles=[{"verified": "green", "rejected": "dim"}.get(m.status) for m in merged],
    )


def _pg_window(url: str, since: str):
    """The statements that ran since ``since`` (pg_stat_statements snapshots, through the
    backend) and the window they cover."""
    from opsctl.db.engine import vendor_of
    from opsctl.db.statements import is_own

    if vendor_of(url) != "postgresql":
        raise CommandError("--source pg needs a PostgreSQL --database-url")
    start = options.since(since)
    from opsctl.service import open_backend

    open_backend(url)
    from backend.ops import statement_snapshots

    w = statement_snapshots.window(start, "total", 1000)
    stats = [r for r in w.statements if not is_own(r.example)]
    return stats, {"from": w.start, "to": w.end, "shorter": w.shorter,
                   "stats_reset_at": w.stats_reset_at}  # fmt: skip


def _statements(sql, fingerprint, top, since, telemetry_dir, source, url):
    """(fingerprint, statement, parameters) to explain, and the pg window they come from."""
    chosen = sum(x is not None for x in (sql, fingerprint, top))
    if chosen != 1:
        raise CommandError("give a statement, or --fingerprint FP, or --top N (exactly one)")
    if sql is not None:
        return [("-", sql, None)], None
    window = None
    if source == "pg" and since is not None:
        stats, window = _pg_window(url, since)
        where = f"pg_stat_statements since {since}"
    elif source == "pg":
        from opsctl.db.statements import explainable_statements

        stats = explainable_statements(url)
        where = "pg_stat_statements"
    else:
        from opsctl import telemetry

        since = since or "1h"
        d = options.telemetry_dir(telemetry_dir)
        stats = telemetry.query_stats(d, options.since(since), "total", 1000)
        where = f"{d} since {since}"
    if fingerprint:
        stats = [q for q in stats if q.fingerprint.startswith(fingerprint)]
        if not stats:
            raise CommandError(f"no fingerprint {fingerprint} in {where}")
        stats = stats[:1]
    else:
        stats = [q for q in stats if q.example.lstrip().upper().startswith(("SELECT", "WITH"))]
        stats = stats[:top]
        if not stats:
            if source == "pg":
                raise CommandError(f"no SELECT in {where} for this database", 3)
            from opsctl import telemetry

            raise CommandError(telemetry.empty_hint(d, since))
    # The recorded text has placeholders and no values (never recorded): plan it with NULLs.
    from opsctl.db.sqlsafety import number_placeholders

    return [(q.fingerprint, q.example, [None] * number_placeholders(q.example)[1])
            for q in stats], window  # fmt: skip
