"""`opsctl top` with Textual's Pilot: every pane renders seeded data, keys do what the help
says, actions go through the service functions (the audit trail shows them), confirmations
can be cancelled, --read-only hides actions."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from backend.exams.models import CalibrationRun
from backend.ops.models import AuditEvent
from opsctl.tui.app import OpsApp
from opsctl.tui.drill import ExplainScreen, WaterfallScreen
from opsctl.tui.modals import ConfirmScreen, FlagChangeScreen, TextScreen

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _orm_in_test_body(monkeypatch):
    # The assertions below query the ORM from the async test body; the app itself only
    # touches the database from worker threads.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


async def settle(pilot, seconds=0.6):
    from textual.worker import WorkerCancelled

    await pilot.pause()
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
            break
        except WorkerCancelled:  # a newer load replaced an older one (exclusive workers)
            await pilot.pause(0.2)
    await pilot.pause(seconds)


def rows(app, pane_id):
    return app.query_one(f"#{pane_id}").query_one(DataTable).row_count


def error(app, pane_id):
    return str(app.query_one(f"#{pane_id}-error").render())


@pytest.mark.parametrize(
    "key,pane,minimum",
    [("1", "overview", 1), ("2", "traces", 3), ("3", "queries", 2), ("4", "database", 5),
     ("5", "resources", 5), ("6", "retention", 5), ("7", "flags", 4), ("8", "jobs", 3)],
)  # fmt: skip
async def test_every_pane_renders_seeded_data(seeded, key, pane, minimum):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
        assert app.active_pane().id == pane
        assert error(app, pane) == ""
        assert rows(app, pane) >= minimum


async def test_help_and_quit(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        await pilot.press("escape")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_traces_filter_and_waterfall(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"answers", "enter")
        await settle(pilot)
        assert rows(app, "traces") == 3
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, WaterfallScreen)
        assert any(n.name.startswith("POST api/sessions") for n in app.screen.nodes)


async def test_queries_explain_and_nplusone(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, ExplainScreen)
        assert str(app.screen.query_one(".drill-title").render()).startswith("plan of")
        await pilot.press("escape", "n")
        await settle(pilot)
        assert app.screen.title_text == "N+1 offenders"


async def test_flag_change_needs_reason_and_is_audited(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("s")  # first row: journal.writes
        await pilot.pause()
        assert isinstance(app.screen, FlagChangeScreen)
        await pilot.press("escape")  # cancelled
        await pilot.pause()
        assert not AuditEvent.objects.filter(action="flag.set").exists()
        await pilot.press("s")
        await pilot.pause()
        await pilot.press(*"off", "enter", "enter")  # no reason yet: refused in place
        await pilot.pause()
        assert isinstance(app.screen, FlagChangeScreen)
        await pilot.press(*"drill", "enter")
        await settle(pilot)
        event = AuditEvent.objects.get(action="flag.set")
        assert event.reason == "drill" and event.new_value == {"enabled": False, "percent": 0}


async def test_rollback_confirmation_can_be_cancelled_then_applied(seeded):
    from backend.ops import flags

    flags.set_flag("leaderboard.cache", "off", "before the test")
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("b")
        await pilot.pause()
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen) and "leaderboard.cache" in app.screen.plan
        await pilot.press("n")
        await settle(pilot)
        assert not AuditEvent.objects.filter(action="flag.rollback").exists()
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
    assert AuditEvent.objects.filter(action="flag.rollback").count() == 1


async def test_calibrate_from_jobs_pane(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await settle(pilot)
        table = app.query_one("#jobs").query_one(DataTable)
        closed = [i for i in range(table.row_count) if table.get_row_at(i)[2] == "yes"]
        table.move_cursor(row=closed[0])
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot, 1.0)
    assert CalibrationRun.objects.filter(outcome="ok", actor="opsctl-top").exists()


async def test_vacuum_asks_and_can_be_cancelled(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "VACUUM" in app.screen.title_text
        await pilot.press("n")
        await settle(pilot)
    assert not AuditEvent.objects.filter(action="vacuum").exists()


async def test_read_only_hides_actions(seeded):
    app = OpsApp(seeded, refresh_seconds=60, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("s", "b")
        await pilot.pause()
        assert not isinstance(app.screen, FlagChangeScreen | ConfirmScreen)
        assert "read-only" in app.sub_title


async def test_a_failing_source_shows_its_error_and_the_rest_works(seeded, monkeypatch):
    def broken():
        raise RuntimeError("database went away")

    monkeypatch.setattr(seeded, "tables", broken)
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(pilot)
        assert "database went away" in error(app, "database")
        await pilot.press("7")
        await settle(pilot)
        assert rows(app, "flags") >= 4
