"""The migration linter's rules, on SQL as Django writes it."""

from __future__ import annotations

import pytest

from backend.ops.migration_lint import OperationInfo, lint_operations, lint_sql


def rules(statements, vendor="postgresql"):
    return [f.rule for f in lint_sql("app.0002", statements, vendor)]


def test_index_without_concurrently_on_an_existing_table():
    sql = 'CREATE INDEX "w_idx" ON "app_widget" ("colour");'
    assert rules([sql]) == ["index-not-concurrent"]
    assert rules(['CREATE INDEX CONCURRENTLY "w_idx" ON "app_widget" ("colour");']) == []
    assert rules([sql], vendor="sqlite") == []  # SQLite has no concurrent build to offer


def test_statements_on_a_table_created_in_the_same_migration_are_exempt():
    create = 'CREATE TABLE "app_new" ("id" bigint NOT NULL PRIMARY KEY, "x" int NOT NULL);'
    index = 'CREATE INDEX "n_idx" ON "app_new" ("x");'
    fk = 'ALTER TABLE "app_new" ADD CONSTRAINT "fk" FOREIGN KEY ("x") REFERENCES "app_o" ("id");'
    assert rules([create, index, fk]) == []


def test_column_rules():
    assert rules(['ALTER TABLE "t" ADD COLUMN "c" integer NOT NULL;']) == [
        "not-null-without-default"
    ]
    assert rules(['ALTER TABLE "t" ADD COLUMN "c" integer DEFAULT 0 NOT NULL;']) == []
    assert rules(['ALTER TABLE "t" ADD COLUMN "u" uuid DEFAULT gen_random_uuid() NOT NULL;']) == [
        "volatile-default"
    ]
    assert rules(['ALTER TABLE "t" ALTER COLUMN "c" TYPE bigint USING "c"::bigint;']) == [
        "column-type-change"
    ]


def test_constraints_need_not_valid():
    fk = 'ALTER TABLE "t" ADD CONSTRAINT "fk" FOREIGN KEY ("o_id") REFERENCES "o" ("id");'
    assert rules([fk]) == ["constraint-not-valid"]
    assert rules([fk.rstrip(";") + " NOT VALID;"]) == []
    check = 'ALTER TABLE "t" ADD CONSTRAINT "pos" CHECK ("n" > 0);'
    assert rules([check]) == ["constraint-not-valid"]


def test_operation_rules():
    ops = [
        OperationInfo("RemoveField", "Remove field x from t", "app_t", "x", True, True),
        OperationInfo("RunPython", "Raw Python operation", reversible=False),
        OperationInfo("RunPython", "Raw Python operation", reversible=True),
    ]
    found = lint_operations("app.0003", ops)
    assert [(f.rule, f.severity) for f in found] == [
        ("drop-or-rename-in-use", "blocking"),
        ("runpython-without-reverse", "warning"),
    ]
    assert "still uses it" in found[0].why and found[0].safe_pattern


# The statements below are what Django 5.2 writes on PostgreSQL for the lint_cases fixture
# migrations (tests/migration_app/lint_cases); test_lint_cases_on_a_real_database checks that
# the linter finds the same in the SQL Django generates there.
FK_INLINE = (
    'ALTER TABLE "lint_cases_book" ADD COLUMN "author_id" bigint NULL CONSTRAINT '
    '"lint_cases_book_author_id_85c886fc_fk_lint_cases_author_id" REFERENCES '
    '"lint_cases_author"("id") DEFERRABLE INITIALLY DEFERRED; SET CONSTRAINTS '
    '"lint_cases_book_author_id_85c886fc_fk_lint_cases_author_id" IMMEDIATE;'
)


def test_foreign_key_added_inline_is_blocking():
    found = lint_sql("app.0002", [FK_INLINE], "postgresql")
    assert [(f.rule, f.severity, f.table) for f in found] == [
        ("foreign-key-inline", "blocking", "lint_cases_book")
    ]
    assert "NOT VALID" in found[0].safe_pattern and "VALIDATE" in found[0].safe_pattern
    assert rules([FK_INLINE], vendor="sqlite") == []


