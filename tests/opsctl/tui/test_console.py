"""`opsctl top` flows from issue 17 with Textual's Pilot on a seeded database (both
databases): the drill-down from a route to a plan, tables that keep the selection across a
refresh, pause, filter and sort, the command palette's actions, the event log, a dialog
that keeps what was typed. Waits are on conditions, never on fixed sleeps."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from textual.widgets import DataTable, Input, Label

from backend.ops.models import AuditEvent
from opsctl.tui.app import OpsApp, palette_commands
from opsctl.tui.drill import ExplainScreen, QueryScreen, WaterfallScreen
from opsctl.tui.eventlog import EventLogScreen
from opsctl.tui.modals import ConfirmScreen, FlagChangeScreen, TextScreen

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _orm_in_test_body(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


async def until(pilot, condition, timeout: float = 30.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds (a loaded 2-core machine is slow)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def table(app, pane_id) -> DataTable:
    return app.query_one(f"#{pane_id}-table", DataTable)


def cells(app, pane_id, column=0) -> list[str]:
    t = table(app, pane_id)
    return [str(t.get_row_at(i)[column]) for i in range(t.row_count)]


def selected(app, pane_id) -> str:
    t = table(app, pane_id)
    return t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value


def label(app, selector) -> str:
    return str(app.query_one(selector, Label).render())


def first_command(app) -> str:
    """The title of the palette's first suggestion ("" while it has none)."""
    found = app.screen.query("CommandList")
    if not found or found.first().option_count == 0:
        return ""
    return str(found.first().get_option_at_index(0).prompt).splitlines()[0]  # not the help


async def open_pane(pilot, key, pane_id, minimum=1):
    await pilot.press(key)
    await until(pilot, lambda: table(pilot.app, pane_id).row_count >= minimum,
                what=f"{pane_id} rows")  # fmt: skip


async def test_drill_down_from_a_route_to_its_plan_and_copy(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: table(app, "overview").row_count >= 2, what="routes")
        routes = cells(app, "overview")
        answers = next(r for r in routes if r.endswith("/answers/"))
        table(app, "overview").move_cursor(row=routes.index(answers))
        await pilot.press("enter")  # the route -> its slowest traces
        await until(pilot, lambda: app.active_pane().id == "traces")
        await until(pilot, lambda: table(app, "traces").row_count == 3, what="3 save traces")
        assert set(cells(app, "traces", 1)) == {answers}
        assert f"route {answers}" in label(app, "#traces-view")
        ms = [float(v) for v in cells(app, "traces", 3)]
        assert ms == sorted(ms, reverse=True)  # slowest first

        await pilot.press("enter")  # -> the waterfall
        await until(pilot, lambda: isinstance(app.screen, WaterfallScreen), what="waterfall")
        water = app.screen
        sql_spans = [n for n in water.nodes if n.sql]
        assert sql_spans, "a save runs SQL"
        # It opens on the first statement: its whole text and its fingerprint, not cut.
        first = sql_spans[0]
        detail = str(water.query_one("#waterfall-span").render())
        assert first.fingerprint in detail
        assert " ".join(first.sql.split())[-40:] in " ".join(detail.split())
        spans = water.query_one(DataTable)
        spans.move_cursor(row=0)
        await pilot.press("j")
        assert spans.cursor_row == 1
        await pilot.press("k")
        assert spans.cursor_row == 0
        # The longest statement of the trace: shown whole (beyond 100 characters).
        longest = max(sql_spans, key=lambda n: len(n.sql))
        water.query_one(DataTable).move_cursor(row=water.nodes.index(longest))
        await pilot.pause()
        await pilot.press("enter")  # -> the span's query
        await until(pilot, lambda: isinstance(app.screen, QueryScreen), what="query screen")
        shown = str(app.screen.query_one("#query-sql").render())
        assert " ".join(longest.sql.split()) == " ".join(shown.split())
        assert longest.fingerprint in label(app.screen, ".drill-title")
        assert len(longest.sql) > 100

        await pilot.press("e")  # -> EXPLAIN with advice
        await until(pilot, lambda: isinstance(app.screen, ExplainScreen), what="plan")
        plan = app.screen
        assert plan.error == ""
        assert "plan" in str(plan.query_one("#explain-plan").render())
        await pilot.press("y")  # copy the query
        assert app.clipboard == longest.sql
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, WaterfallScreen)
        await pilot.press("y")  # copy from the waterfall too (the selected span)
        assert app.clipboard == longest.sql
        await pilot.press("escape")
        assert app.active_pane().id == "traces"
        await pilot.press("escape")  # all routes again
        await until(pilot, lambda: "route" not in label(app, "#traces-view"))


