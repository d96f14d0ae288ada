"""Scheduled-job outcomes as OpenTelemetry gauges, so alerts can fire on them:
``exam.retention.last_success_age`` (s), ``exam.retention.last_run_failed`` (0/1) and
``exam.calibration.failed_runs`` (failed runs in the last 24 h) and
``exam.calibration.exams_failing`` (exams whose latest calibration failed: 0 again after a
successful rerun, so the CalibrationFailed alert resolves)."""

from __future__ import annotations

import datetime as dt
import functools


def _hands_back_its_connection(callback):
    """A gauge callback that reads the database runs on the metric exporter's thread, which
    otherwise keeps a pooled connection for good (a process setting telemetry up again and
    again, as the tests do, ran its pool dry). The connection goes back after each reading,
    unless a transaction (a test's) holds it."""

    @functools.wraps(callback)
    def read(options):
        try:
            return list(callback(options))
        finally:
            from django.db import connection

            if not connection.in_atomic_block:
                connection.close()

    return read


def register(meter) -> None:
    from opentelemetry.metrics import Observation

    @_hands_back_its_connection
    def retention_age(_options):
        from django.utils import timezone

        from backend.ops.models import RetentionRun

        try:
            last = (
                RetentionRun.objects.filter(outcome="ok", dry_run=False)
                .order_by("-started_at")
                .first()
            )
        except Exception:  # the exporter thread must never die on a database hiccup
            return
        if last is not None:
            yield Observation((timezone.now() - last.started_at).total_seconds())

    @_hands_back_its_connection
    def retention_failed(_options):
        from backend.ops.locks import outcome_now
        from backend.ops.models import RetentionRun
        from backend.ops.retention import FAILED_OUTCOMES, LOCK

        try:
            last = RetentionRun.objects.filter(dry_run=False).order_by("-started_at").first()
            # A run killed with kill -9 stays "running" in the ledger; without its lock it
            # is abandoned, and that is a failure.
            outcome = outcome_now(last.outcome, LOCK) if last is not None else None
        except Exception:
            return
        if last is not None:
            yield Observation(1 if outcome in FAILED_OUTCOMES else 0)

    def abandoned(exam_ids) -> int:
        """Of these exams' "running" calibration runs, those whose job lock is free: killed
        mid-way (kill -9), so abandoned, and failed."""
        from backend.exams.calibration import run_lock
        from backend.ops.locks import is_held

        return sum(not is_held(run_lock(exam_id)) for exam_id in exam_ids)

    @_hands_back_its_connection
    def calibration_failed(_options):
        from django.utils import timezone

        from backend.exams.calibration import RUNNING
        from backend.exams.models import CalibrationRun

        try:
            since = timezone.now() - dt.timedelta(hours=24)
            recent = CalibrationRun.objects.filter(started_at__gte=since)
            n = recent.filter(outcome="failed").count()
            n += abandoned(recent.filter(outcome=RUNNING).values_list("exam_id", flat=True))
        except Exception:
            return
        yield Observation(n)

    @_hands_back_its_connection
    def exams_failing(_options):
        from django.db.models import OuterRef, Subquery

        from backend.exams.calibration import RUNNING
        from backend.exams.models import CalibrationRun, Exam

        latest = (
            CalibrationRun.objects.filter(
                exam=OuterRef("pk"), outcome__in=["ok", "failed", RUNNING]
            )
            .order_by("-started_at")
            .values("outcome")[:1]
        )
        try:
            last = Exam.objects.annotate(last=Subquery(latest))
            n = last.filter(last="failed").count()
            n += abandoned(last.filter(last=RUNNING).values_list("id", flat=True))
        except Exception:
            return
        yield Observation(n)

    meter.create_observable_gauge(
        "exam.calibration.exams_failing", callbacks=[exams_failing], unit="{exam}",
        description="Exams whose latest Rasch calibration run failed",
    )  # fmt: skip
    meter.create_observable_gauge(
        "exam.retention.last_success_age", callbacks=[retention_age], unit="s",
        description="Seconds since the last successful retention run",
    )  # fmt: skip
    meter.create_observable_gauge(
        "exam.retention.last_run_failed", callbacks=[retention_failed], unit="",
        description="1 when the latest retention run failed",
    )  # fmt: skip
    meter.create_observable_gauge(
        "exam.calibration.failed_runs", callbacks=[calibration_failed], unit="",
        description="Rasch calibration runs that failed in the last 24 hours",
    )  # fmt: skip