def test_unique_constraint_on_an_existing_table():
    for sql in (
        'ALTER TABLE "a" ADD CONSTRAINT "a_name_3b85bce1_uniq" UNIQUE ("name");',
        'ALTER TABLE "a" ADD CONSTRAINT "author_email_uniq" UNIQUE ("email");',
        'ALTER TABLE "a" ADD COLUMN "slug" varchar(20) NULL UNIQUE;',
    ):
        found = lint_sql("app.0003", [sql], "postgresql")
        assert [f.rule for f in found] == ["unique-not-concurrent"], sql
        assert "CONCURRENTLY" in found[0].safe_pattern and "USING INDEX" in found[0].safe_pattern
    # The safe pattern's second step is not itself a finding.
    assert rules(['ALTER TABLE "a" ADD CONSTRAINT "u" UNIQUE USING INDEX "a_name_uidx";']) == []


def test_set_not_null_suggests_a_validated_check_first():
    found = lint_sql(
        "app.0005", ['ALTER TABLE "a" ALTER COLUMN "email" SET NOT NULL;'], "postgresql"
    )
    assert [(f.rule, f.severity) for f in found] == [("set-not-null", "blocking")]
    assert 'CHECK ("email" IS NOT NULL) NOT VALID' in found[0].safe_pattern
    assert "12" in found[0].safe_pattern
    # Adding a column NOT NULL with a default is not SET NOT NULL on an existing column.
    assert rules(['ALTER TABLE "a" ADD COLUMN "c" integer DEFAULT 0 NOT NULL;']) == []


def test_drop_index_without_concurrently():
    found = lint_sql(
        "app.0006",
        ['DROP INDEX IF EXISTS "book_title_idx";'],
        "postgresql",
        index_tables={"book_title_idx": "lint_cases_book"},
    )
    assert [(f.rule, f.table) for f in found] == [("drop-index-not-concurrent", "lint_cases_book")]
    assert rules(['DROP INDEX "some_idx";']) == ["drop-index-not-concurrent"]  # table unknown
    assert rules(['DROP INDEX CONCURRENTLY IF EXISTS "book_title_idx";']) == []
    assert rules(['DROP INDEX IF EXISTS "book_title_idx";'], vendor="sqlite") == []


def test_type_changes_postgresql_does_without_a_rewrite_are_not_findings():
    from backend.ops.migration_lint import type_change_is_safe

    assert type_change_is_safe("varchar(20)", "text")
    assert type_change_is_safe("varchar(20)", "varchar(40)")
    assert type_change_is_safe("varchar(20)", "varchar")
    assert type_change_is_safe("varchar(20)", "varchar(20)")
    assert not type_change_is_safe("varchar(40)", "varchar(20)")
    assert not type_change_is_safe("text", "varchar(20)")
    assert not type_change_is_safe("integer", "bigint")

    old = {
        ("lint_cases_author", "nickname"): "varchar(20)",
        ("lint_cases_author", "city"): "varchar(20)",
    }
    to_text = (
        'ALTER TABLE "lint_cases_author" ALTER COLUMN "nickname" TYPE text USING "nickname"::text;'
    )
    wider = 'ALTER TABLE "lint_cases_author" ALTER COLUMN "city" TYPE varchar(40);'
    narrower = 'ALTER TABLE "lint_cases_author" ALTER COLUMN "city" TYPE varchar(10);'
    assert lint_sql("a.9", [to_text, wider], "postgresql", old_types=old) == []
    assert [f.rule for f in lint_sql("a.9", [narrower], "postgresql", old_types=old)] == [
        "column-type-change"
    ]
    # Without the old type the linter cannot know, and says so.
    assert rules([wider]) == ["column-type-change"]


def test_runsql_without_reverse_is_a_warning():
    ops = [
        OperationInfo("RunSQL", "Raw SQL operation", reversible=False),
        OperationInfo("RunSQL", "Raw SQL operation", reversible=True),
    ]
    found = lint_operations("app.0008", ops)
    assert [(f.rule, f.severity) for f in found] == [("runsql-without-reverse", "warning")]
    assert "reverse_sql" in found[0].safe_pattern


