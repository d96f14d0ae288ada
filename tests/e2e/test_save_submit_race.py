"""Saves racing submits against a real gunicorn: an acknowledged save is part of the score,
and a save that loses the race is refused (409), never acknowledged after scoring.

Many threads save right and wrong values (each with its own seq) while the session's submit
fires in the middle of them, over several rounds. Afterwards, for every session: the stored
answers, their ``is_correct`` and ``raw_score`` agree; the stored value is the highest-seq
save that was acknowledged; and no journal row was received after ``submitted_at``.
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from backend.exams.models import Answer, AnswerEvent, ExamSession
from tests.backend.factories import make_exam, make_student

pytestmark = pytest.mark.slow

KEY = {(1, ""): "42", (2, "a"): "Paris", (2, "b"): "5", (3, ""): "x"}
ROUNDS = 3
SESSIONS_PER_ROUND = 8
SAVES_PER_SESSION = 40


def _start_sessions(base: str, exam_id: int, tokens: list[str]) -> dict[str, int]:
    sessions = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for token in tokens:
            r = client.post(
                f"/api/exams/{exam_id}/sessions/", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 201, r.text
            sessions[token] = r.json()["session_id"]
    return sessions


def _plan(sessions: dict[str, int], rng: random.Random) -> list[tuple]:
    """Interleaved saves of every session, each session's submit placed among its saves."""
    per_session = []
    for token, sid in sessions.items():
        seqs = itertools.count(1)
        saves = []
        for _ in range(SAVES_PER_SESSION):
            (q, part), right = rng.choice(list(KEY.items()))
            value = right if rng.random() < 0.5 else f"wrong-{rng.randrange(1000)}"
            saves.append(("save", token, sid, q, part, value, next(seqs)))
        saves.insert(
            rng.randrange(SAVES_PER_SESSION // 3, SAVES_PER_SESSION), ("submit", token, sid)
        )
        per_session.append(saves)
    # Round-robin across sessions so a session's saves and its submit run side by side.
    tasks = []
    for group in itertools.zip_longest(*per_session):
        tasks += [t for t in group if t is not None]
    return tasks


def _send(base: str, task: tuple) -> tuple[tuple, int, dict]:
    headers = {"Authorization": f"Bearer {task[1]}"}
    with httpx.Client(base_url=base, timeout=60) as client:
        if task[0] == "submit":
            r = client.post(f"/api/sessions/{task[2]}/submit/", headers=headers)
        else:
            _, _, sid, q, part, value, seq = task
            body = {"question": q, "part": part, "answer": value, "seq": seq}
            r = client.post(f"/api/sessions/{sid}/answers/", json=body, headers=headers)
    return task, r.status_code, r.json()


def test_saves_racing_submit_are_refused_not_acknowledged_after_scoring(live_gunicorn):
    exam = make_exam(key=KEY)
    rng = random.Random(14)
    base = live_gunicorn.url
    results = []
    for round_no in range(ROUNDS):
        tokens = [
            make_student(f"R{round_no}-{i}", ext=f"race-{round_no}-{i}")[1]
            for i in range(SESSIONS_PER_ROUND)
        ]
        sessions = _start_sessions(base, exam.id, tokens)
        with ThreadPoolExecutor(max_workers=12) as pool:
            results += list(pool.map(lambda t: _send(base, t), _plan(sessions, rng)))

    submits = [(task, code, body) for task, code, body in results if task[0] == "submit"]
    saves = [(task, code, body) for task, code, body in results if task[0] == "save"]
    assert len(submits) == ROUNDS * SESSIONS_PER_ROUND
    assert all(code == 200 for _, code, _ in submits), [s for s in submits if s[1] != 200][:3]
    # A save either landed before the submit (200) or was refused after it (409): nothing else.
    assert {code for _, code, _ in saves} <= {200, 409}, [s for s in saves if s[1] >= 500][:3]
    refused = [body for _, code, body in saves if code == 409]
    assert all(body.get("status") == "submitted" and body.get("error") for body in refused)
    assert refused, "no save raced a submit; the test did not exercise the race"

    acked: dict[tuple[int, int, str], int] = {}
    for (_, _, sid, q, part, _, seq), code, body in saves:
        if code == 200 and body["status"] == "saved":
            acked[(sid, q, part)] = max(acked.get((sid, q, part), 0), seq)

    sessions = {s.id: s for s in ExamSession.objects.filter(exam=exam)}
    assert {s.status for s in sessions.values()} == {ExamSession.SUBMITTED}
    stored = {
        (a.session_id, a.question, a.part): a for a in Answer.objects.filter(session__exam=exam)
    }
    # Every acknowledged save is what was scored: the stored value is the highest acked seq.
    assert {k: a.seq for k, a in stored.items()} == acked
    for sid, session in sessions.items():
        mine = [a for (s, _, _), a in stored.items() if s == sid]
        for a in mine:
            assert a.is_correct == (a.value == KEY[(a.question, a.part)]), (sid, a.question)
        assert session.raw_score == sum(a.is_correct for a in mine), sid
        assert session.max_score == len(KEY)
        late = AnswerEvent.objects.filter(session_id=sid, received_at__gt=session.submitted_at)
        assert not late.exists(), f"session {sid}: journal rows received after submitted_at"
