"""`opsctl loadtest`: the pure helpers, the engine against a scripted fake server (retries,
dropped answers, a lost save the verification must catch), and the whole command against a
real gunicorn on the test database."""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsctl import loadtest as lt
from opsctl.cli import app
from tests.e2e.gunicorn_server import ROOT

# ---------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1.5", 1.5), ("1h", 3600)],
)
def test_parse_duration(text, seconds):
    assert lt.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "s", "-5", "0s", "5s junk", "nan"])
def test_parse_duration_rejects(text):
    with pytest.raises(lt.LoadtestError, match="bad duration"):
        lt.parse_duration(text)


def test_plan_arrivals_default_rate_uses_first_quarter():
    plan = lt.plan_arrivals(100, duration=60, rate=None, think=2)
    assert plan.rate == pytest.approx(100 / 15)
    assert plan.arrivals[0] == 0 and plan.arrivals[-1] == pytest.approx(99 / plan.rate)
    # Everyone stays equally long and the last student leaves at the end of the run.
    assert plan.arrivals[-1] + plan.stay == pytest.approx(60)


def test_plan_arrivals_refuses_a_rate_too_low_for_the_duration():
    with pytest.raises(lt.LoadtestError, match="raise --rate or --duration"):
        lt.plan_arrivals(100, duration=10, rate=10, think=2)
    with pytest.raises(lt.LoadtestError, match="--students"):
        lt.plan_arrivals(0, duration=10, rate=None, think=2)


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(1)
    for attempt in range(12):
        step = min(2.0, 0.05 * 2**attempt)
        delays = [lt.backoff_delay(attempt, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert lt.backoff_delay(30, rng) <= 2.0


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert lt.percentile(values, 50) == 50
    assert lt.percentile(values, 99) == 99
    assert lt.percentile(values, 100) == 100
    assert lt.percentile([7.0], 99) == 7.0
    assert lt.percentile([], 99) == 0.0


def test_find_lost_counts_only_acknowledged_saves_not_stored():
    tag = "t1"
    acked = {(1, 1, ""): 5, (1, 2, "a"): 3, (2, 1, ""): 4, (2, 2, ""): 2, (3, 1, ""): 1}
    stored = {
        (1, 1, ""): "t1-5",  # the acknowledged value: fine
        (1, 2, "a"): "t1-7",  # a later save whose ack was lost on the way back: fine
        (2, 1, ""): "t1-2",  # an older value: the acknowledged save 4 was lost
        (2, 2, ""): "other-9",  # not this run's value
        # (3, 1, "") missing entirely
    }
    lost = lt.find_lost(tag, acked, stored)
    assert {(x.session_id, x.question, x.part) for x in lost} == {
        (2, 1, ""),
        (2, 2, ""),
        (3, 1, ""),
    }
    assert next(x for x in lost if x.session_id == 2 and x.question == 1).stored_seq == 2


def test_read_tokens_file_json_and_plain(tmp_path):
    j = tmp_path / "t.json"
    j.write_text(json.dumps({"tokens": ["a", "b"], "exam_id": 4, "questions": [[1, ""], [2, "a"]]}))
    assert lt.read_tokens_file(j) == (["a", "b"], 4, [(1, ""), (2, "a")])
    p = tmp_path / "t.txt"
    p.write_text("# staging students\nabc\n\n def \n")
    assert lt.read_tokens_file(p) == (["abc", "def"], None, None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"exam_id": 1}')
    with pytest.raises(lt.LoadtestError, match="not valid"):
        lt.read_tokens_file(bad)


# ---------------------------------------------------------------------------------------------
# The engine against a scripted fake backend


class FakeExam:
    """The exam API's session/save/submit/results contract, in memory, with scripted faults."""

    def __init__(
        self, fail_every=0, drop_after_every=0, forget_save=0, always_503=False, html=False
    ):
        self.fail_every = fail_every  # every Nth request: 503 before doing anything
        self.drop_after_every = drop_after_every  # every Nth save: applied, answer never sent
        self.forget_save = forget_save  # the Nth save is acknowledged but not stored
        self.always_503 = always_503
        self.html = html  # answer 200 with an HTML page, as a misrouted proxy would
        self.lock = threading.Lock()
        self.requests = 0
        self.saves = 0
        self.sessions: dict[str, int] = {}
        self.status: dict[int, str] = {}
        self.answers: dict[tuple[int, int, str], tuple[int, str]] = {}

    def handle(self, method, path, token, body):
        """Returns (status, json) or None to drop the connection without an answer."""
        with self.lock:
            self.requests += 1
            if self.always_503 or (self.fail_every and self.requests % self.fail_every == 0):
                return 503, {"error": "database unavailable, please retry"}
            if m := re.fullmatch(r"/api/exams/(\d+)/sessions/", path):
                created = token not in self.sessions
                sid = self.sessions.setdefault(token, len(self.sessions) + 1)
                self.status.setdefault(sid, "in_progress")
                return (201 if created else 200), {"session_id": sid, "status": self.status[sid]}
            m = re.fullmatch(r"/api/sessions/(\d+)/(answers|submit|results)/", path)
            sid = int(m.group(1))
            if self.sessions.get(token) != sid:
                return 404, {"error": "no such session for this student"}
            if m.group(2) == "answers":
                self.saves += 1
                key = (sid, body["question"], body["part"])
                old_seq, _ = self.answers.get(key, (0, ""))
                if body["seq"] > old_seq and self.saves != self.forget_save:
                    self.answers[key] = (body["seq"], body["answer"])
                if self.drop_after_every and self.saves % self.drop_after_every == 0:
                    return None
                if body["seq"] < old_seq:
                    return 200, {"status": "stale", "seq": old_seq}
                return 200, {"status": "saved", "seq": body["seq"]}
            if m.group(2) == "submit":
                self.status[sid] = "submitted"
                return 200, {"status": "submitted", "raw_score": 0, "max_score": 3}
            if self.status[sid] == "in_progress":
                return 409, {"error": "results are available after the session is submitted"}
            questions = [
                {"question": q, "part": p, "answer": v}
                for (s, q, p), (_, v) in sorted(self.answers.items())
                if s == sid
            ]
            return 200, {"session_id": sid, "questions": questions}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        result = self.server.exam.handle(self.command, self.path, token, json.loads(raw or "{}"))
        if result is None:
            self.close_connection = True
            return
        status, doc = result
        payload = b"<html>maintenance</html>" if self.server.exam.html else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    servers = []

    def start(exam: FakeExam) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.exam = exam
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _target(n: int) -> lt.Target:
    return lt.Target(7, [(1, ""), (2, "a"), (2, "b")], [f"tok{i}" for i in range(n)])


def test_engine_retries_5xx_and_dropped_answers_and_loses_nothing(fake_server):
    exam = FakeExam(fail_every=7, drop_after_every=5)
    url = fake_server(exam)
    report = lt.run_load(url, _target(6), duration=1.5, think=0.1, seed=3)
    save = next(s for s in report.endpoints if s.endpoint == "save")
    assert save.statuses.get("503", 0) > 0 and sum(save.transport_errors.values()) > 0
    assert report.retries == sum(s.retries for s in report.endpoints if s.endpoint != "verify")
    assert report.retries >= save.statuses["503"]
    assert report.failed == 0 and report.client_errors == 0
    assert report.verification.lost == 0
    assert report.verification.verified == report.verification.sessions == 6
    assert report.verification.acked_saves > 0
    assert report.exit_code == 0
    assert report.error_samples["503"].startswith('{"error"')


def test_verification_catches_an_acknowledged_save_that_was_not_stored(fake_server):
    # Few saves over many questions (seeded): nothing later overwrites the forgotten one.
    exam = FakeExam(forget_save=1)
    url = fake_server(exam)
    target = lt.Target(7, [(q, "") for q in range(1, 40)], ["a"])
    report = lt.run_load(url, target, duration=1.0, think=0.45, seed=11)
    assert report.verification.lost == 1
    assert report.verification.lost_examples[0].session_id == 1
    assert report.exit_code == 2


def test_a_server_that_never_recovers_fails_the_run_in_bounded_time(fake_server):
    url = fake_server(FakeExam(always_503=True))
    report = lt.run_load(url, _target(2), duration=0.6, think=0.2, max_attempts=3, drain=2)
    start = next(s for s in report.endpoints if s.endpoint == "start")
    assert start.failed == 2 and start.retries == 4 and start.statuses == {"503": 6}
    assert report.failed == 2 and report.exit_code == 1
    assert report.verification.sessions == 0


def test_answers_the_engine_cannot_read_fail_the_run(fake_server):
    url = fake_server(FakeExam(html=True))
    report = lt.run_load(url, _target(3), duration=0.6, think=0.2)
    assert report.failed == 3 and report.exit_code == 1
    assert "JSONDecodeError" in report.error_samples["exception"]


def test_latency_counts_from_the_scheduled_time_not_the_send_time(fake_server):
    """Coordinated omission: saves scheduled while one save stalls wait too, and their
    latency says so (it runs from their scheduled time, not from when they were sent)."""
    exam = FakeExam()
    stalled = threading.Event()
    original = exam.handle

    def handle(method, path, token, body):
        if path.endswith("/answers/") and not stalled.is_set():
            stalled.set()
            threading.Event().wait(1.0)
        return original(method, path, token, body)

    exam.handle = handle
    url = fake_server(exam)
    report = lt.run_load(url, _target(1), duration=1.6, think=0.1, seed=1)
    save = next(s for s in report.endpoints if s.endpoint == "save")
    # About ten saves fall due during the 1 s stall and go out back to back after it; timed
    # from when they were sent, only the stalled one would be slow and p50 a few ms.
    assert save.requests >= 12
    assert save.max_ms >= 950
    assert save.p50_ms >= 100


# ---------------------------------------------------------------------------------------------
# Against a real gunicorn on the test database


@pytest.fixture
def open_exam(transactional_db):
    from tests.backend.factories import make_exam

    return make_exam(title="Rehearsal")


@pytest.mark.slow
def test_loadtest_against_gunicorn_provisions_and_verifies(live_gunicorn, open_exam):
    from backend.exams.models import Answer, AnswerEvent, ExamSession, Student

    report = lt.loadtest(live_gunicorn.url, students=10, duration="3s", think="250ms", seed=5)
    assert report.provisioned and report.exam_id == open_exam.id
    assert Student.objects.filter(external_id__startswith="loadtest-").count() == 10
    assert report.failed == 0 and report.client_errors == 0 and report.exit_code == 0
    v = report.verification
    assert v.sessions == v.verified == 10 and v.lost == 0 and v.acked_saves > 20
    by_name = {s.endpoint: s for s in report.endpoints}
    assert by_name["start"].statuses == {"201": 10}
    assert by_name["submit"].statuses == {"200": 10}
    assert by_name["save"].requests == v.acked_saves
    assert 0 < by_name["save"].p50_ms <= by_name["save"].p99_ms <= by_name["save"].max_ms
    assert report.generator.cpu_seconds > 0
    # Independently of the engine: every session submitted, every acked save journaled.
    assert set(ExamSession.objects.values_list("status", flat=True)) == {"submitted"}
    assert AnswerEvent.objects.count() >= v.acked_saves
    assert Answer.objects.count() == v.answers_checked


@pytest.mark.slow
def test_cli_json_report(live_gunicorn, open_exam):
    result = CliRunner().invoke(
        app,
        [
            "loadtest",
            live_gunicorn.url,
            "--students",
            "6",
            "--duration",
            "2s",
            "--think",
            "0.3s",
            "--exam",
            str(open_exam.id),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {
        "url",
        "exam_id",
        "students",
        "requests",
        "rps",
        "retries",
        "failed",
        "endpoints",
        "generator",
        "verification",
        "error_samples",
    } <= set(doc)
    assert [e["endpoint"] for e in doc["endpoints"]] == ["start", "save", "submit", "verify"]
    assert {"p50_ms", "p95_ms", "p99_ms", "max_ms", "statuses", "retries"} <= set(
        doc["endpoints"][1]
    )
    assert doc["verification"]["lost"] == 0 and doc["generator"]["cpu_percent"] >= 0


@pytest.mark.slow
def test_cli_human_report(live_gunicorn, open_exam):
    result = CliRunner().invoke(
        app,
        ["loadtest", live_gunicorn.url, "-n", "4", "-d", "1.5s", "--think", "0.3s"],
        env={"NO_COLOR": "1", "COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "lost = 0  OK" in result.stdout
    assert "save" in result.stdout and "p99 ms" in result.stdout
    assert "generator:" in result.stdout


def test_cli_errors_are_one_line(transactional_db):
    runner = CliRunner()
    # 3: the load could not run (2 is reserved for "an acknowledged save was lost").
    bad = runner.invoke(app, ["loadtest", "http://127.0.0.1:9", "--duration", "soon"])
    assert bad.exit_code == 3 and "error: bad duration 'soon'" in bad.stderr
    assert "Traceback" not in bad.output
    # No exam open in the (empty) test database.
    none = runner.invoke(app, ["loadtest", "http://127.0.0.1:9", "-n", "2", "-d", "5s"])
    assert none.exit_code == 3 and "no exam is open now" in none.stderr
    scheme = runner.invoke(app, ["loadtest", "127.0.0.1:8000"])
    assert scheme.exit_code == 3 and "http://" in scheme.stderr
    for r in (bad, none, scheme):
        assert r.stderr.count("\n") == 1


@pytest.mark.slow
def test_real_subprocess_with_a_tokens_file(live_gunicorn, open_exam, tmp_path):
    from tests.backend.factories import make_student

    tokens = [make_student(f"S{i}", ext=f"sub-{i}")[1] for i in range(4)]
    f = tmp_path / "tokens.json"
    f.write_text(
        json.dumps({"exam_id": open_exam.id, "questions": [[1, ""], [2, "a"]], "tokens": tokens})
    )
    proc = subprocess.run(
        [
            str(Path(ROOT) / ".venv" / "bin" / "opsctl"),
            "loadtest",
            live_gunicorn.url,
            "-n",
            "4",
            "-d",
            "1.5s",
            "--think",
            "0.25s",
            "--tokens-file",
            str(f),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "sqlite:////nonexistent/unused.db"},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["provisioned"] is False and doc["students"] == 4
    assert doc["verification"]["lost"] == 0 and doc["verification"]["verified"] == 4
    for token in tokens:
        assert token not in proc.stdout and token not in proc.stderr
