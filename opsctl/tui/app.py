"""`opsctl top`: the SRE's terminal console. Number keys switch panes; each pane's keys are
in the footer and in `?`; `r` refreshes and space pauses everywhere; enter drills down (route
-> traces -> waterfall -> SQL -> EXPLAIN); `L` is the event log; the command palette offers
every action with the same confirmations; --read-only hides every action."""

from __future__ import annotations

import datetime as dt
import json
from collections import deque

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from opsctl.tui.eventlog import EventLogScreen
from opsctl.tui.modals import TextScreen
from opsctl.tui.panes import PANES
from opsctl.tui.sources import WINDOWS

HELP = """Everywhere
  1-9      switch pane (the tabs show the numbers)
  r        refresh now
  space    pause / resume refreshing (PAUSED in the title)
  /        filter the table: rows containing the text; esc clears
  j k g G  down, up, first, last row
  < >      sort by the previous / next column; I inverts;
           or click a column header (▲ ▼ shows the order)
  enter    open the selected row (drill down)
  w        telemetry window: 5m, 15m, 1h (req/s is over the
           time the data in the window covers)
  L        event log: every action, result, error and alert
           change, with its time (toasts vanish, this stays)
  ctrl+p   command palette: panes, windows and every action,
           with the same confirmations as the keys
  ?        this help (arrows, j/k, page keys scroll)    q  quit
Drill-down
  Overview route -> its slowest traces -> waterfall -> a span's
  whole SQL and fingerprint -> e: EXPLAIN with advice -> y: copy
  the query (OSC 52; where the terminal ignores that, select the
  text on screen). esc goes back one step.
Traces     enter  waterfall (j/k move, enter the span's query,
                  e explain, y copy); esc shows all routes again
Queries    enter  the whole statement   e  explain   n  N+1
           t m p c  read the top 50 by total / mean / p95 / calls
Database   v  VACUUM (ANALYZE) the selected table (asks first)
Retention  d  dry run    p  purge now (asks first, shows what goes)
Flags      s  set a value with a reason (a bad value keeps the
              dialog open)   b  roll back the last change set
Jobs       c  calibrate the selected exam (asks first)
Activity   c  cancel the selected backend's statement
           x  terminate its session (both show the session and
              ask for a reason; audited)
With --read-only the actions are hidden, from the keys and the
palette. Every action goes through the same service functions as
the CLI and is recorded in the audit trail."""


def palette_commands(app) -> list[tuple[str, object, str]]:
    """Everything the console can do, for the command palette: (title, callback, help).
    Actions go through the panes' own methods, so they ask the same confirmations as the
    keys; with --read-only there are none."""
    out: list[tuple[str, object, str]] = []
    for i, (pane_id, cls) in enumerate(PANES, 1):
        out.append((f"Go to {cls.title} ({i})", lambda p=pane_id: app.show_pane(p), ""))
    for minutes in WINDOWS:
        out.append((f"Window: last {minutes}m", lambda m=minutes: app.set_window(m), "w"))
    out.append(("Refresh now", app.action_refresh_now, "r"))
    out.append(("Resume refresh" if app.paused else "Pause refresh", app.action_pause, "space"))
    out.append(("Event log", app.action_event_log, "L"))
    if app.read_only:
        return out

    def on(pane_id: str, method: str, *args):
        def run() -> None:
            app.show_pane(pane_id)
            getattr(app.panes[pane_id], method)(*args)

        return run

    def keys(pane_id: str) -> list[str]:
        pane = app.panes.get(pane_id)
        return list(pane.table().all_keys) if pane is not None and pane.table() else []

    for table in keys("database"):
        out.append((f"VACUUM table {table}", on("database", "vacuum", table), "asks first"))
    for flag in keys("flags"):
        out.append((f"Set flag {flag}", on("flags", "set_flag", flag), "value and reason"))
    out.append(("Roll back the last flag change set", on("flags", "action_rollback"),
                "shows the plan first"))  # fmt: skip
    out.append(("Retention dry run", on("retention", "action_dry_run"), "changes nothing"))
    out.append(("Retention purge now", on("retention", "action_retention_run"),
                "asks first, shows what goes"))  # fmt: skip
    for pid in keys("activity"):
        out.append((f"Cancel the statement of PID {pid}", on("activity", "signal", "cancel",
                    int(pid)), "asks for a reason"))  # fmt: skip
        out.append((f"Terminate the session of PID {pid}", on("activity", "signal", "terminate",
                    int(pid)), "asks for a reason"))  # fmt: skip
    for exam in keys("jobs"):
        out.append((f"Calibrate exam {exam}", on("jobs", "calibrate", exam), "asks first"))
    if not keys("database"):
        out.append(("VACUUM a table: open Database", on("database", "_focus_table"), ""))
    if not keys("flags"):
        out.append(("Set a flag: open Flags", on("flags", "_focus_table"), ""))
    if not keys("jobs"):
        out.append(("Calibrate an exam: open Jobs", on("jobs", "_focus_table"), ""))
    return out


class ConsoleCommands(Provider):
    async def startup(self) -> None:
        # Tables the palette names come from the panes; load the ones never shown.
        for pane_id in ("database", "flags", "jobs"):
            pane = self.app.panes.get(pane_id)
            if pane is not None and pane.loads == 0:
                pane.reload()

    async def discover(self) -> Hits:
        for title, callback, help_text in palette_commands(self.app):
            yield DiscoveryHit(title, callback, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in palette_commands(self.app):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text or None)


