"""The exam session lifecycle: start, auto-save (the hot path), submit, expire, results.

Views and jobs call these functions; they raise ``ApiError`` for anything a client did wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backend.exams import answer_keys, scoring
from backend.exams.auth import raise_for_foreign_or_unknown, student_for_token_hash
from backend.exams.http import ApiError
from backend.exams.models import Answer, Exam, ExamSession

# Save and submit exclude each other in the database itself: the upsert inserts only while the
# session is still in progress, checked in the same statement, and submit locks the session
# row before it scores. On PostgreSQL the save is one statement (_SAVE_PG below) whose first
# CTE takes KEY SHARE on the session row: submit's FOR UPDATE waits for saves past their
# check, and a save that waited re-reads the row submit changed (READ COMMITTED) and inserts
# nothing. On SQLite every write transaction holds the database's single write lock from
# BEGIN (transaction_mode IMMEDIATE), which covers the check; there the upsert is
# INSERT ... SELECT from the session row, and no row back means "not in progress".
_SESSION_OPEN = """
SELECT %s, %s, %s, %s, {seq}, %s FROM exams_examsession
WHERE id = %s AND status = 'in_progress'
"""
# A client seq never overwrites a higher one; an equal seq is a retry. SET expressions see
# the old row, so each CASE compares against the stored seq.
_ON_CONFLICT_SEQ = """
ON CONFLICT (session_id, question, part) DO UPDATE SET
  value = CASE WHEN excluded.seq > exams_answer.seq THEN excluded.value ELSE exams_answer.value END,
  updated_at = CASE WHEN excluded.seq > exams_answer.seq
                    THEN excluded.updated_at ELSE exams_answer.updated_at END,
  seq = CASE WHEN excluded.seq > exams_answer.seq THEN excluded.seq ELSE exams_answer.seq END
RETURNING seq, value
"""
# Without a client seq the save is last-writer-wins and the server numbers it.
_ON_CONFLICT_AUTO = """
ON CONFLICT (session_id, question, part) DO UPDATE SET
  value = excluded.value, updated_at = excluded.updated_at, seq = exams_answer.seq + 1
