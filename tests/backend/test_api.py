"""Every row of the API table, including every error row, on both databases."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.exams.models import Answer, AnswerEvent, ExamSession
from tests.backend.factories import auth, make_exam, make_student

pytestmark = pytest.mark.django_db


def post(client, url, body, token=None, raw=None):
    kwargs = auth(token) if token else {}
    data = raw if raw is not None else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **kwargs)


@pytest.fixture
def ada():
    return make_student("Ada")


@pytest.fixture
def exam():
    return make_exam()


@pytest.fixture
def session_id(client, ada, exam):
    r = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    assert r.status_code == 201
    return r.json()["session_id"]


def save(client, sid, token, **body):
    return post(client, f"/api/sessions/{sid}/answers/", body, token)


# --- exams list -------------------------------------------------------------------------


def test_exams_list_shows_visible_exams_with_status(client, ada, exam):
    make_exam("Ancient", opens=dt.timedelta(days=-60), closes=dt.timedelta(days=-59))
    make_exam("Later", opens=dt.timedelta(days=1), closes=dt.timedelta(days=1, hours=2))
    r = client.get("/api/exams/", **auth(ada[1]))
    assert r.status_code == 200
    by_title = {e["title"]: e for e in r.json()["exams"]}
    assert set(by_title) == {"Algebra", "Later"}
    assert by_title["Algebra"]["status"] == "open"
    assert by_title["Later"]["status"] == "upcoming"
    assert set(by_title["Algebra"]) == {
        "id",
        "title",
        "starts_at",
        "ends_at",
        "duration_min",
        "status",
    }


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer nope"])
def test_missing_or_unknown_token_is_401_json(client, exam, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    r = client.get("/api/exams/", **kwargs)
    assert r.status_code == 401
    assert "token" in r.json()["error"]


# --- start ------------------------------------------------------------------------------


def test_start_creates_then_resumes(client, ada, exam):
    r1 = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    assert r1.status_code == 201
    body = r1.json()
    assert set(body) >= {"session_id", "started_at", "deadline"}
    r2 = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    assert r2.status_code == 200
    assert r2.json()["session_id"] == body["session_id"]
    assert ExamSession.objects.count() == 1


def test_deadline_is_duration_capped_by_window(client, ada):
    exam = make_exam(closes=dt.timedelta(minutes=20), duration_min=60)
    r = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    deadline = dt.datetime.fromisoformat(r.json()["deadline"])
    assert abs((deadline - exam.ends_at).total_seconds()) < 1


@pytest.mark.parametrize(
    "opens,closes",
    [
        (dt.timedelta(hours=1), dt.timedelta(hours=2)),
        (dt.timedelta(hours=-3), dt.timedelta(hours=-1)),
    ],
)
def test_start_outside_window_is_403(client, ada, opens, closes):
    exam = make_exam(opens=opens, closes=closes)
    r = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    assert r.status_code == 403
    assert "window" in r.json()["error"]
    assert not ExamSession.objects.exists()


def test_start_unknown_exam_is_404(client, ada):
    r = post(client, "/api/exams/999999/sessions/", {}, ada[1])
    assert r.status_code == 404 and "error" in r.json()


def test_start_deadline_is_start_plus_duration(client, ada):
    exam = make_exam(duration_min=45)
    r = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    body = r.json()
    started = dt.datetime.fromisoformat(body["started_at"])
    deadline = dt.datetime.fromisoformat(body["deadline"])
    assert deadline - started == dt.timedelta(minutes=45)
    stored = ExamSession.objects.get(pk=body["session_id"])
    assert stored.deadline - stored.started_at == dt.timedelta(minutes=45)
    assert abs(stored.started_at - started) < dt.timedelta(milliseconds=1)  # JSON keeps ms
    assert stored.status == "in_progress"


def test_start_with_an_unknown_token_is_401_before_the_exam_is_looked_at(client, ada):
    for exam_id in (999999, 2**63):  # unknown, and beyond any bigint
        r = post(client, f"/api/exams/{exam_id}/sessions/", {}, "not-a-token")
        assert r.status_code == 401 and r.json()["error"] == "unknown token"
        r = post(client, f"/api/exams/{exam_id}/sessions/", {}, ada[1])
        assert r.status_code == 404 and r.json()["error"] == f"no exam {exam_id}"


def test_a_started_session_resumes_after_the_window_closed(client, ada, exam):
    sid = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1]).json()["session_id"]
    exam.ends_at = timezone.now() - dt.timedelta(seconds=1)
    exam.save()
    r = post(client, f"/api/exams/{exam.id}/sessions/", {}, ada[1])
    assert (r.status_code, r.json()["session_id"]) == (200, sid)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_start_racing_another_resumes_the_session_the_other_created(database_url):
    """The other request's session is committed while this start waits on the unique key:
    this statement's snapshot cannot see it, so the start reads it afresh and resumes it."""
    import threading

    import psycopg

    from backend.exams import sessions
    from backend.exams.models import hash_token

    exam = make_exam()
    student, token = make_student("Racer")
    url = database_url.replace("postgresql+psycopg://", "postgresql://")  # the test database
    with psycopg.connect(url) as other:
        now = timezone.now()
        other_id = other.execute(
            "INSERT INTO exams_examsession (student_id, exam_id, status, started_at, deadline)"
            " VALUES (%s, %s, 'in_progress', %s, %s) RETURNING id",
            [student.id, exam.id, now, now + dt.timedelta(minutes=30)],
        ).fetchone()[0]
        result = {}

        def start():
            try:
                result["r"] = sessions.start_session_for_token(hash_token(token), exam.id)
            finally:
                connection.close()

        t = threading.Thread(target=start)
        t.start()
        t.join(timeout=1.0)  # it waits on the uncommitted row's key
        other.commit()
        t.join(timeout=60)
    r = result["r"]
    assert (r.session_id, r.created) == (other_id, False)
    assert ExamSession.objects.filter(student=student, exam=exam).count() == 1


