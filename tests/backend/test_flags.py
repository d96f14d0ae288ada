"""Feature flags: changes, percentage rollout, history, rollbacks, the cache across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from backend.ops import flags
from backend.ops.models import AuditEvent, FeatureFlag
from opsctl.cli import app

pytestmark = pytest.mark.django_db


def value(key):
    flags.clear_cache()
    return flags.get_flag(key).value


def test_defaults_exist_and_are_on():
    keys = {f.key for f in flags.list_flags()}
    assert {"journal.writes", "leaderboard.cache", "telemetry.tracing", "rasch.auto"} <= keys
    assert flags.is_enabled("journal.writes")


def test_set_records_who_what_why():
    ev = flags.set_flag("journal.writes", "off", "disk pressure", actor="oncall")
    assert value("journal.writes") == {"enabled": False, "percent": 0}
    assert not flags.is_enabled("journal.writes")
    audit = AuditEvent.objects.get(pk=ev.id)
    assert audit.actor == "oncall" and audit.reason == "disk pressure"
    assert audit.old_value == {"enabled": True, "percent": 100}
    assert audit.new_value == {"enabled": False, "percent": 0}
    assert len(audit.change_set) == 32


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_missing_reason_refused(reason):
    with pytest.raises(flags.FlagError, match="reason"):
        flags.set_flag("journal.writes", "off", reason)
    assert value("journal.writes")["enabled"]


@pytest.mark.parametrize("bad", ["maybe", "101", "-5", "12.5%"])
def test_bad_values_refused(bad):
    with pytest.raises(flags.FlagError):
        flags.set_flag("journal.writes", bad, "x")


def test_unknown_key_is_off_and_never_raises(caplog):
    assert flags.is_enabled("no.such.flag") is False
    assert flags.is_enabled("no.such.flag", student=3) is False
    assert sum("no.such.flag" in r.message for r in caplog.records) <= 1
    with pytest.raises(flags.FlagError, match="unknown flag"):
        flags.set_flag("no.such.flag", "on", "x")


def test_percentage_is_stable_per_student_and_about_right():
    flags.set_flag("leaderboard.cache", "30", "gradual rollout")
    flags.clear_cache()
    first = [flags.is_enabled("leaderboard.cache", student=i) for i in range(10_000)]
    second = [flags.is_enabled("leaderboard.cache", student=i) for i in range(10_000)]
    assert first == second
    share = sum(first) / len(first)
    assert 0.28 < share < 0.32
    # Raising the percentage only adds students: nobody who had it loses it.
    flags.set_flag("leaderboard.cache", "60", "more")
    flags.clear_cache()
    assert all(flags.is_enabled("leaderboard.cache", student=i) for i in range(10_000) if first[i])


def test_history_newest_first_and_by_key():
    flags.set_flag("journal.writes", "off", "one")
    flags.set_flag("leaderboard.cache", "off", "two")
    flags.set_flag("journal.writes", "on", "three")
    assert [e.reason for e in flags.history()] == ["three", "two", "one"]
    assert [e.reason for e in flags.history("journal.writes")] == ["three", "one"]


def test_rollback_last_n_restores_and_is_itself_a_change_set():
    flags.set_flag("journal.writes", "off", "a")
    flags.set_flag("leaderboard.cache", "25", "b")
    plan = flags.rollback_plan(last=2)
    assert [s.key for s in plan.steps] == ["leaderboard.cache", "journal.writes"]
    cs, events = flags.rollback(plan, "all clear", actor="oncall")
    assert value("journal.writes")["enabled"] and value("leaderboard.cache")["percent"] == 100
    assert {e.change_set for e in events} == {cs}
    # Rolling back the rollback re-applies what it undid.
    flags.rollback(flags.rollback_plan(last=1), "actually no")
    assert not value("journal.writes")["enabled"]
    assert value("leaderboard.cache")["percent"] == 25


def test_rollback_to_a_change_id_keeps_that_change():
    keep = flags.set_flag("journal.writes", "off", "keep this")
    flags.set_flag("leaderboard.cache", "off", "undo")
    flags.set_flag("rasch.auto", "off", "undo too")
    flags.rollback(flags.rollback_plan(to=keep.change_set[:8]), "back to keep")
    assert not value("journal.writes")["enabled"]
    assert value("leaderboard.cache")["enabled"] and value("rasch.auto")["enabled"]


def test_rollback_needs_a_reason_and_a_selection():
    flags.set_flag("journal.writes", "off", "a")
    with pytest.raises(flags.FlagError, match="reason"):
        flags.rollback(flags.rollback_plan(last=1), "")
    with pytest.raises(flags.FlagError, match="exactly one"):
        flags.rollback_plan()


def test_journal_kill_switch_stops_journal_writes(client):
    from backend.exams.models import AnswerEvent
    from tests.backend.factories import auth, make_exam, make_student

    exam = make_exam()
    _, token = make_student()
    sid = client.post(f"/api/exams/{exam.id}/sessions/", **auth(token)).json()["session_id"]
    flags.set_flag("journal.writes", "off", "test")
    r = client.post(
        f"/api/sessions/{sid}/answers/", {"question": 1, "answer": "9", "seq": 1},
        content_type="application/json", **auth(token),
    )  # fmt: skip
    assert r.json()["status"] == "saved"
    assert not AnswerEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_cli_set_history_rollback(monkeypatch):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    connection.close()
    run = CliRunner().invoke
    r = run(app, ["flags", "set", "journal.writes", "off"])
    assert r.exit_code == 1 and "reason" in r.stderr
    r = run(app, ["flags", "set", "journal.writes", "off", "--reason", "drill", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["new_value"] == {"enabled": False, "percent": 0}
    r = run(app, ["flags", "history", "--json"])
    assert json.loads(r.stdout)[0]["reason"] == "drill"
    r = run(app, ["rollback", "--last", "1", "--reason", "done"])  # no TTY, no --yes
    assert r.exit_code == 1 and "--yes" in r.stderr
    r = run(app, ["rollback", "--last", "1", "--reason", "done", "--yes", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["applied"] is True
    assert FeatureFlag.objects.get(key="journal.writes").enabled


@pytest.mark.django_db(transaction=True)
def test_a_change_reaches_another_process_within_the_ttl(settings):
    from tests.e2e.gunicorn_server import ROOT, django_database_url

    code = (
        "import os, sys, time, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'backend.settings'\n"
        "os.environ['FLAGS_CACHE_SECONDS'] = '1'\n"
        "django.setup()\n"
        "from backend.ops import flags\n"
        "print(flags.is_enabled('journal.writes'), flush=True)\n"
        "sys.stdin.readline()\n"
        "t = time.monotonic()\n"
        "while flags.is_enabled('journal.writes') and time.monotonic() - t < 10:\n"
        "    time.sleep(0.05)\n"
        "print(round(time.monotonic() - t, 2), flags.is_enabled('journal.writes'), flush=True)\n"
    )
    env = {"DATABASE_URL": django_database_url(), "PYTHONPATH": str(ROOT)}
    import os

    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "True"  # it has cached the flag as on
    flags.set_flag("journal.writes", "off", "cross-process test")
    t0 = time.monotonic()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    waited, still_on = proc.stdout.readline().split()
    proc.wait(timeout=10)
    assert still_on == "False"
    assert float(waited) <= 1.5 and time.monotonic() - t0 < 5


def test_unreadable_flags_are_off_without_a_query_or_a_log_line_per_call(monkeypatch, caplog):
    """A database outage: every flag reads as off, the database is asked again at most once a
    second (not once per request), the log says so once, and recovery is noticed."""
    calls = []

    def broken(*fields):
        calls.append(fields)
        raise RuntimeError("connection refused\nmore detail")

    flags.clear_cache()
    monkeypatch.setattr(FeatureFlag.objects, "values_list", broken)
    assert [flags.is_enabled("journal.writes") for _ in range(50)] == [False] * 50
    assert len(calls) == 1
    warnings = [r.message for r in caplog.records if "unreadable" in r.message]
    assert warnings == ["feature flags unreadable (connection refused): treating every flag as off"]
    monkeypatch.undo()
    flags._cache["until"] = 0.0  # the retry interval has passed
    assert flags.is_enabled("journal.writes")
    assert any("readable again" in r.message for r in caplog.records)


# --- Scheduled changes ------------------------------------------------------------------------


def _now():
    from django.utils import timezone

    return timezone.now()


def test_a_scheduled_change_applies_once_at_its_time_through_the_audited_change():
    import datetime as dt

    from backend.ops.models import ScheduledFlagChange

    now = _now()
    change = flags.schedule(
        "journal.writes", "off", now + dt.timedelta(hours=1), "exam start", actor="planner"
    )
    assert change.status == "pending" and change.value == {"enabled": False, "percent": 0}
    assert AuditEvent.objects.filter(action="flag.schedule", actor="planner").count() == 1
    assert [c.id for c in flags.scheduled()] == [change.id]

    assert flags.apply_due(now=now).applied == []  # not due yet
    assert value("journal.writes")["enabled"]

    report = flags.apply_due(now=now + dt.timedelta(hours=1, seconds=1))
    assert [c.id for c in report.applied] == [change.id] and not report.lock_held
    assert value("journal.writes") == {"enabled": False, "percent": 0}
    row = ScheduledFlagChange.objects.get(id=change.id)
    assert row.status == "applied" and row.applied_at is not None and row.result == "on -> off"
    (event,) = flags.history("journal.writes")
    assert event.actor == "planner" and event.change_set == row.change_set
    assert event.reason == f"exam start (scheduled change #{change.id})"

    again = flags.apply_due(now=now + dt.timedelta(hours=2))
    assert again.applied == [] and again.failed == []
    assert len(flags.history("journal.writes")) == 1
    assert flags.scheduled() == []
    assert [c.status for c in flags.scheduled(include_done=True)] == ["applied"]
    # A scheduled change is an ordinary change set: it rolls back like one.
    flags.rollback(flags.rollback_plan(last=1), "undo")
    assert value("journal.writes")["enabled"]


def test_schedule_refuses_what_could_not_apply():
    import datetime as dt

    now = _now()
    later = now + dt.timedelta(minutes=5)
    with pytest.raises(flags.FlagError, match="not in the future"):
        flags.schedule("journal.writes", "off", now - dt.timedelta(seconds=1), "x")
    with pytest.raises(flags.FlagError, match="unknown flag"):
        flags.schedule("no.such.flag", "off", later, "x")
    with pytest.raises(flags.FlagError, match="reason"):
        flags.schedule("journal.writes", "off", later, " ")
    with pytest.raises(flags.FlagError, match="percentage"):
        flags.schedule("journal.writes", "150", later, "x")
    assert flags.scheduled() == []


def test_cancel_a_scheduled_change():
    import datetime as dt

    now = _now()
    change = flags.schedule("leaderboard.cache", "25", now + dt.timedelta(minutes=10), "ramp")
    cancelled = flags.cancel_scheduled(change.id, "exam moved", actor="oncall")
    assert cancelled.status == "cancelled" and cancelled.cancelled_by == "oncall"
    assert cancelled.cancel_reason == "exam moved"
    event = AuditEvent.objects.get(action="flag.schedule.cancel")
    assert event.actor == "oncall" and event.details["scheduled_id"] == change.id
    assert flags.apply_due(now=now + dt.timedelta(hours=1)).applied == []
    assert value("leaderboard.cache")["percent"] == 100
    with pytest.raises(flags.FlagError, match=f"#{change.id} is already cancelled"):
        flags.cancel_scheduled(change.id, "again")
    with pytest.raises(flags.FlagError, match="no scheduled change #999999"):
        flags.cancel_scheduled(999999, "x")
    with pytest.raises(flags.FlagError, match="reason"):
        flags.cancel_scheduled(change.id, "")


def test_a_change_that_cannot_apply_is_marked_failed_and_not_retried():
    import datetime as dt

    from backend.ops.models import ScheduledFlagChange

    now = _now()
    FeatureFlag.objects.create(key="exam.banner", enabled=False, rollout_percent=0)
    change = flags.schedule("exam.banner", "on", now + dt.timedelta(minutes=1), "show it")
    FeatureFlag.objects.filter(key="exam.banner").delete()  # the flag went away meanwhile
    report = flags.apply_due(now=now + dt.timedelta(minutes=2))
    assert report.applied == [] and [c.id for c in report.failed] == [change.id]
    row = ScheduledFlagChange.objects.get(id=change.id)
    assert row.status == "failed" and "unknown flag 'exam.banner'" in row.result
    assert AuditEvent.objects.filter(action="flag.schedule.failed").count() == 1
    assert flags.apply_due(now=now + dt.timedelta(minutes=3)).failed == []


def test_parse_apply_at():
    import datetime as dt

    now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    assert flags.parse_apply_at("+30m", now) == now + dt.timedelta(minutes=30)
    assert flags.parse_apply_at("in 2h", now) == now + dt.timedelta(hours=2)
    assert flags.parse_apply_at("2026-12-01T09:00", now) == dt.datetime(
        2026, 12, 1, 9, 0, tzinfo=dt.UTC
    )
    assert flags.parse_apply_at("2026-12-01T09:00+02:00", now).astimezone(dt.UTC).hour == 7
    with pytest.raises(flags.FlagError, match="--at: not a time"):
        flags.parse_apply_at("tomorrow-ish", now)
    with pytest.raises(flags.FlagError, match="--at"):
        flags.parse_apply_at("+soon", now)


# --- Evaluation counts and stale flags ---------------------------------------------------------


@pytest.fixture
def fresh_usage():
    """No evaluation counted by an earlier test is waiting in this process's counters."""
    flags._usage.clear()
    flags._usage_seen.clear()
    yield
    flags._usage.clear()
    flags._usage_seen.clear()