class OpsApp(App):
    TITLE = "opsctl top"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = [
        *[
            Binding(str(i), f"show_pane('{pid}')", cls.title, show=False)
            for i, (pid, cls) in enumerate(PANES, 1)
        ],
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("space", "pause", "Pause"),
        Binding("w", "cycle_window", "Window", show=False),
        Binding("L", "event_log", "Log"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]
    #: Under this many columns the tabs show short titles and the footer fewer words.
    NARROW = 120

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
        self.paused = False
        #: Every action, result, error and alert change, with its time (toasts vanish).
        self.events: deque[tuple[dt.datetime, str, str]] = deque(maxlen=2000)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.clock)
        self.panes = {pid: cls(id=pid) for pid, cls in PANES}
        with TabbedContent(id="tabs"):
            for i, (pid, cls) in enumerate(PANES, 1):
                with TabPane(f"{i} {cls.title}", id=f"tab-{pid}"):
                    yield self.panes[pid]
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show_window()
        self._tab_titles(self.size.width)
        self.shown = self.active_pane()
        self.shown.reload()
        self.shown._focus_table()  # keys (enter, j/k, /) act on the table from the start
        # Only the visible pane refreshes, and a tick never stacks a load on a running one.
        self.set_interval(self.refresh_seconds, self._tick)

    async def action_quit(self) -> None:
        """Quit now: every load is told to stop first (a reader stops within one read
        step), so the worker threads are free by the time the shutdown waits for them."""
        for pane in self.panes.values():
            pane.cancel_load()
        self.exit()

    def _tick(self) -> None:
        if self.paused:
            return
        pane = self.active_pane()
        if pane.is_mounted:
            pane.reload()

    def on_resize(self, event) -> None:
        self._tab_titles(event.size.width)

    def _tab_titles(self, width: int) -> None:
        """Every tab visible at 80 columns: short titles under NARROW columns, and the
        footer's room for the keys (ctrl+p is in the help)."""
        for footer in self.query(Footer):
            footer.show_command_palette = width >= self.NARROW
        tabs = self.query_one(TabbedContent)
        for i, (pid, cls) in enumerate(PANES, 1):
            name = cls.title if width >= self.NARROW else (getattr(cls, "short", "")
                                                         or cls.title[:5])  # fmt: skip
            tabs.get_tab(f"tab-{pid}").label = f"{i} {name}"

    def write_stats(self, path: str) -> None:
        """What each pane's loads cost, as JSON (`make bench` reads it via OPS_TOP_STATS)."""
        stats = {
            pid: {"loads": p.loads, "skipped": p.skipped, "load_seconds": list(p.load_seconds)}
            for pid, p in self.panes.items()
        }
        with open(path, "w") as fh:
            json.dump(stats, fh)

    def _show_window(self) -> None:
        self.sub_title = (
            f"window {self.window_minutes}m"
            + (" · PAUSED (space resumes)" if self.paused else "")
            + (" · read-only" if self.read_only else "")
        )

    # ---------------------------------------------------------------- refresh, pause

    def action_refresh_now(self) -> None:
        """`r`, on every pane: load the shown pane now (paused or not)."""
        self.active_pane().restart()

    def action_pause(self) -> None:
        self.set_paused(not self.paused)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._show_window()
        self.log_event("info", "refresh paused" if paused else "refresh resumed")

    # ---------------------------------------------------------------- event log

    def log_event(self, kind: str, text: str) -> None:
        self.events.append((dt.datetime.now().astimezone(), kind, text))
        if isinstance(self.screen, EventLogScreen):
            self.screen.add(self.events[-1])

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True):
        kind = {"information": "info"}.get(severity, severity)
        self.log_event(kind, f"{title}: {message}" if title else str(message))
        return super().notify(message, title=title, severity=severity, timeout=timeout,
                              markup=markup)  # fmt: skip

    def action_event_log(self) -> None:
        if not isinstance(self.screen, EventLogScreen):
            self.push_screen(EventLogScreen(list(self.events)))

    # ---------------------------------------------------------------- drill-down

    def drill_route(self, route: str) -> None:
        """Overview route -> that route's slowest traces."""
        self.show_pane("traces")
        self.panes["traces"].show_route(route)

    def explain(self, sql: str, fingerprint: str) -> None:
        """EXPLAIN (with the advisor's findings) in a thread; the plan on its own screen."""
        from opsctl.tui.drill import ExplainScreen

        def work() -> None:
            from opsctl.render_plan import render

            plan, error = None, ""
            try:
                plan = render(self.sources.explain(sql))
            except Exception as exc:
                text = str(exc).strip()
                error = text.splitlines()[0] if text else repr(exc)
                self.call_from_thread(self.log_event, "error",
                                      f"explain {fingerprint} failed: {error}")  # fmt: skip
            # Widgets are made on the UI thread.
            self.call_from_thread(
                lambda: self.push_screen(ExplainScreen(sql, fingerprint, plan, error))
            )

        self.notify(f"explaining {fingerprint or 'the statement'}…", timeout=2)
        self.run_worker(work, thread=True, group="explain", exclusive=True)

    def active_pane(self):
        active = self.query_one(TabbedContent).active or "tab-overview"
        return self.panes[active.removeprefix("tab-")]

    def action_show_pane(self, pane_id: str) -> None:
        self.show_pane(pane_id)

    def show_pane(self, pane_id: str) -> None:
        from opsctl.tui.drill import DrillScreen

        # From a drill-down screen or the event log, a number key goes to the pane itself.
        while isinstance(self.screen, DrillScreen | EventLogScreen):
            self.pop_screen()
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