# --- save -------------------------------------------------------------------------------


def test_save_then_stale_then_idempotent_retry(client, ada, session_id):
    tok = ada[1]
    assert save(client, session_id, tok, question=1, part="", answer="41", seq=1).json() == {
        "status": "saved",
        "seq": 1,
    }
    assert save(client, session_id, tok, question=1, answer="42", seq=3).json()["seq"] == 3
    stale = save(client, session_id, tok, question=1, part="", answer="40", seq=2)
    assert stale.status_code == 200 and stale.json() == {"status": "stale", "seq": 3}
    retry = save(client, session_id, tok, question=1, part="", answer="42", seq=3)
    assert retry.json() == {"status": "saved", "seq": 3}
    answer = Answer.objects.get(session_id=session_id, question=1)
    assert (answer.value, answer.seq) == ("42", 3)
    journal = list(AnswerEvent.objects.filter(session_id=session_id).values_list("value", "seq"))
    assert ("41", 1) in journal and ("42", 3) in journal and ("40", 2) not in journal


def test_save_without_seq_is_numbered_by_server(client, ada, session_id):
    assert save(client, session_id, ada[1], question=3, answer="a").json()["seq"] == 1
    assert save(client, session_id, ada[1], question=3, answer="b").json()["seq"] == 2
    assert Answer.objects.get(session_id=session_id, question=3).value == "b"


def _real_statements(ctx):
    # BEGIN/COMMIT are transaction control, not statements of the save itself.
    return [
        q["sql"]
        for q in ctx.captured_queries
        if not q["sql"].upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]


