"""Modal dialogs: confirm with the plan spelled out, ask for a value and a reason, show text."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [("y", "answer(True)", "Yes"), ("n,escape", "answer(False)", "No")]

    def __init__(self, title: str, plan: str):
        super().__init__()
        self.title_text = title
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield VerticalScroll(Static(self.plan, markup=False), id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class FlagChangeScreen(ModalScreen[tuple[str, str] | None]):
    """The new value and the reason (required) for a flag change."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, key: str, current: str):
        super().__init__()
        self.key = key
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"{self.key} is {self.current}: new value and reason", id="dialog-title")
            yield Input(placeholder="on, off or a percentage", id="value")
            yield Input(placeholder="reason (required)", id="reason")
            yield Label("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Apply", id="apply", variant="error")
                yield Button("Cancel", id="cancel", variant="primary")

    def _submit(self) -> None:
        value = self.query_one("#value", Input).value.strip()
        reason = self.query_one("#reason", Input).value.strip()
        if not value or not reason:
            self.query_one("#dialog-error", Label).update("both a value and a reason are needed")
            return
        self.dismiss((value, reason))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "value":
            self.query_one("#reason", Input).focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    BINDINGS = [("escape,q,enter", "close", "Close")]

    def __init__(self, title: str, body):
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label(self.title_text, id="dialog-title")
            yield VerticalScroll(Static(self.body), id="dialog-body")
            yield Label("escape to close", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
