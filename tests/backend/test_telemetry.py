"""Telemetry end to end: real requests through Django with telemetry on, read back by opsctl."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.http import JsonResponse
from django.test import override_settings
from django.urls import path
from typer.testing import CliRunner

from backend.exams.models import Student
from backend.ops import telemetry
from opsctl import telemetry as reader
from opsctl.cli import app
from tests.backend.factories import auth, make_exam, make_student

SAVE_ROUTE = "api/sessions/<int:session_id>/answers/"


def _statements_per_save() -> int:
    """One statement on PostgreSQL; check, upsert and journal on SQLite (sessions.py)."""
    from django.db import connection

    return 1 if connection.vendor == "postgresql" else 3


@pytest.fixture
def telemetry_dir(tmp_path):
    telemetry.setup(directory=tmp_path, force=True)
    yield tmp_path
    telemetry.teardown()


def _since():
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def _saves(client, n: int) -> str:
    """A student starts a session and saves ``n`` answers; returns the student's token."""
    exam = make_exam()
    _, token = make_student()
    sid = client.post(f"/api/exams/{exam.id}/sessions/", **auth(token)).json()["session_id"]
    for seq in range(1, n + 1):
        r = client.post(
            f"/api/sessions/{sid}/answers/", {"question": 1, "answer": str(seq), "seq": seq},
            content_type="application/json", **auth(token),
        )  # fmt: skip
        assert r.status_code == 200
    telemetry.force_flush()
    return token


@pytest.mark.django_db
def test_saves_are_traced_with_db_spans_and_stats(client, telemetry_dir):
    token = _saves(client, 5)

    files = sorted(p.name for p in telemetry_dir.iterdir())
    assert any(f.startswith("traces-") and f.endswith(".jsonl") for f in files)

    stats = {s.route: s for s in reader.route_stats(telemetry_dir, _since())}
    assert stats[SAVE_ROUTE].requests == 5 and stats[SAVE_ROUTE].error_pct == 0
    assert next(iter(stats)) == SAVE_ROUTE  # the save route is listed first

    traces = reader.list_traces(telemetry_dir, _since(), route="answers")
    assert len(traces) == 5 and all(t.db_spans >= _statements_per_save() for t in traces)
    tree = reader.trace_tree(telemetry_dir, traces[0].trace_id)
    db = [n for n in tree if n.kind == "client"]
    assert db and all(n.fingerprint and n.sql for n in db)
    # With its placeholders (positional, or named on PostgreSQL's one-statement save).
    assert any("INSERT INTO exams_answer " in n.sql and ("%s" in n.sql or "%(answer)s" in n.sql)
               for n in db)  # fmt: skip
    assert all(n.depth == 1 for n in db)
    # Each statement sits inside its request on the waterfall, in the order it ran.
    root = tree[0]
    assert all(n.offset_ms >= 0 and n.offset_ms + n.duration_ms <= root.duration_ms for n in db)
    assert [n.offset_ms for n in db] == sorted(n.offset_ms for n in db)
    # Parameter values are never recorded.
    raw = "".join(p.read_text() for p in telemetry_dir.glob("traces-*"))
    assert token not in raw and '"answer"' not in raw

    queries = reader.query_stats(telemetry_dir, _since())
    upsert = [q for q in queries if "INSERT INTO exams_answer " in q.example]
    assert upsert and upsert[0].calls == 5 and upsert[0].routes == [SAVE_ROUTE]

    r = CliRunner().invoke(
        app, ["traces", "stats", "--telemetry-dir", str(telemetry_dir), "--since", "5m", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert SAVE_ROUTE in {row["route"] for row in json.loads(r.stdout)}


def _metric_points(directory) -> dict[str, list[dict]]:
    """Latest data points per metric name from the metrics files: {name: [point, ...]}."""
    out: dict[str, list[dict]] = {}
    for file in sorted(directory.glob("metrics-*.jsonl")):
        for line in file.read_text().splitlines():
            for rm in json.loads(line).get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for m in sm.get("metrics", []):
                        body = next(v for k, v in m.items() if isinstance(v, dict))
                        out[m["name"]] = body.get("dataPoints", [])
    return out


def _attrs(point) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in point.get("attributes", [])}


@pytest.mark.django_db
def test_metrics_carry_route_and_statement_fingerprint(client, telemetry_dir):
    _saves(client, 3)
    points = _metric_points(telemetry_dir)
    http = [p for p in points["http.server.request.duration"]
            if _attrs(p).get("http.route") == SAVE_ROUTE]  # fmt: skip
    assert len(http) == 1 and int(http[0]["count"]) == 3
    db = [p for p in points["db.client.operation.duration"]
          if _attrs(p).get("http.route") == SAVE_ROUTE]  # fmt: skip
    assert db and all(len(_attrs(p)["db.query.fingerprint"]) == 16 for p in db)
    assert sum(int(p["count"]) for p in db) >= 3 * _statements_per_save()
    assert [int(p["asInt"]) for p in points["exam.telemetry.dropped"]] == [0]


def _n_plus_one_view(request):
    ids = [s.id for s in Student.objects.all()[:1]] or [0]
    for _ in range(20):
        list(Student.objects.filter(id=ids[0]))
    return JsonResponse({"ok": True})


urlpatterns = [path("n-plus-one/", _n_plus_one_view)]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_a_view_running_one_query_20_times_is_flagged(client, telemetry_dir):
    make_student()
    assert client.get("/n-plus-one/").status_code == 200
    telemetry.force_flush()
    found = reader.n_plus_one(telemetry_dir, _since())
    assert [(n.route, n.requests) for n in found] == [("n-plus-one/", 1)]
    (counted,) = _metric_points(telemetry_dir)["exam.db.n_plus_one"]
    assert _attrs(counted)["http.route"] == "n-plus-one/" and int(counted["asInt"]) == 1
    assert "exams_student" in found[0].example
    r = CliRunner().invoke(app, ["queries", "nplusone", "--telemetry-dir", str(telemetry_dir)])
    assert r.exit_code == 0 and "n-plus-one/" in r.stdout


@pytest.mark.django_db
def test_tracing_flag_switches_spans_off_without_restart(client, telemetry_dir):
    from backend.ops import flags

    flags.set_flag("telemetry.tracing", "off", "test")
    exam = make_exam()
    _, token = make_student()
    client.post(f"/api/exams/{exam.id}/sessions/", **auth(token))
    telemetry.force_flush()
    assert reader.list_traces(telemetry_dir, _since()) == []
    flags.set_flag("telemetry.tracing", "on", "test")
    client.post(f"/api/exams/{exam.id}/sessions/", **auth(token))
    telemetry.force_flush()
    assert len(reader.list_traces(telemetry_dir, _since())) == 1


def test_corrupt_and_truncated_lines_are_skipped_and_counted(tmp_path):
    good = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "GET x", "kind": 2,
            "startTimeUnixNano": str(int(dt.datetime.now(dt.UTC).timestamp() * 1e9)),
            "endTimeUnixNano": str(int(dt.datetime.now(dt.UTC).timestamp() * 1e9) + 5_000_000),
            "attributes": [{"key": "http.route", "value": {"stringValue": "x/"}}],
        }]}]}]
    }  # fmt: skip
    (tmp_path / "traces-h-1-2026112400.jsonl").write_text(
        json.dumps(good) + "\n{not json\n" + json.dumps(good)[:40] + "\n"
    )
    stats = reader.ReadStats()
    rows = reader.route_stats(tmp_path, _since(), stats)
    assert [r.route for r in rows] == ["x/"] and stats.corrupt_lines == 2
    r = CliRunner().invoke(app, ["traces", "stats", "--telemetry-dir", str(tmp_path)])
    assert r.exit_code == 0 and "skipped 2 corrupt" in r.stderr


