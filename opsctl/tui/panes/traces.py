"""Traces: the slowest recent traces in the window (one route's, from the Overview), and a
trace's waterfall on enter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Label

from opsctl.tui.drill import WaterfallScreen
from opsctl.tui.panes.base import Pane, cancelled, fill, table, window_line


class TracesPane(Pane):
    title = "Traces"
    short = "Trace"
    telemetry = True

    def body(self) -> ComposeResult:
        yield Label("", id="traces-window", classes="hint")
        yield table(self.id, "trace id", "route", "status", "ms", "db", "n+1")

    def on_mount(self) -> None:
        self.route_filter: str | None = None  # set by the Overview's drill-down
        self.starts: dict[str, str] = {}  # trace id -> start, to narrow the waterfall's search

    def show_route(self, route: str | None) -> None:
        """Only ``route``'s traces (slowest first), read from the source, not just filtered
        from the 200 slowest of all routes."""
        self.route_filter = route
        self._view_line()
        self.restart()

    def cleared(self) -> None:
        if self.route_filter:
            self.show_route(None)

    def view_parts(self) -> list[str]:
        parts = super().view_parts()
        if self.route_filter:
            parts.insert(0, f"route {self.route_filter} (esc shows all)")
        return parts

    def fetch(self):
        return self.sources.traces(self.window_seconds, self.route_filter, cancelled)

    def show(self, data) -> None:
        line = window_line(self, data)
        if data.coverage.empty and not data.loading:
            line += " · NO DATA in the window"
        elif not data.rows:
            line += " · no trace matched"
        self.query_one("#traces-window", Label).update(line)
        self.starts = {t.trace_id: t.start for t in data.rows}
        fill(
            self.query_one(f"#{self.id}-table"),
            [
                (t.trace_id[:16], t.route, t.status_code, f"{t.duration_ms:.1f}", t.db_spans,
                 "yes" if t.n_plus_one else "")
                for t in data.rows
            ],
            [t.trace_id for t in data.rows],
        )  # fmt: skip

    def open(self, trace_id: str) -> None:
        self.run_worker(lambda: self._waterfall(trace_id), thread=True,
                        group="waterfall", exclusive=True)  # fmt: skip

    def _waterfall(self, trace_id: str) -> None:
        nodes = self.sources.trace(trace_id, self.starts.get(trace_id))
        if cancelled():
            return
        # Widgets are made on the UI thread.
        self.app.call_from_thread(lambda: self.app.push_screen(WaterfallScreen(trace_id, nodes)))
