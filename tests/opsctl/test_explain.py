"""opsctl explain, db and vacuum against a real database, SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.db.explain import explain
from opsctl.db.sqlsafety import Refused

run = CliRunner().invoke


@pytest.fixture
def big_table(database_url):
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE doc_events (id integer PRIMARY KEY, kind varchar(20), "
                          "owner_id integer, note varchar(50))"))  # fmt: skip
        rows = [{"i": i, "k": f"k{i % 50}", "o": i % 2000, "n": "x"} for i in range(20_000)]
        conn.execute(text("INSERT INTO doc_events VALUES (:i, :k, :o, :n)"), rows)
        conn.execute(text("ANALYZE doc_events" if engine.dialect.name == "postgresql"
                          else "ANALYZE"))  # fmt: skip
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS doc_events"))
    engine.dispose()


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM doc_events")).scalar()


def test_missing_index_is_flagged_then_not_once_it_exists(database_url, big_table):
    sql = "SELECT * FROM doc_events WHERE owner_id = 7 AND kind = 'k7'"
    found = explain(database_url, sql, analyze=big_table.dialect.name == "postgresql").findings
    scan = [f for f in found if "scan of a large table" in f.problem]
    assert scan, found
    assert "doc_events (owner_id, kind)" in scan[0].action  # owner_id is the more selective
    with big_table.begin() as conn:
        conn.execute(text("CREATE INDEX doc_events_owner ON doc_events (owner_id, kind)"))
        if big_table.dialect.name == "postgresql":
            conn.execute(text("ANALYZE doc_events"))
    found = explain(database_url, sql).findings
    assert not [f for f in found if "scan of a large table" in f.problem]


@pytest.mark.parametrize("sql", [
    "DELETE FROM doc_events", "UPDATE doc_events SET note = 'y'",
    "INSERT INTO doc_events VALUES (999999, 'a', 1, 'b')", "DROP TABLE doc_events",
    "WITH gone AS (DELETE FROM doc_events RETURNING id) SELECT count(*) FROM gone",
    "SELECT 1; DELETE FROM doc_events",
])  # fmt: skip
def test_analyze_refuses_anything_but_a_single_select(database_url, big_table, sql):
    r = run(app, ["explain", sql, "--analyze", "--database-url", database_url])
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
    assert _count(big_table) == 20_000


def test_plain_explain_of_dml_is_allowed_and_never_executes(database_url, big_table):
    result = explain(database_url, "DELETE FROM doc_events WHERE owner_id > 5")
    assert result.root is not None
    r = run(app, ["explain", "UPDATE doc_events SET note = 'y'", "--database-url", database_url,
                  "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)) == {"vendor", "sql", "analyzed", "plan", "findings"}
    assert _count(big_table) == 20_000
    with big_table.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM doc_events WHERE note = 'y'")).scalar() == 0


def test_multiple_statements_refused_even_without_analyze():
    with pytest.raises(Refused, match="one statement at a time"):
        explain("sqlite://", "SELECT 1; SELECT 2")


@pytest.mark.postgres_only
def test_postgres_json_plan_is_the_raw_explain_output(database_url, big_table):
    sql = "SELECT count(*) FROM doc_events WHERE kind = %s"
    r = run(app, ["explain", sql, "--params", '["k1"]', "--analyze", "--buffers", "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["analyzed"] and body["plan"][0]["Plan"]["Node Type"]
    assert "Execution Time" in body["plan"][0]


def test_db_tables_and_vacuum_after_a_mass_delete(database_url, big_table):
    with big_table.begin() as conn:
        conn.execute(text("DELETE FROM doc_events WHERE id % 2 = 0"))
        if big_table.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_stat_force_next_flush()"))
    r = run(app, ["db", "tables", "--json", "--sort", "dead", "--database-url", database_url])
    assert r.exit_code == 0, r.output
    health = json.loads(r.stdout)
    doc = next(t for t in health["tables"] if t["table"] == "doc_events")
    if health["vendor"] == "postgresql":
        assert doc["dead_rows"] >= 10_000 and doc["autovacuum_due"] is not None
        r = run(app, ["vacuum", "doc_events", "--analyze", "--json", "--database-url",
                      database_url])  # fmt: skip
        assert r.exit_code == 0, r.output
        (res,) = json.loads(r.stdout)
        assert res["dead_before"] >= 10_000 and res["dead_after"] < res["dead_before"]
        assert res["audit"] == "ops_auditevent"
    else:
        r = run(app, ["vacuum", "--database-url", database_url])  # no TTY, no --yes
        assert r.exit_code == 2 and "--yes" in r.stderr
        r = run(app, ["vacuum", "--yes", "--json", "--database-url", database_url])
        assert r.exit_code == 0, r.output
        (res,) = json.loads(r.stdout)
        assert res["bytes_after"] < res["bytes_before"]
    with big_table.connect() as conn:
        audit = conn.execute(text("SELECT COUNT(*) FROM ops_auditevent WHERE action = 'vacuum'"))
        assert audit.scalar() >= 1


def test_clear_errors(database_url):
    r = run(app, ["vacuum", "no_such_table", "--database-url", database_url])
    assert r.exit_code == 1 and "unknown table" in r.stderr
    r = run(app, ["db", "tables", "--database-url", "postgresql://u:hunter2@127.0.0.1:1/x"])
    assert r.exit_code == 1 and "hunter2" not in r.stderr and "***" in r.stderr


def test_explain_over_seeded_demo_data(database_url):
    from backend.exams.seed import seed_demo

    seed_demo(students=300, exams=3)  # about 20,000 journal rows
    r = run(app, ["explain", "SELECT * FROM exams_answerevent WHERE value = '7'",
                  "--database-url", database_url, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    findings = json.loads(r.stdout)["findings"]
    if "postgresql" in database_url:
        # Fresh statistics from the seeder's ANALYZE: a seq scan throwing rows away.
        assert any("exams_answerevent (value)" in f["action"] for f in findings), findings
    else:
        assert any("full scan" in f["problem"] for f in findings), findings
