"""Deploy files: systemd units that systemd-analyze accepts, one service+timer per scheduled
job with OnFailure=, a crontab that loads the environment file, and job locks."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys

import pytest

from tests.observability.stack import ROOT, ensure

SYSTEMD = ROOT / "deploy" / "systemd"
CRONTAB = ROOT / "deploy" / "crontab.example"
JOBS = {
    "opsctl-retention": "opsctl retention run",
    "opsctl-rasch-auto": "opsctl rasch auto",
    "exam-expire-sessions": "manage.py expire_sessions",
    "opsctl-resources-check": "opsctl resources --check",
    "opsctl-statement-snapshot": "opsctl queries snapshot",
    "opsctl-flags-apply-due": "opsctl flags apply-due",
}


def _unit(path) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(strict=False, interpolation=None)
    cfg.optionxform = str
    cfg.read_string(path.read_text())
    return cfg


def test_every_scheduled_job_has_a_service_and_timer_with_on_failure():
    for job, command in JOBS.items():
        svc = _unit(SYSTEMD / f"{job}.service")
        timer = _unit(SYSTEMD / f"{job}.timer")
        assert command.split()[-1] in svc["Service"]["ExecStart"], job
        assert svc["Service"]["Type"] == "oneshot", job
        assert svc["Service"]["EnvironmentFile"] == "/etc/exam/backend.env", job
        assert svc["Unit"]["OnFailure"] == "exam-job-failed@%n.service", job
        assert timer["Timer"]["OnCalendar"], job
        assert timer["Install"]["WantedBy"] == "timers.target", job
    assert (SYSTEMD / "exam-job-failed@.service").exists()


def test_units_pass_systemd_analyze_verify(tmp_path):
    """The shipped units, with /srv/exam pointing at this checkout (so the ExecStart programs
    exist), verified by systemd-analyze: no error and no warning."""
    tool = ensure("systemd-analyze")["systemd-analyze"]
    units = []
    for path in sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer")):
        text = path.read_text().replace("/srv/exam", str(ROOT))
        name = path.name
        if name.endswith("@.service"):  # a template is verified as one of its instances
            name = name.replace("@.service", "@opsctl-retention.service.service")
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    assert len(units) >= 10
    r = subprocess.run([tool, "verify", *units], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if str(tmp_path) in ln
                or "Unknown" in ln or "not executable" in ln]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    tool = ensure("systemd-analyze")["systemd-analyze"]
    text = (SYSTEMD / "opsctl-rasch-auto.service").read_text().replace("/srv/exam", str(ROOT))
    (tmp_path / "broken.service").write_text(text.replace("OnFailure=", "OnFailur="))
    r = subprocess.run([tool, "verify", str(tmp_path / "broken.service")], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert "Unknown key" in r.stdout + r.stderr


def _cron_lines() -> list[str]:
    lines = [ln for ln in CRONTAB.read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and not re.match(r"^\w+=", ln)]  # fmt: skip
    return [" ".join(ln.split()[5:]) for ln in lines]


def test_every_cron_line_loads_the_environment_file_first():
    lines = _cron_lines()
    assert len(lines) == len(JOBS)
    for line in lines:
        assert line.startswith("set -a && . /etc/exam/backend.env && set +a && "), line


@pytest.mark.django_db(transaction=True)
def test_cron_line_runs_on_the_configured_database_under_an_empty_environment(tmp_path):
    """As cron runs it (env -i, /bin/sh): the job reads DATABASE_URL from the environment
    file, works on that database, and creates no SQLite file under var/."""
    from tests.e2e.gunicorn_server import django_database_url

    var = tmp_path / "var"
    (var / "log").mkdir(parents=True)
    env_file = tmp_path / "backend.env"
    env_file.write_text(f"DATABASE_URL={django_database_url()}\nOPS_VAR_DIR={var}\n"
                        "OPS_TELEMETRY=0\n")  # fmt: skip
    line = next(ln for ln in _cron_lines() if "expire_sessions" in ln)
    line = line.replace("/etc/exam/backend.env", str(env_file)).replace("/srv/exam", str(ROOT))
    line = line.replace(".venv/bin/python", sys.executable).replace(">> var/", f">> {var}/")
    r = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", line],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr + (var / "log" / "expire.log").read_text()
    log = (var / "log" / "expire.log").read_text()
    assert re.search(r"expired \d+ session", log), log
    assert not list(var.glob("*.sqlite3")), "fell back to SQLite"
    # Without the file, the line stops before the job runs: no SQLite fallback either.
    missing = line.replace(str(env_file), str(tmp_path / "missing.env"))
    r = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", missing],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0
    assert not list(var.glob("*.sqlite3"))


@pytest.mark.django_db(transaction=True)
def test_expire_sessions_takes_the_job_lock():
    from io import StringIO

    from django.core.management import call_command

    from backend.ops.locks import job_lock

    out = StringIO()
    with job_lock("expire-sessions"):
        call_command("expire_sessions", stdout=out)
    assert out.getvalue().startswith("skipped: job 'expire-sessions' is already running")
    out = StringIO()
    call_command("expire_sessions", stdout=out)
    assert re.match(r"expired \d+ session\(s\)", out.getvalue())
