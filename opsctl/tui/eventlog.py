"""The event log (`L`): every action, result, error and alert change of this session with its
time, newest first. Toasts vanish after a few seconds; this keeps them."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

KIND_STYLE = {"error": "bold red", "warning": "yellow", "alert": "bold magenta"}


class EventLogScreen(Screen):
    BINDINGS = [
        Binding("escape,L", "back", "Back"),
        Binding("j", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
    ]

    def __init__(self, events: list):
        super().__init__()
        self.initial = events
        self.shown: list[tuple] = []

    def compose(self) -> ComposeResult:
        yield Label("event log: actions, results, errors, alert changes (newest first)",
                    classes="drill-title")  # fmt: skip
        t = DataTable(id="eventlog-table", cursor_type="row", zebra_stripes=True)
        t.add_columns("time", "kind", "event")
        yield t
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for event in self.initial:
            self.add(event)
        self.query_one(DataTable).focus()

    def add(self, event) -> None:
        """One more event: on top, the others pushed down."""
        at, kind, text = event
        self.shown.insert(0, (f"{at:%H:%M:%S}", Text(kind, style=KIND_STYLE.get(kind, "")),
                              text))  # fmt: skip
        t = self.query_one(DataTable)
        t.clear()
        for row in self.shown:
            t.add_row(*row)

    def action_move(self, step: int) -> None:
        t = self.query_one(DataTable)
        (t.action_cursor_down if step > 0 else t.action_cursor_up)()

    def action_back(self) -> None:
        self.dismiss(None)
