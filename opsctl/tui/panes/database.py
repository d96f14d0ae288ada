"""Database: table sizes and dead rows; VACUUM (ANALYZE) a table after a confirmation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from opsctl.tui.panes.base import Pane, fill, selected_key, table


class DatabasePane(Pane):
    title = "Database"
    BINDINGS = [Binding("v", "vacuum", "VACUUM ANALYZE")]

    def body(self) -> ComposeResult:
        yield table(self.id, "table", "rows", "MB", "dead", "dead %", "av due")

    def fetch(self):
        return self.sources.tables()

    def show(self, data) -> None:
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
            self.act(
                f"VACUUM (ANALYZE) {table}?",
                f"Runs VACUUM (ANALYZE) on {table} outside a transaction with a lock "
                "timeout; it does not block reads or writes. Recorded in the audit trail.",
                lambda: self.sources.vacuum(table),
                f"vacuumed {table}",
            )
