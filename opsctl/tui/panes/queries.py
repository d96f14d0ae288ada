"""Queries: SQL per fingerprint over the window (sortable), the full statement on enter,
EXPLAIN with advice, N+1 offenders."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from opsctl.tui.drill import QueryScreen, one_line
from opsctl.tui.modals import TextScreen
from opsctl.tui.panes.base import Pane, cancelled, fill, selected_key, table, window_line


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class QueriesPane(Pane):
    title = "Queries"
    short = "SQL"
    telemetry = True
    BINDINGS = [
        Binding("t", "by('total')", "By total", show=False),
        Binding("m", "by('mean')", "By mean", show=False),
        Binding("p", "by('p95')", "By p95", show=False),
        Binding("c", "by('calls')", "By calls", show=False),
        Binding("e", "explain", "Explain"),
        Binding("n", "nplusone", "N+1"),
    ]

    def body(self) -> ComposeResult:
        yield Label("", id="queries-window", classes="hint")
        yield table(self.id, "fingerprint", "calls", "total ms", "mean ms", "p95 ms", "example")

    def on_mount(self) -> None:
        self.by = "total"
        self.examples: dict[str, str] = {}

    def fetch(self):
        return self.sources.queries(self.window_seconds, self.by, cancelled)

    def show(self, data) -> None:
        line = window_line(self, data) + f" · top 50 by {self.by} (t m p c)"
        if data.coverage.empty and not data.loading:
            line += " · NO DATA in the window"
        self.query_one("#queries-window", Label).update(line)
        self.examples = {q.fingerprint: q.example for q in data.rows}
        fill(
            self.query_one(f"#{self.id}-table"),
            [
                (q.fingerprint, q.calls, ms(q.total_ms, 1), ms(q.mean_ms), ms(q.p95_ms),
                 one_line(q.example)[:60])
                for q in data.rows
            ],
            [q.fingerprint for q in data.rows],
        )  # fmt: skip

    def action_by(self, by: str) -> None:
        """Which 50 statements to read (the source ranks them); the table shows them so."""
        self.by = by
        t = self.table()
        if t is not None and t.sort_column is not None:
            t.sort_column = None
            t.redraw(columns=True)
            self._view_line()
        self.restart()

    def open(self, fp: str) -> None:
        self.app.push_screen(
            QueryScreen(self.examples.get(fp, ""), fp, "an example of this fingerprint")
        )

    def action_explain(self) -> None:
        fp = selected_key(self.query_one(f"#{self.id}-table"))
        if fp:
            example = self.examples.get(fp) or ""
            if not example:
                self.app.notify("no statement text for this fingerprint (Prometheus keeps none)",
                                severity="warning")  # fmt: skip
                return
            self.app.explain(example, fp)

    def action_nplusone(self) -> None:
        self.run_worker(self._nplusone, thread=True)

    def _nplusone(self) -> None:
        rows = self.sources.n_plus_one(self.window_seconds)
        text = (
            "\n".join(
                f"{n.route}  {n.fingerprint}  x{n.requests}  trace {n.trace_id}" for n in rows
            )
            or f"no N+1 patterns flagged in the last {self.app.window_minutes}m"
        )
        self.app.call_from_thread(self.app.push_screen, TextScreen("N+1 offenders", text))
