"""opsctl db: table and index health on any database URL."""

from __future__ import annotations

import typer

from opsctl import options
from opsctl.errors import CommandError
from opsctl.output import console, emit_json, print_table
from opsctl.render import megabytes

app = typer.Typer(help="Database health: tables (size, dead rows, vacuum state), indexes.")


@app.command("tables")
def tables_cmd(
    sort: str = typer.Option("size", "--sort", help="size, dead or name."),
    as_json: bool = typer.Option(False, "--json", help="JSON: vendor, tables[], file stats."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Per table: rows, table and index size, dead rows and %, last (auto)vacuum/analyze,
    whether autovacuum is due, transaction-id wraparound headroom. SQLite: page count,
    free-list pages and the bytes a VACUUM would reclaim. Exit 0 shown, 1 failed."""
    if sort not in {"size", "dead", "name"}:
        raise CommandError("--sort must be size, dead or name")
    from opsctl.db.health import table_health

    health = table_health(options.database_url(database_url), sort)
    if as_json:
        emit_json(health)
        return
    pg = health.vendor == "postgresql"
    cols = ["table", "rows", "size", "indexes"]
    if pg:
        cols += ["dead", "dead %", "last vacuum", "last analyze", "av due", "xid headroom"]
    rows = []
    for t in health.tables:
        row = [t.table, f"{t.rows:.0f}", megabytes(t.table_bytes), megabytes(t.index_bytes)]
        if pg:
            row += [
                t.dead_rows, f"{t.dead_pct:.1f}",
                (t.last_vacuum or t.last_autovacuum or "never")[:16],
                (t.last_analyze or t.last_autoanalyze or "never")[:16],
                "yes" if t.autovacuum_due else "", f"{t.wraparound_headroom_pct:.1f}%",
            ]  # fmt: skip
        rows.append(row)
    print_table(
        f"tables ({health.vendor})", cols, rows, right=cols[1:],
        styles=["yellow" if t.autovacuum_due else None for t in health.tables],
    )  # fmt: skip
    if health.vendor == "sqlite":
        console().print(
            f"file {megabytes(health.file_bytes)}, {health.page_count} pages, "
            f"{health.freelist_pages} free: a VACUUM would reclaim about "
            f"{megabytes(health.reclaimable_bytes)}",
            markup=False,
        )


@app.command("indexes")
def indexes_cmd(
    as_json: bool = typer.Option(False, "--json", help="JSON list of issues."),
    database_url: str = options.DATABASE_URL,
) -> None:
    """Unused, duplicate (a prefix of another) and invalid indexes, with their sizes.
    Exit 0 shown, 1 failed."""
    from opsctl.db.health import index_issues

    issues = index_issues(options.database_url(database_url))
    if as_json:
        emit_json(issues)
        return
    if not issues:
        console().print("no unused, duplicate or invalid indexes")
        return
    print_table(
        "index issues",
        ("table", "index", "problem", "size", "detail"),
        [(i.table, i.index, i.problem, megabytes(i.bytes), i.detail) for i in issues],
    )
