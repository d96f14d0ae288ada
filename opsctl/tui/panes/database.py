"""Database: table sizes and dead rows; VACUUM (ANALYZE) a table after a confirmation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from opsctl.tui.panes.base import Pane, fill, selected_key, table


class DatabasePane(Pane):
    title = "Database"
    short = "DB"
    BINDINGS = [Binding("v", "vacuum", "VACUUM ANALYZE")]

    def body(self) -> ComposeResult:
        yield table(self.id, "table", "rows", "MB", "dead", "dead %", "av due")

    def fetch(self):
        return self.sources.tables()

    def show(self, data) -> None:
        self.vendor = data.vendor
        fill(
            self.query_one(DataTable),
            [
                (
                    t.table,
                    f"{t.rows:.0f}",
                    f"{(t.table_bytes + t.index_bytes) / 1e6:.1f}",
                    t.dead_rows,
                    t.dead_pct,
                    "yes" if t.autovacuum_due else "",
                )
                for t in data.tables
            ],
            [t.table for t in data.tables],
        )

    def action_vacuum(self) -> None:
        table = selected_key(self.query_one(DataTable))
        if table:
            self.vacuum(table)

    def vacuum(self, table: str) -> None:
        """The key `v` and the command palette: the same plan, the same confirmation."""
        if getattr(self, "vendor", "") == "sqlite":
            title = "VACUUM the SQLite database file?"
            plan = (
                f"SQLite has no per-table VACUUM: this rewrites the whole database file "
                f"(every table, not only {table}), then runs ANALYZE. While it runs it holds "
                "an exclusive lock: writers wait (and readers too, in rollback-journal mode; "
                "WAL readers go on), so saves stall until it ends. It needs free disk of "
                "about twice the file's size next to it. Recorded in the audit trail."
            )
        else:
            title = f"VACUUM (ANALYZE) {table}?"
            plan = (
                f"Runs VACUUM (ANALYZE) on {table} outside a transaction with a lock "
                "timeout. PostgreSQL's plain VACUUM does not block reads or writes (only "
                "VACUUM FULL does). Recorded in the audit trail."
            )
        self.act(title, plan, lambda: self.sources.vacuum(table), f"vacuumed {table}")
