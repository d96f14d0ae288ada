"""Calibrate one exam: responses from the database -> Rasch -> results stored, audited.

Unanswered questions of a submitted session count as wrong (as they do in the raw score);
a session with no answers at all still takes part, with a zero score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from backend.exams.models import CalibrationRun, Exam, ExamSession, ItemCalibration
from backend.ops import audit

MISFIT_LOW, MISFIT_HIGH = 0.7, 1.3
SCORED = (ExamSession.SUBMITTED, ExamSession.EXPIRED)


class CalibrationRefused(Exception):
    """The exam cannot be calibrated (too few sessions, nothing to estimate)."""


@dataclass
class ItemRow:
    question: int
    part: str
    difficulty: float | None
    se: float | None
    infit: float | None
    outfit: float | None
    point_measure: float | None
    n_responses: int
    p_correct: float | None
    excluded: str = ""

    @property
    def misfit(self) -> bool:
        return any(
            v is not None and not (MISFIT_LOW <= v <= MISFIT_HIGH)
            for v in (self.infit, self.outfit)
        )


@dataclass
class CalibrationSummary:
    exam_id: int
    run_id: int | None
    outcome: str
    dry_run: bool
    method: str
    n_persons: int
    n_items: int
    iterations: int
    converged: bool
    reliability: float | None
    duration_s: float
    items: list[ItemRow] = field(default_factory=list)


@dataclass
class ExamCalibrationStatus:
    exam_id: int
    title: str
    closed: bool
    scored_sessions: int
    current_run_id: int | None
    calibrated_at: str | None
    reliability: float | None
    last_outcome: str | None
    needs_calibration: bool


def load_responses(exam_id: int):
    """One query for every scored session's answers; returns (session ids, items, matrix)."""
    import numpy as np

    items = [
        (q, p)
        for q, p in Exam.objects.get(pk=exam_id)
        .keys.order_by("question", "part")
        .values_list("question", "part")
    ]
    col = {qp: j for j, qp in enumerate(items)}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT s.id, a.question, a.part, a.is_correct FROM exams_examsession s "
            "LEFT JOIN exams_answer a ON a.session_id = s.id "
            "WHERE s.exam_id = %s AND s.status IN (%s, %s) ORDER BY s.id",
            [exam_id, *SCORED],
        )
        rows = cur.fetchall()
    sessions: dict[int, int] = {}
    for sid, *_ in rows:
        sessions.setdefault(sid, len(sessions))
    x = np.zeros((len(sessions), len(items)))
    for sid, q, p, ok in rows:
        if q is not None and ok and (q, p) in col:
            x[sessions[sid], col[(q, p)]] = 1.0
    return list(sessions), items, x


def _store_abilities(session_ids, ability, ability_se, scaled) -> None:
    rows = [
        (float(a), float(s), float(sc), sid)
        for sid, a, s, sc in zip(session_ids, ability, ability_se, scaled, strict=True)
    ]
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute(
                "CREATE TEMP TABLE calib_abilities "
                "(ability float8, se float8, scaled float8, id bigint) ON COMMIT DROP"
            )
            with cur.cursor.copy("COPY calib_abilities FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                "UPDATE exams_examsession e SET ability = c.ability, ability_se = c.se, "
                "scaled_score = c.scaled FROM calib_abilities c WHERE e.id = c.id"
            )
            cur.execute("DROP TABLE calib_abilities")
        else:
            cur.executemany(
                "UPDATE exams_examsession SET ability = %s, ability_se = %s, scaled_score = %s "
                "WHERE id = %s",
                rows,
            )


def _num(v) -> float | None:
    import math

    return None if v is None or math.isnan(v) else round(float(v), 6)


RUNNING = "running"  # in the ledger while a run works; "abandoned" once its lock is free


def run_lock(exam_id: int) -> str:
    return f"calibration-{exam_id}"


def calibrate_exam(
    exam_id: int, dry_run: bool = False, actor: str | None = None
) -> CalibrationSummary:
    """Calibrate under the exam's job lock with a "running" ledger row, so a process killed
    mid-run (kill -9) leaves a run that shows as abandoned (a failure), not nothing."""
    from backend.ops.locks import LockHeld, job_lock

    if dry_run or not Exam.objects.filter(pk=exam_id).exists():
        return _calibrate_exam(exam_id, dry_run, actor)
    try:
        with job_lock(run_lock(exam_id)):
            ledger = CalibrationRun.objects.create(
                exam_id=exam_id, outcome=RUNNING, actor=actor or audit.default_actor()
            )
            try:
                summary = _calibrate_exam(exam_id, dry_run, actor)
            except CalibrationRefused:  # refused, or a failure it recorded itself
                ledger.delete()
                raise
            except Exception as exc:
                ledger.outcome, ledger.finished_at = CalibrationRun.FAILED, timezone.now()
                ledger.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                ledger.save(update_fields=["outcome", "finished_at", "error"])
                raise
            ledger.delete()  # the run stored its own row
            return summary
    except LockHeld:
        raise CalibrationRefused(f"exam {exam_id} is being calibrated by another process") from None


