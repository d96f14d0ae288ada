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


# --- Issue #20: model checks, refusals and warnings through the service and the CLI --------


def _make_item_right_for_every_non_extreme(exam):
    """The exam's first item becomes right for every session that got anything else right
    (and wrong for the rest): its CML difficulty is minus infinity."""
    from backend.exams.models import Answer

    q, p = exam.keys.order_by("question", "part").values_list("question", "part")[0]
    # One session got everything wrong (so the item is not simply right for everyone).
    lowest = ExamSession.objects.filter(exam=exam).order_by("raw_score", "id").first()
    Answer.objects.filter(session=lowest).update(is_correct=False)
    others = Answer.objects.filter(session__exam=exam, is_correct=True).exclude(question=q, part=p)
    some_right = set(others.values_list("session_id", flat=True))
    first = Answer.objects.filter(session__exam=exam, question=q, part=p)
    first.filter(session_id__in=some_right).update(is_correct=True)
    first.exclude(session_id__in=some_right).update(is_correct=False)
    return f"{q}{p}"


def test_calibration_reports_the_model_checks_and_stores_them():
    import numpy as np

    from backend.exams.calibration import load_responses

    exam = _closed_exam(300, seed=5)
    label = _make_item_right_for_every_non_extreme(exam)
    summary = calibrate_exam(exam.id, actor="tester")
    by_label = {f"{r.question}{r.part}": r for r in summary.items}
    assert by_label[label].excluded == "right for every non-extreme"
    assert by_label[label].difficulty is None
    assert any(w.startswith("1 item(s) excluded") and label in w for w in summary.warnings)
    # KR-20 from its formula over the stored responses (unanswered counts as wrong).
    _, _, x = load_responses(exam.id)
    keep = np.ones(x.shape[1], dtype=bool)
    keep[[i for i, r in enumerate(summary.items) if r.excluded]] = False
    xs = x[:, keep]
    k = xs.shape[1]
    p = xs.mean(0)
    kr20 = k / (k - 1) * (1 - (p * (1 - p)).sum() / xs.sum(1).var())
    assert summary.kr20 == pytest.approx(kr20, abs=1e-6)
    # Sessions with extreme scores on the calibrated items are counted and said.
    scores = xs.sum(1)
    extreme = int(((scores == 0) | (scores == k)).sum())
    assert summary.n_extreme == extreme
    if extreme:
        assert any(f"{extreme} session(s) with all-right" in w for w in summary.warnings)
    a = summary.andersen
    assert a is not None and not a.unavailable and a.df == k - 1 and 0 <= a.p <= 1
    assert a.n_low + a.n_high == int(((scores > 0) & (scores < k)).sum())
    run = CalibrationRun.objects.get(pk=summary.run_id)
    assert run.kr20 == summary.kr20 and run.andersen_p == a.p and run.andersen_df == a.df
    assert run.warnings == summary.warnings
    stored = ItemCalibration.objects.get(run=run, question=by_label[label].question,
                                         part=by_label[label].part)  # fmt: skip
    assert stored.excluded == "right for every non-extreme" and stored.wald_z is None
    fitted = ItemCalibration.objects.filter(run=run, excluded="")
    assert fitted.count() == k
    assert not fitted.filter(infit_zstd__isnull=True).exists()
    assert not fitted.filter(wald_p__isnull=True).exists()


def test_two_sessions_refused_with_what_is_wrong(settings):
    from backend.exams.models import Answer

    settings.RASCH_MIN_SESSIONS = 2
    exam = _closed_exam(2, seed=6)
    first, second = ExamSession.objects.filter(exam=exam).order_by("id")
    Answer.objects.filter(session=first).update(is_correct=False)
    keys = list(exam.keys.order_by("question", "part").values_list("question", "part"))
    Answer.objects.filter(session=second).update(is_correct=False)
    for q, p in keys[:3]:
        Answer.objects.filter(session=second, question=q, part=p).update(is_correct=True)
    with pytest.raises(CalibrationRefused) as info:
        calibrate_exam(exam.id)
    message = str(info.value)
    assert "fewer than two items can be calibrated" in message
    assert "Singular" not in message
    q, p = keys[0]
    assert f"{q}{p} right for every non-extreme" in message
    failed = CalibrationRun.objects.get(exam=exam)
    assert failed.outcome == CalibrationRun.FAILED and "fewer than two items" in failed.error


def test_flag_rule_catches_a_guessing_item_at_n_2000():
    # A guessing item (P = 0.25 + 0.75 logistic(theta - 1)) among 19 Rasch items, 2,000
    # students, 10 samples: its mean-squares stay near 1.1 (inside 0.7-1.3, the old rule),
    # but it is flagged; Rasch items rarely are.
    import numpy as np

    from backend.exams.calibration import item_flags
    from backend.exams.rasch import calibrate, simulate

    rng = np.random.default_rng(2000)
    b = np.linspace(-2, 2, 20)
    guess_flagged, rasch_flags = 0, []
    for _ in range(10):
        x, theta = simulate(2000, b, rng)
        x[:, 0] = rng.random(2000) < 0.25 + 0.75 / (1 + np.exp(-(theta - 1.0)))
        res = calibrate(x)
        flags = [
            item_flags(res.infit[i], res.outfit[i], res.infit_zstd[i], res.outfit_zstd[i],
                       res.wald_p[i], 20)
            for i in range(20)
        ]  # fmt: skip
        guess_flagged += "misfit" in flags[0]
        rasch_flags += [bool(f) for f in flags[1:]]
        assert 0.7 < res.infit[0] < 1.3 and 0.7 < res.outfit[0] < 1.3
    assert guess_flagged >= 9
    assert np.mean(rasch_flags) <= 0.05


@pytest.mark.django_db(transaction=True)
def test_cli_shows_the_model_checks_and_warnings(monkeypatch):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    exam = _closed_exam(200, seed=7)
    label = _make_item_right_for_every_non_extreme(exam)
    connection.close()
    runner = CliRunner()
    r = runner.invoke(app, ["rasch", "calibrate", str(exam.id), "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    for key in ("kr20", "n_extreme", "andersen", "warnings", "reliability"):
        assert key in body
    assert set(body["andersen"]) == {"lr", "df", "p", "median", "n_low", "n_high", "dropped",
                                     "unavailable"}  # fmt: skip
    item = body["items"][1]
    for key in ("infit_zstd", "outfit_zstd", "wald_z", "wald_p", "flags"):
        assert key in item
    r = runner.invoke(app, ["rasch", "calibrate", str(exam.id), "--dry-run"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert f"KR-20 {body['kr20']:.2f}" in out
    assert "Andersen's LR test (raw score <=" in out
    assert (
        f"warning: 1 item(s) excluded, no difficulty: {label} (right for every non-extreme)" in out
    )
    r = runner.invoke(app, ["rasch", "calibrate", str(exam.id), "--json"])
    assert r.exit_code == 0, r.output
    stored = json.loads(r.stdout)
    r = runner.invoke(app, ["rasch", "status", str(exam.id), "--json"])
    assert json.loads(r.stdout)[0]["kr20"] == stored["kr20"]
    r = runner.invoke(app, ["rasch", "status", str(exam.id)])
    assert "KR-20" in r.stdout and f"{stored['kr20']:.2f}" in r.stdout
