"""Resources: probes against their thresholds, and the alert history."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import DataTable, Label, Static

from opsctl.tui.panes.base import Pane, fill, table


class ResourcesPane(Pane):
    title = "Resources"
    short = "Res"

    def body(self) -> ComposeResult:
        yield table(self.id, "probe", "value", "warn", "crit", "state", "detail")
        yield Label("alert history", classes="section")
        yield Static("", id="resources-history")

    def fetch(self):
        return self.sources.resources()

    def show(self, data) -> None:
        from backend.ops.resources import show

        rows, history = data
        # Each value and threshold in its probe's unit (42.1%, 12.5h to full, 0.83 per core).
        fill(
            self.query_one(DataTable),
            [(n, show(v, n), show(w, n), show(c, n), s, d) for n, v, w, c, s, d in rows],
        )
        self.query_one("#resources-history", Static).update(
            "\n".join(
                f"{a.opened_at:%m-%d %H:%M} {a.severity:8} {a.probe} on {a.host}"
                f"{' (resolved)' if a.resolved_at else ' OPEN'}"
                for a in history
            )
            or "no alerts"
        )
