"""Job ledgers under kill -9: a run recorded as running whose job lock is free is abandoned,
and counts as failed (status, gauges, exit codes). Calibration here; retention's real
SIGKILL test is in test_retention.py."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.utils import timezone
from typer.testing import CliRunner

from backend.exams.calibration import (
    RUNNING,
    CalibrationRefused,
    calibrate_exam,
    calibration_status,
    run_lock,
)
from backend.exams.models import CalibrationRun
from backend.exams.seed import create_exam, create_students, simulate_sessions
from backend.ops import job_metrics
from backend.ops.locks import is_held, job_lock
from tests.backend.gauges import GaugeReader

pytestmark = pytest.mark.django_db(transaction=True)


def _exam():
    rng = random.Random(5)
    now = timezone.now()
    exam = create_exam(
        "Closed", now - dt.timedelta(days=1, hours=3), now - dt.timedelta(days=1),
        questions=8, rng=rng,
    )  # fmt: skip
    simulate_sessions(exam, create_students(30, prefix="led", rng=rng), rng, submitted=True)
    return exam


def test_is_held_sees_a_lock_without_taking_it():
    assert not is_held("ledger-test")
    with job_lock("ledger-test"):
        assert is_held("ledger-test")
    assert not is_held("ledger-test")


def test_a_dead_calibration_run_is_abandoned_and_counted_as_failed():
    exam = _exam()
    meter = GaugeReader()
    job_metrics.register(meter)
    assert meter.read("exam.calibration.failed_runs") == [0]
    CalibrationRun.objects.create(exam=exam, outcome=RUNNING)  # what kill -9 leaves behind
    with job_lock(run_lock(exam.id)):  # its process still alive: running, not a failure
        assert calibration_status(exam.id)[0].last_outcome == "running"
        assert meter.read("exam.calibration.failed_runs") == [0]
        with pytest.raises(CalibrationRefused, match="being calibrated by another process"):
            calibrate_exam(exam.id)
    assert calibration_status(exam.id)[0].last_outcome == "abandoned"
    assert meter.read("exam.calibration.failed_runs") == [1]


def test_a_finished_calibration_leaves_only_its_own_run():
    exam = _exam()
    summary = calibrate_exam(exam.id)
    outcomes = list(CalibrationRun.objects.filter(exam=exam).values_list("outcome", flat=True))
    assert outcomes == ["ok"] and summary.run_id is not None
    assert not is_held(run_lock(exam.id))


def test_rasch_auto_fails_when_the_flag_cannot_be_read(monkeypatch):
    """An unreadable flag table is not "switched off": rasch auto exits 2 with one line."""
    from backend.ops import flags
    from opsctl.cli import app

    def unreadable():
        raise flags._Unreadable("no such table: ops_featureflag")

    monkeypatch.setattr(flags, "_load", unreadable)
    r = CliRunner().invoke(app, ["rasch", "auto"])
    assert r.exit_code == 2, r.output
    assert "switched off" not in r.output
    assert r.stderr.count("\n") == 1 and "cannot read feature flag 'rasch.auto'" in r.stderr


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("false", False),
     ("No", False), ("off", False), ("", None), (None, None)],
)  # fmt: skip
def test_env_bool_is_strict(monkeypatch, raw, value):
    from backend.config import env_bool

    if raw is None:
        monkeypatch.delenv("OPS_T_BOOL", raising=False)
    else:
        monkeypatch.setenv("OPS_T_BOOL", raw)
    expected = value if value is not None else "default"
    assert env_bool("OPS_T_BOOL", "default") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["ture", "2", "enabled", "y e s"])
def test_env_bool_refuses_what_it_cannot_read(monkeypatch, raw):
    from backend.config import ConfigError, env_bool

    monkeypatch.setenv("DEBUG", raw)
    with pytest.raises(ConfigError, match=f"DEBUG={raw!r} is not a boolean"):
        env_bool("DEBUG")


def test_env_duration_ms(monkeypatch):
    from backend.config import ConfigError, env_duration_ms

    monkeypatch.delenv("OPS_T_DUR", raising=False)
    assert env_duration_ms("OPS_T_DUR", "2s") == 2000
    monkeypatch.setenv("OPS_T_DUR", "500ms")
    assert env_duration_ms("OPS_T_DUR", "2s") == 500
    monkeypatch.setenv("OPS_T_DUR", "soon")
    with pytest.raises(ConfigError, match="OPS_T_DUR: not a duration"):
        env_duration_ms("OPS_T_DUR", "2s")
