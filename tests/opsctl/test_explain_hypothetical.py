"""Index advice proven with HypoPG before it is given (opsctl explain, explain --top)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.db.explain import explain

run = CliRunner().invoke


@pytest.fixture
def hypo_table(database_url):
    engine = create_engine(database_url)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE hypo_events (id integer PRIMARY KEY, owner_id integer, "
                          "kind varchar(20), half integer, note varchar(50))"))  # fmt: skip
        rows = [{"i": i, "o": i % 2000, "k": f"k{i % 50}", "h": i % 3, "n": "x" * 40}
                for i in range(30_000)]  # fmt: skip
        conn.execute(text("INSERT INTO hypo_events VALUES (:i, :o, :k, :h, :n)"), rows)
        conn.execute(text("ANALYZE hypo_events" if pg else "ANALYZE"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS hypo_events"))
    engine.dispose()


def _index_finding(findings):
    (f,) = [f for f in findings if f.index is not None]
    return f


@pytest.mark.postgres_only
def test_missing_index_is_verified_with_costs_before_and_after(database_url, hypo_table):
    sql = "SELECT * FROM hypo_events WHERE owner_id = 7"
    f = _index_finding(explain(database_url, sql).findings)
    assert f.index.status == "verified", f.index
    assert f.index.cost_after <= f.index.cost_before / 2 and f.index.cost_drop >= 0.5
    assert f.index.used and f.severity == "critical"
    assert f.action.startswith(
        "CREATE INDEX CONCURRENTLY hypo_events_owner_id_idx ON hypo_events (owner_id);"
    )
    assert f"estimated cost {f.index.cost_before:.1f} -> {f.index.cost_after:.1f}" in f.action
    # Placeholders without values (as the statistics give them): the generic plan, same verdict.
    r = run(app, ["explain", "SELECT * FROM hypo_events WHERE owner_id = %s", "--params",
                  "[null]", "--json", "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    (index,) = [f["index"] for f in json.loads(r.stdout)["findings"] if f["index"]]
    assert index["status"] == "verified" and index["columns"] == ["owner_id"]
    assert index["cost_before"] > 2 * index["cost_after"] > 0
    # Only hypothetical: no real index was built.
    with hypo_table.connect() as conn:
        names = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE tablename = 'hypo_events'")
        ).scalars()
        assert list(names) == ["hypo_events_pkey"]


@pytest.mark.postgres_only
def test_an_index_that_would_not_halve_the_cost_is_not_suggested(database_url, hypo_table):
    # A third of the rows match: the planner keeps scanning; the scan is still flagged.
    r = run(app, ["explain", "SELECT * FROM hypo_events WHERE half = 1", "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["index"]]
    assert f["index"]["status"] == "rejected"
    assert f["index"]["cost_drop"] < 0.5 and f["index"]["cost_before"] > 0
    assert f["action"].startswith("no index suggested: CREATE INDEX CONCURRENTLY hypo_events_h")
    assert "must cut it by at least 50%" in f["action"] and f["severity"] == "info"
    r = run(app, ["explain", "SELECT * FROM hypo_events WHERE half = 1",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0 and "no index suggested" in r.stdout


@pytest.mark.postgres_only
def test_without_the_extension_the_suggestion_is_unverified(database_url, hypo_table):
    with hypo_table.begin() as conn:
        conn.execute(text("DROP EXTENSION hypopg"))
    try:
        f = _index_finding(explain(database_url, "SELECT * FROM hypo_events WHERE owner_id = 7")
                           .findings)  # fmt: skip
        assert f.index.status == "unverified" and f.index.cost_before is None
        assert "CREATE EXTENSION hypopg" in f.index.reason
        assert f.action.startswith("CREATE INDEX CONCURRENTLY hypo_events_owner_id_idx")
        assert "(unverified: HypoPG is installed but not created in this database" in f.action
    finally:
        with hypo_table.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS hypopg"))


@pytest.mark.sqlite_only
def test_sqlite_suggestion_is_marked_unverified(database_url, hypo_table):
    r = run(app, ["explain", "SELECT * FROM hypo_events WHERE owner_id = 7", "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["index"]]
    assert f["index"]["status"] == "unverified" and "SQLite" in f["index"]["reason"]
    assert f["action"].startswith("CREATE INDEX hypo_events_owner_id_idx ON hypo_events")


@pytest.mark.postgres_only
def test_top_merges_one_index_serving_several_fingerprints(database_url, hypo_table):
    workload = {
        "a": "SELECT id FROM hypo_events WHERE owner_id = :v",
        "b": "SELECT count(*) FROM hypo_events WHERE owner_id = :v",
        "c": "SELECT * FROM hypo_events WHERE half = :v",
    }
    with hypo_table.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        conn.execute(text("SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database "
                          "WHERE datname = current_database()"))  # fmt: skip
        for _ in range(40):
            for sql in workload.values():
                conn.execute(text(sql), {"v": 1})
    r = run(app, ["explain", "--top", "3", "--source", "pg", "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert len(body["statements"]) == 3
    assert all(s["error"] is None for s in body["statements"])
    fp = {}
    for k, sql in workload.items():
        head = sql.split(" WHERE ")[0]
        (fp[k],) = [s["fingerprint"] for s in body["statements"] if s["sql"].startswith(head)]
    owner = next(m for m in body["indexes"] if m["columns"] == ["owner_id"])
    assert owner["status"] == "verified" and sorted(owner["helps"]) == sorted([fp["a"], fp["b"]])
    assert {s["fingerprint"]: s["status"] for s in owner["statements"]} == {
        fp["a"]: "verified", fp["b"]: "verified"
    }  # fmt: skip
    half = next(m for m in body["indexes"] if m["columns"] == ["half"])
    assert half["status"] == "rejected" and half["helps"] == []
    assert body["indexes"].index(owner) == 0  # verified first
    r = run(app, ["explain", "--top", "3", "--source", "pg", "--database-url", database_url])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("verified\t"))
    assert "hypo_events (owner_id)" in line and fp["a"] in line and fp["b"] in line


@pytest.mark.sqlite_only
def test_top_from_pg_refuses_sqlite_clearly(database_url):
    r = run(app, ["explain", "--top", "3", "--source", "pg", "--database-url", database_url])
    assert r.exit_code == 1 and "PostgreSQL" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_top_from_telemetry_files_keeps_each_fingerprint(database_url, tmp_path):
    import time

    from tests.bench import spangen

    now = time.time()
    spangen.fill(tmp_path, now - 600, now, 20)
    r = run(app, ["queries", "top", "--json", "--telemetry-dir", str(tmp_path)])
    costliest = [q["fingerprint"] for q in json.loads(r.stdout)
                 if q["example"].lstrip().upper().startswith(("SELECT", "WITH"))][:2]  # fmt: skip
    r = run(app, ["explain", "--top", "2", "--json", "--telemetry-dir", str(tmp_path),
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert [s["fingerprint"] for s in body["statements"]] == costliest
    assert all(s["error"] is None and s["plan"] for s in body["statements"])
    assert body["indexes"] == []  # the seeded tables are empty: nothing worth an index


@pytest.mark.postgres_only
def test_top_from_pg_since_takes_only_what_ran_in_the_window(database_url, hypo_table):
    before = "SELECT id FROM hypo_events WHERE owner_id = :v"
    after = "SELECT * FROM hypo_events WHERE kind = :v"
    with hypo_table.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        for _ in range(60):  # the costliest overall, but all of it before the snapshot
            conn.execute(text(before), {"v": 1})
        conn.commit()
    r = run(app, ["queries", "snapshot", "--min-interval", "1ms", "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    taken = json.loads(r.stdout)["taken_at"]
    with hypo_table.connect() as conn:
        for _ in range(5):
            conn.execute(text(after), {"v": "k3"})
        conn.commit()
    r = run(app, ["explain", "--top", "5", "--source", "pg", "--since", taken, "--json",
                  "--database-url", database_url])  # fmt: skip
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["window"]["from"] == taken and not body["window"]["shorter"]
    sqls = [s["sql"] for s in body["statements"]]
    assert any(s.startswith("SELECT * FROM hypo_events WHERE kind = $1") for s in sqls), sqls
    assert not any("owner_id" in s for s in sqls), sqls
    (kind,) = [m for m in body["indexes"] if m["columns"] == ["kind"]]
    assert kind["status"] in {"verified", "rejected"}  # tested, whatever the verdict
    assert kind["statements"][0]["cost_before"] > 0


@pytest.mark.postgres_only
def test_a_user_who_may_not_create_hypothetical_indexes_gets_unverified(database_url, hypo_table):
    import os

    role = f"opsctl_hypo_test_{os.getpid()}"
    with hypo_table.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT ON hypo_events TO {role}"))
        conn.execute(text("REVOKE EXECUTE ON FUNCTION hypopg_create_index(text) FROM PUBLIC"))
    try:
        url = hypo_table.url.set(username=role).render_as_string(hide_password=False)
        f = _index_finding(explain(url, "SELECT * FROM hypo_events WHERE owner_id = 7").findings)
        assert f.index.status == "unverified"
        assert f.index.reason.startswith("HypoPG check failed: permission denied for function")
        assert f.action.startswith("CREATE INDEX CONCURRENTLY hypo_events_owner_id_idx")
    finally:
        with hypo_table.begin() as conn:
            conn.execute(text("GRANT EXECUTE ON FUNCTION hypopg_create_index(text) TO PUBLIC"))
            conn.execute(text(f"REVOKE ALL ON hypo_events FROM {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
