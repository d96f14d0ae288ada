"""`opsctl db activity`, `db cancel` and `db terminate` as on-call meets them: on PostgreSQL a
real blocked session (one connection holds a lock in an open transaction, another waits for
it) shows in the blocking tree, the holder is flagged idle in transaction, a cancel without
--yes off a terminal is refused, a cancel fails the waiter's statement, a terminate ends the
holder's session, and each is an audit event with actor and reason. On SQLite the file's
write lock is reported (held or free) without disturbing the transaction that holds it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from opsctl.cli import app


def run(*argv: str):
    return CliRunner().invoke(app, list(argv))


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _wait_until(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def blocked(database_url):
    """A holder (idle in transaction with an ACCESS EXCLUSIVE lock) and a waiter blocked on
    it, each with its own application_name; the waiter's outcome in ``outcome``."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL sessions")
    import psycopg

    tag = uuid.uuid4().hex[:8]
    table = f"activity_probe_{tag}"
    url = _plain(database_url)
    admin = psycopg.connect(url, autocommit=True)
    admin.execute(f"CREATE TABLE {table} (id int)")
    holder = psycopg.connect(url, application_name=f"holder-{tag}")
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # transaction stays open
    waiter = psycopg.connect(url, application_name=f"waiter-{tag}", autocommit=True)
    outcome: dict = {}

    def wait() -> None:
        try:
            waiter.execute(f"SELECT count(*), '[bold]w[/bold]' FROM {table}")
            outcome["result"] = "ran"
        except Exception as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    state = {"holder": holder.info.backend_pid, "waiter": waiter.info.backend_pid,
             "tag": tag, "thread": thread, "outcome": outcome, "holder_conn": holder}  # fmt: skip
    try:
        yield state
    finally:
        with contextlib.suppress(Exception):
            holder.close()  # the waiter's statement then runs (if not cancelled) and ends
        thread.join(5)
        with contextlib.suppress(Exception):
            waiter.close()
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE application_name IN ('holder-{tag}', 'waiter-{tag}')")  # fmt: skip
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.close()


def _activity(database_url: str, *extra: str) -> dict:
    r = run("db", "activity", "--json", "--database-url", database_url, *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.postgres_only
def test_blocked_session_tree_refusal_cancel_and_terminate_are_audited(database_url, blocked):
    from backend.ops.models import AuditEvent

    holder, waiter = blocked["holder"], blocked["waiter"]

    def seen():
        body = _activity(database_url, "--idle-in-transaction", "1s")
        by_pid = {s["pid"]: s for s in body["sessions"]}
        if waiter in by_pid and by_pid[waiter]["blocked_by"] and by_pid[holder][
                "idle_in_transaction"]:  # fmt: skip
            return body, by_pid
        return None

    time.sleep(1.1)  # the holder has been idle in its transaction for over a second
    body, by_pid = _wait_until(seen)
    assert by_pid[waiter]["blocked_by"] == [holder]
    assert by_pid[waiter]["state"] == "active" and by_pid[waiter]["wait_event_type"] == "Lock"
    assert by_pid[waiter]["application"] == f"waiter-{blocked['tag']}"
    assert by_pid[holder]["blocking"] == [waiter]
    assert by_pid[holder]["state"] == "idle in transaction"
    assert by_pid[holder]["idle_in_transaction"] is True
    assert by_pid[holder]["query"].startswith("LOCK TABLE")
    assert by_pid[holder]["client"].startswith("127.0.0.1:")
    root = next(n for n in body["blocking_tree"] if n["pid"] == holder)
    assert [c["pid"] for c in root["blocked"]] == [waiter]

    text = run("db", "activity", "--idle-in-transaction", "1s", "--database-url", database_url)
    assert text.exit_code == 0
    assert "blocking tree" in text.stdout and "idle in transaction" in text.stdout
    assert f"waits for {holder}" in text.stdout
    assert "'[bold]w[/bold]'" in text.stdout  # statements are printed as text, not markup

    # Off a terminal without --yes: refused (2), nothing sent, nothing recorded.
    r = run("db", "cancel", str(waiter), "--reason", "drill", "--database-url", database_url)
    assert r.exit_code == 2 and "--yes" in r.stderr, r.output
    assert blocked["thread"].is_alive()
    assert not AuditEvent.objects.filter(action__startswith="db.").exists()

    r = run("db", "cancel", str(waiter), "--reason", "drill: unblock the probe", "--yes",
            "--actor", "oncall", "--json", "--database-url", database_url)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sent"] is True
    blocked["thread"].join(10)
    assert "canceling statement due to user request" in blocked["outcome"]["error"]
    event = AuditEvent.objects.get(action="db.cancel")
    assert (event.actor, event.reason, event.target) == (
        "oncall",
        "drill: unblock the probe",
        f"pid {waiter}",
    )
    assert event.details["application"] == f"waiter-{blocked['tag']}"
    assert event.details["query"].startswith("SELECT count(*)")

    r = run("db", "terminate", str(holder), "--reason", "left open", "--yes",
            "--database-url", database_url)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"terminated PID {holder}" in r.stdout
    import psycopg

    with pytest.raises(psycopg.OperationalError):
        blocked["holder_conn"].execute("SELECT 1")
    event = AuditEvent.objects.get(action="db.terminate")
    assert event.reason == "left open" and event.target == f"pid {holder}"
    after = {s["pid"] for s in _activity(database_url, "--all")["sessions"]}
    assert holder not in after


@pytest.mark.postgres_only
def test_cancel_of_a_pid_that_is_not_there_is_one_line(database_url):
    r = run("db", "cancel", "999999", "--reason", "x", "--yes", "--database-url", database_url)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "error: no client backend with PID 999999 on this server (already gone?)"
    ]
    r = run("db", "cancel", "1", "--reason", "  ", "--yes", "--database-url", database_url)
    assert r.exit_code == 1 and "--reason" in r.stderr