async def test_queries_enter_shows_the_whole_statement_then_explain(seeded):
    app = OpsApp(seeded, refresh_seconds=60)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "3", "queries", 1)
        fp = selected(app, "queries")
        example = app.panes["queries"].examples[fp]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, QueryScreen))
        assert app.screen.sql == example and app.screen.fingerprint == fp
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ExplainScreen))
        assert app.screen.error == ""
        await pilot.press("y")
        assert app.clipboard == example


async def test_selection_follows_the_row_across_a_refresh(seeded, monkeypatch):
    real = seeded.tables
    calls = {"n": 0}

    def reordered():
        health = real()
        calls["n"] += 1
        if calls["n"] > 1:  # the second load returns the rows in the other order
            health.tables.reverse()
        return health

    monkeypatch.setattr(seeded, "tables", reordered)
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        table(app, "database").move_cursor(row=1)
        await pilot.pause()
        chosen = selected(app, "database")
        before = cells(app, "database")
        await pilot.press("r")  # refresh now
        await until(pilot, lambda: cells(app, "database") == before[::-1], what="reorder")
        assert selected(app, "database") == chosen
        assert table(app, "database").cursor_row == len(before) - 2


async def test_pause_stops_refreshing_and_r_still_loads(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "7", "flags", 4)
        pane = app.panes["flags"]
        await until(pilot, lambda: not pane.busy())
        await pilot.press("space")
        assert "PAUSED" in app.sub_title
        loads = pane.loads
        app._tick()  # what the refresh timer calls
        assert pane.loads == loads
        await pilot.press("r")
        assert pane.loads == loads + 1
        await pilot.press("space")
        assert "PAUSED" not in app.sub_title
        await until(pilot, lambda: not pane.busy())
        app._tick()
        assert pane.loads == loads + 2


async def test_filter_every_table_and_escape_clears(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "7", "flags", 4)
        everything = cells(app, "flags")
        await pilot.press("slash", *"journal")
        await until(pilot, lambda: cells(app, "flags") == ["journal.writes"])
        await pilot.press("enter")
        assert "filter 'journal'" in label(app, "#flags-view")
        assert app.focused is table(app, "flags")
        await pilot.press("escape")
        assert cells(app, "flags") == everything
        assert not app.query_one("#flags-view").display
        # The same on another pane: Database.
        await open_pane(pilot, "4", "database", 5)
        await pilot.press("slash", *"exams_student", "enter")
        assert cells(app, "database") == ["exams_student"]


async def test_sort_by_keys_and_by_clicking_a_header(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        t = table(app, "database")
        await pilot.press("greater_than_sign")  # sort by the first column, largest first
        names = cells(app, "database")
        assert names == sorted(names, reverse=True)
        assert str(t.columns["0"].label).endswith("▼")
        assert "sorted by table ▼" in label(app, "#database-view")
        await pilot.press("I")  # invert
        assert cells(app, "database") == sorted(names)
        assert str(t.columns["0"].label).endswith("▲")
        # Click the "rows" header: numbers sort as numbers, largest first.
        x = t.columns["0"].get_render_width(t) + 1
        await pilot.click(t, offset=(x, 0))
        await until(pilot, lambda: t.sort_column == 1)
        counts = [float(v) for v in cells(app, "database", 1)]
        assert counts == sorted(counts, reverse=True)
        assert str(t.columns["1"].label).endswith("▼")
        await until(pilot, lambda: "sorted by rows ▼" in label(app, "#database-view"))
        assert not str(t.columns["0"].label).endswith(("▲", "▼"))


async def test_r_refreshes_on_retention_and_p_purges_after_asking(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "6", "retention", 5)
        pane = app.panes["retention"]
        await until(pilot, lambda: not pane.busy())
        loads = pane.loads
        await pilot.press("r")
        assert not isinstance(app.screen, ConfirmScreen)
        assert pane.loads == loads + 1
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="purge plan")
        assert app.screen.title_text == "Run retention now?"
        await pilot.press("n")
    assert not AuditEvent.objects.filter(action__startswith="retention").exists()


