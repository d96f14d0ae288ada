"""The save fast path answers exactly as the Django view does: every case, byte for byte.

Each case runs twice on fresh, identical state: once through ``SaveFastPath`` and once
through Django's own WSGIHandler (the full middleware stack). Status, headers and body must
match, and so must what ends up in the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.test import RequestFactory
from django.utils import timezone

from backend.exams import sessions
from backend.exams.models import Answer, AnswerEvent, ExamSession
from backend.exams.save_fastpath import SaveFastPath
from tests.backend.factories import make_exam, make_student

pytestmark = pytest.mark.django_db

DJANGO = WSGIHandler()
FAST = SaveFastPath(DJANGO)


class _Sentinel(Exception):
    pass


@contextlib.contextmanager
def _keep_test_connection():
    """The request signals close the connection (returning it to the pool); inside a test's
    transaction it must stay open, as Django's test client arranges."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def call(app, path, body=None, token=None, method="POST", raw=None, **extra):
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    extra.setdefault("content_type", "application/json")
    request = RequestFactory().generic(method, path, data, **extra)
    out = {}

    def start_response(status, headers):
        out["status"], out["headers"] = status, headers

    with _keep_test_connection():
        body_out = b"".join(app(request.environ, start_response))
    headers = {k.lower(): v for k, v in out["headers"] if k.lower() != "vary"}
    return out["status"], headers, body_out


def _fresh():
    exam = make_exam(key={(1, ""): "42", (2, "a"): "Paris"})
    student, token = make_student(f"S{ExamSession.objects.count()}", ext=None)
    student.external_id = f"ext-{student.id}"
    student.save()
    sid = sessions.start_session(student.id, exam.id).session_id
    return exam, sid, token


def _path(sid):
    return f"/api/sessions/{sid}/answers/"


def _stored(sid):
    answers = sorted(Answer.objects.filter(session_id=sid).values_list("question", "part",
                                                                       "value", "seq"))  # fmt: skip
    journal = sorted(AnswerEvent.objects.filter(session_id=sid).values_list("question", "seq"))
    return answers, journal, ExamSession.objects.get(pk=sid).status


def _step(body=None, **kw):
    return {"body": body, **kw}


Q1 = {"question": 1, "answer": "1"}
# case: (what happens to the session first, the requests in order)
CASES = {
    "saved with seq": (None, [_step({"question": 1, "answer": "42", "seq": 3})]),
    "saved without seq": (None, [_step({"question": 2, "part": "a", "answer": "x"})]),
    "stale then retry": (None, [
        _step({"question": 1, "answer": "new", "seq": 5}),
        _step({"question": 1, "answer": "old", "seq": 4}),
        _step({"question": 1, "answer": "new", "seq": 5}),
    ]),
    "no token": (None, [_step(Q1, token=None)]),
    "unknown token": (None, [_step(Q1, token="nope")]),
    "not this student's session": (None, [_step(Q1, other_session=True)]),
    "wrong content type": (None, [_step(raw=b"q=1", content_type="text/plain")]),
    "content type with charset": (
        None, [_step(Q1, content_type="application/json; charset=utf-8")]
    ),
    "malformed JSON": (None, [_step(raw=b'{"question": 1,')]),
    "empty body": (None, [_step(raw=b"")]),
    "a JSON array": (None, [_step([1, 2])]),
    "unknown field": (None, [_step({**Q1, "x": 1})]),
    "question not in the exam": (None, [_step({"question": 9, "answer": "1"})]),
    "question beyond any column": (None, [_step({"question": 2**70, "answer": "1"})]),
    "question far below zero": (None, [_step({"question": -(2**40), "answer": "1"})]),
    "part longer than any key": (None, [_step({"question": 1, "part": "x" * 40, "answer": "1"})]),
    "session id beyond bigint": (None, [_step(Q1, session=2**70)]),
    "part with a lone surrogate": (
        None, [_step(raw=b'{"question": 1, "part": "\\ud800", "answer": "1"}')]
    ),
    "part with NUL": (None, [_step({"question": 1, "part": "a\x00", "answer": "1"})]),
    "question beyond any column, submitted": (
        sessions.submit_session, [_step({"question": 2**40, "answer": "1"})]
    ),
    "body over the limit": (None, [_step(raw=b'{"answer": "' + b"x" * 70_000 + b'"}')]),
    "after submit": (sessions.submit_session, [_step(Q1)]),
    "past the deadline": ("late", [_step(Q1)]),
    "GET falls through to Django": (None, [_step(method="GET")]),
    "no trailing slash falls through": (None, [_step(Q1, slash=False)]),
}  # fmt: skip


