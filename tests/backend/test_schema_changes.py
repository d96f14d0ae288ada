"""The migration guard against a real database: plan, refuse, allow, lock timeout, rollback."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from backend.ops import schema_changes
from backend.ops.models import AuditEvent

WITH_TEST_APP = [*settings.INSTALLED_APPS, "tests.migration_app"]


def test_project_migrations_pass_the_linter_from_scratch(transactional_db):
    plan = schema_changes.plan(clean_start=True)
    own = [s for s in plan.steps if s.app in {"exams", "ops"}]
    assert own, "the project's migrations are in the plan"
    assert [f for s in own for f in s.findings if f.severity == "blocking"] == []


def test_status_lists_every_app_applied(db):
    apps = {a.app: a for a in schema_changes.status()}
    assert {"exams", "ops"} <= set(apps)
    assert apps["exams"].unapplied == [] and "0001_initial" in apps["exams"].applied


@pytest.fixture
def test_app(transactional_db):
    with override_settings(INSTALLED_APPS=WITH_TEST_APP):
        call_command("migrate", "migration_app", "0001", verbosity=0)
        with connection.cursor() as cur:
            cur.execute("INSERT INTO migration_app_widget (name, colour) VALUES ('a', 'red')")
        yield
        call_command("migrate", "migration_app", "zero", verbosity=0)


@pytest.mark.postgres_only
def test_non_concurrent_index_is_flagged_refused_and_applies_when_allowed(test_app):
    plan = schema_changes.plan()
    (step,) = [s for s in plan.steps if s.app == "migration_app"]
    assert any("CREATE INDEX" in sql for sql in step.sql)
    assert [f.rule for f in step.findings] == ["index-not-concurrent"]
    with pytest.raises(schema_changes.MigrationRefused, match="index-not-concurrent"):
        schema_changes.apply()
    assert any(a.unapplied == ["0002_widget_colour_idx"] for a in schema_changes.status())
    schema_changes.apply(allow={"index-not-concurrent"}, actor="tester")
    assert "widget_colour_idx" in connection.introspection.get_constraints(
        connection.cursor(), "migration_app_widget"
    )
    event = AuditEvent.objects.filter(action="migrate.apply").latest("id")
    assert event.actor == "tester" and event.details["outcome"] == "ok"
    # Rollback to a target unapplies what came after it.
    schema_changes.rollback("migration_app", "0001_initial")
    assert "widget_colour_idx" not in connection.introspection.get_constraints(
        connection.cursor(), "migration_app_widget"
    )


@pytest.mark.postgres_only
def test_a_held_lock_fails_fast_with_the_lock_timeout_message(test_app):
    import psycopg

    s = connection.settings_dict
    holder = psycopg.connect(
        dbname=s["NAME"], user=s["USER"] or "postgres", host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
    )  # fmt: skip
    # An open writing transaction, as exam traffic is: CREATE INDEX's SHARE lock must wait.
    holder.execute("INSERT INTO migration_app_widget (name, colour) VALUES ('b', 'blue')")
    try:
        t0 = time.monotonic()
        with pytest.raises(schema_changes.LockTimeout, match=r"could not get its lock within 1s"):
            schema_changes.apply(allow={"index-not-concurrent"}, lock_timeout="1s")
        assert time.monotonic() - t0 < 10
    finally:
        holder.rollback()
        holder.close()
    assert any(a.unapplied == ["0002_widget_colour_idx"] for a in schema_changes.status())
    event = AuditEvent.objects.filter(action="migrate.apply").latest("id")
    assert event.details["outcome"] == "failed"


def test_unknown_rollback_target_is_refused(db):
    with pytest.raises(schema_changes.MigrationRefused, match=r"no migration exams\.9999_nope"):
        schema_changes.rollback_plan("exams", "9999_nope")


def test_cli_plan_and_status(db, monkeypatch):
    from typer.testing import CliRunner

    from opsctl.cli import app

    r = CliRunner().invoke(app, ["migrate", "status", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["migrate", "plan"])
    assert r.exit_code == 0 and "nothing to do" in r.stdout