RETURNING seq, value
"""
# The save's first statement, by hand rather than through the ORM (whose query building was a
# fifth of a save's CPU): the session, if it is this student's, and whether its deadline plus
# grace has passed (compared in SQL, so SQLite's naive datetimes never reach Python).
_SESSION_CHECK = """
SELECT s.status, s.exam_id, s.deadline < %s FROM exams_examsession s
JOIN exams_student st ON st.id = s.student_id
WHERE s.id = %s AND st.token_hash = %s
"""
# On PostgreSQL the whole save is one statement: one round trip in autocommit instead of
# five (check, BEGIN, upsert, journal, COMMIT), each of which cost both ends CPU. Same
# exclusion with submit: the first CTE locks the session row KEY SHARE (a waiting save
# re-reads the row a submit changed), and the upsert and journal run only while it is in
# progress, not overdue, and the question is in its key. The last SELECT says which.
_SAVE_PG = """
WITH s AS (
  SELECT s.id, s.status, s.deadline < %(cutoff)s AS overdue,
         %(plausible)s AND EXISTS (SELECT 1 FROM exams_answerkey k WHERE k.exam_id = s.exam_id
                 AND k.question = %(question)s AND k.part = %(part)s) AS in_key
  FROM exams_examsession s JOIN exams_student st ON st.id = s.student_id
  WHERE s.id = %(session)s AND st.token_hash = %(token)s
  FOR KEY SHARE OF s
), up AS (
  INSERT INTO exams_answer (session_id, question, part, value, seq, updated_at)
  SELECT s.id, %(question)s, %(part)s, %(answer)s, {seq}, %(now)s FROM s
  WHERE s.status = 'in_progress' AND NOT s.overdue AND s.in_key
  {on_conflict}
), j AS (
  INSERT INTO exams_answerevent (session_id, question, part, value, seq, received_at)
  SELECT s.id, %(question)s, %(part)s, %(answer)s, up.seq, %(now)s FROM s, up
  WHERE %(journal)s AND up.value = %(answer)s {same_seq}
)
SELECT s.status, s.overdue, s.in_key, up.seq, up.value FROM s LEFT JOIN up ON true
"""
_SAVE_PG_SEQ = _SAVE_PG.format(
    seq="%(seq)s", on_conflict=_ON_CONFLICT_SEQ.strip(), same_seq="AND up.seq = %(seq)s"
)
_SAVE_PG_AUTO = _SAVE_PG.format(seq="1", on_conflict=_ON_CONFLICT_AUTO.strip(), same_seq="")
_INSERT = "INSERT INTO exams_answer (session_id, question, part, value, seq, updated_at)"
_JOURNAL = """
INSERT INTO exams_answerevent (session_id, question, part, value, seq, received_at)
VALUES (%s, %s, %s, %s, %s, %s)
"""


# SQLite parses INSERT ... SELECT ... ON CONFLICT only with a WHERE clause, which this has.
_UPSERT_SQLITE_SEQ = f"{_INSERT}{_SESSION_OPEN.format(seq='%s')}{_ON_CONFLICT_SEQ}"
_UPSERT_SQLITE_AUTO = f"{_INSERT}{_SESSION_OPEN.format(seq='1')}{_ON_CONFLICT_AUTO}"


MAX_SEQ = 2**62
MAX_ID = 2**63 - 1  # bigint primary keys
MAX_QUESTION = 2**31 - 1  # PositiveIntegerField: integer on PostgreSQL
MAX_PART = Answer._meta.get_field("part").max_length


@dataclass(frozen=True)
class StartResult:
    session_id: int
    started_at: dt.datetime
    deadline: dt.datetime
    status: str
    created: bool


@dataclass(frozen=True)
class SaveResult:
    status: str  # "saved" | "stale"
    seq: int


@dataclass(frozen=True)
class SubmitResult:
    session_id: int
    status: str
    raw_score: int
    max_score: int


def start_session(student_id: int, exam_id: int, now: dt.datetime | None = None) -> StartResult:
    now = now or timezone.now()
    exam = Exam.objects.filter(pk=exam_id).only("starts_at", "ends_at", "duration_min").first()
    if exam is None:
        raise ApiError(404, f"no exam {exam_id}")
    existing = ExamSession.objects.filter(student_id=student_id, exam_id=exam_id).first()
    if existing:
        return StartResult(
            existing.id, existing.started_at, existing.deadline, existing.status, False
        )
    if not (exam.starts_at <= now < exam.ends_at):
        when = "has not started yet" if now < exam.starts_at else "has closed"
        raise ApiError(
            403, f"the exam window {when}", starts_at=exam.starts_at, ends_at=exam.ends_at
        )
    deadline = min(now + dt.timedelta(minutes=exam.duration_min), exam.ends_at)
    try:
        with transaction.atomic():
            session = ExamSession.objects.create(
                student_id=student_id, exam_id=exam_id, started_at=now, deadline=deadline
            )
    except IntegrityError:
        # Two tabs pressed start at once: the other request created it; resume that one.
        session = ExamSession.objects.get(student_id=student_id, exam_id=exam_id)
        return StartResult(session.id, session.started_at, session.deadline, session.status, False)
    return StartResult(session.id, session.started_at, session.deadline, session.status, True)


# PostgreSQL: a start is one statement too (the exam's start is a burst: every student within
# a minute). It finds the student by token and the exam, creates the session while the window
# is open (ON CONFLICT: a second tab or a retry creates nothing) and reads back the session
# that already existed; the caller tells the cases apart from which parts came back.
_START_PG = """
WITH st AS (
  SELECT id FROM exams_student WHERE token_hash = %(token)s
), e AS (
  SELECT id, starts_at, ends_at,
         LEAST(%(now)s + make_interval(mins => duration_min), ends_at) AS deadline
  FROM exams_exam WHERE id = %(exam)s
), ins AS (
  INSERT INTO exams_examsession (student_id, exam_id, status, started_at, deadline)
  SELECT st.id, e.id, 'in_progress', %(now)s, e.deadline FROM st, e
  WHERE e.starts_at <= %(now)s AND %(now)s < e.ends_at
  ON CONFLICT (student_id, exam_id) DO NOTHING
  RETURNING id, started_at, deadline, status
)
SELECT st.id, e.id, e.starts_at, e.ends_at, ins.id, ins.started_at, ins.deadline, ins.status,
       old.id, old.started_at, old.deadline, old.status
