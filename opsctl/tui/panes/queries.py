"""Queries: SQL per fingerprint over the window (sortable), EXPLAIN, N+1 offenders."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from opsctl.tui.modals import TextScreen
from opsctl.tui.panes.base import Pane, cancelled, fill, selected_key, table, window_line


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class QueriesPane(Pane):
    title = "Queries"
    telemetry = True
    BINDINGS = [
        Binding("t", "sort('total')", "By total"),
        Binding("m", "sort('mean')", "By mean"),
        Binding("p", "sort('p95')", "By p95"),
        Binding("c", "sort('calls')", "By calls"),
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
        line = window_line(self, data) + f" · by {self.by}"
        if data.coverage.empty and not data.loading:
            line += " · NO DATA in the window"
        self.query_one("#queries-window", Label).update(line)
        self.examples = {q.fingerprint: q.example for q in data.rows}
        fill(
            self.query_one(DataTable),
            [
                (q.fingerprint, q.calls, ms(q.total_ms, 1), ms(q.mean_ms), ms(q.p95_ms),
                 " ".join(q.example.split())[:60])
                for q in data.rows
            ],
            [q.fingerprint for q in data.rows],
        )  # fmt: skip

    def action_sort(self, by: str) -> None:
        self.by = by
        self.restart()

    def action_explain(self) -> None:
        fp = selected_key(self.query_one(DataTable))
        if fp:
            self.run_worker(lambda: self._explain(fp), thread=True)

    def _explain(self, fp: str) -> None:
        from opsctl.render_plan import render

        example = self.examples.get(fp) or ""
        if not example:
            body = "no statement text for this fingerprint (Prometheus keeps none)"
        else:
            try:
                body = render(self.sources.explain(example))
            except Exception as exc:
                body = f"explain failed: {exc}"
        self.app.call_from_thread(self.app.push_screen, TextScreen(f"plan of {fp}", body))

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
