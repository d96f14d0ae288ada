"""Many clients saving at once against a real gunicorn: the highest seq always wins and the
journal holds every accepted save (in and out of order, with retries)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from backend.exams.models import Answer, AnswerEvent
from tests.backend.factories import make_exam, make_student

pytestmark = pytest.mark.slow


def test_concurrent_out_of_order_saves_keep_highest_seq(live_gunicorn):
    exam = make_exam(key={(1, ""): "1", (2, "a"): "2", (2, "b"): "3", (3, ""): "4"})
    students = [make_student(f"C{i}", ext=f"c{i}") for i in range(6)]
    rng = random.Random(7)
    base = live_gunicorn.url
    sessions = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        for _, token in students:
            r = client.post(
                f"/api/exams/{exam.id}/sessions/", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 201
            sessions[token] = r.json()["session_id"]

    sends = []
    for token, sid in sessions.items():
        for q, part in [(1, ""), (2, "a"), (2, "b"), (3, "")]:
            seqs = list(range(1, 13))
            seqs += rng.sample(seqs, 4)  # retries of some saves
            rng.shuffle(seqs)
            sends += [(token, sid, q, part, s) for s in seqs]
    rng.shuffle(sends)

    def send(item):
        token, sid, q, part, seq = item
        body = {"question": q, "part": part, "answer": f"{sid}-{q}{part}-v{seq}", "seq": seq}
        with httpx.Client(base_url=base, timeout=10) as c:
            for _attempt in range(5):
                try:
                    r = c.post(
                        f"/api/sessions/{sid}/answers/",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.TransportError:
                    continue
                if r.status_code < 500:
                    return item, r.status_code, r.json()
        return item, None, None

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(send, sends))

    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:3]
    accepted = {
        (sid, q, part, seq)
        for (_, sid, q, part, seq), _, body in results
        if body["status"] == "saved"
    }
    for (_, _, _, _, seq), _, body in results:
        if body["status"] == "stale":
            assert body["seq"] > seq  # stale is only ever answered for a lower seq

    stored = {(a.session_id, a.question, a.part): a for a in Answer.objects.all()}
    assert len(stored) == len(sessions) * 4
    for (sid, q, part), answer in stored.items():
        assert answer.seq == 12
        assert answer.value == f"{sid}-{q}{part}-v12"

    journal = set(AnswerEvent.objects.values_list("session_id", "question", "part", "seq"))
    assert accepted <= journal
    assert {(sid, q, part, 12) for sid, q, part in stored} <= accepted
