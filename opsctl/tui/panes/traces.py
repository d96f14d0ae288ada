"""Traces: the slowest recent traces in the window (filter by route), and a waterfall."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Label

from opsctl.tui.modals import TextScreen
from opsctl.tui.panes.base import Pane, cancelled, fill, selected_key, table, window_line


class TracesPane(Pane):
    title = "Traces"
    telemetry = True
    BINDINGS = [Binding("slash", "filter", "Filter"), Binding("enter", "open", "Waterfall")]

    def body(self) -> ComposeResult:
        yield Label("", id="traces-window", classes="hint")
        yield Input(placeholder="filter by route (enter to apply)", id="traces-filter")
        yield table(self.id, "trace id", "route", "status", "ms", "db", "n+1")

    def on_mount(self) -> None:
        self.query_one("#traces-filter", Input).display = False
        self.route_filter = None
        self.starts: dict[str, str] = {}  # trace id -> start, to narrow the waterfall's search

    def fetch(self):
        return self.sources.traces(self.window_seconds, self.route_filter, cancelled)

    def show(self, data) -> None:
        line = window_line(self, data)
        if self.route_filter:
            line += f" · route contains {self.route_filter!r}"
        if data.coverage.empty and not data.loading:
            line += " · NO DATA in the window"
        elif not data.rows:
            line += " · no trace matched"
        self.query_one("#traces-window", Label).update(line)
        self.starts = {t.trace_id: t.start for t in data.rows}
        fill(
            self.query_one(DataTable),
            [
                (t.trace_id[:16], t.route, t.status_code, f"{t.duration_ms:.1f}", t.db_spans,
                 "yes" if t.n_plus_one else "")
                for t in data.rows
            ],
            [t.trace_id for t in data.rows],
        )  # fmt: skip

    def action_filter(self) -> None:
        box = self.query_one("#traces-filter", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.route_filter = event.value.strip() or None
        event.input.display = False
        self.query_one(DataTable).focus()
        self.restart()

    def action_open(self) -> None:
        trace_id = selected_key(self.query_one(DataTable))
        if trace_id:
            self.run_worker(lambda: self._waterfall(trace_id), thread=True,
                            group="waterfall", exclusive=True)  # fmt: skip

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _waterfall(self, trace_id: str) -> None:
        nodes = self.sources.trace(trace_id, self.starts.get(trace_id))
        if cancelled():
            return
        lines = []
        for n in nodes:
            lines.append(f"{n.offset_ms:8.2f} +{n.duration_ms:7.2f} ms {'  ' * n.depth}{n.name}")
            if n.sql:
                lines.append(f"{'':27}{'  ' * n.depth}{' '.join(n.sql.split())[:100]}")
            for e in n.n_plus_one:
                lines.append(f"{'':27}N+1: {e.get('db.query.fingerprint')}")
        self.app.call_from_thread(
            self.app.push_screen,
            TextScreen(f"trace {trace_id}", "\n".join(lines) or "trace not found in the files"),
        )