def test_save_takes_at_most_three_statements(client, ada, session_id):
    save(client, session_id, ada[1], question=1, answer="1", seq=1)  # warms the key cache
    with CaptureQueriesContext(connection) as ctx:
        r = save(client, session_id, ada[1], question=2, part="a", answer="Paris", seq=1)
    assert r.status_code == 200
    statements = _real_statements(ctx)
    assert len(statements) <= 3, statements


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"part": "", "answer": "1"}, "'question'"),
        ({"question": "1", "answer": "1"}, "'question'"),
        ({"question": True, "answer": "1"}, "'question'"),
        ({"question": 1, "answer": 1}, "'answer'"),
        ({"question": 1, "part": 3, "answer": "1"}, "'part'"),
        ({"question": 1, "answer": "1", "seq": "x"}, "'seq'"),
        ({"question": 1, "answer": "1", "seq": -1}, "'seq'"),
        ({"question": 1, "answer": "x" * 501}, "500"),
        ({"question": 99, "answer": "1"}, "not in this exam"),
        ({"question": 2, "part": "z", "answer": "1"}, "not in this exam"),
        ({"question": 1, "answer": "1", "extra": 1}, "unknown field"),
    ],
)
def test_bad_save_is_400_and_changes_nothing(client, ada, session_id, body, fragment):
    r = save(client, session_id, ada[1], **body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]
    assert not Answer.objects.exists() and not AnswerEvent.objects.exists()


@pytest.mark.parametrize("raw", ["{", "[1, 2]", "null", "\xff"])
def test_malformed_json_is_400(client, ada, session_id, raw):
    r = post(client, f"/api/sessions/{session_id}/answers/", None, ada[1], raw=raw)
    assert r.status_code == 400 and "error" in r.json()


def test_other_students_session_is_404(client, session_id):
    _, bob = make_student("Bob")
    r = save(client, session_id, bob, question=1, answer="1")
    assert r.status_code == 404
    assert not Answer.objects.exists()


def test_save_after_submit_is_409(client, ada, session_id):
    post(client, f"/api/sessions/{session_id}/submit/", {}, ada[1])
    r = save(client, session_id, ada[1], question=1, answer="1")
    assert r.status_code == 409 and "submitted" in r.json()["error"]


def test_save_past_deadline_and_grace_is_410_and_submits(client, ada, session_id):
    ExamSession.objects.filter(pk=session_id).update(
        deadline=timezone.now() - dt.timedelta(seconds=31)
    )
    r = save(client, session_id, ada[1], question=1, answer="42")
    assert r.status_code == 410
    session = ExamSession.objects.get(pk=session_id)
    assert session.status == "submitted" and session.raw_score == 0


def test_save_within_grace_is_accepted(client, ada, session_id):
    ExamSession.objects.filter(pk=session_id).update(
        deadline=timezone.now() - dt.timedelta(seconds=10)
    )
    assert save(client, session_id, ada[1], question=1, answer="42").status_code == 200


# --- submit and results -----------------------------------------------------------------


def test_submit_scores_once_and_is_idempotent(client, ada, session_id):
    tok = ada[1]
    save(client, session_id, tok, question=1, answer=" 42.0 ", seq=1)
    save(client, session_id, tok, question=2, part="a", answer="paris", seq=1)
    save(client, session_id, tok, question=2, part="b", answer="6", seq=1)
    r = post(client, f"/api/sessions/{session_id}/submit/", {}, tok)
    assert r.status_code == 200
    assert r.json() == {
        "status": "submitted",
        "session_status": "submitted",
        "raw_score": 2,
        "max_score": 4,
    }
    again = post(client, f"/api/sessions/{session_id}/submit/", {}, tok)
    assert again.json()["raw_score"] == 2
    res = client.get(f"/api/sessions/{session_id}/results/", **auth(tok))
    assert res.status_code == 200
    body = res.json()
    assert body["raw_score"] == 2 and body["revealed"] is False
    # Window still open: others are sitting, so no verdicts and no key, only own answers.
    assert body["questions"] == [
        {"question": 1, "part": "", "answer": " 42.0 "},
        {"question": 2, "part": "a", "answer": "paris"},
        {"question": 2, "part": "b", "answer": "6"},
        {"question": 3, "part": "", "answer": None},
    ]


