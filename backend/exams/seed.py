"""Demo and load-test data at realistic scale.

Rows go in with COPY on PostgreSQL and one executemany per table on SQLite: 100,000 students
with 55 answers each (11 million answer and journal rows) seed in minutes, not hours.
Responses of closed exams follow the Rasch model, so calibration has something real to find.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.utils import timezone

from backend.exams import answer_keys
from backend.exams.models import Exam, ExamSession, Student, hash_token, new_token

CHUNK = 20_000

# Told how many rows were just written (after each chunk), for a caller's progress display.
OnRows = Callable[[int], None]


@dataclass
class SeedReport:
    students: int = 0
    exams: list[dict] = field(default_factory=list)
    sessions: int = 0
    answers: int = 0
    events: int = 0
    demo_token: str = ""
    demo_student: str = ""
    open_exam_id: int | None = None
    seconds: float = 0.0


def bulk_insert(
    table: str, columns: Sequence[str], rows: Iterable[Sequence], on_rows: OnRows | None = None
) -> int:
    """Insert many rows fast: COPY on PostgreSQL, chunked executemany elsewhere.
    ``on_rows(k)`` is told after every ``CHUNK`` rows (and the rest at the end)."""
    n = 0
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        cols = ", ".join(columns)
        with (
            connection.cursor() as cur,
            cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                n += 1
                if on_rows is not None and n % CHUNK == 0:
                    on_rows(CHUNK)
        if on_rows is not None and n % CHUNK:
            on_rows(n % CHUNK)
        return n
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    adapt = connection.ops.adapt_datetimefield_value
    batch: list = []
    with connection.cursor() as cur:
        for row in rows:
            batch.append([adapt(v) if isinstance(v, dt.datetime) else v for v in row])
            if len(batch) >= CHUNK:
                cur.executemany(sql, batch)
                n += len(batch)
                if on_rows is not None:
                    on_rows(len(batch))
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
            n += len(batch)
            if on_rows is not None:
                on_rows(len(batch))
    return n


def demo_pdf(title: str) -> bytes:
    """A one-page PDF with the exam title: enough for the paper endpoint to serve."""
    text = title.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def create_students(
    n: int,
    prefix: str = "student",
    rng: random.Random | None = None,
    on_rows: OnRows | None = None,
) -> list:
    """Create ``n`` students; returns ``[(id, external_id, token)]`` (tokens exist only here)."""
    rng = rng or random.Random()
    now = timezone.now()
    start = Student.objects.filter(external_id__startswith=f"{prefix}-").count()
    rows, tokens = [], []
    for i in range(start, start + n):
        ext = f"{prefix}-{i + 1:06d}"
        token = new_token()
        tokens.append((ext, token))
        rows.append((f"{rng.choice(FIRST)} {rng.choice(LAST)}", ext, hash_token(token), now))
    bulk_insert("exams_student", ("name", "external_id", "token_hash", "created_at"), rows, on_rows)
    ids = dict(
        Student.objects.filter(external_id__in=[e for e, _ in tokens]).values_list(
            "external_id", "id"
        )
        if n <= 5000
        else Student.objects.filter(external_id__startswith=f"{prefix}-").values_list(
            "external_id", "id"
        )
    )
    return [(ids[ext], ext, token) for ext, token in tokens]


def create_exam(
    title: str,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    duration_min: int = 90,
    questions: int = 55,
    rng: random.Random | None = None,
    on_rows: OnRows | None = None,
) -> Exam:
    rng = rng or random.Random()
    exam = Exam.objects.create(
        title=title, starts_at=starts_at, ends_at=ends_at, duration_min=duration_min
    )
    exam.paper.save(f"exam-{exam.id}.pdf", ContentFile(demo_pdf(title)), save=True)
    keys = []
    for q in range(1, questions + 1):
        # Every fifth question has two parts, as real papers do.
        parts = ["a", "b"] if q % 5 == 0 else [""]
        for p in parts:
            keys.append((exam.id, q, p, str(rng.randint(1, 99))))
    bulk_insert("exams_answerkey", ("exam_id", "question", "part", "correct_value"), keys, on_rows)
    answer_keys.forget(exam.id)
    return exam


def _wrong(correct: str, rng: random.Random) -> str:
    value = str(rng.randint(1, 99))
    return value if value != correct else str(int(correct) + 1)


def simulate_sessions(
    exam: Exam,
    students: list,
    rng: random.Random,
    submitted: bool,
    answered_share: float = 1.0,
    on_rows: OnRows | None = None,
) -> tuple[int, int, int]:
    """Sessions with answers drawn from the Rasch model (ability, difficulty ~ N(0, 1)).

    Each student's draws come from their own seeded generator, so the answers can be drawn
    twice (once to score the session row, once to stream the answer rows) instead of being
    held in memory: 100,000 x 55 answers stream in constant memory.
    """
    key = list(exam.keys.values_list("question", "part", "correct_value"))
    difficulty = [rng.gauss(0, 1) for _ in key]
    duration = dt.timedelta(minutes=exam.duration_min)
    window = max((exam.ends_at - exam.starts_at - duration).total_seconds(), 60)
    base_seed = rng.getrandbits(32)

    def draws(student_id: int, started: dt.datetime, deadline: dt.datetime):
        r = random.Random(base_seed * 1_000_003 + student_id)
        theta = r.gauss(0, 1)
        for (q, p, correct), b in zip(key, difficulty, strict=True):
            if r.random() > answered_share:
                continue
            ok = r.random() < 1.0 / (1.0 + math.exp(b - theta))
            value = correct if ok else _wrong(correct, r)
            yield q, p, value, ok, started + (deadline - started) * r.uniform(0.05, 0.6)

    status = ExamSession.SUBMITTED if submitted else ExamSession.IN_PROGRESS
    plan = []
    for sid, _, _ in students:
        started = exam.starts_at + dt.timedelta(seconds=rng.uniform(0, window))
        deadline = min(started + duration, exam.ends_at)
        sub = started + (deadline - started) * rng.uniform(0.6, 1.0) if submitted else None
        plan.append((sid, started, deadline, sub))

    def session_rows():
        for sid, started, deadline, sub in plan:
            raw = sum(d[3] for d in draws(sid, started, deadline)) if submitted else None
            yield (
                sid,
                exam.id,
                status,
                started,
                deadline,
                sub,
                raw,
                len(key) if submitted else None,
            )

    n_sessions = bulk_insert(
        "exams_examsession",
        (
            "student_id",
            "exam_id",
            "status",
            "started_at",
            "deadline",
            "submitted_at",
            "raw_score",
            "max_score",
        ),
        session_rows(),
        on_rows,
    )
    session_ids = dict(ExamSession.objects.filter(exam=exam).values_list("student_id", "id"))

    def answer_rows():
        for sid, started, deadline, _ in plan:
            ses = session_ids[sid]
            for q, p, value, ok, when in draws(sid, started, deadline):
                yield (ses, q, p, value, 1, when, ok if submitted else None)

    def event_rows():
        for sid, started, deadline, _ in plan:
            ses = session_ids[sid]
            for q, p, value, _, when in draws(sid, started, deadline):
                yield (ses, q, p, value, 1, when)

    n_answers = bulk_insert(
        "exams_answer",
        ("session_id", "question", "part", "value", "seq", "updated_at", "is_correct"),
        answer_rows(),
        on_rows,
    )
    n_events = bulk_insert(
        "exams_answerevent",
        ("session_id", "question", "part", "value", "seq", "received_at"),
        event_rows(),
        on_rows,
    )
    return n_sessions, n_answers, n_events


def analyze_tables() -> None:
    """Fresh planner statistics, so EXPLAIN right after seeding shows real plans."""
    with connection.cursor() as cur:
        cur.execute("ANALYZE")


def seed_demo(
    students: int = 300,
    exams: int = 3,
    answers: bool = True,
    seed: int = 20261124,
    now: dt.datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """A demo: an exam open now, closed exams with scored answers, one upcoming exam.

    ``progress(done, total)`` is told the rows written so far after every chunk; ``total``
    is the rows expected (the open exam's answers are drawn at random, so it is adjusted as
    the work goes and equals ``done`` on the last call)."""
    import time

    t0 = time.perf_counter()
    rng = random.Random(seed)
    now = now or timezone.now()
    report = SeedReport()
    done, total = 0, expected_rows(students, exams, answers)

    def on_rows(n: int) -> None:
        nonlocal done, total
        done += n
        total = max(total, done)
        if progress is not None:
            progress(done, total)

    with transaction.atomic():
        people = create_students(students, rng=rng, on_rows=on_rows)
        report.students = len(people)
        open_exam = create_exam(
            "Mathematics",
            now - dt.timedelta(minutes=30),
            now + dt.timedelta(hours=4),
            duration_min=90,
            rng=rng,
            on_rows=on_rows,
        )
        report.open_exam_id = open_exam.id
        report.exams.append({"id": open_exam.id, "title": open_exam.title, "status": "open"})
        for i in range(max(exams - 2, 1) if exams >= 2 else 0):
            closed = create_exam(
                f"Physics {i + 1}",
                now - dt.timedelta(days=2 + i, hours=4),
                now - dt.timedelta(days=2 + i),
                duration_min=120,
                rng=rng,
                on_rows=on_rows,
            )
            report.exams.append({"id": closed.id, "title": closed.title, "status": "closed"})
            if answers:
                s, a, e = simulate_sessions(closed, people, rng, submitted=True, on_rows=on_rows)
                report.sessions += s
                report.answers += a
                report.events += e
        if exams >= 3:
            upcoming = create_exam(
                "Chemistry",
                now + dt.timedelta(days=1),
                now + dt.timedelta(days=1, hours=3),
                rng=rng,
                on_rows=on_rows,
            )
            report.exams.append({"id": upcoming.id, "title": upcoming.title, "status": "upcoming"})
        if answers:
            # A tenth of the students are half-way through the open exam.
            active = people[1 : max(2, len(people) // 10)]
            s, a, e = simulate_sessions(
                open_exam, active, rng, submitted=False, answered_share=0.4, on_rows=on_rows
            )
            report.sessions += s
            report.answers += a
            report.events += e
    analyze_tables()
    if progress is not None:
        progress(done, done)
    report.demo_student = people[0][1]
    report.demo_token = people[0][2]
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def expected_rows(students: int, exams: int, answers: bool, questions: int = 55) -> int:
    """Rows ``seed_demo`` writes (the open exam's share of answers is its expected value)."""
    keys = questions + questions // 5  # every fifth question has two parts
    closed = max(exams - 2, 1) if exams >= 2 else 0
    created = 1 + closed + (1 if exams >= 3 else 0)
    rows = students + created * keys
    if answers:
        rows += closed * students * (1 + 2 * keys)  # sessions, answers, answer events
        active = len(range(students)[1 : max(2, students // 10)])
        rows += active + round(active * 2 * keys * 0.4)
    return rows


FIRST = [
    "Ada",
    "Alan",
    "Amara",
    "Ana",
    "Ben",
    "Chen",
    "Chloe",
    "Dara",
    "Elif",
    "Emil",
    "Eva",
    "Farah",
    "Hana",
    "Ines",
    "Ivan",
    "Jonas",
    "Kai",
    "Lea",
    "Lina",
    "Luca",
    "Maya",
    "Mila",
    "Noah",
    "Nora",
    "Omar",
    "Priya",
    "Rafael",
    "Sara",
    "Sofia",
    "Tariq",
    "Yara",
    "Yusuf",
    "Zoe",
]
LAST = [
    "Abe",
    "Bauer",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Meyer",
    "Nakamura",
    "Novak",
    "Okafor",
    "Petrov",
    "Rossi",
    "Silva",
    "Tanaka",
    "Umar",
    "Varga",
    "Wang",
    "Weber",
    "Yilmaz",
    "Zhou",
]
