"""opsctl explain: a statement's plan, its problems, and what to do about them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json


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
    since: str = typer.Option("1h", "--since", help="Window for --fingerprint / --top (1h, 30m)."),
    timeout: str = typer.Option(
        "10s", "--timeout", help="Statement timeout: a duration of at least 1ms (500ms, 10s, 1m)."
    ),
    telemetry_dir: Path = options.TELEMETRY_DIR,
    database_url: str = options.DATABASE_URL,
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """EXPLAIN a statement safely: read-only transaction, always rolled back, with a statement
    timeout. The advisor flags seq scans of large tables (with a CREATE INDEX CONCURRENTLY
    suggestion), misestimates, spills, lossy bitmaps, heap fetches and dominant nodes.

    Statements from the query statistics carry placeholders: give --params, or without them
    PostgreSQL plans them with NULLs (a generic shape, good for spotting scans).
    JSON keys: vendor, sql, analyzed, plan (as the database returned it: PostgreSQL's is
    accepted by plan visualisers), findings[{severity, node_id, node, problem, evidence, action}].

    Exit 0 explained, 1 failed (bad input, database unavailable), 2 refused (not allowed
    to run, or the database refused the statement / timed out).
    """
    from opsctl.db.explain import explain

    if fmt not in {"text", "json"}:
        raise CommandError("--format must be text or json")
    timeout_s = options.duration(timeout, "--timeout").total_seconds()
    as_json = as_json or fmt == "json"
    try:
        bound = json.loads(params) if params else None
    except ValueError as exc:
        raise CommandError(f"--params is not valid JSON: {exc}") from None
    statements = _statements(sql, fingerprint, top, since, telemetry_dir)
    url = options.database_url(database_url)
    results = [
        explain(url, stmt, bound if bound is not None else stmt_params, analyze, buffers,
                timeout_s)
        for stmt, stmt_params in statements
    ]  # fmt: skip
    if as_json:
        payload = [
            {"vendor": r.vendor, "sql": r.sql, "analyzed": r.analyzed, "plan": r.raw_plan,
             "findings": r.findings} for r in results
        ]  # fmt: skip
        emit_json(payload[0] if len(payload) == 1 and not top else payload)
        return
    from opsctl.render_plan import render

    out = console()
    for r in results:
        if len(results) > 1:
            out.rule(" ".join(r.sql.split())[:70], style="dim")
        out.print(render(r))


def _statements(sql, fingerprint, top, since, telemetry_dir) -> list[tuple[str, list | None]]:
    chosen = sum(x is not None for x in (sql, fingerprint, top))
    if chosen != 1:
        raise CommandError("give a statement, or --fingerprint FP, or --top N (exactly one)")
    if sql is not None:
        return [(sql, None)]
    from opsctl import telemetry

    window = options.since(since)
    d = options.telemetry_dir(telemetry_dir)
    stats = telemetry.query_stats(d, window, "total", 1000)
    if fingerprint:
        stats = [q for q in stats if q.fingerprint.startswith(fingerprint)]
        if not stats:
            raise CommandError(f"no fingerprint {fingerprint} in {d} since {since}")
        stats = stats[:1]
    else:
        stats = [q for q in stats if q.example.lstrip().upper().startswith(("SELECT", "WITH"))]
        stats = stats[:top]
        if not stats:
            raise CommandError(telemetry.empty_hint(d, since))
    # The recorded text has placeholders and no values (never recorded): plan it with NULLs.
    return [(q.example, [None] * q.example.count("%s")) for q in stats]
