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
from backend.ops.errors import OpsError

MISFIT_LOW, MISFIT_HIGH = 0.7, 1.3
# A standardised mean-square beyond this is significant (about p < .05).
ZSTD_LIMIT = 2.0
# Wald tests: an item differs between low and high scorers at p < WALD_ALPHA / items tested
# (Bonferroni: one test per item would otherwise flag 1 item in 20 by chance).
WALD_ALPHA = 0.05
SCORED = (ExamSession.SUBMITTED, ExamSession.EXPIRED)


class CalibrationRefused(OpsError):
    """The exam cannot be calibrated (too few sessions, nothing to estimate): exit 2."""

    exit_code = 2


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
    infit_zstd: float | None = None
    outfit_zstd: float | None = None
    wald_z: float | None = None  # (difficulty for high scorers - for low scorers) / SE
    wald_p: float | None = None
    flags: list[str] = field(default_factory=list)  # "misfit", "differs by score"

    @property
    def misfit(self) -> bool:
        return "misfit" in self.flags


def item_flags(infit, outfit, infit_zstd, outfit_zstd, wald_p, n_tested: int) -> list[str]:
    """The flag rule. "misfit": significantly noisier than the model (ZSTD above 2, at any
    sample size: a guessing item at N = 2,000 has mean-squares near 1.1 but ZSTD near 5), or a
    mean-square outside 0.7-1.3 that is also significant (at small N such a value happens by
    chance). Significant overfit alone is not flagged: with abilities estimated from the same
    answers, fitting items' ZSTD centre below 0. "differs by score": the Wald test, Bonferroni
    over the items tested."""
    flags = []
    for ms, z in ((infit, infit_zstd), (outfit, outfit_zstd)):
        if z is None:
            continue
        out_of_range = ms is not None and not (MISFIT_LOW <= ms <= MISFIT_HIGH)
        if z > ZSTD_LIMIT or (out_of_range and abs(z) > ZSTD_LIMIT):
            flags.append("misfit")
            break
    if wald_p is not None and n_tested and wald_p < WALD_ALPHA / n_tested:
        flags.append("differs by score")
    return flags


@dataclass
class AndersenSummary:
    """Andersen's LR test, sessions split at the median raw score (eRm's default)."""

    lr: float | None
    df: int | None
    p: float | None
    median: float | None
    n_low: int
    n_high: int
    dropped: list[str] = field(default_factory=list)  # "3a: everyone right in the high half"
    unavailable: str = ""


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
    reliability: float | None  # person separation reliability
    duration_s: float
    items: list[ItemRow] = field(default_factory=list)
    kr20: float | None = None  # KR-20 (Cronbach's alpha)
    n_extreme: int = 0  # sessions all right or all wrong: left out of infit/outfit
    andersen: AndersenSummary | None = None
    warnings: list[str] = field(default_factory=list)


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
    kr20: float | None = None  # of the current run


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
    labels = [f"{q}{p}" for q, p in items]
    try:
        res = calibrate(x, labels=labels)
    except ValueError as exc:
        if not dry_run:
            CalibrationRun.objects.create(
                exam_id=exam_id, started_at=started, finished_at=timezone.now(),
                method="CML", n_persons=len(session_ids), n_items=len(items),
                outcome=CalibrationRun.FAILED, error=str(exc), actor=actor or "",
            )  # fmt: skip
        raise CalibrationRefused(f"exam {exam_id} cannot be calibrated: {exc}") from None
    answered = x.shape[0]
    n_tested = int(np.isfinite(res.wald_p).sum())
    rows = []
    for j, (q, p) in enumerate(items):
        row = ItemRow(
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
            infit_zstd=_num(res.infit_zstd[j]),
            outfit_zstd=_num(res.outfit_zstd[j]),
            wald_z=_num(res.wald_z[j]),
            wald_p=_num(res.wald_p[j]),
        )
        row.flags = item_flags(
            row.infit, row.outfit, row.infit_zstd, row.outfit_zstd, row.wald_p, n_tested
        )
        rows.append(row)
    andersen = _andersen_summary(res.andersen, labels)
    warnings = _warnings(res, rows, andersen)
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
        kr20=_num(res.kr20),
        n_extreme=res.n_extreme,
        andersen=andersen,
        warnings=warnings,
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
            kr20=summary.kr20,
            andersen_lr=andersen.lr if andersen else None,
            andersen_df=andersen.df if andersen else None,
            andersen_p=andersen.p if andersen else None,
            warnings=warnings,
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
                    infit_zstd=r.infit_zstd,
                    outfit_zstd=r.outfit_zstd,
                    wald_z=r.wald_z,
                    wald_p=r.wald_p,
                    flags=", ".join(r.flags),
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
                     "converged": res.converged, "excluded": len(res.excluded),
                     "kr20": summary.kr20, "andersen_p": run.andersen_p,
                     "warnings": len(warnings)},
        )  # fmt: skip
    summary.run_id = run.id
    summary.duration_s = run.duration_s
    return summary


def _andersen_summary(test, labels) -> AndersenSummary | None:
    if test is None:
        return None
    return AndersenSummary(
        lr=_num(test.lr),
        df=test.df,
        p=_num(test.p),
        median=test.median,
        n_low=test.n_low,
        n_high=test.n_high,
        dropped=[f"{labels[i]}: {why}" for i, why in sorted(test.dropped.items())],
        unavailable=test.unavailable,
    )


def _warnings(res, rows: list[ItemRow], andersen: AndersenSummary | None) -> list[str]:
    """What an operator must read before trusting the numbers, one line each."""
    out = []
    if not res.converged:
        out.append(
            f"the estimation did not converge in {res.iterations} iterations: "
            "the difficulties are not reliable"
        )
    excluded = [f"{r.question}{r.part} ({r.excluded})" for r in rows if r.excluded]
    if excluded:
        out.append(f"{len(excluded)} item(s) excluded, no difficulty: {', '.join(excluded)}")
    if res.n_extreme:
        out.append(
            f"{res.n_extreme} session(s) with all-right or all-wrong scores left out of "
            "infit/outfit (their abilities are extrapolated)"
        )
    if andersen is not None:
        if andersen.unavailable:
            out.append(f"Andersen's LR test not available: {andersen.unavailable}")
        elif andersen.p is not None and andersen.p < 0.05:
            out.append(
                f"Andersen's LR test rejects the Rasch model: LR {andersen.lr:.1f} on "
                f"{andersen.df} df, p = {andersen.p:.3g}; difficulties differ between "
                f"sessions scoring at most {andersen.median:g} and the rest"
            )
        if andersen.dropped:
            out.append(f"left out of Andersen's test: {'; '.join(andersen.dropped)}")
    for flag in ("misfit", "differs by score"):
        hit = [f"{r.question}{r.part}" for r in rows if flag in r.flags]
        if hit:
            out.append(f"{len(hit)} item(s) flagged '{flag}': {', '.join(hit)}")
    return out


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
                kr20=current.kr20 if current else None,
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
