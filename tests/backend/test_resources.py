"""Resource thresholds, damping, alert state and the Nagios exit codes."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from backend.ops import resources
from backend.ops.models import ResourceAlert
from backend.ops.thresholds import Memory, Threshold, nagios, severity, step
from opsctl.cli import app

T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
DAMP = dt.timedelta(seconds=120)
TH = Threshold(85, 95)


@pytest.mark.parametrize(
    "value,expected",
    [(None, "unknown"), (0, "ok"), (84.9, "ok"), (85, "warning"), (94.9, "warning"),
     (95, "critical"), (100, "critical")],
)  # fmt: skip
def test_severity_boundaries(value, expected):
    assert severity(value, TH) == expected


def test_damping_opens_only_after_the_interval_and_resolves_at_once():
    d = step(Memory(), "warning", T0, DAMP)
    assert d.action == "pending"
    d = step(d.memory, "warning", T0 + dt.timedelta(seconds=119), DAMP)
    assert d.action == "pending"
    d = step(d.memory, "warning", T0 + DAMP, DAMP)
    assert d.action == "open" and d.memory.open_severity == "warning"
    d = step(d.memory, "critical", T0 + 2 * DAMP, DAMP)
    assert d.action == "pending" and d.memory.open_severity == "warning"
    d = step(d.memory, "critical", T0 + 3 * DAMP, DAMP)
    assert d.action == "change" and d.severity == "critical"
    d = step(d.memory, "ok", T0 + 3 * DAMP + dt.timedelta(seconds=1), DAMP)
    assert d.action == "resolve" and d.memory == Memory()


def test_a_spike_shorter_than_damping_never_opens():
    d = step(Memory(), "critical", T0, DAMP)
    d = step(d.memory, "ok", T0 + dt.timedelta(seconds=30), DAMP)
    assert d.action == "none" and d.memory == Memory()


def test_nagios_codes():
    assert nagios(["ok", "ok"]) == 0
    assert nagios(["ok", "warning"]) == 1
    assert nagios(["warning", "critical", "unknown"]) == 2
    assert nagios(["ok", "unknown"]) == 3


@pytest.mark.django_db
def test_check_records_alerts_across_runs(settings):
    settings.RESOURCE_DAMPING_SECONDS = 60
    vals = {"disk.var": (97.0, "/srv/exam/var", ""), "memory": (40.0, "", "")}
    r = resources.check(values=vals, now=T0, host="h1")
    assert {x.probe: x.alert for x in r} == {"disk.var": "pending", "memory": "none"}
    assert not ResourceAlert.objects.exists()
    r = resources.check(values=vals, now=T0 + dt.timedelta(seconds=61), host="h1")
    alert = ResourceAlert.objects.get()
    assert (alert.probe, alert.severity, alert.resolved_at) == ("disk.var", "critical", None)
    vals["disk.var"] = (50.0, "", "")
    resources.check(values=vals, now=T0 + dt.timedelta(seconds=90), host="h1")
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    code, line = resources.summary(r)
    assert code == 2 and line.startswith("RESOURCES CRITICAL - disk.var 97%")


@pytest.mark.django_db
def test_a_failing_probe_is_unknown_not_a_crash():
    r = resources.check(values={"swap": (None, "", "permission denied")}, now=T0)
    assert r[0].severity == "unknown" and resources.summary(r)[0] == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("warn,crit,expected", [(99.99, 100, 0), (40, 100, 1), (0, 50, 2)])
def test_cli_check_exit_codes(monkeypatch, warn, crit, expected):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    monkeypatch.setattr("django.conf.settings.RESOURCE_DAMPING_SECONDS", 0)
    monkeypatch.setattr("django.conf.settings.RESOURCE_THRESHOLDS", {})
    # Fixed readings: the verdict must not depend on how busy the machine running the test is.
    monkeypatch.setattr(
        resources,
        "probes",
        lambda: {"cpu": lambda: (60.0, "2 cores"), "memory": lambda: (50.0, "")},
    )
    connection.close()
    r = CliRunner().invoke(app, ["resources", "--check", "--warn", str(warn), "--crit", str(crit)])
    assert r.stdout.startswith("RESOURCES ")
    assert r.exit_code == expected, r.stdout
    r = CliRunner().invoke(app, ["resources", "--json"])
    body = json.loads(r.stdout)
    assert {"exit_code", "summary", "probes", "open_alerts"} <= set(body)


@pytest.mark.django_db(transaction=True)
def test_cli_unknown_exit_code(monkeypatch):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    connection.close()

    def broken():
        raise OSError("no such device")

    monkeypatch.setattr(resources, "probes", lambda: {"disk.var": broken})
    r = CliRunner().invoke(app, ["resources", "--check"])
    assert r.exit_code == 3 and "UNKNOWN" in r.stdout


def test_warn_above_crit_is_refused():
    r = CliRunner().invoke(app, ["resources", "--warn", "90", "--crit", "80"])
    # A check that cannot run is UNKNOWN (3), never 1 = WARNING.
    assert r.exit_code == 3 and "--warn" in r.stderr and r.stderr.count("\n") == 1
