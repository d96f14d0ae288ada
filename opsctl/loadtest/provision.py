"""Who logs in to the load test, on which exam, answering which questions: students
provisioned through the backend's seeding function (Django, imported only here), or a
tokens file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from opsctl.loadtest.plan import LoadtestError


@dataclass
class Target:
    exam_id: int
    questions: list[tuple[int, str]]
    tokens: list[str]
    provisioned: bool = False


def read_tokens_file(path: Path) -> tuple[list[str], int | None, list[tuple[int, str]] | None]:
    """A JSON document ``{"tokens": [...], "exam_id": n, "questions": [[q, part], ...]}``
    (exam and questions optional) or plain text with one token per line (``#`` comments)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LoadtestError(f"cannot read tokens file {path}: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            tokens = [str(t) for t in doc["tokens"]]
            exam_id = int(doc["exam_id"]) if doc.get("exam_id") is not None else None
            questions = (
                [(int(q), str(p)) for q, p in doc["questions"]] if doc.get("questions") else None
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadtestError(f"tokens file {path} is not valid: {exc}") from None
        return tokens, exam_id, questions
    tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return tokens, None, None


def _open_exam_id(duration: float) -> int:
    """The exam open now with the most time left, which must outlast the run."""
    import datetime as dt

    from django.utils import timezone

    from backend.exams.models import Exam

    now = timezone.now()
    exam = Exam.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("-ends_at").first()
    if exam is None:
        raise LoadtestError("no exam is open now: pass --exam ID or seed one (`opsctl demo seed`)")
    if exam.ends_at < now + dt.timedelta(seconds=duration + 60):
        raise LoadtestError(f"the open exam {exam.id} closes before the run would end")
    return exam.id


def _exam_questions(exam_id: int, duration: float) -> list[tuple[int, str]]:
    from backend.exams import answer_keys
    from backend.exams.models import Exam

    exam = Exam.objects.filter(pk=exam_id).first()
    if exam is None:
        raise LoadtestError(f"no exam {exam_id} in the database")
    if exam.duration_min * 60 < duration + 30:
        raise LoadtestError(
            f"exam {exam_id} lasts {exam.duration_min} min, shorter than the run: sessions "
            "would time out"
        )
    questions = sorted(answer_keys.answer_key(exam_id))
    if not questions:
        raise LoadtestError(f"exam {exam_id} has no answer key, so no question to answer")
    return questions


def provision(
    students: int, exam_id: int | None, duration: float, database_url: str | None = None
) -> Target:
    """Create ``students`` students through the backend's seeding function (Django, against
    DATABASE_URL: it must be the database the server under test uses)."""
    from opsctl.service import open_backend

    open_backend(database_url)
    from django.db import DatabaseError

    from backend.exams.seed import create_students

    try:
        exam_id = exam_id or _open_exam_id(duration)
        questions = _exam_questions(exam_id, duration)
        people = create_students(students, prefix="loadtest")
    except DatabaseError as exc:
        raise LoadtestError(f"provisioning students failed: {_first_line(exc)}") from None
    return Target(exam_id, questions, [tok for _, _, tok in people], provisioned=True)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_target(
    students: int,
    duration: float,
    exam_id: int | None,
    tokens_file: Path | None,
    database_url: str | None = None,
) -> Target:
    if tokens_file is None:
        return provision(students, exam_id, duration, database_url)
    tokens, file_exam, questions = read_tokens_file(tokens_file)
    if len(tokens) < students:
        raise LoadtestError(f"tokens file has {len(tokens)} tokens; --students asks for {students}")
    exam_id = exam_id or file_exam
    if exam_id is None or questions is None:
        # A plain token list: the exam and its questions come from the database.
        from opsctl.service import open_backend

        open_backend(database_url)
        from django.db import DatabaseError

        try:
            exam_id = exam_id or _open_exam_id(duration)
            questions = _exam_questions(exam_id, duration)
        except DatabaseError as exc:
            raise LoadtestError(f"reading exam questions failed: {_first_line(exc)}") from None
    return Target(exam_id, questions, tokens[:students])