FROM (SELECT 1) AS one
LEFT JOIN st ON true LEFT JOIN e ON true LEFT JOIN ins ON true
LEFT JOIN exams_examsession old ON old.student_id = st.id AND old.exam_id = e.id
"""


def start_session_for_token(
    token_hash: str, exam_id: int, now: dt.datetime | None = None
) -> StartResult:
    """Start (or resume) the exam for the student holding the token: 401 for an unknown
    token, then as ``start_session``. One statement on PostgreSQL."""
    now = now or timezone.now()
    if connection.vendor != "postgresql":
        return start_session(student_for_token_hash(token_hash), exam_id, now)
    if not 0 < exam_id <= MAX_ID:  # no such row can exist (and PostgreSQL refuses the value)
        student_for_token_hash(token_hash)
        raise ApiError(404, f"no exam {exam_id}")
    with _prepared_cursor() as cur:
        cur.execute(_START_PG, {"token": token_hash, "exam": exam_id, "now": now})
        row = cur.fetchone()
    student_id, found_exam, starts_at, ends_at = row[:4]
    new, old = row[4:8], row[8:12]
    if student_id is None:
        raise ApiError(401, "unknown token")
    if found_exam is None:
        raise ApiError(404, f"no exam {exam_id}")
    if new[0] is not None:
        return StartResult(*new, True)
    if old[0] is not None:
        return StartResult(*old, False)
    if not (starts_at <= now < ends_at):
        when = "has not started yet" if now < starts_at else "has closed"
        raise ApiError(403, f"the exam window {when}", starts_at=starts_at, ends_at=ends_at)
    # Another request created it after this statement's snapshot was taken: resume that one.
    return start_session(student_id, exam_id, now)


def validate_save(body: dict) -> tuple[int, str, str, int | None]:
    question, part, answer, seq = (body.get(k) for k in ("question", "part", "answer", "seq"))
    if isinstance(question, bool) or not isinstance(question, int):
        raise ApiError(400, "'question' must be an integer")
    if part is None:
        part = ""
    if not isinstance(part, str):
        raise ApiError(400, "'part' must be a string (it may be empty)")
    if not isinstance(answer, str):
        raise ApiError(400, "'answer' must be a string")
    if len(answer) > settings.EXAM_MAX_ANSWER_LENGTH:
        raise ApiError(400, f"'answer' is longer than {settings.EXAM_MAX_ANSWER_LENGTH} characters")
    for name, text in (("part", part), ("answer", answer)):
        _check_text(name, text)
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ApiError(400, "'seq' must be an integer")
    if seq is not None and not (0 <= seq < MAX_SEQ):
        raise ApiError(400, f"'seq' must be between 0 and {MAX_SEQ - 1}")
    unknown = set(body) - {"question", "part", "answer", "seq"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    return question, part, answer, seq


def _check_text(name: str, text: str) -> None:
    """Text every database can store: no NUL, and no lone surrogate ("\ud800", which JSON may
    carry and no driver can encode)."""
    if "\x00" in text:
        raise ApiError(400, f"'{name}' must not contain NUL characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"'{name}' is not valid Unicode text (lone surrogate)") from None


def journal_enabled() -> bool:
    from backend.ops import flags

    return flags.is_enabled("journal.writes")


def save_answer(session_id: int, token_hash: str, body: dict) -> SaveResult:
    """Auto-save one answer: one statement on PostgreSQL, three on SQLite (session check,
    upsert, journal insert)."""
    question, part, answer, seq = validate_save(body)
    if not 0 < session_id <= MAX_ID:
        raise_for_foreign_or_unknown(token_hash)  # no such row can exist: as the ORM answers
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.EXAM_SUBMIT_GRACE_SECONDS)
    if connection.vendor == "postgresql":
        return _save_pg(session_id, token_hash, question, part, answer, seq, now, cutoff)
    with connection.cursor() as cur:
        cur.execute(
            _SESSION_CHECK,
            [connection.ops.adapt_datetimefield_value(cutoff), session_id, token_hash],
        )
        row = cur.fetchone()
    if row is None:
        raise_for_foreign_or_unknown(token_hash)
    status, exam_id, overdue = row
    if status != ExamSession.IN_PROGRESS:
        raise ApiError(409, f"the session is already {status}", status=status)
    if overdue:
        submit_session(session_id, now=now)
        raise ApiError(410, "time is over: the session has been submitted", status="submitted")
    if (question, part) not in answer_keys.answer_key(exam_id):
        raise ApiError(400, f"question {question} part {part!r} is not in this exam")

    stamp = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(), connection.cursor() as cur:
        if seq is None:
            params = [session_id, question, part, answer, stamp, session_id]
        else:
            params = [session_id, question, part, answer, seq, stamp, session_id]
        cur.execute(_UPSERT_SQLITE_AUTO if seq is None else _UPSERT_SQLITE_SEQ, params)
        row = cur.fetchone()
        if row is None:
            # A submit (or expiry) won the race between our first read and this write.
            raise ApiError(409, "the session was submitted before this save", status="submitted")
        stored_seq, stored_value = row
        if (seq is not None and stored_seq != seq) or stored_value != answer:
            return SaveResult("stale", stored_seq)
        if journal_enabled():
            cur.execute(_JOURNAL, [session_id, question, part, answer, stored_seq, stamp])
    return SaveResult("saved", stored_seq)


def _save_pg(session_id, token_hash, question, part, answer, seq, now, cutoff) -> SaveResult:
    # A question or part no answer key can hold is "not in this exam", answered after the
    # session checks like any other; the statement gets harmless stand-ins, since PostgreSQL
    # refuses a value its column cannot store even in a row no WHERE lets through.
    plausible = 0 <= question <= MAX_QUESTION and len(part) <= MAX_PART
    params = {
        "session": session_id, "token": token_hash, "plausible": plausible,
        "question": question if plausible else 0, "part": part if plausible else "",
        "answer": answer, "seq": seq, "now": now, "cutoff": cutoff,
        "journal": journal_enabled(),
    }  # fmt: skip
    with _prepared_cursor() as cur:
        cur.execute(_SAVE_PG_AUTO if seq is None else _SAVE_PG_SEQ, params)
        row = cur.fetchone()
    if row is None:
        raise_for_foreign_or_unknown(token_hash)
    status, overdue, in_key, stored_seq, stored_value = row
    if status != ExamSession.IN_PROGRESS:
        raise ApiError(409, f"the session is already {status}", status=status)
    if overdue:
        submit_session(session_id, now=now)
        raise ApiError(410, "time is over: the session has been submitted", status="submitted")
    if not in_key:
        raise ApiError(400, f"question {question} part {part!r} is not in this exam")
    if (seq is not None and stored_seq != seq) or stored_value != answer:
        return SaveResult("stale", stored_seq)
    return SaveResult("saved", stored_seq)


def _prepared_cursor():
    """A Django cursor (its wrappers: telemetry, debug logging, error translation) over a
    psycopg cursor that binds on the server and prepares the statement on its connection.

    The save's statement is the same on every call: prepared, PostgreSQL parses and plans it
    once per pooled connection instead of on every save, and psycopg sends the parameters
    instead of quoting them into the text. Only the save does this: Django keeps client-side
    binding for the ORM (server-side binding changes how some ORM queries type their
    parameters), and turns automatic preparing off (for poolers such as PgBouncer in
    transaction mode, which this statement would also break: SAVE_PREPARED=0 turns it off)."""
    if not settings.SAVE_PREPARED or connection.queries_logged:
        # Django's query log reads the statement's text back from the cursor, which a
        # prepared execution does not keep: with DEBUG (or a test capturing queries) it is
        # sent as text, as every other statement.
        return connection.cursor()
    connection.ensure_connection()
    conn = connection.connection
    if conn.prepare_threshold is None:
        # Django turns preparing off with None, which also ignores prepare=True; a threshold
        # no statement reaches keeps the ORM's statements unprepared and lets this one be.
        conn.prepare_threshold = _NEVER
    with connection.wrap_database_errors:
        return connection._prepare_cursor(_prepared_cursor_class()(conn))


_NEVER = 2**62


@functools.cache
def _prepared_cursor_class():
    import psycopg

    class PreparedCursor(psycopg.Cursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    return PreparedCursor


def _score_locked_session(cur, session_id: int, exam_id: int) -> tuple[int, int]:
    """Mark each of the session's answers right or wrong (one UPDATE) and return the score."""
    key = answer_keys.answer_key(exam_id)
    cur.execute(
        "SELECT id, question, part, value FROM exams_answer WHERE session_id = %s", [session_id]
    )
    given = {(q, p): (aid, v) for aid, q, p, v in cur.fetchall()}
    right = scoring.score({qp: v for qp, (_, v) in given.items()}, key)
    if given:
        right_ids = [aid for qp, (aid, _) in given.items() if qp in right]
        is_right = f"id IN ({', '.join(['%s'] * len(right_ids))})" if right_ids else "FALSE"
        cur.execute(
            f"UPDATE exams_answer SET is_correct = ({is_right}) WHERE session_id = %s",
            [*right_ids, session_id],
        )
    return len(right), len(key)