def test_evaluations_are_counted_in_memory_and_flushed_in_one_write_per_flag_and_result(
    fresh_usage, django_assert_num_queries
):
    from backend.ops.models import FlagUsage

    FeatureFlag.objects.filter(key="leaderboard.cache").update(rollout_percent=50)
    flags.clear_cache()
    assert flags.is_enabled("journal.writes")  # loads the cache (one query)
    with django_assert_num_queries(0):  # no query per evaluation
        for _ in range(99):
            flags.is_enabled("journal.writes")
        results = [flags.is_enabled("leaderboard.cache", student=s) for s in range(200)]
    assert 60 < results.count(True) < 140  # about half of the students are in

    assert flags.flush_usage() == 300
    used = flags.usage(days=1)
    assert (used["journal.writes"].on, used["journal.writes"].off) == (100, 0)
    assert (used["leaderboard.cache"].on, used["leaderboard.cache"].off) == (
        results.count(True), results.count(False),
    )  # fmt: skip
    assert used["journal.writes"].last_seen_at is not None
    with django_assert_num_queries(0):
        assert flags.flush_usage() == 0  # nothing counted since: nothing written

    # A second flush adds to the same row (one row per flag, result and UTC day).
    flags.is_enabled("journal.writes")
    assert flags.flush_usage() == 1
    assert flags.usage(days=1)["journal.writes"].on == 101
    assert FlagUsage.objects.filter(key="journal.writes").count() == 1