def test_results_show_verdicts_and_key_once_the_window_closes(client, ada, exam, session_id):
    tok = ada[1]
    save(client, session_id, tok, question=1, answer="42", seq=1)
    save(client, session_id, tok, question=2, part="b", answer="6", seq=1)
    post(client, f"/api/sessions/{session_id}/submit/", {}, tok)
    type(exam).objects.filter(pk=exam.id).update(ends_at=timezone.now() - dt.timedelta(seconds=1))
    body = client.get(f"/api/sessions/{session_id}/results/", **auth(tok)).json()
    assert body["revealed"] is True and body["raw_score"] == 1
    qs = {(q["question"], q["part"]): q for q in body["questions"]}
    assert qs[(1, "")] == {"question": 1, "part": "", "answer": "42", "correct": True,
                           "correct_answer": "42"}  # fmt: skip
    assert qs[(2, "b")]["correct"] is False and qs[(2, "b")]["correct_answer"] == "5"
    assert qs[(3, "")] == {"question": 3, "part": "", "answer": None, "correct": False,
                           "correct_answer": "x"}  # fmt: skip


def test_a_body_over_the_limit_is_413_json_naming_the_limit(client, ada, session_id):
    big = json.dumps({"question": 1, "answer": "x" * (10 * 1024 * 1024)})
    r = post(client, f"/api/sessions/{session_id}/answers/", None, ada[1], raw=big)
    assert r.status_code == 413
    assert r.json() == {"error": "the body is larger than the 64 KiB limit", "limit_bytes": 65536}
    assert not Answer.objects.filter(session_id=session_id).exists()


def _forged_cursor(payload) -> str:
    from django.core import signing

    from backend.exams.leaderboard import _SALT

    return signing.dumps(payload, salt=_SALT, compress=True)


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        "a string",
        {"e": "EXAM", "m": "raw_score"},
        {"e": "EXAM", "m": "raw_score", "s": "x", "t": "2026-01-01T00:00:00+00:00", "i": 1, "n": 1},
        {"e": "EXAM", "m": "raw_score", "s": 3, "t": "not a time", "i": 1, "n": 1},
        {"e": "EXAM", "m": "raw_score", "s": 3, "t": "2026-01-01T00:00:00", "i": 1, "n": 1},
        {"e": "EXAM", "m": "raw_score", "s": 3, "t": "2026-01-01T00:00:00+00:00", "i": [], "n": 1},
        {"e": "EXAM", "m": "raw_score", "s": 3, "t": 5, "i": 1, "n": -1},
    ],
)
def test_leaderboard_cursor_with_a_good_signature_and_a_bad_payload_is_400(
    client, ada, exam, payload
):
    if isinstance(payload, dict) and payload.get("e") == "EXAM":
        payload = {**payload, "e": exam.id}
    r = client.get(
        f"/api/leaderboard/?exam={exam.id}&cursor={_forged_cursor(payload)}", **auth(ada[1])
    )
    assert r.status_code == 400
    assert r.json()["error"].startswith("invalid cursor")


def test_results_while_in_progress_is_409(client, ada, session_id):
    r = client.get(f"/api/sessions/{session_id}/results/", **auth(ada[1]))
    assert r.status_code == 409 and "error" in r.json()


def test_submit_and_results_of_other_student_is_404(client, session_id):
    _, bob = make_student("Bob")
    assert post(client, f"/api/sessions/{session_id}/submit/", {}, bob).status_code == 404
    assert client.get(f"/api/sessions/{session_id}/results/", **auth(bob)).status_code == 404
    assert ExamSession.objects.get(pk=session_id).status == "in_progress"


