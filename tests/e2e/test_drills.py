"""Exam-day fault drills, at a small scale (``make bench`` runs the large one).

- kill -9 gunicorn workers during a load: no acknowledged save lost, every error retried;
- stop and restart PostgreSQL (a throwaway cluster) during a load: 503 with a clear body
  during the outage, recovery without help, no acknowledged save lost;
- the database disk past its threshold during a load (simulated): the alert opens, the
  service keeps serving;
- 1,000 fuzzed bad requests to save and submit: only 4xx, nothing stored changes;
- one student's token on another student's session: 404, every endpoint, every time.
"""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest
from django.test import Client
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from opsctl import loadtest as lt
from tests.backend.factories import make_exam, make_student

pytestmark = pytest.mark.slow

LOAD_ENDPOINTS = ("start", "save", "submit")


def _errors_seen(report: lt.LoadtestReport) -> int:
    """Attempts that failed (network error or 5xx) on the load's endpoints."""
    n = 0
    for s in report.endpoints:
        if s.endpoint in LOAD_ENDPOINTS:
            n += sum(s.transport_errors.values())
            n += sum(v for code, v in s.statuses.items() if code.startswith("5"))
    return n


def _assert_nothing_lost(report: lt.LoadtestReport, students: int) -> None:
    v = report.verification
    assert v.lost == 0, v.lost_examples
    assert v.sessions == v.verified == students
    assert v.acked_saves > 0
    # Every error the load met was retried until it succeeded: none reached a student.
    assert report.failed == 0 and report.client_errors == 0
    assert _errors_seen(report) == report.retries


# ---------------------------------------------------------------------------------------------
# kill -9 a worker every second


def test_kill9_workers_during_load_loses_no_acknowledged_save(live_gunicorn):
    exam = make_exam(title="Kill drill")
    target = lt.provision(20, exam.id, duration=6)
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        # Kill only once every worker has booted: killing the replacement before it can serve
        # (boots take seconds on a busy machine) takes the whole server down, an outage this
        # drill is not about; with this, at most one worker is down at a time.
        while not stop.wait(0.75):
            if live_gunicorn.workers_booted():
                pid = live_gunicorn.kill_worker()
                if pid:
                    killed.append(pid)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        report = lt.run_load(live_gunicorn.url, target, duration=6, think=0.15, seed=9)
    finally:
        stop.set()
        thread.join()
    assert len(killed) >= 2, killed
    _assert_nothing_lost(report, 20)
    # The drill bit: killed workers cut requests in flight or their kept-alive connections.
    assert report.retries > 0
    assert httpx.get(f"{live_gunicorn.url}/readyz", timeout=10).status_code == 200
    assert not set(killed) & set(live_gunicorn.worker_pids())


# ---------------------------------------------------------------------------------------------
# PostgreSQL stops for a few seconds during the load


@pytest.mark.postgres_only
def test_postgres_restart_during_load(tmp_path):
    from tests.e2e import pg_cluster
    from tests.e2e.gunicorn_server import GunicornServer

    if not pg_cluster.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"initdb/pg_ctl not found under {pg_cluster.PG_BIN}")
        pytest.skip(f"initdb/pg_ctl not found under {pg_cluster.PG_BIN}")
    with pg_cluster.ThrowawayPostgres() as pg:
        seeded = pg_cluster.seed_database(pg.url, students=16)
        target = lt.Target(
            seeded["exam_id"], [tuple(q) for q in seeded["questions"]], seeded["tokens"]
        )
        # A 1 s pool timeout (production: 10 s) makes a 2.5 s outage exercise both failure
        # paths: connections cut by the shutdown, and no connection to be had at all.
        server = GunicornServer(
            pg.url,
            env={"DB_POOL_TIMEOUT": "1", "OPS_TELEMETRY_DIR": str(tmp_path / "telemetry")},
            log_path=tmp_path / "gunicorn.log",
        )
        outage: dict = {}

        def drill():
            time.sleep(1.5)
            pg.stop("fast")
            outage["down"] = time.monotonic()
            time.sleep(0.5)
            try:
                outage["readyz"] = httpx.get(f"{server.url}/readyz", timeout=10)
            except httpx.HTTPError as exc:
                outage["readyz"] = exc
            time.sleep(2.0)
            pg.start_server()
            outage["up"] = time.monotonic()

        with server:
            thread = threading.Thread(target=drill)
            thread.start()
            try:
                # The 503s come at once while the database is down (backend/pgpool), so a
                # client's retries are spent faster than the outage, which on a loaded host
                # lasts ~10 s (shutdown and start included): clients retry for ~25 s.
                report = lt.run_load(server.url, target, duration=7, think=0.2, seed=4,
                                     max_attempts=20)  # fmt: skip
            finally:
                thread.join()
            after = httpx.get(f"{server.url}/readyz", timeout=10)

    _assert_nothing_lost(report, 16)
    assert outage["up"] - outage["down"] >= 2.0
    for s in report.endpoints:
        if s.endpoint in LOAD_ENDPOINTS:
            assert set(s.statuses) <= {"200", "201", "503"}, s
            assert s.transport_errors == {}, s  # gunicorn itself never dropped a connection
    save = next(s for s in report.endpoints if s.endpoint == "save")
    assert save.statuses.get("503", 0) > 0
    body = json.loads(report.error_samples["503"])
    assert body == {"error": "database unavailable, please retry"}
    ready = outage["readyz"]
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert ready.json()["reason"].startswith("database")
    # It came back without help: ready again, and saves after the outage succeeded.
    assert after.status_code == 200
    assert save.requests == save.statuses["200"]


