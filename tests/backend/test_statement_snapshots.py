"""pg_stat_statements snapshots on a real PostgreSQL: the scheduled job, windows (--since),
a statement's history, resets, retention, the job lock; SQLite refused in one line."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from opsctl.cli import app

run = CliRunner().invoke
WORK = "SELECT count(*) FROM ops_auditevent WHERE id > :i AND actor <> 'snapshot-test'"


@pytest.fixture
def pg(database_url):
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        # This database only: other databases' statistics are not this test's to clear.
        conn.execute(text("SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database "
                          "WHERE datname = current_database()"))  # fmt: skip
    yield engine
    engine.dispose()


def work(engine, times: int) -> None:
    with engine.begin() as conn:
        for i in range(times):
            conn.execute(text(WORK), {"i": i})


def queryid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT queryid FROM pg_stat_statements WHERE query LIKE "
                 "'SELECT count(*) FROM ops_auditevent WHERE id > $1%' AND dbid = "
                 "(SELECT oid FROM pg_database WHERE datname = current_database())")
        ).scalar_one()  # fmt: skip


def snapshot(url: str, *extra: str) -> dict:
    r = run(app, ["queries", "snapshot", "--min-interval", "1ms", "--json", "--database-url",
                  url, *extra])  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def top_since(url: str, since: str) -> tuple[dict, dict | None]:
    r = run(app, ["queries", "top", "--source", "pg", "--since", since, "--by", "calls",
                  "--limit", "500", "--json", "--database-url", url])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    mine = [s for s in body["statements"] if "ops_auditevent WHERE id > $1" in s["example"]]
    return body, (mine[0] if mine else None)


@pytest.mark.postgres_only
def test_deltas_since_a_snapshot_history_and_a_statement_reset(database_url, pg):
    work(pg, 30)
    s0 = snapshot(database_url)
    assert s0["outcome"] == "ok" and s0["statements"] >= 1 and s0["new_texts"] >= 1
    work(pg, 20)
    s1 = snapshot(database_url)
    body, mine = top_since(database_url, s1["taken_at"])
    assert mine is None  # nothing ran since s1
    assert body["from"] == s1["taken_at"] and not body["shorter"]
    work(pg, 7)
    body, mine = top_since(database_url, s1["taken_at"])
    assert (mine["calls"], mine["reset"]) == (7, False)
    assert mine["total_ms"] > 0 and mine["mean_ms"] == pytest.approx(mine["total_ms"] / 7, abs=1e-3)
    body, mine = top_since(database_url, s0["taken_at"])
    assert mine["calls"] == 27 and body["from"] == s0["taken_at"]
    # An hour back there is no snapshot: the window starts at the oldest one, and says so.
    body, mine = top_since(database_url, "1h")
    assert body["shorter"] and body["from"] == s0["taken_at"] and mine["calls"] == 27

    qid = queryid(pg)
    with pg.begin() as conn:  # this statement's counters reset (as after an eviction)
        conn.execute(text("SELECT pg_stat_statements_reset(0, oid, :q) FROM pg_database "
                          "WHERE datname = current_database()"), {"q": qid})  # fmt: skip
    work(pg, 5)
    body, mine = top_since(database_url, s0["taken_at"])
    assert (mine["calls"], mine["reset"]) == (5, True)  # never 5 - 30 = -25
    r = run(app, ["queries", "top", "--source", "pg", "--since", s0["taken_at"], "--limit",
                  "500", "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "from the snapshot of" in r.stderr and "counters went down" in r.stderr
    row = next(ln.split("\t") for ln in r.stdout.splitlines()
               if ln.startswith(mine["fingerprint"]))  # fmt: skip
    assert row[:2] == [mine["fingerprint"] + " *", "5"]
    s2 = snapshot(database_url)

    r = run(app, ["queries", "history", mine["fingerprint"], "--json", "--database-url",
                  database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    h = json.loads(r.stdout)
    assert h["queryids"] == [qid] and "ops_auditevent" in h["query"]
    assert [(i["start"], i["end"], i["calls"], i["reset"]) for i in h["intervals"]] == [
        (s0["taken_at"], s1["taken_at"], 20, False),
        (s1["taken_at"], s2["taken_at"], 5, True),
    ]
    # queryids may be negative: `--` ends the options.
    r = run(app, ["queries", "history", "--since", s1["taken_at"], "--database-url",
                  database_url, "--", str(qid)])  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if "\t" in ln]
    assert lines[0].split("\t")[:3] == ["from", "to", "calls"]
    assert len(lines) == 2 and lines[1].split("\t")[2] == "5" and lines[1].endswith("reset")


@pytest.mark.postgres_only
def test_snapshot_job_keeps_its_retention_and_runs_once_across_hosts(database_url, pg):
    from backend.ops.locks import job_lock
    from backend.ops.models import StatementCounters, StatementSnapshot, StatementText
    from backend.ops.statement_snapshots import LOCK_NAME

    old = StatementSnapshot.objects.create(
        taken_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30), host="gone", statements=1
    )
    StatementCounters.objects.create(snapshot=old, queryid=-42, calls=1, total_exec_ms=1.0,
                                     rows=1)  # fmt: skip
    StatementText.objects.create(queryid=-42, fingerprint="0" * 16, query="SELECT 'old'")
    work(pg, 3)
    report = snapshot(database_url, "--keep", "7d")
    assert report["outcome"] == "ok" and report["purged_snapshots"] == 1
    assert report["keep_days"] == 7
    assert not StatementSnapshot.objects.filter(pk=old.pk).exists()
    assert not StatementText.objects.filter(queryid=-42).exists()
    assert StatementText.objects.filter(query__contains="ops_auditevent WHERE id > $1").exists()
    # A second host a moment later: the fresh snapshot counts as its run.
    r = run(app, ["queries", "snapshot", "--json", "--database-url", database_url])
    assert r.exit_code == 0 and json.loads(r.stdout)["outcome"] == "skipped"
    # While another host takes one: skipped, exit 0, nothing stored.
    with job_lock(LOCK_NAME):
        r = run(app, ["queries", "snapshot", "--min-interval", "1ms", "--database-url",
                      database_url])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.startswith("skipped: job 'statement-snapshot'")
    assert StatementSnapshot.objects.count() == 1
    # The retention is configurable from the environment too, and checked.
    r = run(app, ["queries", "snapshot", "--database-url", database_url],
            env={"OPS_STATEMENT_SNAPSHOT_KEEP": "forever"})  # fmt: skip
    assert r.exit_code == 2 and r.stderr.startswith("error: --keep: not a duration")


@pytest.mark.postgres_only
def test_since_without_any_snapshot_is_no_data(database_url, pg):
    r = run(app, ["queries", "top", "--source", "pg", "--since", "1h", "--database-url",
                  database_url])  # fmt: skip
    assert r.exit_code == 3 and "opsctl queries snapshot" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(app, ["queries", "history", "0123456789abcdef", "--database-url", database_url])
    assert r.exit_code == 1 and "no statement '0123456789abcdef'" in r.stderr


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["queries", "snapshot"], 2),
        (["queries", "history", "abc"], 1),
        (["queries", "top", "--source", "pg", "--since", "1h"], 1),
    ],
)
def test_sqlite_says_pg_stat_statements_needs_postgresql(database_url, argv, code):
    r = run(app, [*argv, "--database-url", database_url])
    assert r.exit_code == code, r.output
    assert r.stderr == "error: pg_stat_statements needs PostgreSQL; this database is SQLite\n"
