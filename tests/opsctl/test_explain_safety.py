"""opsctl explain cannot change data even when the statement text fools the splitter, and
explains placeholder-only statements (as the telemetry records them) with a generic plan."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.db.sqlsafety import number_placeholders

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
    # Named (the save's statement): the same name is the same parameter.
    assert number_placeholders(
        "SELECT * FROM t WHERE a = %(a)s AND b LIKE 'x%%' AND c = %(c)s OR a > %(a)s"
    ) == ("SELECT * FROM t WHERE a = $1 AND b LIKE 'x%' AND c = $2 OR a > $1", 2)


# --- --analyze and server functions with side effects (a READ ONLY transaction runs them) ---


def _pg(database_url: str):
    import psycopg

    return psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))


@pytest.fixture
def bystander(database_url):
    """Another client connection, as a gunicorn worker would hold; it must survive."""
    conn = _pg(database_url)
    conn.autocommit = True
    conn.execute("SET application_name = 'explain-bystander'")
    yield conn
    conn.close()


SIDE_EFFECTS = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity",
    "SELECT pg_stat_reset()",
    "SELECT pg_catalog.pg_stat_reset_shared('bgwriter')",
    "SELECT pg_stat_statements_reset()",
    "SELECT * FROM pg_create_physical_replication_slot('opsctl_explain_test')",
    "WITH s AS (SELECT setval('pg_catalog.doctor_seq', 5)) SELECT * FROM s",
    "SELECT n FROM (SELECT nextval('doctor_seq') AS n) q WHERE %s IS NULL",
]


@pytest.mark.postgres_only
@pytest.mark.parametrize("sql", SIDE_EFFECTS)
def test_analyze_refuses_volatile_functions_before_running(database_url, bystander, sql):
    r = run(app, ["explain", "--analyze", sql, "--database-url", database_url])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "volatile" in r.stderr, r.stderr
    assert bystander.execute("SELECT 1").fetchone() == (1,)  # still connected
    slots = bystander.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0]
    assert slots == 0


@pytest.mark.postgres_only
def test_analyze_allows_harmless_volatile_and_stable_functions(database_url, rows):
    sql = f"SELECT count(*), random(), now(), clock_timestamp() FROM {TABLE} WHERE code = 7"
    r = run(app, ["explain", "--analyze", sql, "--database-url", database_url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["analyzed"] is True


@pytest.mark.postgres_only
def test_analyze_runs_as_a_role_that_can_read_but_not_signal(database_url, rows, bystander):
    """A view hides its function calls from the parser: the read-only role stops them."""
    with _pg(database_url) as conn:
        conn.execute(
            "CREATE VIEW explain_hidden_kill AS SELECT pg_terminate_backend(pid) AS killed "
            "FROM pg_stat_activity WHERE application_name = 'explain-bystander'"
        )
    try:
        r = run(
            app,
            ["explain", "--analyze", "SELECT * FROM explain_hidden_kill",
             "--database-url", database_url],
        )  # fmt: skip
        # "must be a superuser to terminate superuser process": the role may not signal.
        assert r.exit_code == 2 and "to terminate" in r.stderr, r.output
        assert bystander.execute("SELECT 1").fetchone() == (1,)
        # ... and it reads the application's tables.
        r = run(app, ["explain", "--analyze", f"SELECT * FROM {TABLE} WHERE id = 3",
                      "--database-url", database_url, "--json"])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["plan"][0]["Plan"]["Actual Rows"] == 1
    finally:
        with _pg(database_url) as conn:
            conn.execute("DROP VIEW explain_hidden_kill")


@pytest.mark.postgres_only
def test_analyze_is_refused_when_the_read_only_role_is_missing(database_url, rows, monkeypatch):
    from opsctl.db import explain

    monkeypatch.setattr(explain, "ANALYZE_ROLE", "opsctl_explain_absent")
    r = run(app, ["explain", "--analyze", f"SELECT * FROM {TABLE}", "--database-url",
                  database_url])  # fmt: skip
    assert r.exit_code == 2
    assert "opsctl_explain_absent" in r.stderr and "scripts/pg-setup.sh" in r.stderr


@pytest.mark.parametrize("value", ["0", "0ms", "nan", "inf", "-1s", "0.5ms", "soon"])
def test_timeout_must_be_a_positive_duration(database_url, value):
    r = run(app, ["explain", "SELECT 1", f"--timeout={value}", "--database-url", database_url])
    assert r.exit_code != 0
    assert r.stderr.startswith("error: --timeout") and r.stderr.count("\n") == 1, r.stderr


def test_analyzable_calls_come_from_the_parse_tree():
    from opsctl.db.sqlsafety import analyzable_calls

    calls = analyzable_calls(
        "SELECT lower(name), pg_catalog.pg_stat_reset() FROM t "
        "WHERE 'pg_terminate_backend(1)' = %s AND a ||/ b > 1"
    )
    # The function name inside a string literal is not a call.
    assert calls.functions == {(None, "lower"), ("pg_catalog", "pg_stat_reset")}
    assert calls.operators == {"=", "||/", ">"}


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"),
        ("SELECT * INTO t2 FROM t", "INTO"),
        ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("SELECT 1; SELECT 2", "2 statements"),
    ],
)
def test_analyzable_calls_refuses_anything_but_a_plain_read(sql, why):
    from opsctl.db.sqlsafety import Refused, analyzable_calls

    with pytest.raises(Refused, match=why):
        analyzable_calls(sql)


def test_refuse_volatile_rules():
    from opsctl.db.sqlsafety import Calls, Refused, refuse_volatile

    volatile = {("pg_catalog", "random"), ("pg_catalog", "pg_stat_reset"), ("ext", "lower")}
    path = ["pg_catalog", "public"]
    # random() is harmless; lower() in a schema off the search path is not what an unqualified
    # call reaches.
    refuse_volatile(Calls(frozenset({(None, "random"), (None, "lower")}), frozenset()),
                    volatile, {}, path)  # fmt: skip
    with pytest.raises(Refused, match=r"ext\.lower\(\)"):
        refuse_volatile(Calls(frozenset({("ext", "lower")}), frozenset()), volatile, {}, path)
    with pytest.raises(Refused, match=r"pg_catalog\.pg_stat_reset\(\)"):
        refuse_volatile(Calls(frozenset({(None, "pg_stat_reset")}), frozenset()), volatile, {},
                        path)  # fmt: skip
    with pytest.raises(Refused, match=r"operator \|\|\| \(public\.evil\(\)\)"):
        refuse_volatile(Calls(frozenset(), frozenset({"|||"})), volatile,
                        {"|||": "public.evil()"}, path)  # fmt: skip
