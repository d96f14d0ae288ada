"""`opsctl top` on live telemetry (Pilot): only the visible pane loads, a pane never runs two
loads at once, quitting stops a running read, the window is selectable and shown, a stale
folder and an empty one say so. Telemetry is real (files written by tests/bench/spangen.py,
read by the incremental reader); the database-backed parts of the Overview are left empty."""

from __future__ import annotations

import threading
import time

import pytest

from opsctl.tui.app import OpsApp
from opsctl.tui.sources import Sources
from tests.bench import spangen

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class TelemetryOnly(Sources):
    """Real telemetry sources; no database (alerts, flags and jobs are empty)."""

    def open_alerts(self):
        return []

    def recent_flag_changes(self):
        return []

    def jobs(self):
        return None

    def exams_in_progress(self):
        return []


class Watched(TelemetryOnly):
    """Counts concurrent telemetry loads; ``hold`` makes each load wait (cooperatively)
    until released or cancelled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.running = 0
        self.per_pane: dict[str, int] = {}  # loads running now, per source (= per pane)
        self.most: dict[str, int] = {}  # the most ever running at once, per source
        self.calls: list[tuple[str, float]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.saw_cancel = threading.Event()

    def _watch(self, name, window, cancelled, fn):
        with self.lock:
            self.running += 1
            self.per_pane[name] = self.per_pane.get(name, 0) + 1
            self.most[name] = max(self.most.get(name, 0), self.per_pane[name])
            self.calls.append((name, window))
        try:
            while not self.hold.wait(0.01):
                if cancelled():
                    self.saw_cancel.set()
                    raise RuntimeError("cancelled")
            return fn()
        finally:
            with self.lock:
                self.running -= 1
                self.per_pane[name] -= 1

    def routes(self, window, cancelled=lambda: False):
        return self._watch("routes", window, cancelled,
                           lambda: Sources.routes(self, window, cancelled))  # fmt: skip

    def traces(self, window, route=None, cancelled=lambda: False):
        return self._watch("traces", window, cancelled,
                           lambda: Sources.traces(self, window, route, cancelled))  # fmt: skip

    def queries(self, window, by="total", cancelled=lambda: False):
        return self._watch("queries", window, cancelled,
                           lambda: Sources.queries(self, window, by, cancelled))  # fmt: skip


@pytest.fixture
def live_dir(tmp_path):
    now = time.time()
    spangen.fill(tmp_path, now - 300, now, 100)
    return tmp_path


async def settle(pilot, until, timeout=60.0):
    """Let the app run until ``until()`` holds (a condition, not a duration)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the console never got there"
        await pilot.pause(0.05)


def text(app, selector) -> str:
    return str(app.query_one(selector).render())


async def test_overview_shows_live_numbers_window_and_age(live_dir):
    app = OpsApp(TelemetryOnly(live_dir, "sqlite://"), refresh_seconds=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.query_one("#overview-table").row_count == 3)
        assert app.query_one("#overview-table").get_row_at(0)[0] == spangen.ROUTES[0][0]
        await settle(pilot, lambda: "reading older" not in text(app, "#overview-window"))
        assert "window 15m" in text(app, "#overview-window")
        assert "spans covering" in text(app, "#overview-window")
        assert "data age: newest span" in text(app, "#overview-age")
        assert "min" in text(app, "#overview-rps-label") and "max" in text(
            app, "#overview-rps-label"
        )
        assert len(app.query_one("#overview-rps").data) >= 4  # per minute


async def test_only_the_visible_pane_loads_and_never_twice_at_once(live_dir):
    sources = Watched(live_dir, "sqlite://")
    app = OpsApp(sources, refresh_seconds=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: app.query_one("#overview").loads >= 3)
        # A slow source: ticks keep coming every 50 ms while one load waits.
        sources.hold.clear()
        await settle(pilot, lambda: app.query_one("#overview").skipped >= 5)
        sources.hold.set()
        await settle(pilot, lambda: app.query_one("#overview").loads >= 6)
        assert sources.most == {"routes": 1}  # never two Overview loads at once
        assert app.query_one("#traces").loads == 0 and app.query_one("#queries").loads == 0
        await pilot.press("3")
        await settle(pilot, lambda: any(n == "queries" for n, _ in sources.calls))
        before = app.query_one("#overview").loads
        await settle(pilot, lambda: app.query_one("#queries").loads >= 3)
        assert app.query_one("#overview").loads == before  # hidden: no more loads
        assert sources.most == {"routes": 1, "queries": 1}


async def test_switching_away_cancels_the_hidden_panes_load(live_dir):
    sources = Watched(live_dir, "sqlite://")
    sources.hold.clear()
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: sources.running == 1)
        await pilot.press("2")
        await settle(pilot, lambda: sources.saw_cancel.is_set())
        sources.hold.set()
        await settle(pilot, lambda: app.query_one("#traces").query_one("DataTable").row_count)


async def test_quit_stops_a_running_read(live_dir):
    sources = Watched(live_dir, "sqlite://")
    sources.hold.clear()  # the load never finishes on its own
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: sources.running == 1)
        await pilot.press("q")
    # The reader saw the cancellation and its thread ended (no wait for a scan).
    assert sources.saw_cancel.wait(10)
    deadline = time.monotonic() + 10
    while sources.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sources.running == 0 and app.return_code == 0


async def test_window_is_selectable_and_shown(live_dir):
    sources = Watched(live_dir, "sqlite://")
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: "window 15m" in text(app, "#overview-window"))
        assert app.sub_title.startswith("window 15m")
        await pilot.press("w")
        await settle(pilot, lambda: "window 60m" in text(app, "#overview-window"))
        assert ("routes", 3600.0) in sources.calls and app.sub_title.startswith("window 60m")
        await pilot.press("w")
        await settle(pilot, lambda: "window 5m" in text(app, "#overview-window"))
        await pilot.press("2")
        await settle(pilot, lambda: "window 5m" in text(app, "#traces-window"))
        assert ("traces", 300.0) in sources.calls


async def test_stale_data_is_flagged(tmp_path):
    now = time.time()
    spangen.fill(tmp_path, now - 600, now - 300, 100)  # the newest span is 5 minutes old
    app = OpsApp(TelemetryOnly(tmp_path, "sqlite://"), refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: "STALE" in text(app, "#overview-age"))
        assert "not live" in text(app, "#overview-age")
        # The numbers are still shown, with the warning standing.
        await settle(pilot, lambda: app.query_one("#overview-table").row_count == 3)
        assert "STALE" in text(app, "#overview-age")


async def test_no_data_is_not_nothing_wrong(tmp_path):
    app = OpsApp(TelemetryOnly(tmp_path, "sqlite://"), refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: "NO DATA" in text(app, "#overview-age"))
        assert str(tmp_path) in text(app, "#overview-age")
        await pilot.press("3")
        await settle(pilot, lambda: "NO DATA" in text(app, "#queries-window"))
