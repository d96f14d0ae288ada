"""The console's Flags pane shows pending scheduled flag changes above the history."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace as NS

import pytest
from textual.widgets import DataTable, Static

from opsctl.tui.app import OpsApp
from tests.opsctl.tui.test_snapshots import FixedSources

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class WithScheduled(FixedSources):
    def scheduled_flags(self):
        return [NS(id=3, apply_at=dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC),
                   key="leaderboard.cache", value={"enabled": False, "percent": 0},
                   reason="exam start", actor="planner")]  # fmt: skip


async def test_pending_scheduled_changes_are_listed_first():
    app = OpsApp(WithScheduled(), refresh_seconds=3600, clock=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("7")
        deadline = time.monotonic() + 30
        while app.query_one("#flags-table", DataTable).row_count < 4:
            assert time.monotonic() < deadline, "flags never loaded"
            await pilot.pause(0.05)
        lines = str(app.query_one("#flags-history", Static).render()).splitlines()
        assert lines[0] == "scheduled #3 12-01 09:00 leaderboard.cache -> off (exam start, planner)"
        assert lines[1].startswith("11-24 09:30 3f2a9c1e journal.writes: on -> off")