def test_a_failed_flush_keeps_its_counts_for_the_next_one(fresh_usage, monkeypatch, caplog):
    from backend.ops.models import FlagUsage

    flags.clear_cache()
    for _ in range(3):
        flags.is_enabled("journal.writes")

    def down(*a, **k):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(FlagUsage.objects, "filter", down)
    with pytest.raises(RuntimeError):
        flags.flush_usage()
    assert any("kept for the next flush" in r.message for r in caplog.records)
    monkeypatch.undo()
    assert flags.flush_usage() == 3
    assert flags.usage(days=1)["journal.writes"].on == 3


def _usage_row(key, result, days_ago, count):
    import datetime as dt

    from backend.ops.models import FlagUsage

    day = _now().astimezone(dt.UTC).date() - dt.timedelta(days=days_ago)
    FlagUsage.objects.create(key=key, result=result, day=day, count=count, last_seen_at=_now())


def test_stale_flags_are_unchanged_and_one_valued_for_the_window(fresh_usage):
    import datetime as dt

    old = _now() - dt.timedelta(days=40)
    FeatureFlag.objects.update(updated_at=old)
    FeatureFlag.objects.filter(key="rasch.auto").update(enabled=False, rollout_percent=0)
    _usage_row("journal.writes", True, 35, 10)  # counting reaches back past the window
    _usage_row("journal.writes", True, 3, 500)
    _usage_row("leaderboard.cache", True, 2, 50)
    _usage_row("leaderboard.cache", False, 1, 50)  # both results: in use as a switch
    _usage_row("rasch.auto", False, 5, 7)
    flags.set_flag("telemetry.tracing", "off", "recent change")  # changed: not stale

    found = {f.key: f for f in flags.stale(days=30)}
    assert set(found) == {"journal.writes", "rasch.auto"}
    assert found["journal.writes"].verdict == "always on"
    assert (found["journal.writes"].on, found["journal.writes"].off) == (500, 0)
    assert found["journal.writes"].unchanged_since == old
    assert found["rasch.auto"].verdict == "always off"
    assert found["rasch.auto"].value == {"enabled": False, "percent": 0}

    # A flag nobody evaluated in the window is stale too.
    FeatureFlag.objects.create(key="exam.banner", enabled=False, rollout_percent=0,
                               updated_at=old)  # fmt: skip
    assert {f.key: f.verdict for f in flags.stale(days=30)}["exam.banner"] == "never evaluated"
    # A shorter window that leaves out journal.writes' evaluations still judges it.
    assert {f.key: f.verdict for f in flags.stale(days=2)}["journal.writes"] == "never evaluated"
    with pytest.raises(flags.FlagError, match="--days"):
        flags.stale(days=0)


