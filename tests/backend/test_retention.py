"""Retention: exactly what policy says goes, nothing else; dry-run = real run; resumable;
one purger across concurrent runs."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from django.contrib.sessions.models import Session
from typer.testing import CliRunner

from backend.exams.models import Answer, AnswerEvent, ExamSession
from backend.ops import retention
from backend.ops.locks import job_lock
from backend.ops.models import AuditEvent, ResourceAlert, RetentionRun
from tests.backend.factories import make_exam, make_student

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SEC = dt.timedelta(seconds=1)


def _session(exam, name, status, submitted_at):
    student, _ = make_student(name, ext=name)
    s = ExamSession.objects.create(
        student=student, exam=exam, status=status, deadline=NOW, submitted_at=submitted_at,
        started_at=(submitted_at or NOW) - dt.timedelta(hours=1),
    )  # fmt: skip
    Answer.objects.create(session=s, question=1, part="", value="1", seq=1)
    AnswerEvent.objects.bulk_create(
        [AnswerEvent(session=s, question=1, part="", value=str(i), seq=i) for i in range(3)]
    )
    return s


@pytest.fixture
def world(tmp_path, settings, monkeypatch):
    """Rows on both sides of every cut-off, and exactly at it."""
    monkeypatch.setenv("OPS_TELEMETRY_DIR", str(tmp_path))
    exam = make_exam(opens=dt.timedelta(days=-100), closes=dt.timedelta(days=-99))
    cut = NOW - 30 * DAY
    s_old = _session(exam, "old", "submitted", cut - SEC)  # eligible
    s_expired = _session(exam, "expired", "expired", cut - DAY)  # eligible
    s_at = _session(exam, "at", "submitted", cut)  # exactly at the cut-off: kept
    s_new = _session(exam, "new", "submitted", cut + SEC)  # kept
    s_live = _session(exam, "live", "in_progress", None)  # never
    for resolved in (NOW - 90 * DAY - SEC, NOW - 90 * DAY, None):
        ResourceAlert.objects.create(
            probe="disk", host="h", severity="warning", value=90, threshold=85,
            opened_at=NOW - 200 * DAY, resolved_at=resolved,
        )  # fmt: skip
    for created in (NOW - 365 * DAY - SEC, NOW - 365 * DAY, NOW):
        AuditEvent.objects.create(actor="x", action="t", created_at=created)
    for key, expire in (("a" * 32, NOW - SEC), ("b" * 32, NOW), ("c" * 32, NOW + DAY)):
        Session.objects.create(session_key=key, session_data="x", expire_date=expire)
    for name, age in (("traces-h-1-old.jsonl", 7 * DAY + SEC), ("traces-h-1-new.jsonl", DAY)):
        p = tmp_path / name
        p.write_text("{}\n" * 10)
        t = (NOW - age).timestamp()
        os.utime(p, (t, t))
    return {"old": s_old, "expired": s_expired, "at": s_at, "new": s_new, "live": s_live,
            "dir": tmp_path}  # fmt: skip


EXPECTED = {"answer_journal": 6, "resolved_alerts": 1, "audit_events": 1,
            "django_sessions": 1, "telemetry_files": 1}  # fmt: skip


def _by_name(report):
    return {r.name: r for r in report.policies}


@pytest.mark.django_db(transaction=True)
def test_only_eligible_rows_go_and_dry_run_matches(world):
    dry = retention.run(dry_run=True, now=NOW)
    assert {n: r.eligible_before for n, r in _by_name(dry).items()} == EXPECTED
    assert AnswerEvent.objects.count() == 15  # a dry run deletes nothing
    real = retention.run(now=NOW, batch_size=2)
    assert real.outcome == "ok" and real.exit_code == 0
    assert {n: r.deleted for n, r in _by_name(real).items()} == EXPECTED
    assert _by_name(real)["answer_journal"].batches >= 3  # batched by primary key
    remaining = set(AnswerEvent.objects.values_list("session_id", flat=True))
    assert remaining == {world["at"].id, world["new"].id, world["live"].id}
    assert Answer.objects.count() == 5  # answers of submitted sessions are never touched
    assert ResourceAlert.objects.count() == 2
    assert ResourceAlert.objects.filter(resolved_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="t").count() == 2
    assert set(Session.objects.values_list("session_key", flat=True)) == {"b" * 32, "c" * 32}
    assert sorted(p.name for p in world["dir"].iterdir()) == ["traces-h-1-new.jsonl"]
    assert _by_name(real)["telemetry_files"].bytes_reclaimed == 30
    run = RetentionRun.objects.get(pk=real.run_id)
    assert run.outcome == "ok" and run.policies["answer_journal"]["deleted"] == 6
    assert AuditEvent.objects.filter(action="retention.run").count() == 1
    again = retention.run(now=NOW)
    assert sum(r.deleted for r in again.policies) == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_between_batches_resumes(world):
    calls = []

    def die_after_first_batch(name, done, total):
        calls.append(done)
        raise KeyboardInterrupt  # the process is killed mid-run

    with pytest.raises(KeyboardInterrupt):
        retention.run(now=NOW, batch_size=4, only=["answer_journal"],
                      progress=die_after_first_batch)  # fmt: skip
    assert AnswerEvent.objects.count() == 15 - 4  # one whole batch went, no partial batch
    report = retention.run(now=NOW, batch_size=4, only=["answer_journal"])
    assert report.outcome == "ok" and _by_name(report)["answer_journal"].deleted == 2


@pytest.mark.django_db(transaction=True)
def test_budget_stops_cleanly_with_work_left(world, settings):
    settings.RETENTION_PAUSE_SECONDS = 0.3
    report = retention.run(now=NOW, batch_size=1, max_seconds=0.5, only=["answer_journal"])
    assert report.outcome == "budget" and report.exit_code == 1
    assert 0 < _by_name(report)["answer_journal"].remaining < 6


@pytest.mark.django_db(transaction=True)
def test_concurrent_run_reports_the_lock_and_exits_cleanly(world):
    with job_lock("retention"):
        report = retention.run(now=NOW)
    assert report.outcome == "locked" and report.exit_code == 0
    assert "already running" in report.error
    assert AnswerEvent.objects.count() == 15


@pytest.mark.django_db(transaction=True)
def test_status_and_cli(world, monkeypatch):
    from django.db import connection

    from opsctl.cli import app
    from tests.e2e.gunicorn_server import django_database_url

    by = {s.name: s for s in retention.status(now=NOW)}
    assert by["answer_journal"].eligible_now == 6 and by["answer_journal"].overdue
    assert by["answer_journal"].oldest_age_days > 30
    monkeypatch.setenv("DATABASE_URL", django_database_url())
    connection.close()
    run = CliRunner().invoke
    r = run(app, ["retention", "run", "--dry-run", "--json", "--only", "audit_events"])
    assert r.exit_code == 0, r.output
    r = run(app, ["retention", "run", "--only", "nope"])
    # 1 means "stopped at the time budget"; a run that cannot start has failed: 2.
    assert r.exit_code == 2 and "unknown policy" in r.stderr
    assert r.stderr.count("\n") == 1
    r = run(app, ["retention", "status", "--json"])
    assert r.exit_code == 0 and {x["name"] for x in json.loads(r.stdout)} == set(EXPECTED)


def test_policy_file_overrides(tmp_path):
    from backend.ops.retention_policy import DEFAULTS, build, load_overrides

    f = "[policies.answer_journal]\ndays = 60\n"
    policies = {p.name: p for p in build(load_overrides(f, DEFAULTS))}
    assert policies["answer_journal"].period == dt.timedelta(days=60)
    with pytest.raises(ValueError, match="unknown policy"):
        load_overrides("[policies.nope]\ndays = 1\n", DEFAULTS)


@pytest.mark.parametrize(
    ("days", "why"),
    [("true", "not bool"), ("1e10", "between 0 and 36500"), ("inf", "between 0 and 36500"),
     ("nan", "between 0 and 36500"), ("-1", "between 0 and 36500"), ('"30"', "not str"),
     ("[30]", "not list")],
)  # fmt: skip
def test_policy_file_days_must_be_a_real_number_of_days(days, why):
    from backend.ops.errors import InvalidInput
    from backend.ops.retention_policy import DEFAULTS, build, load_overrides

    with pytest.raises(InvalidInput, match=why):
        build(load_overrides(f"[policies.answer_journal]\ndays = {days}\n", DEFAULTS))


def test_policy_file_errors_are_one_line_before_the_database(tmp_path):
    from opsctl.cli import app

    bad = tmp_path / "p.toml"
    cases = [("[policies.answer_journal]\ndays = true\n", "days must be a number"),
             ("[policies.answer_journal\n", "not valid TOML"),
             ("[policies.answer_journal]\nweeks = 2\n", "may set only days")]  # fmt: skip
    for text, needle in cases:
        bad.write_text(text)
        for args, code in ((["run"], 2), (["status"], 1)):
            # A dead database: the policy file is checked first, so its error is the one shown.
            r = CliRunner().invoke(
                app, ["retention", *args, "--policy-file", str(bad),
                      "--database-url", "postgresql://u@127.0.0.1:9/x"],
            )  # fmt: skip
            assert r.exit_code == code, r.output
            assert needle in r.stderr and r.stderr.count("\n") == 1
    r = CliRunner().invoke(app, ["retention", "run", "--policy-file", str(tmp_path / "none")])
    assert r.exit_code == 2 and "cannot read policy file" in r.stderr


@pytest.mark.django_db(transaction=True)
def test_keyset_batches_skip_ineligible_rows_interleaved_in_key_order():
    """Journal rows of a scored session and of a live one alternate in key order (as when both
    sat the same exam): each batch covers a run of consecutive keys and deletes only the
    eligible rows among them; every eligible row goes, no live row does."""
    exam = make_exam(opens=dt.timedelta(days=-100), closes=dt.timedelta(days=-99))
    old = _session(exam, "old2", "submitted", NOW - 40 * DAY)
    live = _session(exam, "live2", "in_progress", None)
    AnswerEvent.objects.bulk_create(
        [AnswerEvent(session=(old, live)[i % 2], question=2, part="", value="v", seq=10 + i)
         for i in range(20)]
    )  # fmt: skip
    keys = sorted(AnswerEvent.objects.values_list("id", flat=True))
    old_keys = sorted(AnswerEvent.objects.filter(session=old).values_list("id", flat=True))
    span = keys[keys.index(old_keys[0]) : keys.index(old_keys[-1]) + 1]
    report = retention.run(now=NOW, batch_size=3, only=["answer_journal"])
    result = _by_name(report)["answer_journal"]
    assert result.eligible_before == result.deleted == len(old_keys) == 13
    assert result.batches == -(-len(span) // 3)  # ceil: consecutive keys, eligible or not
    assert result.remaining == 0
    assert not AnswerEvent.objects.filter(session=old).exists()
    assert AnswerEvent.objects.filter(session=live).count() == 13


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_purge_leaves_the_connection_as_it_found_it(world):
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW lock_timeout")
        before = cur.fetchone()[0]
    retention.run(now=NOW, batch_size=2, only=["answer_journal"])
    with connection.cursor() as cur:
        cur.execute("SHOW lock_timeout")
        assert cur.fetchone()[0] == before
        cur.execute("SHOW enable_hashjoin")
        assert cur.fetchone()[0] == "on"


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_busy_database_gets_small_batches(world, settings):
    """Another connection that just ran a statement makes the database busy; the purge then
    takes batches of RETENTION_BUSY_BATCH_SIZE keys and rests between them."""
    import psycopg
    from django.db import connection

    s = connection.settings_dict
    where = {"dbname": s["NAME"], "user": s["USER"] or "postgres",
             "host": s["HOST"] or "127.0.0.1", "port": s["PORT"] or 5432}  # fmt: skip
    with psycopg.connect(**where) as other:
        other.execute("SELECT 1")  # and stays in its transaction: busy until it ends
        assert retention._busy()
        settings.RETENTION_BUSY_BATCH_SIZE = 2
        report = retention.run(now=NOW, batch_size=1000, only=["answer_journal"])
    result = _by_name(report)["answer_journal"]
    assert result.deleted == 6 and result.batches == 3


@pytest.mark.django_db(transaction=True)
def test_quiet_database_gets_whole_batches(world, settings):
    settings.RETENTION_BUSY_CLIENTS = 10_000  # nothing is ever that busy
    report = retention.run(now=NOW, batch_size=1000, only=["answer_journal"])
    result = _by_name(report)["answer_journal"]
    assert result.deleted == 6 and result.batches == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_with_kill_9_is_abandoned_and_counts_as_failed(monkeypatch):
    """A real process takes the job lock and records a run, then dies by SIGKILL: while it
    lives the run is "running"; after, "abandoned": failed in status, the gauge and the exit
    code, and the next run records it as abandoned for good."""
    import subprocess
    import sys
    import textwrap
    import time

    from backend.ops import job_metrics
    from opsctl.cli import app
    from tests.backend.gauges import GaugeReader
    from tests.e2e.gunicorn_server import ROOT, django_database_url

    meter = GaugeReader()
    job_metrics.register(meter)
    url = django_database_url()
    code = textwrap.dedent("""
        import os, sys, time
        os.environ["DATABASE_URL"] = sys.argv[1]
        from opsctl.service import setup_django
        setup_django()
        from backend.ops.locks import job_lock
        from backend.ops.models import RetentionRun
        with job_lock("retention"):
            RetentionRun.objects.create(dry_run=False, policies={"audit_events": {}})
            print("holding", flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "holding"
        by = {s.name: s for s in retention.status()}
        assert by["audit_events"].last_outcome == "running"
        assert not by["audit_events"].last_failed
        assert meter.read("exam.retention.last_run_failed") == [0]
    finally:
        proc.kill()
        proc.wait()
    # PostgreSQL ends the dead connection's session (and its advisory lock) when it sees the
    # socket close: give it a moment.
    deadline = time.monotonic() + 20
    while True:
        by = {s.name: s for s in retention.status()}
        if by["audit_events"].last_outcome == "abandoned" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert by["audit_events"].last_outcome == "abandoned" and by["audit_events"].last_failed
    assert meter.read("exam.retention.last_run_failed") == [1]
    monkeypatch.setenv("DATABASE_URL", url)
    r = CliRunner().invoke(app, ["retention", "status", "--json"])
    assert r.exit_code == 2, r.output
    assert {x["name"]: x["last_outcome"] for x in json.loads(r.stdout)}["audit_events"] == (
        "abandoned"
    )
    report = retention.run(only=["audit_events"])
    assert report.outcome == "ok"
    assert list(RetentionRun.objects.order_by("started_at").values_list("outcome", flat=True)) == [
        "abandoned", "ok",
    ]  # fmt: skip
    assert meter.read("exam.retention.last_run_failed") == [0]


@pytest.mark.django_db(transaction=True)
def test_vacuum_after_a_purge_is_the_one_vacuum_and_is_audited(world):
    """--vacuum goes through backend.ops.vacuum like `opsctl vacuum`: purged tables only,
    VACUUM (ANALYZE) on PostgreSQL / ANALYZE on SQLite, one audit event per table."""
    from django.db import connection

    report = retention.run(now=NOW, vacuum=True, only=["answer_journal", "audit_events"],
                           actor="cron")  # fmt: skip
    assert report.outcome == "ok", report.error
    assert report.vacuumed == ["exams_answerevent", "ops_auditevent"]
    events = AuditEvent.objects.filter(action="vacuum").order_by("target")
    assert [e.target for e in events] == ["exams_answerevent", "ops_auditevent"]
    mode = "VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE"
    assert {e.details["mode"] for e in events} == {mode} and {e.actor for e in events} == {"cron"}


def test_audit_limits_match_the_model():
    from backend.ops import audit

    assert AuditEvent._meta.get_field("actor").max_length == audit.ACTOR_MAX
    assert AuditEvent._meta.get_field("target").max_length == audit.TARGET_MAX
