"""opsctl explain cannot change data even when the statement text fools the splitter, and
explains placeholder-only statements (as the telemetry records them) with a generic plan."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.sqlsafety import number_placeholders

run = CliRunner().invoke
TABLE = "doctor_safety"


@pytest.fixture
def rows(database_url):
    eng = create_engine(database_url)
    series = (
        "SELECT g AS i FROM generate_series(1, 20000) AS g"
        if eng.dialect.name == "postgresql"
        else "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000) "
        "SELECT i FROM s"
    )
    with eng.begin() as conn:
        conn.execute(text(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, code integer, "
                          "status varchar(8))"))  # fmt: skip
        conn.execute(
            text(f"INSERT INTO {TABLE} SELECT i, i % 500, 's' || (i % 4) FROM ({series}) q")
        )
        conn.execute(text(f"ANALYZE {TABLE}"))
    yield eng
    with eng.begin() as conn:
        conn.execute(text(f"DROP TABLE {TABLE}"))
    eng.dispose()


def count(eng) -> int:
    with eng.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar()


# sqlparse reads 'a\'...' as one string (a backslash escape); PostgreSQL and SQLite end the
# string at the second quote and see COMMIT and DELETE as statements of their own.
SMUGGLED = f"SELECT 'a\\'; COMMIT; DELETE FROM {TABLE}; --'"


@pytest.mark.parametrize("analyze", [[], ["--analyze"]])
def test_a_statement_smuggled_past_the_splitter_never_runs(database_url, rows, analyze):
    r = run(app, ["explain", *analyze, SMUGGLED, "--database-url", database_url])
    assert r.exit_code != 0 and r.stderr.startswith("error: ")
    assert count(rows) == 20_000


@pytest.mark.postgres_only
def test_placeholders_without_values_get_the_generic_plan(database_url, rows):
    sql = f"SELECT * FROM {TABLE} WHERE code = %s AND status = %s AND status LIKE 's%%'"
    r = run(app, ["explain", sql, "--params", "[null, null]", "--database-url", database_url,
                  "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    node = out["plan"][0]["Plan"]
    # Not "Result / One-Time Filter: false", which is what NULLs in a custom plan give.
    assert node["Node Type"] == "Seq Scan" and "$1" in node["Filter"]
    assert any(f["action"].startswith("CREATE INDEX CONCURRENTLY") for f in out["findings"])


def test_number_placeholders():
    assert number_placeholders("SELECT * FROM t WHERE a = %s AND b LIKE 'x%%' AND c = %s") == (
        "SELECT * FROM t WHERE a = $1 AND b LIKE 'x%' AND c = $2",
        2,
    )
    assert number_placeholders("SELECT * FROM t WHERE a = $2 AND b = $1") == (
        "SELECT * FROM t WHERE a = $2 AND b = $1",
        2,
    )
    assert number_placeholders("SELECT 1") == ("SELECT 1", 0)
