"""Snapshot tests (pytest-textual-snapshot) of every pane, the help and the drill-down
screens at 80x24 and 160x50, on fixed data so the pictures are stable. Update them with
`pytest --snapshot-update` after an intended change, and look at the report before
committing."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace as NS

import pytest

from opsctl.db.health import DatabaseHealth, TableHealth
from opsctl.telemetry import Coverage, QueryStats, RouteStats, TraceNode, TraceSummary
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
        per_route = {
            rows[0].route: series,
            rows[1].route: [(i * 60, 1.0 + i % 4, 10.0 + i % 6) for i in range(15)],
            rows[2].route: [(i * 60, 1.0, 15.0) for i in range(15)],
        }
        return TelemetryView(rows, Coverage(window, 9900, 60.0), age=2.0, series=series,
                             route_series=per_route)  # fmt: skip

    def exams_in_progress(self):
        return [NS(exam_id=1, title="Mathematics", ends_at=AT, students_active=412,
                   saves_per_second=27.5, saves_capped=False, submitted=37)]  # fmt: skip

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

    def traces(self, window, route=None, cancelled=None):
        rows = [
            TraceSummary(f"{i:02x}" * 16, r, f"POST {r}", AT.isoformat(), ms, 200, False, 9, 6,
                         i == 1)
            for i, (r, ms) in enumerate([
                ("api/sessions/<int:session_id>/answers/", 48.2),
                ("api/exams/<int:exam_id>/sessions/", 31.0),
                ("api/sessions/<int:session_id>/answers/", 12.5),
            ])
            if not route or route in r
        ]  # fmt: skip
        return TelemetryView(rows, Coverage(window, 9900, 60.0), age=2.0)

    def trace(self, trace_id, start=None):
        return [
            TraceNode("a", "POST api/sessions/<int:session_id>/answers/", "server", 0.0, 48.2, 0),
            TraceNode("b", "SELECT exams_session", "client", 1.2, 3.1, 1, LONG_SQL,
                      "845bf9c093da7884"),
            TraceNode("c", "INSERT exams_answer", "client", 5.0, 2.2, 1, INSERT_SQL,
                      "ceb8f50734b9ecd6"),
        ]  # fmt: skip

    def queries(self, window, by="total", cancelled=None):
        answers = ["api/sessions/<int:session_id>/answers/"]
        rows = [
            QueryStats("845bf9c093da7884", 1800, 5400.0, 3.0, 7.5, 21.0, 1800, answers, LONG_SQL),
            QueryStats("ceb8f50734b9ecd6", 1800, 3960.0, 2.2, 4.1, 9.0, 1800, answers,
                       INSERT_SQL),
            QueryStats("9103e84d6528f2f0", 120, 96.0, 0.8, 1.2, 3.0, 120,
                       ["api/exams/<int:exam_id>/sessions/"],
                       'SELECT "exams_exam"."id" FROM "exams_exam" WHERE "exams_exam"."id" = %s'),
        ]  # fmt: skip
        return TelemetryView(rows, Coverage(window, 9900, 60.0), age=2.0)

    def explain(self, sql):
        from opsctl.db.explain import ExplainResult
        from opsctl.db.plan_advice import Finding
        from opsctl.db.plan_model import from_sqlite

        root = from_sqlite([(2, 0, 0, "SCAN s"), (5, 0, 0, "SEARCH st USING INDEX "
                            "exams_student_token_hash_key (token_hash=?)")])  # fmt: skip
        finding = Finding("warning", 2, "SCAN s", "full scan of exams_examsession",
                          "every row read to find one session",
                          "filter on the primary key (s.id) first")  # fmt: skip
        return ExplainResult("sqlite", sql, False, None, root, [finding])

    def tables(self):
        return DatabaseHealth("postgresql", [
            TableHealth("exams_answer", 1_250_000, 180_000_000, 90_000_000, 41_000, 3.2,
                        autovacuum_due=False),
            TableHealth("exams_examsession", 40_000, 6_000_000, 2_000_000, 9_500, 19.2,
                        autovacuum_due=True),
            TableHealth("exams_student", 40_000, 4_000_000, 1_000_000, 12, 0.0,
                        autovacuum_due=False),
        ])  # fmt: skip

    def resources(self):
        rows = [
            ("cpu", 41.0, 80.0, 95.0, "ok", "2 cores"),
            ("memory", 63.5, 85.0, 95.0, "ok", "3.1 of 4.9 GB"),
            ("disk.database", 88.0, 85.0, 95.0, "warning", "var/db: 44 of 50 GB"),
            ("connections", None, 80.0, 95.0, "unknown", "pg_stat_activity: permission denied"),
        ]
        history = [NS(opened_at=AT, severity="warning", probe="disk.database", host="app1",
                      resolved_at=None)]  # fmt: skip
        return rows, history

    def activity(self):
        from opsctl.db.activity import Activity, BlockNode, Session

        def session(pid, app, state, seconds, query, **kw):
            return Session(pid, "exam", "exam", app, "10.0.0.7:51234", "client backend", state,
                           kw.pop("wait_type", None), kw.pop("wait", None), query, seconds,
                           seconds, seconds, **kw)  # fmt: skip

        sessions = [
            session(4242, "opsctl migrate", "idle in transaction", 312.0,
                    "ALTER TABLE exams_answer ADD COLUMN graded_by integer",
                    blocking=[5151], idle_in_transaction=True),
            session(5151, "gunicorn", "active", 71.5, LONG_SQL, wait_type="Lock",
                    wait="relation", blocked_by=[4242], long_running=True),
            session(6060, "gunicorn", "active", 0.2, INSERT_SQL),
        ]  # fmt: skip
        return Activity("postgresql", sessions, [BlockNode(4242, [BlockNode(5151)])], 60.0, 5.0,
                        hidden_idle=3)  # fmt: skip

    def retention(self):
        return [
            NS(name=n, period_days=d, eligible_now=e, oldest_age_days=o, last_run_at=AT,
               last_outcome="ok", overdue=False)
            for n, d, e, o in (("answer_journal", 30, 1200, 41.5), ("audit", 400, 0, 120.0),
                               ("telemetry_files", 7, 36, 8.0))
        ]  # fmt: skip


LONG_SQL = (
    "WITH s AS (SELECT s.id, s.status, s.deadline < %(cutoff)s AS overdue FROM "
    "exams_examsession s JOIN exams_student st ON st.id = s.student_id WHERE s.id = "
    "%(session)s AND st.token_hash = %(token)s FOR KEY SHARE OF s) SELECT * FROM s"
)
INSERT_SQL = 'INSERT INTO "exams_answer" ("session_id", "question", "answer") VALUES (%s, %s, %s)'


def app(size_name):
    return OpsApp(FixedSources(), refresh_seconds=3600, clock=False)


#: What to press to get each picture: the panes 1-8, the help, the drill-down screens, and
#: a table sorted and filtered (the indicator in the header, the filter line above).
SCREENS = {
    "overview": [], "traces": ["2"], "queries": ["3"], "database": ["4"], "resources": ["5"],
    "retention": ["6"], "flags": ["7"], "jobs": ["8"], "activity": ["9"],
    "help": ["question_mark"],
    "waterfall": ["2", "enter"], "query": ["2", "enter", "enter"],
    "sorted-filtered": ["4", "greater_than_sign", "slash", *"exams_", "enter"],
    "eventlog": ["L"],
    "explain": ["3", "e"],
}  # fmt: skip
#: The event log's content for its picture (times are the session's, so fixed here).
EVENTS = [
    (AT, "alert", "open: WARNING disk.database on app1: disk.database at 88.0%"),
    (AT.replace(minute=31), "action", "Roll back the last change set: confirmed, running"),
    (AT.replace(minute=31, second=2), "info", "rolled back"),
    (AT.replace(minute=32), "error", "Database: connection failed"),
]


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
@pytest.mark.parametrize("keys", list(SCREENS.values()), ids=list(SCREENS))
def test_screens(snap_compare, size, keys):
    async def settle(pilot):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        pilot.app.events.clear()
        pilot.app.events.extend(EVENTS)
        for k in keys:
            await pilot.press(k)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        # Toasts vanish on a timer: not in the pictures (the event log keeps them).
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app(size), terminal_size=size, run_before=settle)