def _run(app, case):
    first, steps = CASES[case]
    _, sid, tok = _fresh()
    if first == "late":
        ExamSession.objects.filter(pk=sid).update(deadline=timezone.now() - dt.timedelta(hours=1))
    elif first is not None:
        first(sid)
    answers = []
    for step in steps:
        kw = dict(step)
        body, token = kw.pop("body"), kw.pop("token", tok)
        target = sid + 10_000 if kw.pop("other_session", False) else kw.pop("session", sid)
        path = _path(target) if kw.pop("slash", True) else _path(target).rstrip("/")
        status, headers, out = call(app, path, body, token, **kw)
        # The two runs use two sessions: compare with the id taken out.
        headers = {k: v.replace(f"/{sid}/", "/SID/") for k, v in headers.items()}
        answers.append((status, headers, out))
    return answers, _stored(sid)


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_answers_exactly_as_django(case):
    fast, fast_state = _run(FAST, case)
    slow, slow_state = _run(DJANGO, case)
    assert fast == slow
    assert fast_state == slow_state


def test_a_server_fault_is_a_logged_500_json_on_both(monkeypatch, caplog):
    def broken(*args):
        raise _Sentinel("boom")

    monkeypatch.setattr(sessions, "save_answer", broken)
    _, sid, tok = _fresh()
    fast = call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok)
    slow = call(DJANGO, _path(sid), {"question": 1, "answer": "1"}, tok)
    assert fast == slow
    assert fast[0].startswith("500") and json.loads(fast[2]) == {
        "error": "internal error; it has been logged"
    }
    assert sum("Internal Server Error" in r.getMessage() for r in caplog.records) == 2


def test_a_disallowed_host_is_400_on_both(settings):
    settings.ALLOWED_HOSTS = ["exam.example"]
    _, sid, tok = _fresh()
    fast = call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok, HTTP_HOST="evil.example")
    slow = call(DJANGO, _path(sid), {"question": 1, "answer": "1"}, tok, HTTP_HOST="evil.example")
    # Django answers this one before CommonMiddleware adds Content-Length; the fast path's is
    # right, and everything else is the same.
    assert fast[1].pop("content-length") == str(len(fast[2]))
    assert fast == slow and fast[0].startswith("400")
    ok = call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok, HTTP_HOST="exam.example")
    assert ok[0].startswith("200")


def test_the_fast_path_serves_the_save_and_nothing_else(monkeypatch):
    seen = []
    real = FAST._save
    monkeypatch.setattr(FAST, "_save", lambda *a: seen.append(a[2]) or real(*a))
    _, sid, tok = _fresh()
    call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok)
    call(FAST, f"/api/sessions/{sid}/submit/", {}, tok)
    call(FAST, _path(sid), None, tok, method="GET")
    assert seen == [sid]


# --- telemetry: the same span and the same metric stream as the Django instrumentation ---

SAVE_ROUTE = "api/sessions/<int:session_id>/answers/"


@pytest.fixture
def telemetry_dir(tmp_path):
    from backend.ops import telemetry

    telemetry.setup(directory=tmp_path, force=True)
    yield tmp_path
    telemetry.teardown()


def _lines(directory, kind):
    for file in sorted(directory.glob(f"{kind}-*.jsonl")):
        for line in file.read_text().splitlines():
            yield json.loads(line)


def _attrs(item) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in item.get("attributes", [])}