def test_stale_judges_nothing_before_the_counts_cover_the_window(fresh_usage):
    import datetime as dt

    FeatureFlag.objects.update(updated_at=_now() - dt.timedelta(days=40))
    _usage_row("journal.writes", True, 3, 500)  # counting began 3 days ago
    assert flags.stale(days=30) == []
    assert {f.key for f in flags.stale(days=3)} >= {"journal.writes"}


# --- Exactly once with concurrent appliers, and the CLI ----------------------------------------


def _due_changes(n):
    """``n`` scheduled changes due now (committed, so other connections see them)."""
    import datetime as dt

    from backend.ops.models import ScheduledFlagChange

    now = _now()
    ids = [
        flags.schedule("leaderboard.cache", str(10 + i), now + dt.timedelta(seconds=1), f"s{i}").id
        for i in range(n)
    ]
    ScheduledFlagChange.objects.filter(id__in=ids).update(apply_at=now - dt.timedelta(seconds=1))
    return ids


def _race(fn, n=2):
    """``fn`` in ``n`` threads (each its own database connection), started together."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(n)
    results, failures = [None] * n, []

    def run(i):
        try:
            barrier.wait(timeout=10)
            results[i] = fn()
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    return results


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_appliers_apply_each_change_exactly_once_without_the_lock():
    ids = _due_changes(6)
    reports = _race(flags.apply_due_unlocked)
    applied = [c.id for r in reports for c in r.applied]
    assert sorted(applied) == sorted(ids)  # each once, none twice, none lost
    events = AuditEvent.objects.filter(action="flag.set", target="flag:leaderboard.cache")
    assert events.count() == 6
    assert sorted(e.reason for e in events) == sorted(
        f"s{i} (scheduled change #{cid})" for i, cid in enumerate(ids)
    )
    assert value("leaderboard.cache")["percent"] == 15  # the last one, in apply_at order


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_hosts_running_apply_due_at_once_one_applies():
    ids = _due_changes(3)
    reports = _race(flags.apply_due)
    assert sorted(c.id for r in reports for c in r.applied) == sorted(ids)
    assert AuditEvent.objects.filter(action="flag.set").count() == 3


@pytest.mark.django_db(transaction=True)
def test_cli_schedule_list_cancel_apply_due_stale(monkeypatch, fresh_usage):
    import datetime as dt

    from django.db import connection

    from backend.ops.models import ScheduledFlagChange
    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    connection.close()
    run = CliRunner().invoke
    r = run(app, ["flags", "schedule", "journal.writes", "off", "--at", "+1h"])
    assert r.exit_code == 1 and "reason" in r.stderr and r.stderr.count("\n") == 1
    r = run(app, ["flags", "schedule", "journal.writes", "off", "--at", "yesterday",
                  "--reason", "x"])  # fmt: skip
    assert r.exit_code == 1 and "--at: not a time" in r.stderr
    r = run(app, ["flags", "schedule", "journal.writes", "off", "--at", "+1h",
                  "--reason", "exam start", "--actor", "planner", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["status"] == "pending" and first["actor"] == "planner"
    r = run(app, ["flags", "schedule", "leaderboard.cache", "50", "--at", "+2h",
                  "--reason", "ramp"])  # fmt: skip
    assert r.exit_code == 0 and "scheduled #" in r.stdout and "-> 50% at" in r.stdout
    second = ScheduledFlagChange.objects.get(key="leaderboard.cache").id

    r = run(app, ["flags", "list", "--json"])
    listed = {f["key"]: f for f in json.loads(r.stdout)}
    assert [s["id"] for s in listed["journal.writes"]["scheduled"]] == [first["id"]]
    assert listed["journal.writes"]["evaluations_7d"] == {"on": 0, "off": 0}
    r = run(app, ["flags", "list"])
    assert "off at" in r.stdout and f"(#{first['id']})" in r.stdout

    r = run(app, ["flags", "scheduled", "--json"])
    assert [c["id"] for c in json.loads(r.stdout)] == [first["id"], second]
    r = run(app, ["flags", "show", "journal.writes"])
    assert r.exit_code == 0 and f"scheduled #{first['id']}: -> off at" in r.stdout
    assert "evaluated (7 days): 0 on, 0 off; last seen never" in r.stdout
    shown = json.loads(run(app, ["flags", "show", "journal.writes", "--json"]).stdout)
    assert [c["id"] for c in shown["scheduled"]] == [first["id"]]
    assert shown["evaluations_7d"] == {"on": 0, "off": 0} and shown["last_seen_at"] is None
    r = run(app, ["flags", "cancel-scheduled", str(second), "--reason", "not today"])
    assert r.exit_code == 0 and f"cancelled #{second}" in r.stdout
    r = run(app, ["flags", "cancel-scheduled", str(second), "--reason", "again"])
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"error: scheduled change #{second} is already cancelled"
    )

    r = run(app, ["flags", "apply-due"])
    assert r.exit_code == 0 and "no scheduled flag change is due" in r.stdout
    ScheduledFlagChange.objects.filter(id=first["id"]).update(
        apply_at=_now() - dt.timedelta(seconds=1)
    )
    r = run(app, ["flags", "apply-due", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["lock_held"] is False and [c["id"] for c in out["applied"]] == [first["id"]]
    assert not FeatureFlag.objects.get(key="journal.writes").enabled
    r = run(app, ["flags", "scheduled", "--all"])
    assert "applied" in r.stdout and "cancelled by" in r.stdout

    r = run(app, ["flags", "stale", "--days", "30", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []  # no counts reach back 30 days
    r = run(app, ["flags", "stale", "--days", "0"])
    assert r.exit_code != 0 and "Traceback" not in r.output


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("interval,wait", [("0.3", 1.5), ("600", 0)], ids=["thread", "at-exit"])
def test_another_process_flushes_its_counts_in_the_background_and_at_exit(interval, wait):
    """The real wiring: a process's flusher thread writes its counts every interval, and what
    is left is written when the process exits."""
    import os

    from tests.e2e.gunicorn_server import ROOT, django_database_url

    code = (
        "import os, sys, time, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'backend.settings'\n"
        "django.setup()\n"
        "from backend.ops import flags\n"
        "for _ in range(40):\n"
        "    flags.is_enabled('journal.writes')\n"
        f"time.sleep({wait})\n"
        "from backend.ops.models import FlagUsage\n"
        "print(sum(FlagUsage.objects.values_list('count', flat=True)), flush=True)\n"
    )
    env = {**os.environ, "DATABASE_URL": django_database_url(), "PYTHONPATH": str(ROOT),
           "FLAGS_USAGE_FLUSH_SECONDS": interval}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen_inside = int(out.stdout.strip())
    assert seen_inside == (40 if wait else 0)  # the thread had flushed / nothing yet
    used = flags.usage(days=1)["journal.writes"]
    assert (used.on, used.off) == (40, 0)  # and nothing is counted twice


def test_a_forked_child_does_not_count_its_parents_evaluations_again(fresh_usage):
    import os

    flags.clear_cache()
    flags.is_enabled("journal.writes")  # counted in this (parent) process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one evaluation of its own, then report what it would flush
        try:
            flags.is_enabled("journal.writes")
            os.write(write, repr(dict(flags._usage)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1000).decode()
    os.close(read)
    assert child == "{('journal.writes', True): 1}"
    assert dict(flags._usage) == {("journal.writes", True): 1}  # the parent keeps its own
