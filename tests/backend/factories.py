"""Small builders for API tests: a student with a known token, an exam open now."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from backend.exams import answer_keys
from backend.exams.models import AnswerKey, Exam, Student


def make_student(name: str = "Ada", ext: str | None = None) -> tuple[Student, str]:
    student = Student(name=name, external_id=ext or f"ext-{name.lower()}")
    token = student.set_token()
    student.save()
    return student, token


def make_exam(
    title: str = "Algebra",
    opens: dt.timedelta = dt.timedelta(minutes=-10),
    closes: dt.timedelta = dt.timedelta(hours=2),
    duration_min: int = 60,
    key: dict | None = None,
) -> Exam:
    now = timezone.now()
    exam = Exam.objects.create(
        title=title, starts_at=now + opens, ends_at=now + closes, duration_min=duration_min
    )
    key = key or {(1, ""): "42", (2, "a"): "Paris", (2, "b"): "5", (3, ""): "x"}
    AnswerKey.objects.bulk_create(
        [AnswerKey(exam=exam, question=q, part=p, correct_value=v) for (q, p), v in key.items()]
    )
    answer_keys.forget(exam.id)
    return exam


def auth(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
