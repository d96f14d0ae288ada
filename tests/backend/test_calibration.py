"""Calibration service and `opsctl rasch`, on both databases, over seeded demo data."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from django.utils import timezone
from typer.testing import CliRunner

from backend.exams.calibration import CalibrationRefused, calibrate_exam, calibration_status
from backend.exams.leaderboard import leaderboard_page
from backend.exams.models import CalibrationRun, ExamSession, ItemCalibration
from backend.exams.seed import create_exam, create_students, simulate_sessions
from backend.ops.models import AuditEvent
from opsctl.cli import app

pytestmark = pytest.mark.django_db


def _closed_exam(n_students: int, seed: int = 3):
    rng = random.Random(seed)
    now = timezone.now()
    exam = create_exam(
        "Closed", now - dt.timedelta(days=1, hours=3), now - dt.timedelta(days=1),
        questions=12, rng=rng,
    )  # fmt: skip
    people = create_students(n_students, prefix=f"cal{seed}", rng=rng)
    simulate_sessions(exam, people, rng, submitted=True)
    return exam


def test_calibrate_stores_items_abilities_and_a_run():
    exam = _closed_exam(200)
    summary = calibrate_exam(exam.id, actor="tester")
    assert summary.outcome == "ok" and summary.converged
    run = CalibrationRun.objects.get(pk=summary.run_id)
    assert run.is_current and run.n_persons == 200 and run.reliability > 0
    assert ItemCalibration.objects.filter(run=run).count() == exam.keys.count()
    sessions = ExamSession.objects.filter(exam=exam)
    assert not sessions.filter(scaled_score__isnull=True).exists()
    low, high = sessions.order_by("raw_score").first(), sessions.order_by("-raw_score").first()
    assert low.ability < high.ability and low.scaled_score < high.scaled_score
    assert AuditEvent.objects.filter(action="rasch.calibrate", actor="tester").count() == 1
    # Once calibrated, the leaderboard ranks by scaled score.
    page = leaderboard_page(exam.id, 5, None)
    assert page.ranked_by == "scaled_score"
    assert [e["score"] for e in page.entries] == sorted(
        (e["score"] for e in page.entries), reverse=True
    )


def test_rerun_replaces_current_results_and_keeps_history():
    exam = _closed_exam(120)
    first = calibrate_exam(exam.id)
    second = calibrate_exam(exam.id)
    runs = CalibrationRun.objects.filter(exam=exam)
    assert runs.count() == 2
    assert list(runs.filter(is_current=True).values_list("id", flat=True)) == [second.run_id]
    assert ItemCalibration.objects.filter(run_id=first.run_id).exists()  # history kept


def test_dry_run_stores_nothing():
    exam = _closed_exam(60)
    summary = calibrate_exam(exam.id, dry_run=True)
    assert summary.run_id is None and summary.items
    assert not CalibrationRun.objects.exists()
    assert not ExamSession.objects.filter(scaled_score__isnull=False).exists()


def test_too_few_sessions_refused(settings):
    settings.RASCH_MIN_SESSIONS = 10
    exam = _closed_exam(6)
    with pytest.raises(CalibrationRefused, match="needs at least 10"):
        calibrate_exam(exam.id)
    assert not CalibrationRun.objects.exists()


def test_status_reports_what_needs_calibration():
    exam = _closed_exam(30)
    (st,) = calibration_status(exam.id)
    assert st.closed and st.needs_calibration and st.scored_sessions == 30
    calibrate_exam(exam.id)
    (st,) = calibration_status(exam.id)
    assert not st.needs_calibration and st.current_run_id is not None


@pytest.mark.django_db(transaction=True)
def test_cli_calibrate_status_and_auto(monkeypatch):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    exam = _closed_exam(40)
    connection.close()
    runner = CliRunner()
    r = runner.invoke(app, ["rasch", "calibrate", str(exam.id), "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["dry_run"] and body["run_id"] is None and len(body["items"]) == 14
    r = runner.invoke(app, ["rasch", "auto", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["calibrated"] == [exam.id]
    r = runner.invoke(app, ["rasch", "status", str(exam.id), "--json"])
    assert json.loads(r.stdout)[0]["current_run_id"] is not None
    r = runner.invoke(app, ["rasch", "calibrate", "999999"])
    assert r.exit_code == 2 and "no exam 999999" in r.stderr