def test_empty_directory_says_what_to_check(tmp_path):
    # No span read at all is "no data" (exit 3), never an empty success a check could pass on.
    r = CliRunner().invoke(app, ["traces", "list", "--telemetry-dir", str(tmp_path)])
    assert r.exit_code == 3 and "telemetry on" in r.stderr and r.stdout == ""
    r = CliRunner().invoke(app, ["traces", "show", "f" * 32, "--telemetry-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no trace" in r.stderr
    r = CliRunner().invoke(app, ["traces", "list", "--since", "yesterday-ish"])
    assert r.exit_code == 1 and "not a time" in r.stderr


@pytest.mark.postgres_only
def test_queries_top_from_pg_stat_statements(database_url):
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        # This database only: a full reset would clear what other databases' tests measure.
        conn.execute(text("SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database "
                          "WHERE datname = current_database()"))  # fmt: skip
        for i in range(30):
            conn.execute(text("SELECT count(*) FROM exams_student WHERE id > :i"), {"i": i})
    engine.dispose()
    r = CliRunner().invoke(
        app, ["queries", "top", "--source", "pg", "--database-url", database_url, "--json"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    hit = [q for q in rows if "exams_student" in q["example"] and q["calls"] >= 30]
    assert hit and hit[0]["p95_ms"] is None


def test_queries_top_pg_refuses_sqlite_clearly():
    r = CliRunner().invoke(
        app, ["queries", "top", "--source", "pg", "--database-url", "sqlite:///x.db"]
    )
    # Bad input under the CLI's error contract: exit 1, one line naming what is needed.
    assert r.exit_code == 1 and "PostgreSQL" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_request_answers_the_instrumentations_uri_question_once(monkeypatch):
    """OpenTelemetry's middleware asks build_absolute_uri("?") three times a request; the
    served request class gives Django's own answer, computed once."""
    import io

    from django.core.handlers.wsgi import WSGIRequest

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/sessions/7/answers/",
               "QUERY_STRING": "a=1", "SERVER_NAME": "h", "SERVER_PORT": "80",
               "HTTP_HOST": "exam.example:8000", "wsgi.url_scheme": "https",
               "wsgi.input": io.BytesIO(b"")}  # fmt: skip
    expected = WSGIRequest(dict(environ)).build_absolute_uri("?")
    calls = []
    real = WSGIRequest.build_absolute_uri
    monkeypatch.setattr(WSGIRequest, "build_absolute_uri",
                        lambda self, loc=None: calls.append(loc) or real(self, loc))  # fmt: skip
    request = telemetry.wsgi_request_class()(dict(environ))
    assert [request.build_absolute_uri("?") for _ in range(3)] == [expected] * 3
    assert expected == "https://exam.example:8000/api/sessions/7/answers/"
    assert request.build_absolute_uri("/x") == "https://exam.example:8000/x"
    assert calls == ["?", "/x"]
