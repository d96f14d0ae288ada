"""Seed a rehearsal database: run as ``python -m opsctl.rehearse.seed STUDENTS`` with
DATABASE_URL and OPS_VAR_DIR (the paper storage goes under its media/) set; prints JSON.

What each drill needs, and nothing else:
- an exam open now, with a paper, and ``STUDENTS`` students (tokens) for the loads and drills;
- a closed exam with enough submitted sessions for `opsctl rasch auto` to calibrate it;
- one session past its deadline, still in progress, for `expire_sessions` to close.

A subprocess, so the caller's own Django (pytest's test database, say) is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys


def main(students: int) -> dict:
    from opsctl.service import setup_django

    setup_django()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from backend.exams.models import ExamSession
    from backend.exams.seed import create_exam, create_students, simulate_sessions
    from opsctl.loadtest import provision

    call_command("migrate", verbosity=0, interactive=False)
    rng = random.Random(22)
    now = timezone.now()
    exam = create_exam(
        "Rehearsal",
        now - dt.timedelta(minutes=5),
        now + dt.timedelta(hours=3),
        duration_min=150,
        questions=20,
        rng=rng,
    )
    target = provision(students, exam.id, duration=1800)

    closed = create_exam(
        "Rehearsal (closed)",
        now - dt.timedelta(days=2, hours=4),
        now - dt.timedelta(days=2),
        duration_min=120,
        questions=12,
        rng=rng,
    )
    takers = create_students(max(40, 4 * settings.RASCH_MIN_SESSIONS), prefix="rehearsal-closed")
    simulate_sessions(closed, takers, rng, submitted=True)

    overdue_exam = create_exam(
        "Rehearsal (overdue)",
        now - dt.timedelta(hours=3),
        now + dt.timedelta(hours=3),
        duration_min=60,
        questions=5,
        rng=rng,
    )
    ((late_id, _, _),) = create_students(1, prefix="rehearsal-overdue")
    ExamSession.objects.create(
        student_id=late_id,
        exam=overdue_exam,
        started_at=now - dt.timedelta(hours=2),
        deadline=now - dt.timedelta(hours=1),
    )
    return {
        "exam_id": target.exam_id,
        "questions": target.questions,
        "tokens": target.tokens,
        "paper": exam.paper.path,
        "closed_exam_id": closed.id,
    }


if __name__ == "__main__":
    json.dump(main(int(sys.argv[1])), sys.stdout)