async def test_palette_offers_every_action_with_the_same_confirmation(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        await pilot.press("ctrl+p")
        # The palette loads the panes it names (flags, jobs) when it opens.
        await until(pilot, lambda: table(app, "flags").row_count >= 4, what="flags loaded")
        await until(pilot, lambda: table(app, "jobs").row_count >= 3, what="jobs loaded")
        titles = [t for t, _, _ in palette_commands(app)]
        for expected in (
            "VACUUM table exams_student", "Set flag journal.writes", "Event log",
            "Roll back the last flag change set", "Retention dry run", "Retention purge now",
            "Refresh now", "Pause refresh",
        ):  # fmt: skip
            assert expected in titles
        assert any(t.startswith("Calibrate exam ") for t in titles)
        await pilot.press(*"VACUUM table exams_student")
        await until(pilot, lambda: first_command(app) == "VACUUM table exams_student")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        vendor = app.panes["database"].vendor
        if vendor == "sqlite":
            assert app.screen.title_text == "VACUUM the SQLite database file?"
        else:
            assert app.screen.title_text == "VACUUM (ANALYZE) exams_student?"
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        # Set a flag from the palette: the same dialog as `s`.
        await pilot.press("ctrl+p", *"Set flag rasch.auto")
        await until(pilot, lambda: first_command(app) == "Set flag rasch.auto")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FlagChangeScreen))
        assert app.screen.key == "rasch.auto"
        await pilot.press("escape")
    assert not AuditEvent.objects.filter(action__in=["vacuum", "flag.set"]).exists()


async def test_palette_has_no_actions_read_only(seeded):
    app = OpsApp(seeded, refresh_seconds=3600, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        await open_pane(pilot, "7", "flags", 4)
        titles = [t for t, _, _ in palette_commands(app)]
        assert "Refresh now" in titles
        assert not [t for t in titles if t.startswith(("VACUUM", "Set flag", "Roll back",
                                                       "Retention", "Calibrate"))]  # fmt: skip


async def test_vacuum_plan_says_what_the_database_does(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        plan = app.screen.plan
        if seeded.database_url.startswith("sqlite"):
            assert "rewrites the whole database file" in plan
            assert "exclusive lock" in plan and "writers wait" in plan
            assert "does not block" not in plan
        else:
            assert "does not block reads or writes" in plan
        await pilot.press("n")


async def test_flag_dialog_keeps_what_was_typed_when_the_value_is_wrong(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "7", "flags", 4)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, FlagChangeScreen))
        await pilot.press(*"maybe", "enter", *"drill", "enter")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, FlagChangeScreen)
        assert dialog.query_one("#value", Input).value == "maybe"
        assert dialog.query_one("#reason", Input).value == "drill"
        assert "on, off or a percentage" in str(dialog.query_one("#dialog-error").render())
        # Fix the value: the reason is still there, and it applies.
        dialog.query_one("#value", Input).value = "off"
        await pilot.press("enter")  # value box: on to the reason
        await pilot.press("enter")
        await until(pilot, lambda: AuditEvent.objects.filter(action="flag.set").exists())
    assert AuditEvent.objects.get(action="flag.set").reason == "drill"