# --- On a real database: the SQL Django generates for tests/migration_app/lint_cases -------

LINT_APP = "tests.migration_app.lint_cases"


@pytest.fixture
def lint_app(transactional_db):
    """The lint_cases app at 0001 with rows in its tables (so no finding is downgraded as
    harmless on an empty table); its tables are dropped afterwards (0008 cannot be unapplied:
    that is one of the cases)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, LINT_APP]):
        call_command("migrate", "lint_cases", "0001", verbosity=0)
        with connection.cursor() as cur:
            cur.execute(
                "INSERT INTO lint_cases_author (name, email, nickname, city, code) "
                "VALUES ('a', 'a@example.org', '', '', 'c1'), ('b', 'b@example.org', '', '', 'c2')"
            )
            cur.execute("INSERT INTO lint_cases_book (title) VALUES ('t')")
        try:
            yield
        finally:
            with connection.cursor() as cur:
                for table in ("lint_cases_book", "lint_cases_author"):
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute("DELETE FROM django_migrations WHERE app = 'lint_cases'")


def _findings_by_step(the_plan):
    return {
        s.name[:4]: sorted((f.rule, f.severity) for f in s.findings)
        for s in the_plan.steps
        if s.app == "lint_cases"
    }


def test_lint_cases_on_a_real_database(lint_app):
    from django.db import connection

    from backend.ops import schema_changes

    found = _findings_by_step(schema_changes.plan())
    runsql = [("runsql-without-reverse", "warning")]
    if connection.vendor != "postgresql":
        # SQLite rebuilds the table for an AlterField (a new table: no lock rule applies).
        assert found["0008"] == runsql
        return
    B = "blocking"
    assert found == {
        "0002": [("foreign-key-inline", B), ("index-not-concurrent", B)],
        "0003": [("index-not-concurrent", B), ("unique-not-concurrent", B)],
        "0004": [("unique-not-concurrent", B)],
        "0005": [("set-not-null", B)],
        "0006": [("drop-index-not-concurrent", B)],
        "0007": [("drop-index-not-concurrent", B), ("drop-index-not-concurrent", B)],
        "0008": runsql,
        "0009": [],  # varchar(20) -> text, varchar(20) -> varchar(40): no finding
        "0010": [("index-not-concurrent", B), ("unique-not-concurrent", B)],
    }


@pytest.mark.postgres_only
def test_widening_varchar_and_varchar_to_text_do_not_rewrite_the_table(lint_app):
    """The linter's "safe" is PostgreSQL's: the table keeps its file (no rewrite)."""
    from django.core.management import call_command
    from django.db import connection

    def relfilenode():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_relation_filenode('lint_cases_author')")
            return cur.fetchone()[0]

    call_command("migrate", "lint_cases", "0008", verbosity=0)
    before = relfilenode()
    call_command("migrate", "lint_cases", "0009", verbosity=0)
    assert relfilenode() == before
    with connection.cursor() as cur:  # and a real type change does rewrite it
        cur.execute("ALTER TABLE lint_cases_author ALTER COLUMN city TYPE varchar(10)")
    assert relfilenode() != before


# --- migrate apply retries a migration whose lock was not free -----------------------------

ALLOW_0002 = {"foreign-key-inline", "index-not-concurrent"}


@pytest.fixture
def blocker(lint_app):
    """Another session inside an open transaction that has read lint_cases_book (ACCESS
    SHARE, as any running SELECT holds): ALTER TABLE's ACCESS EXCLUSIVE lock must wait."""
    import psycopg
    from django.db import connection

    s = connection.settings_dict
    conn = psycopg.connect(
        dbname=s["NAME"], user=s["USER"] or "postgres", host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
    )  # fmt: skip
    conn.execute("SELECT count(*) FROM lint_cases_book")
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _columns(table):
    from django.db import connection

    with connection.cursor() as cur:
        return [c.name for c in connection.introspection.get_table_description(cur, table)]