# Submit's statements are written out, like the save's: the end of an exam is a burst of
# submits, and the ORM's query building cost more CPU than the database's work.
_LOCK_SESSION = """
SELECT s.status, s.exam_id, s.raw_score, s.max_score FROM exams_examsession s
{join} WHERE s.id = %s {mine} {lock}
"""
_FINISH = """
UPDATE exams_examsession SET status = %s, submitted_at = %s, raw_score = %s, max_score = %s
WHERE id = %s
"""


def submit_session(
    session_id: int,
    now: dt.datetime | None = None,
    final_status: str = ExamSession.SUBMITTED,
    token_hash: str | None = None,
) -> SubmitResult:
    """Submit and score, exactly once even when two submits race.

    The session row is locked first (FOR UPDATE), so saves that passed their in-progress
    check have committed before the clock is read and the answers are scored, and a second
    submit waits, then sees the session submitted; ``submitted_at`` is never earlier than an
    accepted save. ``now`` is the earliest time to stamp (expiry passes its cut-off time).
    With ``token_hash`` the session must be that student's (else 401/404, as everywhere)."""
    mine = token_hash is not None
    sql = _LOCK_SESSION.format(
        join="JOIN exams_student st ON st.id = s.student_id" if mine else "",
        mine="AND st.token_hash = %s" if mine else "",
        # PostgreSQL: FOR UPDATE waits for saves holding KEY SHARE. SQLite has no row locks:
        # this transaction already holds the database's write lock (IMMEDIATE).
        lock="FOR UPDATE OF s" if connection.vendor == "postgresql" else "",
    )
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql, [session_id, token_hash] if mine else [session_id])
        row = cur.fetchone()
        if row is None:
            if mine:
                raise_for_foreign_or_unknown(token_hash)
            raise ExamSession.DoesNotExist(f"no session {session_id}")
        status, exam_id, raw, maximum = row
        if status == ExamSession.IN_PROGRESS:
            stamp = max(now, timezone.now()) if now else timezone.now()
            raw, maximum = _score_locked_session(cur, session_id, exam_id)
            cur.execute(_FINISH, [final_status, connection.ops.adapt_datetimefield_value(stamp),
                                  raw, maximum, session_id])  # fmt: skip
            status = final_status
    return SubmitResult(session_id, status, raw or 0, maximum or 0)


