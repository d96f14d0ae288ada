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


# --- Inodes, load per core, disk fill prediction, Nagios performance data ---------------------


def test_inodes_from_statvfs_and_none_without_an_inode_limit(tmp_path):
    from types import SimpleNamespace

    def statvfs(path):
        assert path == str(tmp_path)
        return SimpleNamespace(f_files=1000, f_ffree=150)

    value, detail = resources.inodes(tmp_path, statvfs=statvfs)
    assert value == 85.0 and detail == f"{tmp_path}: 850 of 1,000 inodes"
    no_limit = resources.inodes(tmp_path, statvfs=lambda p: SimpleNamespace(f_files=0, f_ffree=0))
    assert no_limit is None
    # A path not created yet is measured on the nearest existing parent.
    got = resources.inodes(tmp_path / "a" / "b", statvfs=lambda p: SimpleNamespace(
        f_files=10, f_ffree=5, path=p))  # fmt: skip
    assert got[1].startswith(f"{tmp_path}:")
    # And the real call answers on this machine (whatever its figures).
    real = resources.inodes(tmp_path)
    assert real is None or 0 <= real[0] <= 100


def test_load_per_core_from_injected_values():
    value, detail = resources.load_per_core(lambda: (3.0, 2.5, 1.25), lambda: 2)
    assert value == 1.5 and detail == "load 3.00 2.50 1.25 on 2 cores"
    th = resources.threshold_for("load.per_core", warn=10, crit=20)  # --warn/--crit: % only
    assert (th.warn, th.crit) == (1.5, 3.0)
    assert severity(value, th) == "warning" and severity(3.2, th) == "critical"
    assert severity(0.4, th) == "ok"


def test_lower_is_worse_thresholds():
    th = Threshold(24, 6, lower_is_worse=True)
    assert [severity(v, th) for v in (100, 24.1, 24, 6.1, 6, 0)] == [
        "ok", "ok", "warning", "warning", "critical", "critical",
    ]  # fmt: skip
    assert severity(None, th) == "ok"  # nothing to predict (not filling)


def test_the_rate_is_a_time_weighted_average_from_the_first_minutes_on():
    from backend.ops.thresholds import hours_until_full, rate, smoothed_rate

    window = dt.timedelta(hours=1)
    # 6 points an hour, read at irregular intervals.
    raw, last, last_at, first = None, None, None, T0
    for minutes in (0, 1, 3, 4, 9, 10, 17, 30, 31, 55):
        now = T0 + dt.timedelta(minutes=minutes)
        value = 40 + 6 * minutes / 60
        raw = smoothed_rate(raw, last, last_at, value, now, window)
        last, last_at = value, now
        if minutes:
            assert rate(raw, now - first, window) == pytest.approx(6.0)
    assert rate(None, dt.timedelta(minutes=5), window) is None
    assert smoothed_rate(raw, last, last_at, 99, last_at, window) == raw  # no time passed
    ten = dt.timedelta(minutes=10)
    assert hours_until_full(40.0, 6.0, ten, ten) == pytest.approx(10.0)
    assert hours_until_full(40.0, 6.0, ten - dt.timedelta(seconds=1), ten) is None
    assert hours_until_full(40.0, 0.0, ten, ten) is None
    assert hours_until_full(40.0, -1.0, ten, ten) is None
    assert hours_until_full(101.0, 6.0, ten, ten) == 0.0


def test_perf_data_format():
    from backend.ops.thresholds import perf_data

    line = perf_data(
        [
            ("disk.var", 42.126, "%", Threshold(85, 95), 0.0, 100.0),
            ("load.per_core", 0.5, "", Threshold(1.5, 3), 0.0, None),
            ("disk.var.fill", 7200.0, "s", Threshold(86400, 21600, True), 0.0, None),
            ("it's", None, "%", Threshold(85, 95), 0.0, 100.0),
        ]
    )
    assert line == (
        "'disk.var'=42.13%;85;95;0;100 'load.per_core'=0.5;1.5;3;0 "
        "'disk.var.fill'=7200s;86400:;21600:;0 'it''s'=U;85;95;0;100"
    )