def test_wrong_method_is_405_json(client, ada, session_id):
    r = client.get(f"/api/sessions/{session_id}/answers/", **auth(ada[1]))
    assert r.status_code == 405 and "error" in r.json()


def test_unknown_url_is_json_404(client):
    r = client.get("/api/nope/")
    assert r.status_code == 404 and "error" in r.json()


# --- leaderboard ------------------------------------------------------------------------


def _submitted_exam(client, n=7):
    exam = make_exam("Board")
    tokens = []
    for i in range(n):
        _, tok = make_student(f"S{i}", ext=f"s{i}")
        sid = post(client, f"/api/exams/{exam.id}/sessions/", {}, tok).json()["session_id"]
        if i % 2 == 0:
            save(client, sid, tok, question=1, answer="42", seq=1)
        if i % 3 == 0:
            save(client, sid, tok, question=3, answer="X", seq=1)
        post(client, f"/api/sessions/{sid}/submit/", {}, tok)
        tokens.append(tok)
    return exam, tokens


def test_leaderboard_pages_cover_everyone_once_in_order(client):
    exam, tokens = _submitted_exam(client)
    seen, cursor = [], None
    for _ in range(10):
        url = f"/api/leaderboard/?exam={exam.id}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, **auth(tokens[0])).json()
        seen += body["entries"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 7
    assert len({e["session_id"] for e in seen}) == 7
    assert [e["rank"] for e in seen] == list(range(1, 8))
    scores = [e["score"] for e in seen]
    assert scores == sorted(scores, reverse=True) and scores[0] == 2


def test_leaderboard_tampered_cursor_is_400(client):
    exam, tokens = _submitted_exam(client, n=4)
    body = client.get(f"/api/leaderboard/?exam={exam.id}&limit=1", **auth(tokens[0])).json()
    bad = body["next_cursor"][:-2] + ("AA" if not body["next_cursor"].endswith("AA") else "BB")
    r = client.get(f"/api/leaderboard/?exam={exam.id}&cursor={bad}", **auth(tokens[0]))
    assert r.status_code == 400 and "cursor" in r.json()["error"]


@pytest.mark.parametrize("query", ["", "exam=abc", "exam=1&limit=0", "exam=1&limit=x"])
def test_leaderboard_bad_params_are_400(client, ada, query):
    make_exam()
    r = client.get(f"/api/leaderboard/?{query}", **auth(ada[1]))
    assert r.status_code == 400 and "error" in r.json()


# --- paper ------------------------------------------------------------------------------


@pytest.fixture
def paper_exam(settings, tmp_path):
    from django.core.files.base import ContentFile

    from backend.exams.seed import demo_pdf

    settings.MEDIA_ROOT = str(tmp_path)
    exam = make_exam("With paper")
    exam.paper.save("p.pdf", ContentFile(demo_pdf("With paper")), save=True)
    return exam


def test_paper_only_with_open_session(client, settings, ada, paper_exam):
    settings.PAPER_DELIVERY = "direct"
    url = f"/api/exams/{paper_exam.id}/paper.pdf"
    assert client.get(url, **auth(ada[1])).status_code == 403
    post(client, f"/api/exams/{paper_exam.id}/sessions/", {}, ada[1])
    r = client.get(url, **auth(ada[1]))
    assert r.status_code == 200 and r["Content-Type"] == "application/pdf"
    assert b"".join(r.streaming_content).startswith(b"%PDF-")


def test_paper_in_production_uses_x_accel_redirect(client, settings, ada, paper_exam):
    settings.PAPER_DELIVERY = "accel"
    post(client, f"/api/exams/{paper_exam.id}/sessions/", {}, ada[1])
    r = client.get(f"/api/exams/{paper_exam.id}/paper.pdf", **auth(ada[1]))
    assert r.status_code == 200
    assert r["X-Accel-Redirect"].startswith("/protected/papers/")


# --- health -----------------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
