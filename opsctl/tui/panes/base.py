"""What every pane shares: loading in a worker thread with cooperative cancellation, one load
at a time per pane, a failing source's error shown in place (and once in the event log),
confirmed actions, and tables you can work in (OpsTable: `/` filter, sort by key or header
click with an arrow, j/k/g/G, the selection kept by row key across refreshes, enter opens)."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Label
from textual.worker import Worker, WorkerState, get_current_worker

from opsctl.render import elapsed
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
    #: The tab's title when the terminal is narrow (under 120 columns).
    short = ""
    #: Reads telemetry (shows the window, follows window changes).
    telemetry = False
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("g", "cursor('first')", "First", show=False),
        Binding("G", "cursor('last')", "Last", show=False),
        Binding("greater_than_sign", "sort_column(1)", "Sort next column", show=False),
        Binding("less_than_sign", "sort_column(-1)", "Sort previous column", show=False),
        Binding("I", "sort_invert", "Invert sort", show=False),
    ]

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
        yield Input(placeholder="filter: rows containing this text (enter keeps it, esc clears)",
                    id=f"{self.id}-filter", classes="filter")  # fmt: skip
        yield Label("", id=f"{self.id}-view", classes="hint view")
        yield from self.body()

    def on_mount(self) -> None:
        # Lines that are empty take no room (80x24): the error, the filter box, the view line.
        self.query_one(f"#{self.id}-error", Label).display = False
        self.query_one(f"#{self.id}-filter", Input).display = False
        self.query_one(f"#{self.id}-view", Label).display = False

    # ---------------------------------------------------------------- tables

    def table(self) -> OpsTable | None:
        """The table the keys act on: the focused one, else the pane's first."""
        focused = self.app.focused
        if isinstance(focused, OpsTable) and focused in self.query(OpsTable):
            return focused
        tables = self.query(OpsTable)
        return tables.first() if tables else None

    def action_cursor(self, where: str) -> None:
        t = self.table()
        if t is not None:
            {"down": t.action_cursor_down, "up": t.action_cursor_up, "first": t.action_first,
             "last": t.action_last}[where]()  # fmt: skip

    def action_filter(self) -> None:
        box = self.query_one(f"#{self.id}-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == f"{self.id}-filter":
            event.stop()
            self._apply_filter(event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == f"{self.id}-filter":
            event.stop()
            self._apply_filter(event.value.strip())
            event.input.display = False
            self._focus_table()

    def action_clear_filter(self) -> None:
        box = self.query_one(f"#{self.id}-filter", Input)
        had = bool(box.value) or box.display
        box.value = ""
        box.display = False
        self._apply_filter("")
        self._focus_table()
        if not had:
            self.cleared()

    def cleared(self) -> None:
        """Esc with no filter to clear: a pane may drop a narrower view of its own."""

    def _apply_filter(self, text: str) -> None:
        for t in self.query(OpsTable):
            if t.filter_text != text:
                t.set_filter(text)
        self._view_line()

    def _focus_table(self) -> None:
        t = self.table()
        if t is not None:
            t.focus()

    def action_sort_column(self, step: int) -> None:
        t = self.table()
        if t is None:
            return
        current = t.sort_column if t.sort_column is not None else -step if step > 0 else 0
        t.sort_by((current + step) % len(t.labels), t.sort_reverse or t.sort_column is None)
        self._view_line()

    def action_sort_invert(self) -> None:
        t = self.table()
        if t is not None:
            t.sort_by(t.sort_column or 0, not t.sort_reverse)
            self._view_line()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.call_after_refresh(self._view_line)

    def view_parts(self) -> list[str]:
        """What narrows or orders this pane's rows, for the line above its table."""
        parts = []
        t = self.table()
        if t is not None and t.filter_text:
            parts.append(f"filter {t.filter_text!r} (esc clears)")
        if t is not None and t.sort_column is not None:
            arrow = "▼" if t.sort_reverse else "▲"
            parts.append(f"sorted by {t.labels[t.sort_column]} {arrow} (< > I)")
        return parts

    def _view_line(self) -> None:
        line = self.query_one(f"#{self.id}-view", Label)
        parts = self.view_parts()
        line.update(" · ".join(parts))
        line.display = bool(parts)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the selected row) opens the row, where the pane can."""
        if event.row_key is not None and event.row_key.value is not None:
            event.stop()
            self.open(event.row_key.value)

    def open(self, key: str) -> None:
        """Drill into the row ``key`` (the panes that can override this)."""

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
        label = self.query_one(f"#{self.id}-error", Label)
        label.update(message)
        label.display = True
        if message != getattr(self, "_failing", None):  # once per new error, not per refresh
            self._failing = message
            self.app.log_event("error", message)

    def _show(self, data) -> None:
        label = self.query_one(f"#{self.id}-error", Label)
        label.update("")
        label.display = False
        if getattr(self, "_failing", None):
            self._failing = None
            self.app.log_event("info", f"{self.title}: loads again")
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
                self.app.call_from_thread(self.app.notify, f"{_what(title)}: failed: {exc}",
                                          severity="error")  # fmt: skip
                return
            if text is None:
                self.app.call_from_thread(self.app.notify, f"{_what(title)}: nothing to do")
                return
            self.app.call_from_thread(self._confirm, title, text, work, done_message)

        self.run_worker(compute, thread=True)

    def _confirm(self, title: str, plan: str, work, done_message: str) -> None:
        def go(confirmed: bool | None) -> None:
            if confirmed:
                self.app.log_event("action", f"{_what(title)}: confirmed, running")
                self.run_worker(lambda: self._act(work, done_message, _what(title)), thread=True)
            else:
                self.app.notify(f"{_what(title)}: cancelled, nothing changed")

        self.app.push_screen(ConfirmScreen(title, plan), go)

    def _act(self, work, done_message: str, what: str = "") -> None:
        try:
            result = work()
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.app.call_from_thread(self.app.notify, f"{what or 'action'}: failed: {message}",
                                      severity="error")  # fmt: skip
            return
        self.app.call_from_thread(self.app.notify, done_message.format(result=result))
        self.app.call_from_thread(self.reload)


def _what(title: str) -> str:
    """A confirmation's question as the name of the action ("Run retention now")."""
    return title.rstrip(" ?")


def _cell(v):
    """What a cell shows: text for values, renderables (a sparkline) as they are."""
    if v is None:
        return "-"
    return str(v) if isinstance(v, str | int | float) else v


def _sort_value(cell):
    """Numbers sort as numbers ("1,234", "12.5 %", "3.0"), text as text, "-" and blanks last."""
    if not isinstance(cell, str):
        return (2, 0.0, "")
    text = cell.strip()
    if text in ("", "-", "never", "?"):
        return (2, 0.0, "")
    try:
        return (0, float(text.replace(",", "").rstrip("%").strip()), "")
    except ValueError:
        return (1, 0.0, text.lower())


class OpsTable(DataTable):
    """A pane's table. It keeps every row it was given and shows them filtered (any cell
    contains the text, case-insensitive) and sorted (by any column, numbers as numbers); the
    selection follows the row's key across refreshes, filters and sorts."""

    def __init__(self, *columns: str, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.labels = list(columns)
        self.all_rows: list[tuple] = []
        self.all_keys: list[str] = []
        self.filter_text = ""
        self.sort_column: int | None = None
        self.sort_reverse = False
        self._add_columns()

    def _add_columns(self) -> None:
        for i, label in enumerate(self.labels):
            if i == self.sort_column:
                label = f"{label} {'▼' if self.sort_reverse else '▲'}"
            self.add_column(Text(label), key=str(i))

    def set_rows(self, rows: list[tuple], keys: list[str] | None = None) -> None:
        if keys is None:  # the first cell names the row; repeated names get a counter
            keys, seen = [], {}
            for row in rows:
                name = str(row[0])
                seen[name] = seen.get(name, 0) + 1
                keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        self.all_rows = [tuple(_cell(v) for v in row) for row in rows]
        self.all_keys = list(keys)
        self.redraw()

    def shown(self) -> list[tuple[str, tuple]]:
        """The rows that pass the filter, in the order they came."""
        needle = self.filter_text.lower()
        return [
            (k, r)
            for k, r in zip(self.all_keys, self.all_rows, strict=True)
            if not needle or any(isinstance(c, str) and needle in c.lower() for c in r)
        ]

    def redraw(self, columns: bool = False) -> None:
        selected = selected_key(self)
        row, scroll = self.cursor_row, self.scroll_y
        self.clear(columns=columns)
        if columns:
            self._add_columns()
        rows = self.shown()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if not rows:
            return
        if self.sort_column is not None:  # DataTable's own sort, numbers as numbers
            self.sort(str(self.sort_column), key=_sort_value, reverse=self.sort_reverse)
        keys = {k for k, _ in rows}
        target = self.get_row_index(selected) if selected in keys else min(row, len(rows) - 1)
        self.scroll_to(y=scroll, animate=False, immediate=True)
        self.move_cursor(row=target, animate=False)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.redraw()

    def sort_by(self, column: int, reverse: bool | None = None) -> None:
        """Sort by ``column``; a new column starts largest first, the same one flips."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else True
        self.sort_column, self.sort_reverse = column, reverse
        self.redraw(columns=True)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        # Not stopped: the pane updates its view line ("sorted by ...") after it.
        self.sort_by(event.column_index)

    def action_first(self) -> None:
        self.move_cursor(row=0)

    def action_last(self) -> None:
        self.move_cursor(row=max(self.row_count - 1, 0))


def table(pane_id: str, *columns: str) -> OpsTable:
    return OpsTable(*columns, id=f"{pane_id}-table")


def fill(table: OpsTable, rows: list[tuple], keys: list[str] | None = None) -> None:
    """Show ``rows`` (keyed by ``keys``, else by their first cell) under the table's filter
    and sort; the selected row stays selected wherever it moved."""
    table.set_rows(rows, keys)


def selected_key(table: DataTable) -> str | None:
    if table.row_count == 0:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


def ago(seconds: float | None) -> str:
    """An age in whole seconds (12s), then as ``elapsed`` writes it (4m05s, 2h03m)."""
    if seconds is None:
        return "never"
    s = max(int(seconds), 0)
    return elapsed(s) if s >= 60 else f"{s}s"


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
