"""Activity: the sessions the database server runs now and the blocking tree (as `opsctl db
activity` shows them); cancel or terminate the selected backend with a reason (asks first,
audited, hidden with --read-only). SQLite: the file's lock state, said plainly."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from opsctl.db.activity import COLUMNS
from opsctl.tui.panes.base import OpsTable, Pane, fill, selected_key, table

SIGNALS = {"cancel_backend", "terminate_backend"}


class SignalScreen(ModalScreen[str | None]):
    """The session spelled out and a reason (required): Enter sends, Escape cancels."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, title: str, plan: str):
        super().__init__()
        self.title_text = title
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label(self.title_text, id="dialog-title")
            yield VerticalScroll(Static(self.plan, markup=False), id="dialog-body")
            yield Input(placeholder="reason (required, goes to the audit trail)", id="reason")
            yield Label("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Send", id="send", variant="error")
                yield Button("Cancel", id="cancel", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def _submit(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.query_one("#dialog-error", Label).update("a reason is needed")
            return
        self.dismiss(reason)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def tree_lines(act) -> list[str]:
    """The blocking tree as indented lines (the CLI draws the same with rich)."""
    by_pid = act.by_pid()
    lines: list[str] = []

    def walk(node, depth: int) -> None:
        s = by_pid.get(node.pid)
        what = s.summary() if s else "(not listed)"
        lines.append(f"{'  ' * depth}{'└ ' if depth else ''}{node.pid} {what}")
        for child in node.blocked:
            walk(child, depth + 1)

    for root in act.blocking_tree:
        walk(root, 0)
    return lines


class ActivityPane(Pane):
    title = "Activity"
    short = "Activ"
    BINDINGS = [
        Binding("c", "cancel_backend", "Cancel statement"),
        Binding("x", "terminate_backend", "Terminate session"),
    ]

    def body(self) -> ComposeResult:
        yield table(self.id, *COLUMNS)
        yield Label("blocking tree", classes="section")
        yield Static("", id="activity-tree", markup=False)

    def fetch(self):
        return self.sources.activity()

    def show(self, data) -> None:
        self.data = data
        rows = [s.row(short=True) for s in data.sessions]
        # Filtered and sorted as the keys say; the selection follows the session (its PID).
        fill(
            self.query_one(f"#{self.id}-table", OpsTable), rows, [str(s.pid) for s in data.sessions]
        )
        if data.sqlite is not None:
            s = data.sqlite
            text = [
                f"SQLite {s.path or '(in memory)'}: journal mode {s.journal_mode or '?'}",
                f"write lock: {s.write_lock} - {s.detail}",
            ]
        else:
            text = tree_lines(data) or ["no session is waiting for a lock"]
            if data.hidden_idle:
                text.append(f"({data.hidden_idle} idle sessions not listed)")
        self.query_one("#activity-tree", Static).update("\n".join(text + data.notes))

    def selected_pid(self) -> int | None:
        key = selected_key(self.query_one(f"#{self.id}-table", OpsTable))
        return None if key is None else int(key)

    def check_action(self, action: str, parameters) -> bool | None:
        if action in SIGNALS:
            return not self.app.read_only
        return super().check_action(action, parameters)

    def action_cancel_backend(self) -> None:
        self._signal("cancel")

    def action_terminate_backend(self) -> None:
        self._signal("terminate")

    def signal(self, action: str, pid: int | None = None) -> None:
        """Cancel or terminate ``pid`` (the selected session by default): the reason is asked
        first (the command palette comes here too)."""
        self._signal(action, pid)

    def _signal(self, action: str, pid: int | None = None) -> None:
        if self.app.read_only:
            return
        pid = pid if pid is not None else self.selected_pid()
        data = getattr(self, "data", None)
        if pid is None or data is None or pid not in data.by_pid():
            self.app.notify("no session selected")
            return
        from opsctl.db.activity import describe

        url = self.sources.database_url
        if action == "cancel":
            title = f"Cancel the statement of PID {pid}? (the session stays)"
        else:
            title = f"Terminate PID {pid}? (its transaction is rolled back, connection closed)"

        def chosen(reason: str | None) -> None:
            if not reason:
                self.app.notify("cancelled: nothing was sent")
                return
            self.run_worker(lambda: self._send(url, pid, action, reason), thread=True)

        self.app.push_screen(SignalScreen(title, describe(data.by_pid()[pid])), chosen)

    def _send(self, url: str, pid: int, action: str, reason: str) -> None:
        """In a thread: the one service function (audited), then the outcome and a reload."""
        from opsctl.db.activity import signal

        try:
            result = signal(url, pid, action, reason, confirmed=True)
        except Exception as exc:
            text = str(exc).strip()
            message = text.splitlines()[0] if text else repr(exc)
            self.app.call_from_thread(self.app.notify, f"{action} PID {pid} failed: {message}",
                                      severity="error")  # fmt: skip
            return
        self.app.call_from_thread(self.app.notify, f"{action} sent to PID {pid} (recorded in "
                                  f"{result.audit})")  # fmt: skip
        self.app.call_from_thread(self.reload)
