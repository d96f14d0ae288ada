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

    def __init__(self, key: str, current: str, check=None, value: str = "", reason: str = "",
                 error: str = ""):  # fmt: skip
        super().__init__()
        self.key = key
        self.current = current
        self.check = check  # raises with the message to show when the value is not valid
        # Reopened after the change failed: what was typed, and why it failed.
        self.value, self.reason, self.error = value, reason, error

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"{self.key} is {self.current}: new value and reason", id="dialog-title")
            yield Input(self.value, placeholder="on, off or a percentage", id="value")
            yield Input(self.reason, placeholder="reason (required)", id="reason")
            yield Label(self.error, id="dialog-error", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Apply", id="apply", variant="error")
                yield Button("Cancel", id="cancel", variant="primary")

    def _submit(self) -> None:
        value = self.query_one("#value", Input).value.strip()
        reason = self.query_one("#reason", Input).value.strip()
        error = self.query_one("#dialog-error", Label)
        if not value or not reason:
            error.update("both a value and a reason are needed")
            self.query_one("#value" if not value else "#reason", Input).focus()
            return
        if self.check is not None:
            try:
                self.check(value)
            except Exception as exc:  # stay open, keep what was typed, say what is wrong
                error.update(str(exc))
                self.query_one("#value", Input).focus()
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
    """Text in a scrolling box (arrows, j/k, page keys): at 80x24 the help is taller than
    the screen."""

    BINDINGS = [
        ("escape,q,enter", "close", "Close"),
        ("j", "scroll(1)", "Down"),
        ("k", "scroll(-1)", "Up"),
    ]

    def __init__(self, title: str, body):
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label(self.title_text, id="dialog-title")
            yield VerticalScroll(Static(self.body), id="dialog-body")
            yield Label("escape to close · arrows or j/k scroll", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#dialog-body").focus()

    def action_scroll(self, step: int) -> None:
        body = self.query_one("#dialog-body", VerticalScroll)
        body.scroll_to(y=body.scroll_y + step, animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
