"""The error contract, as an on-call engineer meets it with the database down: every command
that needs a database, against a dead server, a missing database, a garbage URL or a bad
SQLite path, prints exactly one line on stderr and exits with the code its --help documents
(commands 1, jobs 2, checks 3, loadtest 3). Django's settings are per process, so each URL
runs in a fresh process (tests/opsctl/dead_db_driver.py, CliRunner inside); a few commands
also run as the real `opsctl` executable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsctl.cli import app
from tests.opsctl.dead_db_driver import COMMANDS, CREATING

ROOT = Path(__file__).resolve().parents[2]
OPSCTL = str(ROOT / ".venv" / "bin" / "opsctl")
CLOSED_PORT = "postgresql://postgres:hunter2@127.0.0.1:9/exam"
GARBAGE = "garbage://nothing/here"


def _drive(url: str, skip_create: bool = False) -> list[dict]:
    argv = [sys.executable, "-m", "tests.opsctl.dead_db_driver", url]
    out = subprocess.run(argv + (["--skip-create"] if skip_create else []), cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _assert_contract(rows: list[dict], n_expected: int, needle: str) -> None:
    assert len(rows) == n_expected
    for r in rows:
        what = " ".join(r["argv"])
        assert r["exit_code"] == r["expected"], (what, r["exit_code"], r["stderr"], r["stdout"])
        lines = r["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, r["stderr"])
        assert "Traceback" not in r["stderr"] + r["stdout"], what
        assert "hunter2" not in r["stderr"] + r["stdout"], what  # never a password
        assert needle in lines[0], (what, lines[0])


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (CLOSED_PORT, "Connection refused"),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db_opsctl_test", "does not exist"),
        (GARBAGE, "not a SQLite or PostgreSQL URL"),
    ],
    ids=["closed-port", "missing-database", "garbage-url"],
)
def test_every_command_on_a_dead_postgresql(url, needle):
    rows = _drive(url)
    pg_only = 1 if url.startswith("postgresql") else 0  # queries top --source pg
    _assert_contract(rows, len(COMMANDS) + len(CREATING) + pg_only, needle)


@pytest.mark.sqlite_only
def test_every_command_on_a_bad_sqlite_path_and_a_garbage_url(tmp_path):
    _assert_contract(_drive(f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3"),
                     len(COMMANDS) + len(CREATING), "no SQLite database at")  # fmt: skip
    # A mistyped file name in an existing directory: refused, and no empty database is left
    # behind (before, SQLite created one and `explain` said "no problems found").
    missing = tmp_path / "exam.sqllite3"
    _assert_contract(_drive(f"sqlite:///{missing}", skip_create=True), len(COMMANDS),
                     "no SQLite database at")  # fmt: skip
    assert not missing.exists()
    _assert_contract(_drive(GARBAGE), len(COMMANDS) + len(CREATING),
                     "not a SQLite or PostgreSQL URL")  # fmt: skip


def _opsctl(*args: str, env_url: str = CLOSED_PORT, **env_extra) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": env_url, "HOME": str(ROOT), **env_extra}
    return subprocess.run([OPSCTL, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_setting_the_backend_refuses_is_one_line():
    """DEBUG=ture used to be silently off; now the settings refuse it, and opsctl says so."""
    for args, code in ((["flags", "list"], 1), (["retention", "run"], 2)):
        out = _opsctl(*args, DEBUG="ture")
        assert out.returncode == code, out.stderr
        assert out.stderr == (
            "error: backend settings: DEBUG='ture' is not a boolean: use 1/0, true/false, "
            "yes/no or on/off\n"
        )


@pytest.mark.parametrize(
    ("args", "code"),
    [(["retention", "run"], 2), (["rasch", "auto"], 2), (["flags", "list"], 1),
     (["db", "tables"], 1)],
)  # fmt: skip
def test_real_executable_with_the_database_down(args, code):
    out = _opsctl(*args)
    assert out.returncode == code, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "hunter2" not in out.stderr and out.stdout == ""


def test_real_check_is_unknown_for_nagios_too():
    out = _opsctl("resources", "--check")
    assert out.returncode == 3
    assert out.stdout.startswith("RESOURCES UNKNOWN - ") and out.stdout.count("\n") == 1
    assert out.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "code"),
    [(["resources", "--warn", "x"], 3), (["flags", "lis"], 2), (["retention", "run", "--nope"], 2),
     (["vacuum", "--lock-timeout", "soon"], 1), (["vacuum", "--lock-timeout", "0s"], 1),
     (["migrate", "apply", "--statement-timeout", "inf"], 1)],
)  # fmt: skip
def test_real_usage_errors_are_one_line(args, code):
    out = _opsctl(*args)
    assert out.returncode == code, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr


def test_unexpected_error_is_one_line_and_the_traceback_needs_debug(monkeypatch):
    from opsctl.db import health

    def boom(*_a, **_k):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(health, "table_health", boom)
    monkeypatch.delenv("OPS_DEBUG", raising=False)
    r = CliRunner().invoke(app, ["db", "tables", "--database-url", "sqlite:////tmp/x"])
    assert r.exit_code == 2
    assert r.stderr == (
        "error: unexpected error: RuntimeError: kaboom (run with --debug or OPS_DEBUG=1 for "
        "the traceback)\n"
    )
    r = CliRunner().invoke(app, ["--debug", "db", "tables", "--database-url", "sqlite:////x"])
    assert r.exit_code == 2 and "Traceback" in r.stderr and "kaboom" in r.stderr
    assert r.stderr.splitlines()[-1] == "error: unexpected error: RuntimeError: kaboom"
    r = CliRunner().invoke(app, ["db", "tables", "--database-url", "sqlite:////x"],
                           env={"OPS_DEBUG": "1"})  # fmt: skip
    assert r.exit_code == 2 and "Traceback" in r.stderr


def test_unexpected_error_in_a_check_is_unknown(monkeypatch):
    from opsctl.commands import resources

    def boom(*_a):
        raise KeyError("probe")

    monkeypatch.setattr(resources, "_check", boom)
    r = CliRunner().invoke(app, ["resources", "--check"])
    assert r.exit_code == 3 and r.stdout.startswith("RESOURCES UNKNOWN - unexpected error")
    assert r.stderr.count("\n") == 1


def test_actor_longer_than_the_audit_column_is_refused_before_the_database():
    long = "x" * 151
    for args in (["flags", "set", "journal.writes", "off", "--reason", "r"],
                 ["rollback", "--last", "1", "--reason", "r", "--yes"], ["vacuum", "--yes"],
                 ["rasch", "calibrate", "1"], ["migrate", "apply", "--yes"]):  # fmt: skip
        r = CliRunner().invoke(app, [*args, "--actor", long, "--database-url", CLOSED_PORT])
        assert r.exit_code == 1 and "--actor is 151 characters; at most 150" in r.stderr, args
        assert r.stderr.count("\n") == 1


@pytest.mark.django_db(transaction=True)
def test_flag_change_with_a_too_long_actor_changes_nothing():
    """The service refuses too (PostgreSQL used to fail mid change set)."""
    from backend.ops import flags
    from backend.ops.errors import InvalidInput
    from backend.ops.models import AuditEvent

    before = flags.get_flag("journal.writes").value
    with pytest.raises(InvalidInput, match="at most 150"):
        flags.set_flag("journal.writes", "off", "drill", actor="y" * 151)
    assert flags.get_flag("journal.writes").value == before
    assert not AuditEvent.objects.filter(action="flag.set").exists()
    ev = flags.set_flag("journal.writes", "off", "drill", actor="y" * 150)
    assert ev.actor == "y" * 150


def test_help_documents_the_exit_codes():
    for args, needle in [([], "3 UNKNOWN"), (["retention", "run"], "2 failed"),
                         (["rasch", "auto"], "2 failed"), (["resources"], "3 UNKNOWN"),
                         (["vacuum"], "3 a table's lock"), (["loadtest"], "3 when the load"),
                         (["migrate", "apply"], "2 refused")]:  # fmt: skip
        r = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and needle in " ".join(r.stdout.split()), (args, r.stdout)


@pytest.mark.postgres_only
def test_queries_top_source_pg_takes_a_postgres_scheme_url(database_url):
    """`postgres://` (Heroku-style) used to raise SQLAlchemy's NoSuchModuleError."""
    url = "postgres://" + database_url.split("://", 1)[1]
    r = CliRunner().invoke(app, ["queries", "top", "--source", "pg", "--json",
                                 "--database-url", url])  # fmt: skip
    # 0 with statistics, or 3 when pg_stat_statements is not installed in the test database.
    assert r.exit_code in (0, 3), r.output
    assert "NoSuchModuleError" not in r.output + r.stderr
    if r.exit_code == 0:
        assert isinstance(json.loads(r.stdout), list)
    else:
        assert "pg_stat_statements" in r.stderr and r.stderr.count("\n") == 1
