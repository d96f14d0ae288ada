"""The production topology, rehearsed (issue #22): nginx with the shipped site config in front
of two gunicorn hosts (own var dirs) on one PostgreSQL, driven through `opsctl rehearse`.

The shipped files are checked on their own first (nginx -t on deploy/nginx/, systemd's own
verifier on the backend unit, the body limit and the retry rules against the API's); those
need no database and run in both passes. The rehearsal itself is PostgreSQL-only: several
hosts on one SQLite file is not the topology. It runs once per module, through the command's
own face (`opsctl rehearse --json`), and each test below asserts one drill of its report.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.rehearse import topology
from tests.e2e.gunicorn_server import ROOT

SITE = ROOT / "deploy" / "nginx" / "exam-backend.conf"
UNIT = ROOT / "deploy" / "systemd" / "exam-backend.service"


def _nginx() -> str:
    """nginx, installed by the project's script on a machine that lacks it."""
    try:
        return topology.find_nginx()
    except topology.RehearsalError:
        subprocess.run([str(ROOT / "scripts" / "ensure-debs.sh"), "nginx"], check=False)
    try:
        return topology.find_nginx()
    except topology.RehearsalError as exc:
        pytest.fail(f"{exc} (scripts/ensure-debs.sh nginx did not install it)")


# ---------------------------------------------------------------------------------------------
# The shipped files


def _rendered(tmp_path: Path) -> Path:
    papers = tmp_path / "papers"
    papers.mkdir()
    site = tmp_path / "site.conf"
    site.write_text(
        topology.render_site(
            SITE.read_text(),
            ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"],
            "127.0.0.1:9100",
            tmp_path / "access.log",
            papers,
        )
    )
    return site


def test_site_config_is_valid_nginx(tmp_path):
    nginx = _nginx()
    site = _rendered(tmp_path)
    text = site.read_text()
    # Three hosts in, three upstream lines out, each with its parameters kept.
    assert len(re.findall(r"server 127\.0\.0\.1:910[123] max_fails=1 fail_timeout=5s;", text)) == 3
    assert "10.0.0.1" not in text and "listen 127.0.0.1:9100;" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(topology.render_main(tmp_path, site))
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / kind).mkdir(parents=True)
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "err.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


def test_nginx_own_errors_answer_json_like_the_api(tmp_path):
    """nginx alone, its only host down: the shipped site's own 502, 404 and 413 are JSON."""
    import httpx

    _nginx()
    (tmp_path / "papers").mkdir()
    server = topology.Nginx(tmp_path, [f"127.0.0.1:{topology.free_port()}"], tmp_path / "papers")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=20, trust_env=False) as c:
            down = c.post("/api/sessions/1/answers/", json={"question": 1, "answer": "a"})
            hidden = c.get("/protected/papers/exam-1.pdf")
            big = c.post("/api/ping/", content=b"x" * (64 * 1024 + 1))
    finally:
        server.stop()
    for resp, code in ((down, 502), (hidden, 404), (big, 413)):
        assert resp.status_code == code
        assert resp.headers["content-type"].startswith("application/json")
        assert set(resp.json()) == {"error"}, resp.text


def test_render_refuses_a_site_config_without_its_rehearse_markers():
    text = SITE.read_text().replace("# rehearse: papers", "")
    with pytest.raises(topology.RehearsalError, match="papers"):
        topology.render_site(text, ["127.0.0.1:1"], "127.0.0.1:2", Path("/a.log"), Path("/p"))


def test_body_limit_matches_the_api():
    from django.conf import settings

    size = re.search(r"^\s*client_max_body_size (\d+)k;", SITE.read_text(), re.M)
    assert size and int(size.group(1)) * 1024 == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _locations(text: str) -> dict[str, str]:
    """``location`` argument -> its block's text (the site file's blocks do not nest)."""
    return {
        m.group(1).strip(): m.group(2)
        for m in re.finditer(r"^\s*location\s+([^{]+)\{(.*?)^\s*\}", text, re.M | re.S)
    }