async def test_event_log_keeps_actions_results_and_alerts(seeded, monkeypatch):
    from types import SimpleNamespace as NS

    alerts = [NS(severity="warning", probe="disk.database", host="app1", message="at 88%")]
    monkeypatch.setattr(seeded, "open_alerts", lambda: list(alerts))
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any(k == "alert" for _, k, _ in app.events), what="alert")
        await open_pane(pilot, "7", "flags", 4)
        await pilot.press("s", *"off", "enter", *"drill", "enter")
        await until(pilot, lambda: any("set to off" in t for _, _, t in app.events))
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        # The alert resolves: the Overview's next read logs it.
        alerts.clear()
        app.panes["overview"]._db_parts = None
        await pilot.press("1", "r")
        await until(pilot, lambda: any("resolved" in t for _, _, t in app.events))
        await pilot.press("L")
        assert isinstance(app.screen, EventLogScreen)
        t = app.screen.query_one(DataTable)
        rows = [t.get_row_at(i) for i in range(t.row_count)]
        texts = [str(r[2]) for r in rows]
        assert "resolved: WARNING disk.database on app1" in texts[0]  # newest first
        assert any("journal.writes set to off" in x for x in texts)
        assert "Roll back the last change set: cancelled, nothing changed" in texts
        assert any("open: WARNING disk.database on app1" in x for x in texts)
        assert all(len(str(r[0])) == 8 for r in rows)  # HH:MM:SS


async def test_a_pane_error_is_logged_once_and_its_recovery_too(seeded, monkeypatch):
    real = seeded.tables
    state = {"down": True}

    def flaky():
        if state["down"]:
            raise RuntimeError("database went away")
        return real()

    monkeypatch.setattr(seeded, "tables", flaky)
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        pane = app.panes["database"]
        await until(pilot, lambda: "went away" in label(app, "#database-error"))
        await until(pilot, lambda: not pane.busy())
        await pilot.press("r")
        await until(pilot, lambda: pane.loads >= 2 and not pane.busy())
        errors = [t for _, k, t in app.events if k == "error"]
        assert errors == ["Database: database went away"]
        state["down"] = False
        await pilot.press("r")
        await until(pilot, lambda: table(app, "database").row_count >= 5)
        assert any(t == "Database: loads again" for _, _, t in app.events)


async def test_overview_says_unknown_when_alerts_cannot_be_read(seeded, monkeypatch):
    def down():
        raise RuntimeError("connection failed")

    monkeypatch.setattr(seeded, "open_alerts", down)
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        status = app.query_one("#overview-status")
        await until(pilot, lambda: "alerts:" in str(status.render()))
        text = str(status.render())
        assert "open alerts: unknown" in text and "open alerts: 0" not in text
        assert "alerts: connection failed" in text


async def test_help_scrolls_at_80x24(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, TextScreen))
        body = app.screen.query_one("#dialog-body")
        await until(pilot, lambda: body.max_scroll_y > 0, what="help taller than the box")
        await pilot.press("end")
        await until(pilot, lambda: body.scroll_y == body.max_scroll_y)
        # Every tab is on screen at 80 columns.
        await pilot.press("escape")
        tabs = app.query("ContentTab")
        assert len(tabs) >= 8
        assert all(tab.region.right <= 80 and tab.region.width > 0 for tab in tabs)