def submit_for_student(session_id: int, token_hash: str) -> SubmitResult:
    return submit_session(session_id, token_hash=token_hash)


def expire_overdue_sessions(now: dt.datetime | None = None) -> int:
    """Score and close sessions whose deadline (plus grace) passed without a submit."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.EXAM_SUBMIT_GRACE_SECONDS)
    ids = list(
        ExamSession.objects.filter(status=ExamSession.IN_PROGRESS, deadline__lt=cutoff).values_list(
            "id", flat=True
        )
    )
    for sid in ids:
        submit_session(sid, now=now, final_status=ExamSession.EXPIRED)
    return len(ids)


def results_for_student(session_id: int, token_hash: str, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    session = (
        ExamSession.objects.filter(pk=session_id, student__token_hash=token_hash)
        .select_related("exam")
        .first()
    )
    if session is None:
        raise_for_foreign_or_unknown(token_hash)
    if session.status == ExamSession.IN_PROGRESS:
        raise ApiError(409, "results are available after the session is submitted")
    key = answer_keys.answer_key(session.exam_id)
    answers = {(a.question, a.part): a for a in Answer.objects.filter(session_id=session.id)}
    # While the window is open others are still sitting: which answers were right (and the
    # key) would pass straight to them. Until it closes, only the student's own answers and
    # score; after, each question's verdict and the correct answer.
    reveal = now >= session.exam.ends_at
    questions = []
    for (q, p), correct in sorted(key.items()):
        a = answers.get((q, p))
        item = {"question": q, "part": p, "answer": a.value if a else None}
        if reveal:
            item["correct"] = bool(a and a.is_correct)
            item["correct_answer"] = correct
        questions.append(item)
    return {
        "revealed": reveal,
        "reveal_at": session.exam.ends_at,
        "session_id": session.id,
        "exam_id": session.exam_id,
        "status": session.status,
        "submitted_at": session.submitted_at,
        "raw_score": session.raw_score,
        "max_score": session.max_score,
        "ability": session.ability,
        "ability_se": session.ability_se,
        "scaled_score": session.scaled_score,
        "questions": questions,
    }
