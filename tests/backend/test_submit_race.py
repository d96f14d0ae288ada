"""Submit is atomic: two submits racing on separate connections score exactly once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from backend.exams import sessions
from backend.exams.models import Answer, ExamSession
from tests.backend.factories import make_exam, make_student


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_score_once(monkeypatch):
    exam = make_exam()
    student, _ = make_student()
    start = sessions.start_session(student.id, exam.id)
    Answer.objects.create(session_id=start.session_id, question=1, part="", value="42", seq=1)

    calls = []
    real = sessions._score_locked_session

    def counting(cur, session_id, exam_id):
        calls.append(session_id)
        return real(cur, session_id, exam_id)

    monkeypatch.setattr(sessions, "_score_locked_session", counting)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def submit():
        try:
            barrier.wait()
            results.append(sessions.submit_session(start.session_id))
        except Exception as exc:  # surfaced below; a thread must not swallow it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert calls == [start.session_id]
    assert {(r.status, r.raw_score, r.max_score) for r in results} == {("submitted", 1, 4)}
    assert ExamSession.objects.get(pk=start.session_id).raw_score == 1