def test_fast_path_requests_are_the_django_instrumentations_spans_and_metrics(telemetry_dir):
    from backend.ops import telemetry

    django = WSGIHandler()  # its middleware chain now includes the instrumentation's
    fast = SaveFastPath(django)
    _, sid, tok = _fresh()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for seq in (1, 2):
        call(fast, _path(sid), {"question": 1, "answer": "42", "seq": seq}, tok)
    call(django, _path(sid), {"question": 1, "answer": "42", "seq": 3}, tok)
    call(fast, _path(sid), {"question": 1, "answer": "42", "seq": 4}, tok,
         HTTP_TRACEPARENT=f"00-{trace_id}-{parent_id}-01")  # fmt: skip
    call(fast, _path(sid), {"question": 9, "answer": "1"}, tok)  # a 400
    telemetry.force_flush()

    # One stream per attribute set, shared by both paths: same scope, same attributes.
    streams = {}
    for doc in _lines(telemetry_dir, "metrics"):
        for rm in doc["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    if m["name"] != "http.server.request.duration":
                        continue
                    for p in m["histogram"]["dataPoints"]:
                        a = _attrs(p)
                        if a.get("http.route") == SAVE_ROUTE:
                            key = (sm["scope"]["name"], tuple(sorted(a.items())))
                            streams[key] = int(p["count"])  # cumulative: the latest wins
    ok = {k: v for k, v in streams.items() if dict(k[1])["http.response.status_code"] == "200"}
    assert len(ok) == 1, streams
    (((scope, attrs), count),) = ok.items()
    assert scope == "opentelemetry.instrumentation.django" and count == 4
    assert dict(attrs) == {"http.request.method": "POST", "url.scheme": "http",
                           "network.protocol.version": "1.1", "http.route": SAVE_ROUTE,
                           "http.response.status_code": "200"}  # fmt: skip
    assert [v for k, v in streams.items() if dict(k[1])["http.response.status_code"] == "400"] == [
        1
    ]

    spans = [
        (span, _attrs(span))
        for doc in _lines(telemetry_dir, "traces")
        for rs in doc["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]
    servers = [(s, a) for s, a in spans if s["name"] == f"POST {SAVE_ROUTE}"]
    assert len(servers) == 5
    remote = [(s, a) for s, a in servers if s["traceId"] == trace_id]
    assert len(remote) == 1 and remote[0][0]["parentSpanId"] == parent_id
    span, attrs = remote[0]
    assert attrs["http.route"] == SAVE_ROUTE and attrs["http.response.status_code"] == "200"
    assert attrs["url.path"] == _path(sid) and attrs["http.request.method"] == "POST"
    children = [a for s, a in spans if s.get("parentSpanId") == span["spanId"]]
    # The test's own transaction turns the save's atomic() into SAVEPOINT/RELEASE.
    statements = [a for a in children if a["db.operation.name"] not in {"SAVEPOINT", "RELEASE"}]
    from django.db import connection

    # PostgreSQL: the whole save is one statement; SQLite: check, upsert, journal.
    expected = ["WITH"] if connection.vendor == "postgresql" else ["SELECT", "INSERT", "INSERT"]
    assert [a["db.operation.name"] for a in statements] == expected
    assert all(a.get("http.route") == SAVE_ROUTE for a in children), children


# --- sampling: 10% by default; on the save route, failures and slow requests are kept ---


def test_the_default_sampler_traces_one_request_in_ten(monkeypatch):
    from backend.ops import telemetry

    monkeypatch.delenv("OPS_TRACE_SAMPLE_RATIO", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    assert telemetry.sample_ratio() == 0.1
    assert telemetry.default_sampler().get_description() == "TraceIdRatioBased{0.1}"
    monkeypatch.setenv("OPS_TRACE_SAMPLE_RATIO", "0.25")
    assert telemetry.default_sampler().get_description() == "TraceIdRatioBased{0.25}"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # the standard variable wins
    assert telemetry.default_sampler().get_description() == "AlwaysOffSampler"
    for bad in ("x", "1.5", "-0.1", "nan"):
        monkeypatch.setenv("OPS_TRACE_SAMPLE_RATIO", bad)
        with pytest.raises(ValueError, match="OPS_TRACE_SAMPLE_RATIO"):
            telemetry.sample_ratio()


@pytest.fixture
def unsampled_telemetry(tmp_path, monkeypatch):
    from backend.ops import request_telemetry, telemetry

    monkeypatch.setenv("OPS_TRACE_SAMPLE_RATIO", "0")
    telemetry.setup(directory=tmp_path, force=True)
    yield tmp_path
    telemetry.teardown()
    request_telemetry._cache.pop("slow", None)


def _server_spans(directory):
    telemetry_mod = __import__("backend.ops.telemetry", fromlist=["force_flush"])
    telemetry_mod.force_flush()
    return [
        _attrs(span)
        for doc in _lines(directory, "traces")
        for rs in doc["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
        if span["name"] == f"POST {SAVE_ROUTE}"
    ]


def test_unsampled_failures_and_slow_saves_keep_their_server_span(unsampled_telemetry, monkeypatch):
    from backend.ops import request_telemetry

    _, sid, tok = _fresh()
    assert call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok)[0].startswith("200")
    assert call(FAST, _path(sid), {"question": 9, "answer": "1"}, tok)[0].startswith("400")
    assert _server_spans(unsampled_telemetry) == []  # sampled out, and neither failed nor slow

    def broken(*args):
        raise _Sentinel("boom")

    monkeypatch.setattr(sessions, "save_answer", broken)
    assert call(FAST, _path(sid), {"question": 1, "answer": "1"}, tok)[0].startswith("500")
    monkeypatch.undo()
    monkeypatch.setitem(request_telemetry._cache, "slow", 0.0)  # every request counts as slow
    assert call(FAST, _path(sid), {"question": 1, "answer": "2"}, tok)[0].startswith("200")
    kept = sorted(
        (a["exam.trace.kept"], a["http.response.status_code"])
        for a in _server_spans(unsampled_telemetry)
    )
    assert kept == [("error", "500"), ("slow", "200")]


def _save_executions() -> int:
    """How often this connection ran the save's prepared statement (PostgreSQL counts plans)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements"
            " WHERE statement LIKE %s",
            ["%FOR KEY SHARE OF s%"],
        )
        return int(cur.fetchone()[0])


@pytest.mark.postgres_only
def test_the_save_statement_is_prepared_once_and_reused(settings):
    _, sid, tok = _fresh()
    settings.SAVE_PREPARED = False
    before = _save_executions()
    assert call(FAST, _path(sid), {"question": 1, "answer": "1", "seq": 1}, tok)[0] == "200 OK"
    assert _save_executions() == before  # sent as text
    settings.SAVE_PREPARED = True
    for seq in (2, 3, 4):
        status, _, body = call(FAST, _path(sid), {"question": 1, "answer": str(seq), "seq": seq},
                               tok)  # fmt: skip
        assert (status, json.loads(body)) == ("200 OK", {"status": "saved", "seq": seq})
    assert _save_executions() == before + 3
    assert _stored(sid)[0] == [(1, "", "4", 4)]


@pytest.mark.django_db(transaction=True)
def test_a_thread_keeps_its_connection_between_saves(monkeypatch):
    from django.db import connection

    from backend.exams import save_fastpath

    _, sid, tok = _fresh()
    connection.close()
    assert call(FAST, _path(sid), {"question": 1, "answer": "1", "seq": 1}, tok)[0] == "200 OK"
    kept = connection.connection
    assert kept is not None  # no request_finished: it was not handed back
    assert call(FAST, _path(sid), {"question": 1, "answer": "2", "seq": 2}, tok)[0] == "200 OK"
    assert connection.connection is kept
    # Held for HOLD_SECONDS, it goes back to the pool (which recycles and replaces them).
    monkeypatch.setattr(save_fastpath, "HOLD_SECONDS", 0.0)
    assert call(FAST, _path(sid), {"question": 1, "answer": "3", "seq": 3}, tok)[0] == "200 OK"
    assert connection.connection is None
    assert _stored(sid)[0] == [(1, "", "3", 3)]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_failed_is_given_back_and_the_next_save_gets_a_new_one(database_url):
    import psycopg
    from django.db import connection

    _, sid, tok = _fresh()
    connection.close()
    assert call(FAST, _path(sid), {"question": 1, "answer": "1", "seq": 1}, tok)[0] == "200 OK"
    pid = connection.connection.info.backend_pid
    url = database_url.replace("postgresql+psycopg://", "postgresql://")  # the test database
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    status, _, body = call(FAST, _path(sid), {"question": 1, "answer": "2", "seq": 2}, tok)
    assert status.startswith("503"), (status, body)
    assert "error" in json.loads(body)
    assert connection.connection is None  # the broken one went back (the pool drops it)
    status, _, body = call(FAST, _path(sid), {"question": 1, "answer": "2", "seq": 2}, tok)
    assert (status, json.loads(body)) == ("200 OK", {"status": "saved", "seq": 2})
    assert connection.connection.info.backend_pid != pid
