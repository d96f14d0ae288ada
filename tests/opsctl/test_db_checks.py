"""`opsctl db check` (and `db indexes`) against conditions created for real: on PostgreSQL a
scratch database gets an exact duplicate index, constraints left NOT VALID, bloat (rows
deleted, no VACUUM), sequences near their maximum (setval; a bigint sequence feeding an
integer column) and a table (and its TOAST table) past its autovacuum_freeze_max_age; each
is reported, with Nagios exit codes. A clean database reports none of them. On SQLite only
duplicate indexes apply; the other checks say why not."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid

import pytest
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.db.checks import Thresholds, run_checks


def run(*argv: str):
    return CliRunner().invoke(app, list(argv))


def checks_json(url: str, *extra: str) -> tuple[int, dict]:
    r = run("db", "check", "--json", "--database-url", url, *extra)
    assert r.stdout, r.output
    body = json.loads(r.stdout)
    return r.exit_code, {c["check"]: c for c in body["checks"]}


def targets(check: dict) -> list[str]:
    return [f["target"] for f in check["findings"]]


@pytest.fixture
def scratch_pg():
    """A new, empty database on the test server (dropped after)."""
    import psycopg

    server = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    name = f"ops_checks_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base = server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres_only
def test_a_clean_postgresql_database_reports_nothing(scratch_pg):
    import psycopg

    with psycopg.connect(scratch_pg, autocommit=True) as c:
        c.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int, s text)")
        c.execute("CREATE INDEX t_v ON t (v)")
        c.execute("CREATE INDEX t_v_desc ON t (v DESC)")  # not a duplicate: another order
        c.execute("CREATE INDEX t_v_part ON t (v) WHERE v > 0")  # another predicate
        c.execute("INSERT INTO t (v, s) SELECT i, 'x' FROM generate_series(1, 1000) i")
        c.execute("ANALYZE t")
    code, by = checks_json(scratch_pg)
    assert code == 0, by
    assert {name: c["status"] for name, c in by.items()} == {
        "duplicate_indexes": "ok", "not_valid_constraints": "ok", "table_bloat": "ok",
        "index_bloat": "ok", "cache_hit": "ok", "xid_wraparound": "ok", "sequences": "ok",
    }  # fmt: skip
    assert all(not c["findings"] for c in by.values())
    r = run("db", "check", "--check", "--database-url", scratch_pg)
    assert (r.exit_code, r.stdout.strip()) == (0, "DB OK - 7 checks passed")
    r = run("db", "indexes", "--json", "--database-url", scratch_pg)
    assert [i for i in json.loads(r.stdout) if i["problem"] == "duplicate"] == []


@pytest.mark.postgres_only
def test_postgresql_conditions_are_each_reported(scratch_pg):
    import psycopg

    with psycopg.connect(scratch_pg, autocommit=True) as c:
        # Exact duplicates: a plain pair, and an expression pair written differently.
        c.execute("CREATE TABLE answers (id serial PRIMARY KEY, exam int, s text)")
        c.execute("CREATE INDEX answers_exam ON answers (exam)")
        c.execute("CREATE INDEX answers_exam_again ON answers USING btree (exam)")
        c.execute("CREATE INDEX answers_lower ON answers (lower(s))")
        c.execute("CREATE INDEX answers_lower_2 ON answers ((lower(s)))")
        c.execute("CREATE INDEX answers_exam_hash ON answers USING hash (exam)")  # other method
        # Constraints whose VALIDATE step never ran.
        c.execute("CREATE TABLE exams (id int PRIMARY KEY)")
        c.execute("ALTER TABLE answers ADD CONSTRAINT answers_exam_fk FOREIGN KEY (exam) "
                  "REFERENCES exams (id) NOT VALID")  # fmt: skip
        c.execute("ALTER TABLE answers ADD CONSTRAINT answers_s_len CHECK (length(s) < 100) "
                  "NOT VALID")  # fmt: skip
        c.execute("ALTER TABLE exams ADD CONSTRAINT exams_pos CHECK (id > 0) NOT VALID")
        c.execute("ALTER TABLE exams VALIDATE CONSTRAINT exams_pos")  # done: not reported
        # Sequences: the serial's int4 sequence at 97%, a bigint sequence feeding an int column.
        c.execute("SELECT setval('answers_id_seq', 2080000000)")
        c.execute("CREATE TABLE legacy (id integer)")
        c.execute("CREATE SEQUENCE legacy_seq AS bigint OWNED BY legacy.id")
        c.execute("SELECT setval('legacy_seq', 1700000000)")  # 79% of integer, 0% of bigint
        # Bloat: 90% of the rows deleted, no VACUUM, statistics fresh.
        c.execute("CREATE TABLE journal (id serial PRIMARY KEY, v int, pad text) "
                  "WITH (autovacuum_enabled = false)")  # fmt: skip
        c.execute("INSERT INTO journal (v, pad) SELECT i, repeat('x', 60) "
                  "FROM generate_series(1, 60000) i")  # fmt: skip
        c.execute("DELETE FROM journal WHERE id % 10 <> 0")
        c.execute("ANALYZE journal")
        # Wraparound: a table (and its TOAST table) with the smallest freeze_max_age allowed,
        # then more transaction IDs than that.
        c.execute("CREATE TABLE frozen (id int, doc text) WITH (autovacuum_freeze_max_age = "
                  "100000, toast.autovacuum_freeze_max_age = 100000, autovacuum_enabled = "
                  "false, toast.autovacuum_enabled = false)")  # fmt: skip
        c.execute("SET synchronous_commit = off")
        c.execute("DO $$ BEGIN FOR i IN 1..100100 LOOP PERFORM txid_current(); COMMIT; "
                  "END LOOP; END $$")  # fmt: skip
        toast = c.execute("SELECT reltoastrelid::regclass::text FROM pg_class "
                          "WHERE relname = 'frozen'").fetchone()[0]  # fmt: skip

    code, by = checks_json(scratch_pg)
    assert code == 2  # CRITICAL: the serial's sequence
    dup = by["duplicate_indexes"]
    assert dup["status"] == "warning"
    assert sorted(targets(dup)) == ["answers.answers_exam_again", "answers.answers_lower_2"]
    assert "identical to answers_exam" in dup["findings"][0]["detail"]

    nv = by["not_valid_constraints"]
    assert sorted(targets(nv)) == ["answers.answers_exam_fk", "answers.answers_s_len"]
    fk = next(f for f in nv["findings"] if f["target"].endswith("_fk"))
    assert "VALIDATE CONSTRAINT answers_exam_fk" in fk["detail"]

    seq = {f["target"]: f for f in by["sequences"]["findings"]}
    assert seq["answers_id_seq (feeds answers.id)"]["severity"] == "critical"
    assert seq["answers_id_seq (feeds answers.id)"]["value"] == pytest.approx(96.86, abs=0.01)
    legacy = seq["legacy_seq (feeds legacy.id)"]
    assert legacy["severity"] == "warning" and "integer column legacy.id" in legacy["detail"]

    wrap = {f["target"]: f for f in by["xid_wraparound"]["findings"]}
    assert wrap["frozen"]["severity"] == "warning" and wrap["frozen"]["value"] > 100000
    assert f"{toast} (TOAST of frozen)" in wrap
    assert "autovacuum_freeze_max_age 100,000" in wrap["frozen"]["detail"]

    # Bloat is judged over 100 MB by default: this small table is not worth a finding...
    assert by["table_bloat"]["status"] == "ok" and "estimate" in by["table_bloat"]["summary"]
    # answers, exams, legacy and frozen were never analyzed: no estimate, and it says so.
    assert "4 tables never analyzed, not estimated (run ANALYZE)" in by["table_bloat"]["summary"]
    # ... with the floor at 1 MB the estimate finds what the DELETE left behind.
    report = run_checks(scratch_pg, Thresholds(bloat_min_bytes=1_000_000),
                        only=["table_bloat", "index_bloat"])  # fmt: skip
    table_bloat, index_bloat = report.checks
    journal = next(f for f in table_bloat.findings if f.target == "journal")
    assert 80 <= journal.value <= 95 and "estimate" in journal.detail
    assert "journal_pkey" in [f.target for f in index_bloat.findings]
    assert "answers" not in [f.target for f in table_bloat.findings]

    r = run("db", "check", "--check", "--database-url", scratch_pg)
    assert r.exit_code == 2 and r.stdout.startswith("DB CRITICAL - ")
    assert "duplicate_indexes: 2 found (warning)" in r.stdout
    r = run("db", "check", "--only", "duplicate_indexes", "--check", "--database-url", scratch_pg)
    assert (r.exit_code, r.stdout.strip()) == (
        1, "DB WARNING - duplicate_indexes: 2 found (warning)")  # fmt: skip

    r = run("db", "indexes", "--json", "--database-url", scratch_pg)
    dups = {i["index"]: i["detail"] for i in json.loads(r.stdout) if i["problem"] == "duplicate"}
    assert dups["answers_exam_again"].startswith("identical to answers_exam ")
    assert "answers_exam_hash" not in dups


@pytest.mark.postgres_only
def test_cache_hit_rate_is_read_from_pg_statio(scratch_pg):
    import psycopg

    with psycopg.connect(scratch_pg, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute("INSERT INTO t SELECT generate_series(1, 5000)")
        for _ in range(3):
            c.execute("SELECT count(*) FROM t").fetchone()
            c.execute("SELECT * FROM t WHERE id = 42").fetchone()
        c.execute("SELECT pg_stat_force_next_flush()")
        c.execute("SELECT 1")
        hit, read = c.execute("SELECT sum(heap_blks_hit), sum(heap_blks_read) "
                              "FROM pg_statio_user_tables").fetchone()  # fmt: skip
    _, by = checks_json(scratch_pg, "--only", "cache_hit")
    cache = by["cache_hit"]
    assert hit + read > 0
    rate = 100 * hit / (hit + read)
    assert f"tables {rate:.2f}% of {hit + read:,} blocks (too few to judge)" in cache["summary"]
    assert cache["status"] == "ok"


def _sqlite(path, *statements: str) -> str:
    con = sqlite3.connect(path)
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()
    return f"sqlite:///{path}"


@pytest.mark.sqlite_only
def test_sqlite_duplicate_indexes_apply_and_the_rest_say_why_not(tmp_path):
    url = _sqlite(
        tmp_path / "dups.sqlite3",
        "CREATE TABLE answers (id INTEGER PRIMARY KEY, exam INT, s TEXT)",
        "CREATE INDEX a_exam ON answers (exam)",
        "CREATE INDEX a_exam_2 ON answers(exam)",
        "CREATE INDEX a_exam_desc ON answers (exam DESC)",  # another order: not a duplicate
        "CREATE INDEX a_low ON answers (lower(s)) WHERE exam > 1",
        "CREATE INDEX a_low_2 ON answers (lower(s))  where exam > 1",
        "CREATE INDEX a_low_3 ON answers (lower(s)) WHERE exam > 2",  # another predicate
    )
    code, by = checks_json(url)
    assert code == 1
    assert by["duplicate_indexes"]["status"] == "warning"
    assert sorted(targets(by["duplicate_indexes"])) == ["answers.a_exam_2", "answers.a_low_2"]
    for name in ("not_valid_constraints", "table_bloat", "index_bloat", "cache_hit",
                 "xid_wraparound", "sequences"):  # fmt: skip
        assert by[name]["status"] == "n/a" and by[name]["summary"], name
    assert "no transaction IDs" in by["xid_wraparound"]["summary"]
    r = run("db", "check", "--database-url", url)
    assert "n/a" in r.stdout and "a_exam_2" in r.stdout
    r = run("db", "indexes", "--json", "--database-url", url)
    dups = {i["index"]: i["detail"] for i in json.loads(r.stdout) if i["problem"] == "duplicate"}
    assert dups["a_exam_2"].startswith("identical to a_exam ")
    assert "a_exam_desc" not in dups and "a_low_3" not in dups


@pytest.mark.sqlite_only
def test_a_clean_sqlite_database_reports_nothing(tmp_path):
    url = _sqlite(
        tmp_path / "clean.sqlite3",
        "CREATE TABLE answers (id INTEGER PRIMARY KEY, exam INT, s TEXT)",
        "CREATE INDEX a_exam ON answers (exam)",
        "CREATE INDEX a_exam_s ON answers (exam, s)",
    )
    r = run("db", "check", "--check", "--database-url", url)
    assert (r.exit_code, r.stdout.strip()) == (0, "DB OK - 1 check passed (6 do not apply)")


def test_an_unknown_check_is_one_line_and_unknown():
    r = run("db", "check", "--only", "bloat", "--check", "--database-url",
            "postgresql://postgres@127.0.0.1:9/x")  # fmt: skip
    assert r.exit_code == 3
    assert r.stderr.strip().splitlines() == [
        "error: unknown check 'bloat'; checks: duplicate_indexes, not_valid_constraints, "
        "table_bloat, index_bloat, cache_hit, xid_wraparound, sequences"]  # fmt: skip
