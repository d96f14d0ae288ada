"""The migration linter's rules, on SQL as Django writes it."""

from __future__ import annotations

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