@pytest.mark.postgres_only
def test_long_running_statement_is_flagged(database_url):
    import psycopg

    tag = uuid.uuid4().hex[:8]
    conn = psycopg.connect(_plain(database_url), application_name=f"sleeper-{tag}",
                           autocommit=True)  # fmt: skip
    pid = conn.info.backend_pid
    thread = threading.Thread(target=lambda: _quietly(conn, "SELECT pg_sleep(30)"), daemon=True)
    thread.start()
    try:

        def flagged():
            body = _activity(database_url, "--long", "1s")
            s = next((s for s in body["sessions"] if s["pid"] == pid), None)
            return s if s and s["long_running"] else None

        s = _wait_until(flagged)
        assert s["query"] == "SELECT pg_sleep(30)" and s["query_seconds"] >= 1
        quiet = _activity(database_url, "--long", "1m")
        assert not next(x for x in quiet["sessions"] if x["pid"] == pid)["long_running"]
    finally:
        with psycopg.connect(_plain(database_url), autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", [pid])
        thread.join(5)
        conn.close()


def _quietly(conn, sql: str) -> None:
    with contextlib.suppress(Exception):
        conn.execute(sql)


@pytest.fixture
def sqlite_file(tmp_path):
    path = tmp_path / "exam.sqlite3"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE answers (id INTEGER PRIMARY KEY, v TEXT)")
    con.commit()
    con.close()
    return path


@pytest.mark.sqlite_only
def test_sqlite_says_what_it_can_show_and_sees_a_held_write_lock(sqlite_file):
    url = f"sqlite:///{sqlite_file}"
    body = _activity(url)
    assert body["vendor"] == "sqlite" and body["sessions"] == []
    assert body["sqlite"]["journal_mode"] == "wal"
    assert body["sqlite"]["write_lock"] == "free"
    assert "not visible" in body["notes"][0]

    writer = sqlite3.connect(sqlite_file, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO answers (v) VALUES ('kept')")
    try:
        body = _activity(url)
        assert body["sqlite"]["write_lock"] == "held"
        text = run("db", "activity", "--database-url", url)
        assert "write lock: held" in text.stdout and "not visible" in text.stdout
        # The probe did not disturb the writer: its transaction commits as it would have.
        writer.execute("INSERT INTO answers (v) VALUES ('also kept')")
        writer.execute("COMMIT")
    finally:
        writer.close()
    check = sqlite3.connect(sqlite_file)
    assert [r[0] for r in check.execute("SELECT v FROM answers ORDER BY id")] == [
        "kept", "also kept"]  # fmt: skip
    check.close()
    assert _activity(url)["sqlite"]["write_lock"] == "free"


@pytest.mark.sqlite_only
def test_sqlite_cancel_and_terminate_say_why_not(sqlite_file):
    for action in ("cancel", "terminate"):
        r = run("db", action, "1", "--reason", "x", "--yes", "--database-url",
                f"sqlite:///{sqlite_file}")  # fmt: skip
        assert r.exit_code == 1
        assert r.stderr.strip().splitlines() == [
            "error: SQLite has no server sessions to cancel or terminate; the process holding "
            "its write lock is not visible from the database"]  # fmt: skip


def test_blocking_tree_is_built_from_blocked_by():
    from opsctl.db.activity import Session, blocking_tree

    def s(pid, blocked_by=()):
        return Session(pid, "u", "d", "", None, "client backend", "active", None, None, "",
                       1.0, 1.0, 1.0, list(blocked_by))  # fmt: skip

    # 1 blocks 2 and 3; 3 blocks 4; 5 and 6 wait for each other (a deadlock about to be
    # broken); 7 waits for nobody and blocks nobody.
    tree = blocking_tree([s(1), s(2, [1]), s(3, [1]), s(4, [3]), s(5, [6]), s(6, [5]), s(7)])

    def shape(node):
        return (node.pid, [shape(c) for c in node.blocked])

    assert [shape(n) for n in tree] == [
        (1, [(2, []), (3, [(4, [])])]),
        (5, [(6, [])]),
    ]
