"""Migrations under guard: Django's own migration state, the SQL each unapplied migration
will run, the safety linter's findings, and an apply that never queues behind exam traffic."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.apps import apps as django_apps
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.operations import (
    AlterField,
    DeleteModel,
    RemoveField,
    RenameField,
    RenameModel,
    RunPython,
    RunSQL,
)

from backend.ops import audit
from backend.ops.errors import OpsError
from backend.ops.migration_lint import (
    BLOCKING,
    Finding,
    OperationInfo,
    downgrade_for_empty_table,
    lint_operations,
    lint_sql,
)


class MigrationRefused(OpsError):
    """Blocking findings were not allowed, or the target is unknown (exit 2: refused)."""

    exit_code = 2


class LockTimeout(OpsError):
    """A migration could not take its lock within lock_timeout; nothing of it was applied
    (exit 3: retry later). ``attempts``: each try (ApplyAttempt); ``applied``: the plan's
    migrations that did apply before it."""

    exit_code = 3
    attempts: list = []
    applied: list[str] = []


@dataclass
class AppMigrations:
    app: str
    applied: list[str]
    unapplied: list[str]


@dataclass
class PlannedMigration:
    app: str
    name: str
    backwards: bool
    sql: list[str]
    findings: list[Finding] = field(default_factory=list)


@dataclass
class MigrationPlan:
    vendor: str
    steps: list[PlannedMigration]
    attempts: list = field(default_factory=list)  # ApplyAttempt, filled by apply()

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.steps for f in s.findings]

    def blocking(self, allow: set[str] | frozenset = frozenset()) -> list[Finding]:
        return [f for f in self.findings if f.severity == BLOCKING and f.rule not in allow]


def _executor() -> MigrationExecutor:
    return MigrationExecutor(connections[DEFAULT_DB_ALIAS])


def status() -> list[AppMigrations]:
    ex = _executor()
    graph, applied = ex.loader.graph, ex.loader.applied_migrations
    out: dict[str, AppMigrations] = {}
    for app, name in sorted(graph.nodes):
        entry = out.setdefault(app, AppMigrations(app, [], []))
        (entry.applied if (app, name) in applied else entry.unapplied).append(name)
    return list(out.values())


def _still_used(op, app: str) -> tuple[str, str, bool]:
    """The table/column an operation drops or renames, and whether current models use it."""
    model_name = (
        getattr(op, "model_name", None) or getattr(op, "name", None) or getattr(op, "old_name", "")
    )
    try:
        model = django_apps.get_model(app, model_name)
    except (LookupError, ValueError):
        return f"{app}_{str(model_name).lower()}", "", False
    table = model._meta.db_table
    if isinstance(op, RemoveField | RenameField):
        column = op.name if isinstance(op, RemoveField) else op.old_name
        names = {f.name for f in model._meta.get_fields()} | {
            getattr(f, "column", None) for f in model._meta.get_fields()
        }
        return table, column, column in names
    return table, "", isinstance(op, DeleteModel | RenameModel)


def _operations(migration) -> list[OperationInfo]:
    infos = []
    for op in migration.operations:
        kind = type(op).__name__
        if isinstance(op, RemoveField | RenameField | DeleteModel | RenameModel):
            table, column, used = _still_used(op, migration.app_label)
            infos.append(OperationInfo(kind, op.describe(), table, column, True, used))
        elif isinstance(op, RunPython | RunSQL):
            infos.append(OperationInfo(kind, op.describe(), reversible=op.reversible))
    return infos


def _old_types(migration, state, conn) -> dict[tuple[str, str], str]:
    """(table, column) -> the column's type before ``migration``, for each field it alters
    (``state``: the project state before it)."""
    out: dict[tuple[str, str], str] = {}
    for op in migration.operations:
        if not isinstance(op, AlterField):
            continue
        try:
            model = state.apps.get_model(migration.app_label, op.model_name)
            field = model._meta.get_field(op.name)
        except (LookupError, ValueError):
            continue
        db_type = field.db_parameters(connection=conn)["type"]
        if db_type and field.column:
            out.setdefault((model._meta.db_table, field.column), db_type)
    return out


def _index_tables(conn, sql: list[str]) -> dict[str, str]:
    """Index name -> table for the indexes these statements drop (PostgreSQL's DROP INDEX
    names no table)."""
    if conn.vendor != "postgresql" or not any("DROP INDEX" in s.upper() for s in sql):
        return {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = current_schema()"
        )
        return dict(cur.fetchall())


def plan(
    targets: list[tuple[str, str | None]] | None = None, clean_start: bool = False
) -> MigrationPlan:
    """What `migrate` would do (to the latest, or to ``targets``), with its SQL and findings."""
    ex = _executor()
    if targets is None:
        targets = ex.loader.graph.leaf_nodes()
    steps_raw = ex.migration_plan(targets, clean_start=clean_start)
    vendor = connections[DEFAULT_DB_ALIAS].vendor
    steps = []
    empty = _EmptyTables(connections[DEFAULT_DB_ALIAS])
    # collect_sql advances the project state migration by migration, as sqlmigrate does.
    state = ex._create_project_state(with_applied_migrations=not clean_start)
    conn = connections[DEFAULT_DB_ALIAS]
    for migration, backwards in steps_raw:
        with conn.schema_editor(collect_sql=True, atomic=migration.atomic) as editor:
            if backwards:
                state_before = ex.loader.project_state(
                    (migration.app_label, migration.name), at_end=False
                )
                migration.unapply(state_before, editor, collect_sql=True)
            else:
                old_types = _old_types(migration, state, conn)
                state = migration.apply(state, editor, collect_sql=True)
        sql = [s for s in editor.collected_sql if s.strip() and not s.startswith("--")]
        label = f"{migration.app_label}.{migration.name}"
        findings = (
            []
            if backwards
            else lint_sql(label, sql, vendor, old_types, _index_tables(conn, sql))
            + lint_operations(label, _operations(migration))
        )
        findings = [
            downgrade_for_empty_table(f) if f.table and empty(f.table) else f for f in findings
        ]
        steps.append(
            PlannedMigration(migration.app_label, migration.name, backwards, sql, findings)
        )
    return MigrationPlan(vendor, steps)


class _EmptyTables:
    """Whether a table has no rows now (a table the plan has yet to create counts as empty)."""

    def __init__(self, conn):
        self.conn = conn
        self.existing = set(conn.introspection.table_names())
        self.seen: dict[str, bool] = {}

    def __call__(self, table: str) -> bool:
        if table not in self.seen:
            if table not in self.existing:
                self.seen[table] = True
            else:
                with self.conn.cursor() as cur:
                    cur.execute(f"SELECT 1 FROM {self.conn.ops.quote_name(table)} LIMIT 1")
                    self.seen[table] = cur.fetchone() is None
        return self.seen[table]


def _duration_ms(text: str) -> int:
    from backend.durations import parse_seconds

    return int(parse_seconds(text) * 1000)


# `migrate apply` retries a migration whose lock was not free this many more times, waiting
# retry_delay, then twice as long, ... between attempts (strong_migrations' lock retries).
LOCK_RETRIES = 2
RETRY_DELAY = "1s"


@dataclass
class ApplyAttempt:
    """One try at applying the plan: ``ok``, or ``lock-timeout`` on ``migration``, and how
    long the next try waits (0: no next try)."""

    attempt: int
    outcome: str
    migration: str = ""
    error: str = ""
    retry_in_seconds: float = 0.0


def _is_lock_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) == "55P03":  # lock_not_available
        return True
    text = str(exc).lower()
    return "lock timeout" in text or "canceling statement due to lock" in text


def _first_unapplied(the_plan: MigrationPlan):
    """The plan's first migration not applied yet (the one a failure rolled back)."""
    ex = _executor()
    for step in the_plan.steps:
        if (step.app, step.name) not in ex.loader.applied_migrations:
            return ex.loader.get_migration(step.app, step.name)
    return None