# ---------------------------------------------------------------------------------------------
# The database disk fills past its threshold during the load (simulated)


def test_disk_threshold_during_load_opens_alert_and_service_keeps_serving(
    live_gunicorn, monkeypatch
):
    import datetime as dt
    from collections import namedtuple

    import psutil
    from django.conf import settings
    from django.utils import timezone

    from backend.ops import resources

    exam = make_exam(title="Disk drill")
    target = lt.provision(12, exam.id, duration=5)
    holder: dict = {}
    load = threading.Thread(
        target=lambda: holder.setdefault(
            "report", lt.run_load(live_gunicorn.url, target, duration=5, think=0.2, seed=2)
        )
    )
    load.start()
    try:
        time.sleep(1.0)
        # The disk holding var/ reports 97% full: the real probe, a simulated disk.
        usage = namedtuple("sdiskusage", "total used free percent")
        full = usage(100 * 10**9, 97 * 10**9, 3 * 10**9, 97.0)
        monkeypatch.setattr(resources.psutil, "disk_usage", lambda path: full)
        now = timezone.now()
        first = resources.check(values=resources.measure(only=["disk.var"]), now=now)
        assert [(r.severity, r.alert) for r in first] == [("critical", "pending")]
        later = now + dt.timedelta(seconds=settings.RESOURCE_DAMPING_SECONDS + 1)
        second = resources.check(values=resources.measure(only=["disk.var"]), now=later)
        assert [(r.severity, r.alert) for r in second] == [("critical", "open")]
        alerts = resources.open_alerts()
        assert [(a.probe, a.severity, a.value) for a in alerts] == [("disk.var", "critical", 97.0)]
        # While the alert is open, the service answers: ready, and a save is acknowledged.
        assert httpx.get(f"{live_gunicorn.url}/readyz", timeout=10).status_code == 200
        _, token = make_student("Late", ext="disk-late")
        with httpx.Client(
            base_url=live_gunicorn.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            sid = client.post(f"/api/exams/{exam.id}/sessions/").json()["session_id"]
            saved = client.post(
                f"/api/sessions/{sid}/answers/", json={"question": 1, "answer": "7", "seq": 1}
            )
        assert saved.status_code == 200 and saved.json() == {"status": "saved", "seq": 1}
    finally:
        load.join()
    report = holder["report"]
    _assert_nothing_lost(report, 12)
    assert report.retries == 0  # nothing failed at all, not even transiently
    # Space freed: the next check resolves the alert.
    monkeypatch.setattr(resources.psutil, "disk_usage", psutil.disk_usage)
    resources.check(values={"disk.var": (40.0, "freed", "")}, now=later)
    assert resources.open_alerts() == []


# ---------------------------------------------------------------------------------------------
# 1,000 fuzzed bad requests


KEY = {(1, ""): "42", (2, "a"): "Paris", (2, "b"): "5", (3, ""): "x"}
SAVE_FIELDS = ("question", "part", "answer", "seq")


def _snapshot():
    from backend.exams.models import Answer, AnswerEvent, ExamSession

    return (
        sorted(Answer.objects.values_list("session_id", "question", "part", "value", "seq")),
        AnswerEvent.objects.count(),
        sorted(ExamSession.objects.values_list("id", "status", "raw_score", "submitted_at")),
    )


def _is_valid_save(body: bytes, content_type: str) -> bool:
    """The contract's definition of an acceptable save body (independent of the server's
    code), used only to skip the rare generated request that is in fact good."""
    if content_type not in ("", "application/json"):
        return False
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(doc, dict) or set(doc) - set(SAVE_FIELDS):
        return False
    q, part, answer, seq = (doc.get(k) for k in SAVE_FIELDS)
    part = "" if part is None else part
    return (
        isinstance(q, int)
        and not isinstance(q, bool)
        and isinstance(part, str)
        and (q, part) in KEY
        and isinstance(answer, str)
        and len(answer) <= 500
        and "\x00" not in answer
        and _is_unicode(answer)
        and (seq is None or (isinstance(seq, int) and not isinstance(seq, bool)))
        and (seq is None or 0 <= seq < 2**62)
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_surrogates = st.text(st.characters(categories=["Cs", "Ll"]), min_size=1, max_size=6).filter(
    lambda t: not _is_unicode(t)
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_bad_field = st.sampled_from(SAVE_FIELDS).flatmap(
    lambda f: st.tuples(
        st.just(f),
        {
            "question": st.sampled_from([None, "1", 1.0, True, [1], {}, 0, -1, 999, 2**70])
            | st.integers().filter(lambda q: q not in (1, 2, 3)),
            "part": st.sampled_from([1, ["a"], {}, "c", "A", "zz", "a\x00"])
            | st.text(min_size=2, max_size=40)
            | _surrogates,
            "answer": st.sampled_from([None, 5, 5.5, True, ["x"], {}, "x" * 501, "a\x00b"])
            | st.text(min_size=501, max_size=600)
            | _surrogates,
            "seq": st.sampled_from([-1, 2**62, 2**64, "3", 1.5, True, False, [1], {}]),
        }[f],
    )
)


@st.composite
def bad_save_bodies(draw):
    kind = draw(st.sampled_from(["field"] * 4 + ["bytes", "text", "json", "extra", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=30_000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    body = {"question": 1, "part": "", "answer": "42", "seq": draw(st.integers(1, 1000))}
    if kind == "extra":
        body[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in body))] = 1
    else:
        field, value = draw(_bad_field)
        body[field] = value
    # ensure_ascii keeps lone surrogates as \\ud800 escapes: valid JSON, invalid Unicode.
    return json.dumps(body).encode()


@pytest.fixture
def fuzz_world(db):
    exam = make_exam(key=KEY)
    other_exam = make_exam(title="Other", key=KEY)
    _, token_a = make_student("A", ext="fuzz-a")
    _, token_b = make_student("B", ext="fuzz-b")
    client = Client(raise_request_exception=False)
    sid_a = client.post(f"/api/exams/{exam.id}/sessions/", HTTP_AUTHORIZATION=f"Bearer {token_a}")
    sid_b = client.post(f"/api/exams/{exam.id}/sessions/", HTTP_AUTHORIZATION=f"Bearer {token_b}")
    done = client.post(
        f"/api/exams/{other_exam.id}/sessions/", HTTP_AUTHORIZATION=f"Bearer {token_a}"
    )
    sid_a, sid_b, done = (r.json()["session_id"] for r in (sid_a, sid_b, done))
    auth_a = {"HTTP_AUTHORIZATION": f"Bearer {token_a}"}
    for q, p in KEY:
        r = client.post(
            f"/api/sessions/{sid_a}/answers/",
            {"question": q, "part": p, "answer": "first", "seq": 10},
            content_type="application/json",
            **auth_a,
        )
        assert r.status_code == 200
    assert client.post(f"/api/sessions/{done}/submit/", **auth_a).status_code == 200
    return {
        "client": client,
        "token_a": token_a,
        "token_b": token_b,
        "own": sid_a,
        "foreign": sid_b,
        "submitted": done,
    }


_auth_headers = st.sampled_from(
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-real-token",
        "Bearer " + "x" * 300,
        "bearer  {A}",
        "Bearer {A}",
        "Bearer {B}",
        "Token {A}",
    ]
)
_fuzz_settings = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _send(w, method, endpoint, session, auth, content_type, body):
    sid = {"missing": 10**9, **{k: w[k] for k in ("own", "foreign", "submitted")}}[session]
    headers = {}
    if auth is not None:
        headers["HTTP_AUTHORIZATION"] = auth.format(A=w["token_a"], B=w["token_b"])
    before = _snapshot()
    resp = w["client"].generic(
        method, f"/api/sessions/{sid}/{endpoint}/", data=body, content_type=content_type, **headers
    )
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.content[:300])
    assert "error" in resp.json()
    assert _snapshot() == before


# 700 + 300 = 1,000 bad requests: bodies from the owner of an open session (past
# authentication, so validation is what gets exercised), then every other part of the
# request: token, session, method, content type, endpoint.


@settings(_fuzz_settings, max_examples=700)
@given(body=bad_save_bodies())
def test_fuzzed_save_bodies_get_4xx_and_change_nothing(fuzz_world, body):
    assume(not _is_valid_save(body, "application/json"))
    _send(fuzz_world, "POST", "answers", "own", "Bearer {A}", "application/json", body)


@settings(_fuzz_settings, max_examples=300)
@given(
    endpoint=st.sampled_from(["answers", "submit"]),
    method=st.sampled_from(["POST"] * 3 + ["GET", "PUT", "DELETE", "PATCH"]),
    auth=_auth_headers,
    session=st.sampled_from(["own", "foreign", "submitted", "missing"]),
    content_type=st.sampled_from(["application/json", "", "text/plain", "x/y"]),
    body=st.just(b'{"question": 1, "part": "", "answer": "42", "seq": 500}') | bad_save_bodies(),
)
def test_fuzzed_bad_requests_get_4xx_and_change_nothing(
    fuzz_world, endpoint, method, auth, session, content_type, body
):
    caller = {"Bearer {A}": "A", "bearer  {A}": "A", "Bearer {B}": "B"}.get(auth)
    owner = {"own": "A", "submitted": "A", "foreign": "B"}.get(session)
    if method == "POST" and caller is not None and caller == owner:
        # A student submitting their own session is a good request (it is idempotent, so
        # even on a submitted one), and so is a valid save to their open session.
        assume(endpoint == "answers" and not _is_valid_save(body, content_type))
        assume(session != "foreign" or endpoint != "answers")  # B's own open session
    _send(fuzz_world, method, endpoint, session, auth, content_type, body)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "error"),
    [
        # json's decoder recursed past the interpreter's limit: RecursionError, once a 500.
        (b"[" * 20_000, "nested too deeply"),
        (b'{"a":' * 10_000, "nested too deeply"),
        # A lone surrogate is valid JSON but no driver can store it: once a 500.
        (b'{"question": 1, "part": "", "answer": "\\ud800x", "seq": 3}', "lone surrogate"),
    ],
    ids=["deep-array", "deep-object", "lone-surrogate"],
)
def test_inputs_the_fuzzer_found_get_400(body, error):
    exam = make_exam(key=KEY)
    _, token = make_student()
    client = Client(raise_request_exception=False)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    sid = client.post(f"/api/exams/{exam.id}/sessions/", **auth).json()["session_id"]
    before = _snapshot()
    resp = client.generic(
        "POST", f"/api/sessions/{sid}/answers/", body, content_type="application/json", **auth
    )
    assert resp.status_code == 400 and error in resp.json()["error"]
    assert _snapshot() == before


