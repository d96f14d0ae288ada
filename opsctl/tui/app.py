"""`opsctl top`: the SRE's terminal console. Number keys switch panes; each pane's keys are
in the footer and in `?`; --read-only hides every action."""

from __future__ import annotations

import json

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from opsctl.tui.modals import TextScreen
from opsctl.tui.panes import PANES
from opsctl.tui.sources import WINDOWS

HELP = """Keys
  1-9        overview, traces, queries, database, resources, retention, flags, jobs,
             activity
  ctrl+p     command palette (go to any pane, choose the window)
  ?          this help          q  quit          r  refresh now (where no pane uses r)
  w          telemetry window: 5m, 15m, 1h (shown on every pane; req/s is over the time
             the data in the window covers)
Traces       /  filter by route     enter  waterfall of the selected trace
Queries      t m p c  sort by total / mean / p95 / calls   e  explain   n  N+1 offenders
Database     v  VACUUM (ANALYZE) the selected table (asks first)
Retention    d  dry run    r  run now (asks first, shows what goes)
Flags        s  set value with a reason    b  roll back the last change set (shows the plan)
Jobs         c  calibrate the selected exam (asks first)
Activity     c  cancel the selected backend's statement   x  terminate its session
             (both show the session and ask for a reason; audited)
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
        for minutes in WINDOWS:
            title = f"Window: last {minutes}m"
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), lambda m=minutes: self.app.set_window(m))


class OpsApp(App):
    TITLE = "opsctl top"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {PaneCommands}
    BINDINGS = [
        *[
            Binding(str(i), f"show_pane('{pid}')", cls.title, show=False)
            for i, (pid, cls) in enumerate(PANES, 1)
        ],
        Binding("w", "cycle_window", "Window"),
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
        start = getattr(sources, "window_minutes", 15)
        self.window_minutes = start if start in WINDOWS else 15

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.clock)
        self.panes = {pid: cls(id=pid) for pid, cls in PANES}
        with TabbedContent(id="tabs"):
            for i, (pid, cls) in enumerate(PANES, 1):
                with TabPane(f"{i} {cls.title}", id=f"tab-{pid}"):
                    yield self.panes[pid]
        yield Footer()

    def on_mount(self) -> None:
        self._show_window()
        self.shown = self.active_pane()
        self.shown.reload()
        # Only the visible pane refreshes, and a tick never stacks a load on a running one.
        self.set_interval(self.refresh_seconds, self._tick)

    def _tick(self) -> None:
        pane = self.active_pane()
        if pane.is_mounted:
            pane.reload()

    def write_stats(self, path: str) -> None:
        """What each pane's loads cost, as JSON (`make bench` reads it via OPS_TOP_STATS)."""
        stats = {
            pid: {"loads": p.loads, "skipped": p.skipped, "load_seconds": list(p.load_seconds)}
            for pid, p in self.panes.items()
        }
        with open(path, "w") as fh:
            json.dump(stats, fh)

    def _show_window(self) -> None:
        self.sub_title = f"window {self.window_minutes}m" + (
            " · read-only" if self.read_only else ""
        )

    def active_pane(self):
        active = self.query_one(TabbedContent).active or "tab-overview"
        return self.panes[active.removeprefix("tab-")]

    def action_show_pane(self, pane_id: str) -> None:
        self.show_pane(pane_id)

    def show_pane(self, pane_id: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{pane_id}"
        self._switched()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._switched()

    def _switched(self) -> None:
        """The pane on screen changed (key, palette or mouse): the hidden one stops loading,
        the shown one loads now."""
        pane = self.active_pane()
        previous = getattr(self, "shown", None)
        if previous is pane:
            return
        if previous is not None:
            previous.cancel_load()
        self.shown = pane
        pane.reload()
        tables = pane.query(DataTable)
        if tables:
            tables.first().focus()

    def action_cycle_window(self) -> None:
        i = WINDOWS.index(self.window_minutes) if self.window_minutes in WINDOWS else 0
        self.set_window(WINDOWS[(i + 1) % len(WINDOWS)])

    def set_window(self, minutes: int) -> None:
        self.window_minutes = minutes
        self._show_window()
        self.notify(f"window: last {minutes}m")
        pane = self.active_pane()
        if pane.telemetry:
            pane.restart()

    def action_help(self) -> None:
        self.push_screen(TextScreen("opsctl top: help", HELP))
