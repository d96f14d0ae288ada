"""The drill-down screens: a trace's waterfall, a statement's full SQL and fingerprint, and
its EXPLAIN with advice. Each is a full screen (readable at 80x24) that escape closes.

Copying uses Textual's ``App.copy_to_clipboard`` (OSC 52, which many terminals honour); the
text is also on screen for the mouse to select, for the terminals that do not."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static


def one_line(sql: str) -> str:
    return " ".join(sql.split())


class DrillScreen(Screen):
    """Shared: a title line, escape to go back, `e` explain and `y` copy of the statement
    the screen is about (``statement()``)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("e", "explain", "Explain"),
        Binding("y", "copy", "Copy SQL"),
    ]

    def statement(self) -> tuple[str, str]:
        """(SQL, fingerprint) of what `e` and `y` act on; empty SQL when there is none."""
        return "", ""

    def action_back(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        sql, _ = self.statement()
        if not sql:
            self.app.notify("nothing to copy: no SQL here", severity="warning")
            return
        self.app.copy_to_clipboard(sql)
        self.app.notify(
            f"copied {len(sql)} characters (OSC 52); if your terminal ignores that, "
            "select the text on screen with the mouse"
        )

    def action_explain(self) -> None:
        sql, fp = self.statement()
        if not sql:
            self.app.notify("no SQL to explain here", severity="warning")
            return
        self.app.explain(sql, fp)


class QueryScreen(DrillScreen):
    """One statement: its fingerprint and its whole text (not cut), selectable."""

    def __init__(self, sql: str, fingerprint: str, where: str = ""):
        super().__init__()
        self.sql = sql
        self.fingerprint = fingerprint
        self.where = where

    def compose(self) -> ComposeResult:
        yield Label(f"query {self.fingerprint or '(no fingerprint)'}", classes="drill-title")
        if self.where:
            yield Label(self.where, classes="hint")
        yield Label("e explain · y copy · escape back", classes="hint")
        with VerticalScroll(id="query-body"):
            yield Static(self.sql or "no statement text (Prometheus keeps none)", markup=False,
                         id="query-sql")  # fmt: skip
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#query-body").focus()

    def statement(self) -> tuple[str, str]:
        return self.sql, self.fingerprint


class ExplainScreen(DrillScreen):
    """A statement's plan with the advisor's findings (the same rendering as `opsctl
    explain`), and the statement under it."""

    BINDINGS = [Binding("e", "noop", show=False)]

    def __init__(self, sql: str, fingerprint: str, plan, error: str = ""):
        super().__init__()
        self.sql = sql
        self.fingerprint = fingerprint
        self.plan = plan
        self.error = error

    def compose(self) -> ComposeResult:
        yield Label(f"plan of {self.fingerprint or 'the statement'}", classes="drill-title")
        yield Label("y copy the query · escape back", classes="hint")
        with VerticalScroll(id="explain-body"):
            if self.error:
                yield Static(f"explain failed: {self.error}", classes="error", markup=False)
            else:
                yield Static(self.plan, id="explain-plan")
            yield Label("query", classes="section")
            yield Static(self.sql, markup=False, id="explain-sql")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#explain-body").focus()

    def action_noop(self) -> None:
        pass

    def statement(self) -> tuple[str, str]:
        return self.sql, self.fingerprint


class WaterfallScreen(DrillScreen):
    """A trace's spans in tree order with offsets; the selected span's whole SQL and
    fingerprint below. j/k move, enter opens the span's query, e explains it, y copies it."""

    BINDINGS = [
        Binding("j", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
    ]

    def __init__(self, trace_id: str, nodes: list):
        super().__init__()
        self.trace_id = trace_id
        self.nodes = nodes

    def compose(self) -> ComposeResult:
        yield Label(f"trace {self.trace_id}", classes="drill-title")
        yield Label("enter query · e explain · y copy · j/k move · escape back", classes="hint")
        t = DataTable(id="waterfall-table", cursor_type="row", zebra_stripes=True)
        t.add_columns("at ms", "ms", "span")
        for i, n in enumerate(self.nodes):
            name = f"{'  ' * n.depth}{n.name}"
            if n.sql:
                name += f"  {one_line(n.sql)}"
            t.add_row(f"{n.offset_ms:.2f}", f"{n.duration_ms:.2f}", name, key=str(i))
        yield t
        with VerticalScroll(id="waterfall-detail"):
            yield Static("", markup=False, id="waterfall-span")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.focus()
        # Start on the first statement: that is what one comes here for.
        first_sql = next((i for i, n in enumerate(self.nodes) if n.sql), 0)
        if self.nodes:
            table.move_cursor(row=first_sql)
        self._detail()

    def selected(self):
        if not self.nodes:
            return None
        return self.nodes[self.query_one(DataTable).cursor_row]

    def _detail(self) -> None:
        n = self.selected()
        if n is None:
            text = "trace not found in the files"
        else:
            lines = [f"{n.name} ({n.kind}) at {n.offset_ms:.2f} ms for {n.duration_ms:.2f} ms"
                     + (" ERROR" if n.error else "")]  # fmt: skip
            if n.sql:
                lines.append(f"fingerprint {n.fingerprint or '-'}")
                lines.append(n.sql)
            for e in n.n_plus_one:
                lines.append(f"N+1: {e.get('db.query.fingerprint')}")
            text = "\n".join(lines)
        self.query_one("#waterfall-span", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        n = self.selected()
        if n is not None and n.sql:
            self.app.push_screen(
                QueryScreen(n.sql, n.fingerprint, f"span {n.name} of trace {self.trace_id}")
            )

    def action_move(self, step: int) -> None:
        table = self.query_one(DataTable)
        (table.action_cursor_down if step > 0 else table.action_cursor_up)()

    def statement(self) -> tuple[str, str]:
        n = self.selected()
        return (n.sql, n.fingerprint) if n is not None else ("", "")