# ---------------------------------------------------------------------------------------------
# Another student's token


@pytest.mark.django_db
def test_another_students_token_gets_404_on_every_session_endpoint():
    client = Client(raise_request_exception=False)
    exam = make_exam(key=KEY)
    people = [make_student(f"P{i}", ext=f"peer-{i}") for i in range(4)]
    sessions = {}
    for _, token in people:
        r = client.post(f"/api/exams/{exam.id}/sessions/", HTTP_AUTHORIZATION=f"Bearer {token}")
        sessions[token] = r.json()["session_id"]
        client.post(
            f"/api/sessions/{sessions[token]}/answers/",
            {"question": 1, "part": "", "answer": "mine", "seq": 5},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    # Half the sessions submitted, so both states are probed.
    for token in list(sessions)[::2]:
        assert (
            client.post(
                f"/api/sessions/{sessions[token]}/submit/", HTTP_AUTHORIZATION=f"Bearer {token}"
            ).status_code
            == 200
        )
    missing = client.post(
        "/api/sessions/999999999/submit/", HTTP_AUTHORIZATION=f"Bearer {people[0][1]}"
    ).json()
    before = _snapshot()
    probes = 0
    for _, intruder in people:
        for victim, sid in sessions.items():
            if victim == intruder:
                continue
            auth = {"HTTP_AUTHORIZATION": f"Bearer {intruder}"}
            calls = [
                client.post(
                    f"/api/sessions/{sid}/answers/",
                    {"question": 1, "part": "", "answer": "stolen", "seq": 99},
                    content_type="application/json",
                    **auth,
                ),
                client.post(
                    f"/api/sessions/{sid}/answers/",
                    {"question": 2, "part": "a", "answer": "stolen"},
                    content_type="application/json",
                    **auth,
                ),
                client.post(f"/api/sessions/{sid}/submit/", **auth),
                client.get(f"/api/sessions/{sid}/results/", **auth),
            ]
            for resp in calls:
                probes += 1
                assert resp.status_code == 404, resp.content
                # Exactly the answer for a session that does not exist: ids leak nothing.
                assert resp.json() == missing
    assert probes == 4 * 3 * 4
    assert _snapshot() == before
