"""What every pane shares: loading in a worker thread with cooperative cancellation, one load
at a time per pane, a failing source's error shown in place, and confirmed actions."""

from __future__ import annotations

import time
from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label
from textual.worker import Worker, WorkerState, get_current_worker

from opsctl.tui.modals import ConfirmScreen

ACTIONS = {"vacuum", "retention_run", "set_flag", "rollback", "calibrate"}


def _closing(work):
    """Run ``work`` and close the thread's database connections after it: each worker is a
    new thread, and Django opens one connection per thread."""

    def run():
        try:
            return work()
        finally:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # Django not configured (telemetry-only use)
                pass

    return run


def cancelled() -> bool:
    """In a pane's load: whether the load was cancelled (pane hidden, app quitting). Readers
    check it between steps, so a cancelled load stops within one step, not one scan."""
    try:
        return get_current_worker().is_cancelled
    except Exception:
        return False


class Pane(Vertical):
    """Base: ``fetch()`` runs in a thread, ``show(data)`` on the UI thread.

    A pane runs at most one load at a time: a refresh tick that finds the previous load still
    running is skipped (counted in ``skipped``), never stacked. Only the visible pane loads;
    switching away cancels its load (``cancel_load``)."""

    title = ""
    #: Reads telemetry (shows the window, follows window changes).
    telemetry = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.load_worker: Worker | None = None
        self.loads = 0  # loads started
        self.skipped = 0  # refresh ticks skipped because a load was still running
        self._in_thread = False
        self._again = False
        self.load_seconds: deque[float] = deque(maxlen=1000)  # of recent loads

    def run_worker(self, work, *args, thread: bool = False, **kwargs):
        return super().run_worker(_closing(work) if thread else work, *args, thread=thread,
                                  **kwargs)  # fmt: skip

    def compose(self) -> ComposeResult:
        yield Label("", classes="error", id=f"{self.id}-error")
        yield from self.body()

    def body(self) -> ComposeResult:
        yield from ()

    @property
    def sources(self):
        return self.app.sources

    @property
    def window_seconds(self) -> float:
        return self.app.window_minutes * 60.0

    def busy(self) -> bool:
        """A load of this pane is running (its thread too: a cancelled worker's thread
        runs on until its next cancellation check, and counts as running until then)."""
        return self._in_thread or (
            self.load_worker is not None
            and self.load_worker.state in (WorkerState.PENDING, WorkerState.RUNNING)
        )

    def reload(self) -> None:
        """Load now, unless a load is running: then this tick is skipped, never stacked."""
        if self.busy():
            self.skipped += 1
            return
        self.loads += 1
        self.load_worker = self.run_worker(self._load, thread=True, group=f"load-{self.id}",
                                       name=f"load {self.id}")  # fmt: skip

    def restart(self) -> None:
        """What to load changed (window, sort, filter): load again as soon as the running
        load, if any, is over (it is short: readers work in budgeted steps)."""
        if self.busy():
            self._again = True
        else:
            self.reload()

    def cancel_load(self) -> None:
        self._again = False
        if self.load_worker is not None:
            self.load_worker.cancel()

    def _load(self) -> None:
        if cancelled():
            return
        self._in_thread = True
        started = time.perf_counter()
        try:
            try:
                data = self.fetch()
            except Exception as exc:  # the source's failure is shown here; other panes go on
                text = str(exc).strip()
                message = text.splitlines()[0] if text else repr(exc)
                self._post(self._error, f"{self.title}: {message}")
                return
            self._post(self._show, data)
            self.load_seconds.append(time.perf_counter() - started)
        finally:
            self._in_thread = False
            if self._again:
                self._post(self._load_again)

    def _post(self, fn, *args) -> None:
        """Run ``fn`` on the UI thread, unless this load was cancelled or the console is
        closing (the pane is no longer attached to a running app)."""
        if cancelled() or not self.is_attached:
            return
        try:
            self.app.call_from_thread(fn, *args)
        except Exception:
            if self.is_attached and self.app.is_running:
                raise

    def _load_again(self) -> None:
        if self.app.active_pane() is not self:
            self._again = False
        elif self.busy():  # the worker that asked is returning: right after it
            self.set_timer(0.02, self._load_again)
        else:
            self._again = False
            self.reload()

    def _error(self, message: str) -> None:
        self.query_one(f"#{self.id}-error", Label).update(message)

    def _show(self, data) -> None:
        self.query_one(f"#{self.id}-error", Label).update("")
        self.show(data)
        if getattr(data, "loading", False):  # older data still being read: go on at once
            self._again = True

    def fetch(self):
        return None

    def show(self, data) -> None:
        pass

    def check_action(self, action: str, parameters) -> bool | None:
        return not (action in ACTIONS and self.app.read_only)

    def act(self, title: str, plan, work, done_message: str) -> None:
        """Confirm (showing the plan), then run ``work`` in a thread and report. ``plan`` is
        text, or a function computed in a thread (it may touch the database) returning the
        text, or None when there is nothing to do."""
        if isinstance(plan, str):
            self._confirm(title, plan, work, done_message)
            return

        def compute() -> None:
            try:
                text = plan()
            except Exception as exc:
                self.app.call_from_thread(self.app.notify, f"failed: {exc}", severity="error")
                return
            if text is None:
                self.app.call_from_thread(self.app.notify, "nothing to do")
                return
            self.app.call_from_thread(self._confirm, title, text, work, done_message)

        self.run_worker(compute, thread=True)

    def _confirm(self, title: str, plan: str, work, done_message: str) -> None:
        def go(confirmed: bool | None) -> None:
            if confirmed:
                self.run_worker(lambda: self._act(work, done_message), thread=True)
            else:
                self.app.notify("cancelled: nothing changed")

        self.app.push_screen(ConfirmScreen(title, plan), go)

    def _act(self, work, done_message: str) -> None:
        try:
            result = work()
        except Exception as exc:
            self.app.call_from_thread(self.app.notify, f"failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self.app.notify, done_message.format(result=result))
        self.app.call_from_thread(self.reload)


def table(pane_id: str, *columns: str) -> DataTable:
    t = DataTable(id=f"{pane_id}-table", cursor_type="row", zebra_stripes=True)
    t.add_columns(*columns)
    return t


def fill(table: DataTable, rows: list[tuple], keys: list[str] | None = None) -> None:
    cursor = table.cursor_row
    table.clear()
    for i, row in enumerate(rows):
        table.add_row(*[("-" if v is None else str(v)) for v in row], key=keys[i] if keys else None)
    if rows:
        table.move_cursor(row=min(cursor, len(rows) - 1))


def selected_key(table: DataTable) -> str | None:
    if table.row_count == 0:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(int(seconds), 0)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def window_line(pane: Pane, view) -> str:
    """The header of a telemetry pane: the window and what the data in it covers."""
    cov = view.coverage
    src = "Prometheus" if cov.source == "prometheus" else "files"
    line = f"window {pane.app.window_minutes}m (w to change) · {src}"
    if cov.spans:
        line += f" · {cov.spans:,} {'requests' if src == 'Prometheus' else 'spans'}"
        line += f" covering {ago(cov.covered_seconds)}"
    if view.loading:
        line += " · reading older data"
        if view.complete_for is not None:
            line += f" (complete for the last {ago(view.complete_for)})"
    return line
