"""Flags: values and history; set with a reason, roll back the last change set."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label, Static

from opsctl.render import flag_value as format_value
from opsctl.tui.modals import FlagChangeScreen
from opsctl.tui.panes.base import Pane, fill, selected_key, table


class FlagsPane(Pane):
    title = "Flags"
    short = "Flags"
    BINDINGS = [Binding("s", "set_flag", "Set"), Binding("b", "rollback", "Roll back last")]

    def body(self) -> ComposeResult:
        yield table(self.id, "flag", "value", "description")
        yield Label("history", classes="section")
        yield Static("", id="flags-history")

    def fetch(self):
        flags, history = self.sources.flags()
        return flags, history, self.sources.scheduled_flags()

    def show(self, data) -> None:
        flags, history, scheduled = data
        self.values = {f.key: format_value(f.value) for f in flags}
        fill(
            self.query_one(DataTable),
            [(f.key, format_value(f.value), f.description.split(". ")[0]) for f in flags],
            [f.key for f in flags],
        )
        # Pending scheduled changes first (opsctl flags schedule), then what happened.
        self.query_one("#flags-history", Static).update(
            "\n".join(
                [
                    f"scheduled #{c.id} {c.apply_at:%m-%d %H:%M} {c.key} -> "
                    f"{format_value(c.value)} ({c.reason}, {c.actor})"
                    for c in scheduled
                ]
                + [
                    f"{e.at:%m-%d %H:%M} {e.change_set[:8]} {e.key}: {format_value(e.old_value)} "
                    f"-> {format_value(e.new_value)} ({e.reason}, {e.actor})"
                    for e in history[:15]
                ]
            )
            or "no changes"
        )

    def action_set_flag(self) -> None:
        key = selected_key(self.query_one(DataTable))
        if key:
            self.set_flag(key)

    def set_flag(self, key: str, value: str = "", reason: str = "", error: str = "") -> None:
        """The key `s` and the command palette: the value and the reason in one dialog,
        checked there (a bad value keeps the dialog open with what was typed). When the
        change itself fails, the dialog comes back with what was typed and the error."""

        def chosen(answer):
            if answer:
                self.run_worker(lambda: self._set(key, *answer), thread=True)
            else:
                self.app.notify(f"set {key}: cancelled, nothing changed")

        current = getattr(self, "values", {}).get(key, "?")
        self.app.push_screen(
            FlagChangeScreen(key, current, self.sources.check_flag_value, value, reason, error),
            chosen,
        )

    def _set(self, key: str, value: str, reason: str) -> None:
        """In a thread: the one service function (audited), then the outcome."""
        try:
            self.sources.set_flag(key, value, reason)
        except Exception as exc:
            text = str(exc).strip()
            message = text.splitlines()[0] if text else repr(exc)
            self.app.call_from_thread(self.app.notify, f"set {key}: failed: {message}",
                                      severity="error")  # fmt: skip
            self.app.call_from_thread(self.set_flag, key, value, reason, message)
            return
        self.app.call_from_thread(self.app.notify, f"{key} set to {value}")
        self.app.call_from_thread(self.reload)

    def action_rollback(self) -> None:
        state = {}

        def plan() -> str | None:
            state["plan"] = p = self.sources.rollback_plan()
            if p.empty:
                return None
            return "\n".join(
                f"{s.key}: {format_value(s.current)} -> {format_value(s.target)}" for s in p.steps
            )

        self.act(
            "Roll back the last change set?",
            plan,
            lambda: self.sources.rollback(state["plan"], "rolled back from opsctl top"),
            "rolled back",
        )
