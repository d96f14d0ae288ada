"""Snapshot tests (pytest-textual-snapshot) of the main panes at 80x24 and 160x50, on fixed
data so the pictures are stable. Update them with `pytest --snapshot-update` after an
intended change, and look at the report before committing."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace as NS

import pytest

from opsctl.telemetry import Coverage, RouteStats
from opsctl.tui.app import OpsApp
from opsctl.tui.sources import TelemetryView

AT = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)


class FixedSources:
    """The same shapes the real sources return, frozen."""

    telemetry_dir = "var/telemetry"

    window_minutes = 15

    def telemetry_source(self):
        return self.telemetry_dir

    def routes(self, window, cancelled=None):
        rows = [
            RouteStats("api/sessions/<int:session_id>/answers/", 1800, 30.0, 0.1, 4.1, 9.8, 21.5),
            RouteStats("api/exams/<int:exam_id>/sessions/", 120, 2.0, 0.0, 6.0, 12.0, 30.2),
            RouteStats("api/leaderboard/", 60, 1.0, 0.0, 8.3, 15.1, 22.0),
        ]
        series = [(i * 60, 28.0 + (i % 5), 8.0 + (i % 3) * 0.9) for i in range(15)]
        return TelemetryView(rows, Coverage(window, 9900, 60.0), age=2.0, series=series)

    def open_alerts(self):
        return [NS(severity="warning", probe="disk.database", host="app1",
                   message="disk.database at 88.0%")]  # fmt: skip

    def recent_flag_changes(self):
        return [NS(key="journal.writes", reason="disk pressure", actor="oncall")]

    def jobs(self):
        calib = [NS(exam_id=1, title="Mathematics", closed=False, scored_sessions=0,
                    current_run_id=None, needs_calibration=False),
                 NS(exam_id=2, title="Physics 1", closed=True, scored_sessions=300,
                    current_run_id=4, needs_calibration=False)]  # fmt: skip
        migrations = [NS(app="exams", applied=["0001_initial"], unapplied=[])]
        return migrations, calib, NS(started_at=AT, outcome="ok")

    def flags(self):
        flags = [NS(key=k, value=v, description=d) for k, v, d in (
            ("journal.writes", {"enabled": False, "percent": 0}, "Write the answer journal."),
            ("leaderboard.cache", {"enabled": True, "percent": 100}, "Cache the first page."),
            ("rasch.auto", {"enabled": True, "percent": 100}, "Automatic calibration."),
            ("telemetry.tracing", {"enabled": True, "percent": 25}, "Record spans."),
        )]  # fmt: skip
        history = [NS(at=AT, change_set="3f2a9c1e" * 4, key="journal.writes",
                      old_value={"enabled": True, "percent": 100},
                      new_value={"enabled": False, "percent": 0}, reason="disk pressure",
                      actor="oncall")]  # fmt: skip
        return flags, history

    def scheduled_flags(self):
        return []


def app(size_name):
    return OpsApp(FixedSources(), refresh_seconds=3600, clock=False)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
@pytest.mark.parametrize("keys", [[], ["7"]], ids=["overview", "flags"])
def test_main_panes(snap_compare, size, keys):
    async def settle(pilot):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        for k in keys:
            await pilot.press(k)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

    assert snap_compare(app(size), terminal_size=size, run_before=settle)