@pytest.mark.postgres_only
def test_apply_retries_after_a_lock_timeout_and_succeeds_once_the_lock_is_free(blocker):
    from backend.ops import schema_changes
    from backend.ops.models import AuditEvent

    seen = []

    def on_attempt(attempt):
        seen.append(attempt)
        if attempt.outcome == "lock-timeout":
            blocker.rollback()  # the blocking transaction ends after the first attempt

    done = schema_changes.apply(
        allow=ALLOW_0002, lock_timeout="200ms", targets=[("lint_cases", "0002_book_author")],
        lock_retries=3, retry_delay="50ms", on_attempt=on_attempt, actor="tester",
    )  # fmt: skip
    assert [(a.attempt, a.outcome, a.migration) for a in done.attempts] == [
        (1, "lock-timeout", "lint_cases.0002_book_author"),
        (2, "ok", ""),
    ]
    assert seen == done.attempts
    assert "lock timeout" in done.attempts[0].error
    assert done.attempts[0].retry_in_seconds == pytest.approx(0.05)
    assert "author_id" in _columns("lint_cases_book")
    event = AuditEvent.objects.filter(action="migrate.apply").latest("id")
    assert event.details["outcome"] == "ok"
    assert [a["outcome"] for a in event.details["attempts"]] == ["lock-timeout", "ok"]


@pytest.mark.postgres_only
def test_apply_gives_up_after_the_configured_attempts(blocker):
    from backend.ops import schema_changes
    from backend.ops.models import AuditEvent

    seen = []
    with pytest.raises(schema_changes.LockTimeout) as info:
        schema_changes.apply(
            allow=ALLOW_0002, lock_timeout="100ms", targets=[("lint_cases", "0002_book_author")],
            lock_retries=2, retry_delay="20ms", on_attempt=seen.append,
        )  # fmt: skip
    assert "\n" not in info.value.message
    assert info.value.message.startswith(
        "lint_cases.0002_book_author could not get its lock within 100ms in 3 attempt(s)"
    )
    assert [(a.attempt, a.outcome, a.retry_in_seconds) for a in seen] == [
        (1, "lock-timeout", pytest.approx(0.02)),
        (2, "lock-timeout", pytest.approx(0.04)),
        (3, "lock-timeout", 0.0),
    ]
    assert "author_id" not in _columns("lint_cases_book")
    event = AuditEvent.objects.filter(action="migrate.apply").latest("id")
    assert event.details["outcome"] == "failed" and len(event.details["attempts"]) == 3


@pytest.mark.postgres_only
def test_cli_apply_reports_each_attempt_and_fails_with_one_line(blocker):
    import json

    from typer.testing import CliRunner

    from opsctl.cli import app

    allow = [
        "foreign-key-inline", "index-not-concurrent", "unique-not-concurrent", "set-not-null",
        "drop-index-not-concurrent",
    ]  # fmt: skip
    args = ["migrate", "apply", "--yes", "--lock-timeout", "100ms", "--lock-retries", "1",
            "--retry-delay", "10ms"] + [x for rule in allow for x in ("--allow", rule)]  # fmt: skip
    # (the lint_app fixture has the app installed)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 3, r.output
    assert (
        "attempt 1: lock timeout on lint_cases.0002_book_author (canceling statement due "
        "to lock timeout); retrying in 0.01s"
    ) in r.stdout
    assert "attempt 2: lock timeout on lint_cases.0002_book_author" in r.stdout
    assert r.stderr.count("\n") == 1 and "in 2 attempt(s)" in r.stderr
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 3 and r.stderr.count("\n") == 1
    failed = json.loads(r.stdout)
    assert failed["applied"] == []
    assert [(a["attempt"], a["outcome"], a["migration"]) for a in failed["attempts"]] == [
        (1, "lock-timeout", "lint_cases.0002_book_author"),
        (2, "lock-timeout", "lint_cases.0002_book_author"),
    ]

    blocker.rollback()
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "lint_cases.0010_author_slug" in out["applied"]
    assert [a["outcome"] for a in out["attempts"]] == ["ok"]
