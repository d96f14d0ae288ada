"""The exams in progress right now, for the console's Overview: students active, saves per
second over the last minute, submits so far. Read-only and cheap enough to run every few
seconds during an exam (indexed lookups and a bounded tail of the answer journal)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Max, Q
from django.utils import timezone

from backend.exams.models import AnswerEvent, Exam, ExamSession

#: Saves per second are counted over this many seconds back from now.
SAVES_WINDOW_SECONDS = 60
#: At most this many of the newest journal rows are looked at for them (a primary-key range,
#: so the read stays bounded on a journal of any size): up to ~1,600 saves/s are exact.
JOURNAL_TAIL = 100_000


@dataclass
class ExamProgress:
    exam_id: int
    title: str
    ends_at: dt.datetime
    students_active: int  # sessions in progress whose deadline has not passed
    submitted: int  # sessions submitted so far
    saves_per_second: float  # journalled saves over the last SAVES_WINDOW_SECONDS
    saves_capped: bool = False  # more saves than JOURNAL_TAIL in the window: a lower bound


def exams_in_progress(now: dt.datetime | None = None) -> list[ExamProgress]:
    """The exams open at ``now`` (started, not ended), soonest to end first."""
    now = now or timezone.now()
    exams = list(Exam.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("ends_at"))
    if not exams:
        return []
    ids = [e.id for e in exams]
    counts = {
        row["exam_id"]: row
        for row in ExamSession.objects.filter(exam_id__in=ids)
        .values("exam_id")
        .annotate(
            active=Count("id", filter=Q(status=ExamSession.IN_PROGRESS, deadline__gt=now)),
            submitted=Count("id", filter=Q(status=ExamSession.SUBMITTED)),
        )
    }
    newest = AnswerEvent.objects.aggregate(m=Max("id"))["m"] or 0
    since = now - dt.timedelta(seconds=SAVES_WINDOW_SECONDS)
    saves = {
        row["session__exam_id"]: row["n"]
        for row in AnswerEvent.objects.filter(
            id__gt=newest - JOURNAL_TAIL, received_at__gte=since, session__exam_id__in=ids
        )
        .values("session__exam_id")
        .annotate(n=Count("id"))
    }
    capped = (
        newest > JOURNAL_TAIL
        and AnswerEvent.objects.filter(
            id=newest - JOURNAL_TAIL + 1, received_at__gte=since
        ).exists()
    )
    return [
        ExamProgress(
            e.id,
            e.title,
            e.ends_at,
            counts.get(e.id, {}).get("active", 0),
            counts.get(e.id, {}).get("submitted", 0),
            round(saves.get(e.id, 0) / SAVES_WINDOW_SECONDS, 2),
            capped,
        )
        for e in exams
    ]
