"""Safety rules for schema changes (pure: SQL text and operation descriptions in, findings out).

Each rule names the lock or rewrite it avoids and the safe pattern. Statements on a table
created in the same migration are exempt: a new table has no readers or writers to block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCKING, WARNING, INFO = "blocking", "warning", "info"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    migration: str
    operation: str
    why: str
    safe_pattern: str
    table: str = ""


@dataclass(frozen=True)
class OperationInfo:
    """What the linter needs to know about one migration operation."""

    kind: str  # the Django operation class name, e.g. "RemoveField"
    description: str
    table: str = ""
    column: str = ""
    reversible: bool = True
    still_used: bool = False  # the current code still reads this table/column


VOLATILE = ("random(", "clock_timestamp(", "gen_random_uuid(", "uuid_generate_v", "timeofday(")
_CREATE_TABLE = re.compile(r'CREATE TABLE\s+(?:IF NOT EXISTS\s+)?"?([\w.]+)"?', re.I)
_CREATE_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF NOT EXISTS\s+)?"
    r'"?[\w.]+"?\s+ON\s+"?([\w.]+)"?',
    re.I,
)
_ALTER_TABLE = re.compile(r'ALTER TABLE\s+(?:ONLY\s+)?"?([\w.]+)"?', re.I)
_DROP_INDEX = re.compile(r'DROP INDEX\s+(CONCURRENTLY\s+)?(?:IF EXISTS\s+)?"?([\w.]+)"?', re.I)
_TYPE_CHANGE = re.compile(
    r'ALTER COLUMN\s+"?(\w+)"?\s+(?:SET DATA\s+)?TYPE\s+([\w ]+?(?:\(\s*\d+(?:\s*,\s*\d+)?\s*\))?)'
    r"(?=\s+USING\b|\s+COLLATE\b|\s*[,;]|\s*$)",
    re.I,
)
_INLINE_FK = re.compile(r"\bADD COLUMN\b[^;]*\bREFERENCES\b", re.I)
_ADD_UNIQUE = re.compile(
    r"\bADD CONSTRAINT\s+\"?\w+\"?\s+UNIQUE\b(?![^;]*\bUSING INDEX\b)"
    r"|\bADD COLUMN\b[^;]*\bUNIQUE\b",
    re.I,
)
_SET_NOT_NULL = re.compile(r'ALTER COLUMN\s+"?(\w+)"?\s+SET NOT NULL', re.I)
_VARCHAR = re.compile(r"^(?:varchar|character varying)\s*(?:\(\s*(\d+)\s*\))?$", re.I)


def type_change_is_safe(old: str, new: str) -> bool:
    """Whether PostgreSQL changes a column from ``old`` to ``new`` without rewriting or
    scanning the table: the same type, varchar(n) -> text, or a varchar no narrower."""
    old, new = " ".join(old.lower().split()), " ".join(new.lower().split())
    if old == new:
        return True
    o, n = _VARCHAR.match(old), _VARCHAR.match(new)
    if o and new == "text":
        return True
    if o and n:
        if n.group(1) is None:  # varchar without a limit
            return True
        return o.group(1) is not None and int(n.group(1)) >= int(o.group(1))
    return False


def _short(sql: str) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= 120 else one[:117] + "..."


def lint_sql(
    migration: str,
    statements: list[str],
    vendor: str,
    old_types: dict[tuple[str, str], str] | None = None,
    index_tables: dict[str, str] | None = None,
) -> list[Finding]:
    """Findings for the SQL of one migration. ``old_types``: (table, column) -> the column's
    type before the migration, so a type change known to be safe is not reported;
    ``index_tables``: index name -> its table, for DROP INDEX (which names no table)."""
    old_types = {(t.lower(), c.lower()): v for (t, c), v in (old_types or {}).items()}
    index_tables = {k.lower(): v.lower() for k, v in (index_tables or {}).items()}
    new_tables = {m.group(1).lower() for s in statements for m in _CREATE_TABLE.finditer(s)}
    findings: list[Finding] = []
    for sql in statements:
        up = sql.upper()
        drop = _DROP_INDEX.search(sql)
        if drop and vendor == "postgresql" and not drop.group(1):
            table = index_tables.get(drop.group(2).lower(), "")
            if not (table and table in new_tables):
                findings.append(
                    Finding(
                        "drop-index-not-concurrent",
                        BLOCKING,
                        migration,
                        _short(sql),
                        "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table: it waits for "
                        "every running query on it, and every query queued behind it waits too",
                        "RemoveIndexConcurrently (django.contrib.postgres.operations) in a "
                        "migration with atomic = False; for db_index=False, "
                        "SeparateDatabaseAndState with RunSQL DROP INDEX CONCURRENTLY",
                        table,
                    )
                )
            continue
        idx = _CREATE_INDEX.search(sql)
        if idx and vendor == "postgresql" and not idx.group(1):
            if idx.group(2).lower() not in new_tables:
                findings.append(
                    Finding(
                        "index-not-concurrent",
                        BLOCKING,
                        migration,
                        _short(sql),
                        "CREATE INDEX takes a SHARE lock: every insert and update on the table "
                        "waits until the index is built",
                        "AddIndexConcurrently (django.contrib.postgres.operations) in a "
                        "migration with atomic = False",
                        idx.group(2).lower(),
                    )
                )
            continue
        alter = _ALTER_TABLE.search(sql)
        if not alter or alter.group(1).lower() in new_tables:
            continue
        if "ADD COLUMN" in up and "NOT NULL" in up and "DEFAULT" not in up:
            findings.append(
                Finding(
                    "not-null-without-default",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "adding a NOT NULL column without a default fails on a non-empty table, "
                    "or needs a rewrite under an ACCESS EXCLUSIVE lock",
                    "add the column nullable (or with a constant db_default), backfill in "
                    "batches, then set NOT NULL in a later migration",
                    alter.group(1).lower(),
                )
            )
        if "ADD COLUMN" in up and "DEFAULT" in up and any(v in sql.lower() for v in VOLATILE):
            findings.append(
                Finding(
                    "volatile-default",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "a volatile default (random(), clock_timestamp(), uuid...) rewrites the "
                    "whole table under an ACCESS EXCLUSIVE lock",
                    "add the column without a default, backfill in batches, then set the default",
                    alter.group(1).lower(),
                )
            )
        table = alter.group(1).lower()
        unsafe_types = [
            m
            for m in _TYPE_CHANGE.finditer(sql)
            if not (
                vendor == "postgresql"
                and (table, m.group(1).lower()) in old_types
                and type_change_is_safe(old_types[(table, m.group(1).lower())], m.group(2))
            )
        ]
        if unsafe_types:
            findings.append(
                Finding(
                    "column-type-change",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "changing a column's type rewrites the table (and its indexes) under an "
                    "ACCESS EXCLUSIVE lock",
                    "add a new column, dual-write and backfill, switch reads, drop the old one",
                    alter.group(1).lower(),
                )
            )
        if ("FOREIGN KEY" in up or " CHECK " in up or "CHECK (" in up) and (
            "ADD CONSTRAINT" in up and "NOT VALID" not in up
        ):
            findings.append(
                Finding(
                    "constraint-not-valid",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "adding a foreign key or check constraint scans the whole table while "
                    "holding a lock that blocks writes",
                    "add it NOT VALID, then VALIDATE CONSTRAINT in a separate migration "
                    "(validation takes only a SHARE UPDATE EXCLUSIVE lock)",
                    alter.group(1).lower(),
                )
            )
        if vendor != "postgresql":
            continue
        if _INLINE_FK.search(sql):
            findings.append(
                Finding(
                    "foreign-key-inline",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "a ForeignKey added to an existing table is created inline (ADD COLUMN ... "
                    "REFERENCES) and validated at once, under an ACCESS EXCLUSIVE lock on the "
                    "table and a lock that blocks writes to the referenced table",
                    "add the field with db_constraint=False, then ADD CONSTRAINT ... FOREIGN KEY "
                    "... NOT VALID (RunSQL in SeparateDatabaseAndState), and VALIDATE CONSTRAINT "
                    "in a separate migration",
                    table,
                )
            )
        if _ADD_UNIQUE.search(sql):
            findings.append(
                Finding(
                    "unique-not-concurrent",
                    BLOCKING,
                    migration,
                    _short(sql),
                    "ADD CONSTRAINT ... UNIQUE builds its index under an ACCESS EXCLUSIVE lock: "
                    "no read or write on the table until the whole index is built",
                    "CREATE UNIQUE INDEX CONCURRENTLY (atomic = False), then ALTER TABLE ... "
                    "ADD CONSTRAINT name UNIQUE USING INDEX index_name (RunSQL in "
                    "SeparateDatabaseAndState)",
                    table,
                )
            )
        for m in _SET_NOT_NULL.finditer(sql):
            col = m.group(1)
            findings.append(
                Finding(
                    "set-not-null",
                    BLOCKING,
                    migration,
                    _short(sql),
                    f"SET NOT NULL on {col} scans the whole table under an ACCESS EXCLUSIVE "
                    f"lock to prove no row is NULL",
                    f'ADD CONSTRAINT {col}_not_null CHECK ("{col}" IS NOT NULL) NOT VALID; '
                    f"VALIDATE CONSTRAINT in a separate migration; then SET NOT NULL (PostgreSQL "
                    f"12+ trusts the valid CHECK and skips the scan) and drop the CHECK",
                    table,
                )
            )
    return findings


def downgrade_for_empty_table(finding: Finding) -> Finding:
    """A table with no rows (or not created yet) has no traffic for a lock to block."""
    from dataclasses import replace

    return replace(finding, severity=INFO, why=finding.why + " (the table is empty: harmless now)")


def _name(op: OperationInfo) -> str:
    return f"{op.table}.{op.column}" if op.column else op.table


def lint_operations(migration: str, operations: list[OperationInfo]) -> list[Finding]:
    findings = []
    for op in operations:
        if op.kind in {"RemoveField", "DeleteModel", "RenameField", "RenameModel"}:
            used = " and the current code still uses it" if op.still_used else ""
            findings.append(
                Finding(
                    "drop-or-rename-in-use" if op.still_used else "drop-or-rename",
                    BLOCKING,
                    migration,
                    op.description,
                    f"running code that still reads {_name(op)} fails the moment this "
                    f"applies{used}",
                    "expand/contract: release code that no longer uses it first, then drop or "
                    "rename in a later release",
                    op.table,
                )
            )
        if op.kind == "RunPython" and not op.reversible:
            findings.append(
                Finding(
                    "runpython-without-reverse",
                    WARNING,
                    migration,
                    op.description,
                    "a RunPython without reverse_code makes the migration irreversible: "
                    "`opsctl migrate rollback` cannot go back past it",
                    "give reverse_code (migrations.RunPython.noop when nothing needs undoing)",
                )
            )
        if op.kind == "RunSQL" and not op.reversible:
            findings.append(
                Finding(
                    "runsql-without-reverse",
                    WARNING,
                    migration,
                    op.description,
                    "a RunSQL without reverse_sql makes the migration irreversible: "
                    "`opsctl migrate rollback` cannot go back past it",
                    "give reverse_sql (migrations.RunSQL.noop when nothing needs undoing)",
                )
            )
    return findings