@pytest.mark.django_db
def test_disk_fill_prediction_learns_the_rate_from_the_checks(settings):
    settings.RESOURCE_DAMPING_SECONDS = 0
    host = "h-fill"

    def check(minutes, percent):
        now = T0 + dt.timedelta(minutes=minutes)
        resources.check(values={"disk.var": (percent, "", "")}, now=now, host=host)
        return now

    now = check(0, 50.0)
    assert resources.fill("disk.var", 50.0, now=now, host=host) == (
        None, "learning the rate (10 min of checks needed)",
    )  # fmt: skip
    now = check(5, 50.5)
    assert resources.fill("disk.var", 50.5, now=now, host=host)[0] is None  # 5 min: too early
    for minutes in (8, 12, 20):
        now = check(minutes, 50 + minutes / 10)  # 6 points an hour
    hours, detail = resources.fill("disk.var", 52.0, now=now, host=host)
    assert hours == pytest.approx(8.0)  # (100 - 52) / 6
    assert detail == "full in 8.0 h at +6.00 points/h (disk.var 52.0%)"

    # The prediction is a probe of its own: under 24 h is a warning, under 6 h critical.
    readings = resources.check(values={"disk.var.fill": (hours, detail, "")}, now=now, host=host)
    assert [(r.probe, r.severity, r.unit, r.alert) for r in readings] == [
        ("disk.var.fill", "warning", "h", "open")
    ]
    alert = ResourceAlert.objects.get(probe="disk.var.fill")
    assert alert.message.startswith("disk.var.fill at 8.0h (full in 8.0 h")
    code, line = resources.summary(readings)
    assert code == 1 and line == "RESOURCES WARNING - disk.var.fill 8.0h (warning)"

    # Space freed: the disk shrinks, the rate turns negative, nothing to predict.
    for minutes in (25, 40, 60, 90):
        now = check(minutes, 30.0)
    assert resources.fill("disk.var", 30.0, now=now, host=host)[1].startswith("not filling (-")
    readings = resources.check(values={"disk.var.fill": (None, "not filling", "")}, now=now,
                               host=host)  # fmt: skip
    assert readings[0].severity == "ok" and readings[0].alert == "none"
    assert not ResourceAlert.objects.filter(resolved_at__isnull=True).exists()


@pytest.mark.django_db
def test_measure_includes_the_fill_prediction_for_each_measured_disk(monkeypatch):
    monkeypatch.setattr(resources, "probes", lambda: {"disk.var": lambda: (50.0, "/var")})
    got = resources.measure(now=T0, host="h-new")
    assert got["disk.var"] == (50.0, "/var", "")
    assert got["disk.var.fill"] == (None, "learning the rate (10 min of checks needed)", "")
    assert "disk.var.fill" not in resources.measure(only=["disk.var"], now=T0, host="h-new")


@pytest.mark.django_db(transaction=True)
def test_cli_check_prints_nagios_performance_data(monkeypatch):
    from django.db import connection

    from tests.e2e.gunicorn_server import django_database_url

    monkeypatch.setenv("DATABASE_URL", django_database_url())
    monkeypatch.setattr("django.conf.settings.RESOURCE_DAMPING_SECONDS", 0)
    monkeypatch.setattr("django.conf.settings.RESOURCE_THRESHOLDS", {})
    monkeypatch.setattr(
        resources,
        "probes",
        lambda: {
            "memory": lambda: (50.0, ""),
            "inodes.var": lambda: (12.5, "/srv: 125 of 1,000 inodes"),
            "load.per_core": lambda: resources.load_per_core(lambda: (1.0, 1.0, 1.0), lambda: 4),
            "disk.var": lambda: (40.0, "/srv"),
        },
    )
    connection.close()
    r = CliRunner().invoke(app, ["resources", "--check"])
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        "RESOURCES OK - 5 probes under their thresholds | 'memory'=50%;85;95;0;100 "
        "'inodes.var'=12.5%;85;95;0;100 'load.per_core'=0.25;1.5;3;0 "
        "'disk.var'=40%;85;95;0;100 'disk.var.fill'=U;86400:;21600:;0\n"
    )
    r = CliRunner().invoke(app, ["resources", "--json"])
    body = json.loads(r.stdout)
    assert body["perfdata"].startswith("'memory'=50%;85;95;0;100 ")
    units = {p["probe"]: p["unit"] for p in body["probes"]}
    assert units == {"memory": "%", "inodes.var": "%", "load.per_core": "", "disk.var": "%",
                     "disk.var.fill": "h"}  # fmt: skip
    r = CliRunner().invoke(app, ["resources"])
    assert "load.per_core\t0.25\t1.5\t3\tok" in r.stdout


def test_the_gauges_include_inodes():
    """The cheap probes (no database) are exported as exam.resource.utilization, inodes too."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    resources.register_gauges(MeterProvider(metric_readers=[reader]).get_meter("t"))
    data = reader.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "exam.resource.utilization"
        for p in m.data.data_points
    ]
    probes = {p.attributes["probe"] for p in points}
    assert {"disk.var", "memory"} <= probes
    assert "inodes.var" in probes or resources.inodes(resources.config.var_dir()) is None
    assert all(0 <= p.value <= 100 for p in points)