def _applied_now(the_plan: MigrationPlan) -> list[str]:
    done = _executor().loader.applied_migrations
    return [f"{s.app}.{s.name}" for s in the_plan.steps if (s.app, s.name) in done]


def apply(
    allow: set[str] | None = None,
    lock_timeout: str = "5s",
    statement_timeout: str = "60s",
    targets: list[tuple[str, str | None]] | None = None,
    actor: str | None = None,
    lock_retries: int = LOCK_RETRIES,
    retry_delay: str = RETRY_DELAY,
    on_attempt=None,
) -> MigrationPlan:
    """Apply the plan unless a blocking finding is not allowed by name; audited.

    A migration that cannot get a lock within ``lock_timeout`` is rolled back whole (it runs
    in one transaction) and tried again up to ``lock_retries`` more times, waiting
    ``retry_delay``, then twice as long, ... in between. Each attempt is recorded in the
    plan's ``attempts`` and passed to ``on_attempt`` as it ends. A migration that is not
    atomic is not retried (part of it may have run).
    """
    from django.core.management import call_command
    from django.db import OperationalError

    if lock_retries < 0:
        raise MigrationRefused("lock retries must be 0 or more")
    delay = _duration_ms(retry_delay) / 1000
    allow = set(allow or ())
    the_plan = plan(targets)
    refused = the_plan.blocking(allow)
    if refused:
        rules = ", ".join(sorted({f.rule for f in refused}))
        raise MigrationRefused(
            f"{len(refused)} blocking finding(s) ({rules}): see `opsctl migrate plan`; "
            f"allow a rule by name with --allow RULE once it is understood"
        )
    if not the_plan.steps:
        return the_plan
    conn = connections[DEFAULT_DB_ALIAS]
    t0 = time.perf_counter()
    outcome, error = "ok", ""

    def report(attempt: ApplyAttempt) -> None:
        the_plan.attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)

    try:
        for number in range(1, lock_retries + 2):
            try:
                if conn.vendor == "postgresql":
                    conn.ensure_connection()
                    with conn.cursor() as cur:
                        cur.execute(f"SET lock_timeout = {_duration_ms(lock_timeout)}")
                        cur.execute(f"SET statement_timeout = {_duration_ms(statement_timeout)}")
                if targets:
                    for app, name in targets:
                        call_command("migrate", app, name or "zero", verbosity=0, interactive=False)
                else:
                    call_command("migrate", verbosity=0, interactive=False)
            except OperationalError as exc:
                text = str(exc)
                outcome, error = "failed", text.strip().splitlines()[0] if text.strip() else "error"
                if not _is_lock_timeout(exc):
                    raise
                stuck = _first_unapplied(the_plan)
                label = f"{stuck.app_label}.{stuck.name}" if stuck else "a migration"
                retry = number <= lock_retries and (stuck is None or stuck.atomic)
                wait = delay * 2 ** (number - 1) if retry else 0.0
                report(ApplyAttempt(number, "lock-timeout", label, error, wait))
                if not retry:
                    why = (
                        f"in {number} attempt(s)"
                        if stuck is None or stuck.atomic
                        else "(not retried: it is not atomic, so part of it may have run)"
                    )
                    exc_out = LockTimeout(
                        f"{label} could not get its lock within {lock_timeout} {why}: another "
                        f"transaction holds the table; that migration was rolled back, nothing "
                        f"of it applied. Retry when traffic is lower, or find the blocker with "
                        f"`opsctl db activity`"
                    )
                    exc_out.attempts = list(the_plan.attempts)
                    exc_out.applied = _applied_now(the_plan)
                    raise exc_out from None
                time.sleep(wait)
                continue
            outcome, error = "ok", ""
            report(ApplyAttempt(number, "ok"))
            break
    finally:
        if conn.vendor == "postgresql" and conn.connection is not None:
            with conn.cursor() as cur:
                cur.execute("RESET lock_timeout")
                cur.execute("RESET statement_timeout")
        audit.record(
            "migrate.apply",
            target=f"{len(the_plan.steps)} migration(s)",
            actor=actor,
            details={
                "migrations": [f"{s.app}.{s.name}" for s in the_plan.steps],
                "outcome": outcome,
                "error": error,
                "allowed": sorted(allow),
                "seconds": round(time.perf_counter() - t0, 3),
                "attempts": [
                    {"attempt": a.attempt, "outcome": a.outcome, "migration": a.migration}
                    for a in the_plan.attempts
                ],
            },
        )
    return the_plan


def rollback_plan(app: str, target: str) -> MigrationPlan:
    ex = _executor()
    if target != "zero" and (app, target) not in ex.loader.graph.nodes:
        raise MigrationRefused(f"no migration {app}.{target}")
    return plan([(app, None if target == "zero" else target)])


def rollback(app: str, target: str, actor: str | None = None) -> MigrationPlan:
    from django.core.management import call_command

    the_plan = rollback_plan(app, target)
    call_command("migrate", app, target, verbosity=0, interactive=False)
    audit.record(
        "migrate.rollback", target=f"{app}.{target}", actor=actor,
        details={"unapplied": [f"{s.app}.{s.name}" for s in the_plan.steps]},
    )  # fmt: skip
    return the_plan