async def test_overview_trends_per_route_and_the_exam_in_progress(seeded):
    from django.utils import timezone

    from backend.exams.live import exams_in_progress
    from backend.exams.models import AnswerEvent, Exam, ExamSession

    now = timezone.now()
    progress = exams_in_progress(now)
    open_exam = Exam.objects.get(id=progress[0].exam_id)
    assert [p.exam_id for p in progress] == [open_exam.id]
    active = ExamSession.objects.filter(exam=open_exam, status="in_progress", deadline__gt=now)
    assert progress[0].students_active == active.count()
    recent = AnswerEvent.objects.filter(
        session__exam=open_exam, received_at__gte=now - dt.timedelta(seconds=60)
    ).count()
    assert recent >= 3  # at least the fixture's three saves
    assert progress[0].saves_per_second == round(recent / 60, 2)
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: table(app, "overview").row_count >= 2, what="routes")
        exams = app.query_one("#overview-exams")
        await until(pilot, lambda: open_exam.title in str(exams.render()), what="exams")
        text = str(exams.render())
        assert f"{progress[0].students_active} active" in text
        assert " saves/s" in text and f"{progress[0].submitted} submitted" in text
        routes = cells(app, "overview")
        answers = routes.index(next(r for r in routes if r.endswith("/answers/")))
        row = table(app, "overview").get_row_at(answers)
        rps_trend, p95_trend = str(row[5]), str(row[6])
        assert any(ch in rps_trend for ch in "▁▂▃▄▅▆▇█") and "-" in rps_trend
        assert any(ch in p95_trend for ch in "▁▂▃▄▅▆▇█")
        # The large sparklines follow the selected route.
        table(app, "overview").move_cursor(row=answers)
        await until(pilot, lambda: label(app, "#overview-rps-label").startswith(routes[answers]))


async def test_j_k_g_G_move_in_every_table(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "4", "database", 5)
        t = table(app, "database")
        await pilot.press("j", "j")
        assert t.cursor_row == 2
        await pilot.press("k")
        assert t.cursor_row == 1
        await pilot.press("G")
        assert t.cursor_row == t.row_count - 1
        await pilot.press("g")
        assert t.cursor_row == 0


async def test_palette_actions_ask_what_their_keys_ask(seeded):
    from backend.ops import flags

    flags.set_flag("leaderboard.cache", "off", "before the test")
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "8", "jobs", 3)
        exam = selected(app, "jobs")
        commands = {t: run for t, run, _ in palette_commands(app)}
        for title, asks in (
            ("Roll back the last flag change set", "Roll back the last change set?"),
            ("Retention purge now", "Run retention now?"),
            (f"Calibrate exam {exam}", f"Calibrate exam {exam}?"),
        ):
            commands[title]()
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what=asks)
            assert app.screen.title_text == asks
            await pilot.press("n")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        commands["Retention dry run"]()
        await until(pilot, lambda: isinstance(app.screen, TextScreen), what="dry run")
        assert app.screen.title_text == "retention dry run"
        await pilot.press("escape")
        commands["Pause refresh"]()
        assert app.paused and "PAUSED" in app.sub_title
    assert not AuditEvent.objects.filter(action="flag.rollback").exists()


async def test_a_number_key_leaves_the_drill_down_for_its_pane(seeded):
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "2", "traces", 3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, WaterfallScreen), what="waterfall")
        await pilot.press("L")
        assert isinstance(app.screen, EventLogScreen)
        await pilot.press("3")
        assert not isinstance(app.screen, WaterfallScreen | EventLogScreen)
        assert app.active_pane().id == "queries"


async def test_a_failed_flag_change_reopens_the_dialog_with_what_was_typed(seeded, monkeypatch):
    real = seeded.set_flag
    state = {"fail": True}

    def flaky(key, value, reason):
        if state["fail"]:
            raise RuntimeError("database is locked")
        return real(key, value, reason)

    monkeypatch.setattr(seeded, "set_flag", flaky)
    app = OpsApp(seeded, refresh_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await open_pane(pilot, "7", "flags", 4)
        await pilot.press("s", *"25", "enter", *"canary", "enter")
        await until(pilot, lambda: "locked" in str(getattr(app.screen, "error", "")))
        dialog = app.screen
        assert isinstance(dialog, FlagChangeScreen)
        assert dialog.query_one("#value", Input).value == "25"
        assert dialog.query_one("#reason", Input).value == "canary"
        assert "database is locked" in str(dialog.query_one("#dialog-error").render())
        state["fail"] = False
        dialog.query_one("#reason", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: AuditEvent.objects.filter(action="flag.set").exists())
    event = AuditEvent.objects.get(action="flag.set")
    assert event.reason == "canary" and event.new_value == {"enabled": True, "percent": 25}
