"""The Activity pane of `opsctl top` (Pilot): a real blocked session on PostgreSQL is listed
and shown in the blocking tree; `c` asks for a reason, Escape sends nothing, a reason sends
the cancel (the waiter's statement fails, the audit trail has it); with --read-only the keys
do nothing. On SQLite the pane says what it can show instead of an empty screen."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from textual.widgets import DataTable, Input, Static

from opsctl.tui.app import OpsApp
from opsctl.tui.panes import PANES
from opsctl.tui.panes.activity import SignalScreen

SIZE = (160, 40)
KEY = str([pid for pid, _ in PANES].index("activity") + 1)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _orm_in_test_body(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def sources(database_url, tmp_path):
    from opsctl.tui.sources import Sources

    return Sources(tmp_path, database_url, window_minutes=15)


async def settle(pilot, seconds=0.5):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(seconds)


def tree_text(app) -> str:
    return str(app.query_one("#activity-tree", Static).render())


@pytest.fixture
def blocked(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL sessions")
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    tag = uuid.uuid4().hex[:8]
    table = f"pane_probe_{tag}"
    admin = psycopg.connect(url, autocommit=True)
    admin.execute(f"CREATE TABLE {table} (id int)")
    holder = psycopg.connect(url, application_name=f"holder-{tag}")
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    waiter = psycopg.connect(url, application_name=f"waiter-{tag}", autocommit=True)
    outcome: dict = {}

    def wait() -> None:
        try:
            waiter.execute(f"SELECT count(*) FROM {table}")
        except Exception as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    time.sleep(0.5)
    try:
        yield holder.info.backend_pid, waiter.info.backend_pid, thread, outcome
    finally:
        holder.close()  # the waiter's statement then runs and its thread ends
        thread.join(5)
        waiter.close()
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.close()


@pytest.mark.postgres_only
async def test_activity_pane_shows_the_tree_and_cancels_with_a_reason(sources, blocked):
    from backend.ops.models import AuditEvent

    holder, waiter, thread, outcome = blocked
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY)
        await settle(pilot)
        table = app.query_one("#activity-table", DataTable)
        pids = [int(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert holder in pids and waiter in pids
        assert f"{holder} idle in transaction" in tree_text(app)
        assert f"└ {waiter} active" in tree_text(app)
        # Like every table: `/` filters it (here to the waiter's application name); the
        # selection is the waiter's row whatever the order.
        app_name = next(table.get_row_at(i)[5] for i in range(table.row_count)
                        if int(table.get_row_at(i)[0]) == waiter)  # fmt: skip
        await pilot.press("slash", *app_name, "enter")
        await pilot.pause()
        assert [int(table.get_row_at(i)[0]) for i in range(table.row_count)] == [waiter]
        assert app.query_one("#activity").selected_pid() == waiter
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, SignalScreen) and f"PID {waiter}" in app.screen.plan
        await pilot.press("escape")
        await settle(pilot)
        assert thread.is_alive() and not AuditEvent.objects.filter(action="db.cancel").exists()
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("enter")  # no reason: stays open
        await pilot.pause()
        assert isinstance(app.screen, SignalScreen)
        app.screen.query_one("#reason", Input).value = "pane drill"
        await pilot.press("enter")
        await settle(pilot)
        thread.join(10)
    assert "canceling statement due to user request" in outcome["error"]
    event = AuditEvent.objects.get(action="db.cancel")
    assert event.reason == "pane drill" and event.target == f"pid {waiter}"
    from django.db import connections

    connections.close_all()  # this body runs in the event loop's thread: its own connection


@pytest.mark.postgres_only
async def test_the_palette_offers_cancel_and_terminate_with_the_same_dialog(sources, blocked):
    from opsctl.tui.app import palette_commands

    _, waiter, thread, _ = blocked
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY)
        await settle(pilot)
        commands = {title: run for title, run, _ in palette_commands(app)}
        assert f"Terminate the session of PID {waiter}" in commands
        commands[f"Cancel the statement of PID {waiter}"]()
        await pilot.pause()
        assert isinstance(app.screen, SignalScreen) and f"PID {waiter}" in app.screen.plan
        await pilot.press("escape")
        await settle(pilot)
    assert thread.is_alive()


@pytest.mark.postgres_only
async def test_read_only_hides_cancel_and_terminate(sources, blocked):
    _, _, thread, _ = blocked
    app = OpsApp(sources, refresh_seconds=60, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY)
        await settle(pilot)
        pane = app.query_one("#activity")
        assert pane.check_action("cancel_backend", ()) is False
        assert pane.check_action("terminate_backend", ()) is False
        await pilot.press("c", "x")
        await pilot.pause()
        assert not isinstance(app.screen, SignalScreen)
        from opsctl.tui.app import palette_commands

        titles = [title for title, _, _ in palette_commands(app)]
        assert not [t for t in titles if t.startswith(("Cancel", "Terminate"))]
    assert thread.is_alive()


@pytest.mark.sqlite_only
async def test_activity_pane_on_sqlite_says_what_it_can_show(sources):
    app = OpsApp(sources, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(KEY)
        await settle(pilot)
        text = tree_text(app)
        assert "journal mode" in text and "write lock: free" in text
        assert "not visible" in text