def _calibrate_exam(
    exam_id: int, dry_run: bool = False, actor: str | None = None
) -> CalibrationSummary:
    import numpy as np

    from backend.exams.rasch import calibrate, scaled_scores

    if not Exam.objects.filter(pk=exam_id).exists():
        raise CalibrationRefused(f"no exam {exam_id}")
    t0 = time.perf_counter()
    session_ids, items, x = load_responses(exam_id)
    minimum = settings.RASCH_MIN_SESSIONS
    if len(session_ids) < minimum:
        raise CalibrationRefused(
            f"exam {exam_id} has {len(session_ids)} submitted session(s); calibration needs at "
            f"least {minimum} (setting RASCH_MIN_SESSIONS)"
        )
    started = timezone.now()
    try:
        res = calibrate(x)
    except ValueError as exc:
        if not dry_run:
            CalibrationRun.objects.create(
                exam_id=exam_id, started_at=started, finished_at=timezone.now(),
                method="CML", n_persons=len(session_ids), n_items=len(items),
                outcome=CalibrationRun.FAILED, error=str(exc), actor=actor or "",
            )  # fmt: skip
        raise CalibrationRefused(f"exam {exam_id} cannot be calibrated: {exc}") from None
    answered = x.shape[0]
    rows = []
    for j, (q, p) in enumerate(items):
        rows.append(
            ItemRow(
                question=q,
                part=p,
                difficulty=_num(res.difficulty[j]),
                se=_num(res.difficulty_se[j]),
                infit=_num(res.infit[j]),
                outfit=_num(res.outfit[j]),
                point_measure=_num(res.point_measure[j]),
                n_responses=answered,
                p_correct=_num(x[:, j].mean()) if answered else None,
                excluded=res.excluded.get(j, ""),
            )
        )
    duration = time.perf_counter() - t0
    summary = CalibrationSummary(
        exam_id=exam_id,
        run_id=None,
        outcome="dry-run" if dry_run else CalibrationRun.OK,
        dry_run=dry_run,
        method=res.method,
        n_persons=res.n_persons,
        n_items=res.n_items,
        iterations=res.iterations,
        converged=res.converged,
        reliability=_num(res.reliability),
        duration_s=round(duration, 3),
        items=rows,
    )
    if dry_run:
        return summary
    scaled = scaled_scores(res.ability, settings.RASCH_SCALE_MEAN, settings.RASCH_SCALE_SD)
    with transaction.atomic():
        # Recalibration replaces the results atomically; older runs stay as history.
        CalibrationRun.objects.filter(exam_id=exam_id, is_current=True).update(is_current=False)
        run = CalibrationRun.objects.create(
            exam_id=exam_id,
            started_at=started,
            finished_at=timezone.now(),
            method=res.method,
            n_persons=res.n_persons,
            n_items=res.n_items,
            iterations=res.iterations,
            converged=res.converged,
            reliability=_num(res.reliability),
            duration_s=round(time.perf_counter() - t0, 3),
            outcome=CalibrationRun.OK,
            is_current=True,
            actor=actor or audit.default_actor(),
        )
        ItemCalibration.objects.bulk_create(
            [
                ItemCalibration(
                    run=run,
                    exam_id=exam_id,
                    question=r.question,
                    part=r.part,
                    difficulty=r.difficulty,
                    difficulty_se=r.se,
                    infit=r.infit,
                    outfit=r.outfit,
                    point_measure=r.point_measure,
                    n_responses=r.n_responses,
                    p_correct=r.p_correct,
                    excluded=r.excluded,
                )
                for r in rows
            ]
        )
        _store_abilities(session_ids, np.nan_to_num(res.ability), res.ability_se, scaled)
        audit.record(
            "rasch.calibrate",
            target=f"exam:{exam_id}",
            actor=actor,
            new_value={"run_id": run.id, "reliability": run.reliability},
            details={"n_persons": res.n_persons, "n_items": res.n_items,
                     "converged": res.converged, "excluded": len(res.excluded)},
        )  # fmt: skip
    summary.run_id = run.id
    summary.duration_s = run.duration_s
    return summary


def calibration_status(exam_id: int | None = None) -> list[ExamCalibrationStatus]:
    from backend.ops.locks import outcome_now

    now = timezone.now()
    exams = Exam.objects.order_by("id")
    if exam_id is not None:
        exams = exams.filter(pk=exam_id)
    out = []
    for exam in exams:
        scored = ExamSession.objects.filter(exam=exam, status__in=SCORED).count()
        current = CalibrationRun.objects.filter(exam=exam, is_current=True).first()
        last = CalibrationRun.objects.filter(exam=exam).order_by("-started_at").first()
        closed = exam.ends_at <= now
        out.append(
            ExamCalibrationStatus(
                exam_id=exam.id,
                title=exam.title,
                closed=closed,
                scored_sessions=scored,
                current_run_id=current.id if current else None,
                calibrated_at=current.finished_at.isoformat() if current else None,
                reliability=current.reliability if current else None,
                last_outcome=outcome_now(last.outcome, run_lock(exam.id)) if last else None,
                needs_calibration=closed
                and current is None
                and scored >= settings.RASCH_MIN_SESSIONS,
            )
        )
    return out


@dataclass
class AutoReport:
    calibrated: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    skipped_reason: str = ""


def auto_calibrate(actor: str | None = None) -> AutoReport:
    """Calibrate every closed exam without a current calibration, once across all hosts."""
    from backend.ops.locks import job_lock

    report = AutoReport()
    if not _auto_enabled():
        report.skipped_reason = "automatic calibration is switched off (flag rasch.auto)"
        return report
    with job_lock("rasch-auto"):
        for st in calibration_status():
            if not st.needs_calibration:
                continue
            try:
                calibrate_exam(st.exam_id, actor=actor or "rasch-auto")
                report.calibrated.append(st.exam_id)
            except CalibrationRefused as exc:
                report.refused[st.exam_id] = str(exc)
    return report


def _auto_enabled() -> bool:
    try:
        from backend.ops import flags
    except ImportError:
        return True
    # Not is_enabled(): an unreadable flag table must fail the job, not read as "switched off".
    return flags.require_state("rasch.auto")