def test_only_the_idempotent_exam_posts_are_replayed_on_another_host():
    locations = _locations(SITE.read_text())
    replayed = [loc for loc, body in locations.items() if "non_idempotent" in body]
    assert len(replayed) == 1
    pattern = re.compile(replayed[0].removeprefix("~").strip())
    for path in ("/api/exams/3/sessions/", "/api/sessions/12/answers/", "/api/sessions/9/submit/"):
        assert pattern.search(path), path
    for path in (
        "/api/leaderboard/",
        "/api/exams/3/paper.pdf",
        "/api/sessions/12/results/",
        "/api/sessions/12/answers/x",
        "/x/api/sessions/1/submit/",
    ):
        assert not pattern.search(path), path
    assert "non_idempotent" not in locations["/"]


def test_backend_unit_passes_systemds_verifier(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    gunicorn = Path(ROOT / ".venv" / "bin" / "gunicorn")
    unit = tmp_path / UNIT.name
    # The unit names the production paths; point ExecStart at this checkout's gunicorn so
    # the verifier checks everything else.
    unit.write_text(UNIT.read_text().replace("/srv/exam/.venv/bin/gunicorn", str(gunicorn)))
    out = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    problems = [ln for ln in (out.stdout + out.stderr).splitlines() if UNIT.name in ln]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
    text = UNIT.read_text()
    assert "EnvironmentFile=/etc/exam/backend.env" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_rehearse_without_nginx_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(topology.shutil, "which", lambda name: None)
    monkeypatch.setattr(topology.os, "access", lambda path, mode: False)
    result = CliRunner().invoke(
        app, ["rehearse", "--database-url", "postgresql://postgres@127.0.0.1:1/none"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines() if result.stderr else []
    assert len(lines) == 1 and "scripts/ensure-debs.sh nginx" in lines[0], result.output


def _otlp_line(instance: str | None, pid: int, route: str, start_ns: int) -> str:
    resource = [{"key": "host.name", "value": {"stringValue": "box"}},
                {"key": "process.pid", "value": {"intValue": str(pid)}}]  # fmt: skip
    if instance:
        resource.append({"key": "service.instance.id", "value": {"stringValue": instance}})
    span = {
        "traceId": f"{pid:032x}", "spanId": f"{pid:016x}", "name": f"POST {route}", "kind": 2,
        "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + 5_000_000),
        "attributes": [{"key": "http.route", "value": {"stringValue": route}}],
    }  # fmt: skip
    return json.dumps(
        {
            "resourceSpans": [
                {"resource": {"attributes": resource}, "scopeSpans": [{"spans": [span]}]}
            ]
        }
    )


def test_traces_stats_counts_the_instances_behind_each_route(tmp_path):
    import time

    now = time.time_ns()
    save, ping = "api/sessions/<int:session_id>/answers/", "api/ping/"
    lines = [
        _otlp_line("host-a", 11, save, now - 3_000_000_000),
        _otlp_line("host-a", 12, save, now - 2_000_000_000),  # another worker, same host
        _otlp_line("host-b", 13, save, now - 1_000_000_000),
        _otlp_line(None, 14, ping, now - 1_000_000_000),  # no instance id: host:pid
    ]
    (tmp_path / "traces-box-1.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        app, ["traces", "stats", "--json", "--telemetry-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    rows = {r["route"]: r for r in json.loads(result.stdout)}
    assert (rows[save]["requests"], rows[save]["instances"]) == (3, 2)
    assert (rows[ping]["requests"], rows[ping]["instances"]) == (1, 1)


# ---------------------------------------------------------------------------------------------
# The rehearsal (PostgreSQL)


@pytest.fixture(scope="module")
def rehearsal():
    """`opsctl rehearse --json` once, small and bounded: two hosts, loopback only."""
    from backend.config import database_url

    _nginx()
    result = CliRunner().invoke(
        app,
        [
            "rehearse", "--json", "--database-url", database_url(),
            "--students", "24", "--duration", "6s", "--think", "0.5s",
            "--failover-students", "24", "--failover-duration", "10s",
        ],
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"opsctl rehearse gave no report (exit {result.exit_code}): {result.output}")
    report["_exit_code"] = result.exit_code
    return report


pg = pytest.mark.postgres_only


@pg
def test_paper_through_nginx(rehearsal):
    p = rehearsal["paper"]
    # A student in an open session gets the PDF, streamed by nginx from the paper storage.
    assert p["status"] == 200 and p["content_type"].startswith("application/pdf")
    assert p["matches_file"] and p["bytes"] > 0
    # The internal location does not exist from outside, in the API's error shape.
    assert p["direct_status"] == 404 and json.loads(p["direct_body"])["error"]
    # Outside the student's open session (not started yet, then submitted): refused.
    assert p["before_session_status"] == 403 and p["after_submit_status"] == 403
    assert "open session" in json.loads(p["refused_body"])["error"]


@pg
def test_nginx_refuses_a_body_over_the_api_limit_in_json(rehearsal):
    b = rehearsal["body_limit"]
    assert b["status"] == 413
    assert "64 KiB" in json.loads(b["body"])["error"]


@pg
def test_open_model_load_through_nginx_loses_nothing(rehearsal):
    ld = rehearsal["load"]
    assert ld["lost"] == 0 and ld["failed"] == 0 and ld["client_errors"] == 0
    assert ld["verified_sessions"] == ld["students"] == 24
    assert ld["acked_saves"] > 0 and ld["requests"] > ld["students"]


@pg
def test_one_host_killed_mid_load_students_see_nothing(rehearsal):
    f = rehearsal["failover"]
    ld = f["load"]
    assert f["killed"] == "b"
    assert ld["lost"] == 0 and ld["failed"] == 0 and ld["client_errors"] == 0
    assert ld["verified_sessions"] == ld["students"] == 24
    # nginx replayed what the dead host dropped or refused: no student saw it fail.
    assert ld["unreachable_seen"] == 0, ld["error_samples"]
    assert f["nginx_retried"] >= 1
    # Restarted, the host serves through nginx again without a reload.
    assert f["rejoined"]


@pg
def test_a_flag_changed_on_host_a_takes_effect_on_host_b_within_the_ttl(rehearsal):
    fl = rehearsal["flag"]
    assert (fl["changed_on"], fl["observed_on"]) == ("a", "b")
    assert fl["journaled_before"]
    assert fl["effect_seconds"] is not None
    # Once the cache TTL had passed, no save on host B wrote the journal.
    assert fl["after_ttl_saves"] >= 10 and fl["after_ttl_journaled"] == 0


@pg
@pytest.mark.parametrize("job", ["retention", "calibration", "session-expiry"])
def test_jobs_started_on_both_hosts_at_once_run_exactly_once(rehearsal, job):
    (j,) = [x for x in rehearsal["jobs"] if x["job"] == job]
    assert len(j["ran_on"]) == 1, j
    assert len(j["skipped_on"]) == 1, j
    loser = next(r for r in j["runs"] if r["host"] == j["skipped_on"][0])
    assert loser["exit_code"] == 0 and "already running" in loser["output"]
    winner = next(r for r in j["runs"] if r["host"] == j["ran_on"][0])
    assert winner["exit_code"] == 0


@pg
def test_telemetry_from_both_hosts_is_counted_by_opsctl(rehearsal):
    t = rehearsal["telemetry"]
    assert t["hosts"] == 2 and t["instances"] == 2
    assert t["requests"] > 0
    # A client's W3C traceparent crossed nginx; the backend's span joined that trace.
    assert t["trace_continued"]


@pg
def test_rehearsal_passes_as_a_whole(rehearsal):
    # The command exits with its report's verdict: every drill passed.
    assert rehearsal["_exit_code"] == rehearsal["exit_code"] == 0
    assert rehearsal["ok"] and rehearsal["lost"] == 0
