"""opsctl db: table and index health on any database URL."""

from __future__ import annotations

import typer

from opsctl.output import CommandError, console, emit_json

app = typer.Typer(help="Database health: tables (size, dead rows, vacuum state), indexes.")

DB_OPT = typer.Option(
    None, "--database-url", envvar="DATABASE_URL", help="Any database URL (default: the backend's)."
)


def _url(value):
    from backend.config import database_url

    return value or database_url()


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


@app.command("tables")
def tables_cmd(
    sort: str = typer.Option("size", "--sort", help="size, dead or name."),
    as_json: bool = typer.Option(False, "--json", help="JSON: vendor, tables[], file stats."),
    database_url: str = DB_OPT,
) -> None:
    """Per table: rows, table and index size, dead rows and %, last (auto)vacuum/analyze,
    whether autovacuum is due, transaction-id wraparound headroom. SQLite: page count,
    free-list pages and the bytes a VACUUM would reclaim."""
    if sort not in {"size", "dead", "name"}:
        raise CommandError("--sort must be size, dead or name")
    from opsctl.dbhealth import DatabaseUnavailable, table_health

    try:
        health = table_health(_url(database_url), sort)
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        emit_json(health)
        return
    from rich.table import Table

    table = Table(title=f"tables ({health.vendor})")
    cols = ["table", "rows", "size", "indexes"]
    if health.vendor == "postgresql":
        cols += ["dead", "dead %", "last vacuum", "last analyze", "av due", "xid headroom"]
    for c in cols:
        table.add_column(c, justify="left" if c == "table" else "right")
    for t in health.tables:
        row = [t.table, f"{t.rows:.0f}", _mb(t.table_bytes), _mb(t.index_bytes)]
        if health.vendor == "postgresql":
            row += [
                str(t.dead_rows), f"{t.dead_pct:.1f}",
                (t.last_vacuum or t.last_autovacuum or "never")[:16],
                (t.last_analyze or t.last_autoanalyze or "never")[:16],
                "yes" if t.autovacuum_due else "", f"{t.wraparound_headroom_pct:.1f}%",
            ]  # fmt: skip
        table.add_row(*row, style="yellow" if t.autovacuum_due else None)
    out = console()
    out.print(table)
    if health.vendor == "sqlite":
        out.print(
            f"file {_mb(health.file_bytes)}, {health.page_count} pages, {health.freelist_pages} "
            f"free: a VACUUM would reclaim about {_mb(health.reclaimable_bytes)}",
            markup=False,
        )


@app.command("indexes")
def indexes_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON list of issues."),
    database_url: str = DB_OPT,
) -> None:
    """Unused, duplicate (a prefix of another) and invalid indexes, with their sizes."""
    from opsctl.dbhealth import DatabaseUnavailable, index_issues

    try:
        issues = index_issues(_url(database_url))
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        emit_json(issues)
        return
    if not issues:
        console().print("no unused, duplicate or invalid indexes")
        return
    from rich.table import Table

    table = Table(title="index issues")
    for c in ("table", "index", "problem", "size", "detail"):
        table.add_column(c)
    for i in issues:
        table.add_row(i.table, i.index, i.problem, _mb(i.bytes), i.detail)
    console().print(table)
