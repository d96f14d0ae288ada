"""`opsctl top`: the SRE's terminal console. Number keys switch panes; each pane's keys are
in the footer and in `?`; --read-only hides every action."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from opsctl.tui.modals import TextScreen
from opsctl.tui.panes import PANES

HELP = """Keys
  1-8        overview, traces, queries, database, resources, retention, flags, jobs
  ctrl+p     command palette (go to any pane)
  ?          this help          q  quit          r  refresh now (where no pane uses r)
Traces       /  filter by route     enter  waterfall of the selected trace
Queries      t m p c  sort by total / mean / p95 / calls   e  explain   n  N+1 offenders
Database     v  VACUUM (ANALYZE) the selected table (asks first)
Retention    d  dry run    r  run now (asks first, shows what goes)
Flags        s  set value with a reason    b  roll back the last change set (shows the plan)
Jobs         c  calibrate the selected exam (asks first)
With --read-only the actions are hidden. Every action goes through the same service
functions as the CLI and is recorded in the audit trail."""


class PaneCommands(Provider):
    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for i, (pane_id, cls) in enumerate(PANES, 1):
            title = f"Go to {cls.title} ({i})"
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), lambda p=pane_id: self.app.show_pane(p))


class OpsApp(App):
    TITLE = "opsctl top"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {PaneCommands}
    BINDINGS = [
        *[
            Binding(str(i), f"show_pane('{pid}')", cls.title, show=False)
            for i, (pid, cls) in enumerate(PANES, 1)
        ],
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self, sources, refresh_seconds: float = 2.0, read_only: bool = False, clock: bool = True
    ):
        super().__init__()
        self.sources = sources
        self.refresh_seconds = refresh_seconds
        self.read_only = read_only
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.clock)
        with TabbedContent(id="tabs"):
            for i, (pid, cls) in enumerate(PANES, 1):
                with TabPane(f"{i} {cls.title}", id=f"tab-{pid}"):
                    yield cls(id=pid)
        yield Footer()

    def on_mount(self) -> None:
        if self.read_only:
            self.sub_title = "read-only"
        self.active_pane().reload()
        # Only the visible pane refreshes: an idle console costs little CPU.
        self.set_interval(self.refresh_seconds, lambda: self.active_pane().reload())

    def active_pane(self):
        active = self.query_one(TabbedContent).active or "tab-overview"
        return self.query_one(f"#{active.removeprefix('tab-')}")

    def action_show_pane(self, pane_id: str) -> None:
        self.show_pane(pane_id)

    def show_pane(self, pane_id: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{pane_id}"
        pane = self.query_one(f"#{pane_id}")
        pane.reload()
        tables = pane.query(DataTable)
        if tables:
            tables.first().focus()

    def action_help(self) -> None:
        self.push_screen(TextScreen("opsctl top: help", HELP))
