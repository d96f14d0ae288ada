"""Resource probes (psutil and PostgreSQL), alert state, and the same values as gauges."""

from __future__ import annotations

import datetime as dt
import os
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from backend import config
from backend.ops.models import ProbeState, ResourceAlert
from backend.ops.thresholds import (
    OK,
    UNKNOWN,
    Memory,
    Threshold,
    hours_until_full,
    nagios,
    perf_data,
    rate,
    severity,
    smoothed_rate,
    step,
)

# The disks whose fill rate is learned at each check, and the probe predicting each one's end.
FILL = {"disk.var.fill": "disk.var", "disk.telemetry.fill": "disk.telemetry",
        "disk.logs.fill": "disk.logs"}  # fmt: skip
# The rate is smoothed over about this long, and predicts only after this much history.
RATE_WINDOW = dt.timedelta(hours=1)
MIN_HISTORY = dt.timedelta(minutes=10)
# Thresholds of the probes that are not a percentage (settings.RESOURCE_THRESHOLDS overrides):
# the load average per core, and hours until a disk is full (lower is worse).
OWN_THRESHOLDS = {
    "load.per_core": Threshold(1.5, 3.0),
    **{name: Threshold(24.0, 6.0, lower_is_worse=True) for name in FILL},
}
# A probe's unit: "%" unless named here ("h": hours, "": a plain number).
UNITS = {"load.per_core": "", **{name: "h" for name in FILL}}


def unit(probe: str) -> str:
    return UNITS.get(probe, "%")


def show(value: float | None, probe: str) -> str:
    """A probe's value as on-call reads it: 42.1%, 12.5h, 0.83."""
    if value is None:
        return "?" if unit(probe) != "h" else "-"
    u = unit(probe)
    return f"{value:.1f}{u}" if u else f"{value:.2f}"


@dataclass
class Reading:
    probe: str
    value: float | None  # in the probe's unit (percent unless ``unit`` says otherwise)
    detail: str
    warn: float
    crit: float
    severity: str
    alert: str  # the alert state after this check: none | pending | open
    error: str = ""
    unit: str = "%"  # "%", "h" (hours), "" (a plain number: load per core)


def _disk(path: Path) -> tuple[float, str]:
    path = path if path.exists() else path.parent
    while not path.exists():
        path = path.parent
    u = psutil.disk_usage(str(path))
    return u.percent, f"{path}: {u.used / 1e9:.1f} of {u.total / 1e9:.1f} GB"


def _backend_processes() -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or ())
        if "gunicorn" in cmd and "backend" in cmd:
            procs.append(p)
    return procs


def _rss() -> tuple[float, str]:
    procs = _backend_processes()
    total = psutil.virtual_memory().total
    rss = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
        except psutil.Error:
            continue
    return 100 * rss / total, f"{len(procs)} backend processes, {rss / 1e6:.0f} MB RSS"


def _open_files() -> tuple[float, str]:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    worst = 0
    for p in _backend_processes():
        try:
            worst = max(worst, p.num_fds())
        except psutil.Error:
            continue
    return 100 * worst / soft if soft > 0 else 0.0, f"max {worst} of {soft} per process"


def inodes(path: Path, statvfs=os.statvfs) -> tuple[float, str] | None:
    """Percent of the inodes used on the filesystem holding ``path`` (psutil has no inode
    figures, so os.statvfs); None when the filesystem has no inode limit (btrfs reports 0)."""
    path = path if path.exists() else path.parent
    while not path.exists():
        path = path.parent
    st = statvfs(str(path))
    if st.f_files <= 0:
        return None
    used = st.f_files - st.f_ffree
    return 100 * used / st.f_files, f"{path}: {used:,} of {st.f_files:,} inodes"


def load_per_core(getloadavg=os.getloadavg, cpu_count=psutil.cpu_count) -> tuple[float, str]:
    """The 1-minute load average divided by the number of cores (1.0: every core busy, with
    nothing waiting)."""
    one, five, fifteen = getloadavg()
    cores = cpu_count() or 1
    return one / cores, f"load {one:.2f} {five:.2f} {fifteen:.2f} on {cores} cores"


def _pg_connections() -> tuple[float, str] | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity"
        )
        used, limit = cur.fetchone()
    return 100 * used / limit, f"{used} of {limit} connections"


def probes() -> dict[str, Callable[[], tuple[float, str] | None]]:
    log_dir = Path(getattr(settings, "LOG_DIR", config.var_dir() / "log"))
    return {
        "cpu": lambda: (psutil.cpu_percent(interval=0.2), f"{psutil.cpu_count()} cores"),
        "memory": lambda: (psutil.virtual_memory().percent, "system memory"),
        "swap": lambda: (psutil.swap_memory().percent, "swap"),
        # The app's var/ directory (the SQLite file when embedded, locks, run files). The
        # database host's own disk comes from node_exporter on that host (dashboards/alerts).
        "disk.var": lambda: _disk(config.var_dir()),
        "disk.telemetry": lambda: _disk(config.telemetry_dir()),
        "disk.logs": lambda: _disk(log_dir),
        "inodes.var": lambda: inodes(config.var_dir()),
        "inodes.telemetry": lambda: inodes(config.telemetry_dir()),
        "inodes.logs": lambda: inodes(log_dir),
        "load.per_core": load_per_core,
        "backend.rss": _rss,
        "backend.open_files": _open_files,
        "postgres.connections": _pg_connections,
    }


def threshold_for(name: str, warn: float | None = None, crit: float | None = None) -> Threshold:
    """The probe's thresholds: settings.RESOURCE_THRESHOLDS, else its own (load, fill), else
    RESOURCE_WARN/RESOURCE_CRIT; ``warn``/``crit`` (percent) override the percentage probes."""
    per = settings.RESOURCE_THRESHOLDS.get(name, {})
    own = OWN_THRESHOLDS.get(name)
    if own is not None:
        return Threshold(per.get("warn", own.warn), per.get("crit", own.crit), own.lower_is_worse)
    return Threshold(
        warn if warn is not None else per.get("warn", settings.RESOURCE_WARN),
        crit if crit is not None else per.get("crit", settings.RESOURCE_CRIT),
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "error"


def measure(
    only: list[str] | None = None, now: dt.datetime | None = None, host: str | None = None
) -> dict[str, tuple[float | None, str, str]]:
    """Every probe's (value, detail, error); a disk's fill prediction comes from the rate
    earlier checks stored for it (see ``fill``)."""
    out = {}
    for name, fn in probes().items():
        if only and name not in only:
            continue
        try:
            got = fn()
        except Exception as exc:  # a broken probe is UNKNOWN, never a crash
            out[name] = (None, "", _first_line(exc))
            continue
        if got is None:
            continue  # not applicable here (e.g. PostgreSQL probes on SQLite)
        out[name] = (round(float(got[0]), 2), got[1], "")
    for name, disk in FILL.items():
        if (only and name not in only) or disk not in out or out[disk][0] is None:
            continue
        try:
            value, detail = fill(disk, out[disk][0], now=now, host=host)
        except Exception as exc:  # e.g. the database is down: UNKNOWN, never a crash
            out[name] = (None, "", _first_line(exc))
            continue
        out[name] = (None if value is None else round(value, 2), detail, "")
    return out


def fill(
    disk: str, percent: float, now: dt.datetime | None = None, host: str | None = None
) -> tuple[float | None, str]:
    """Hours until the ``disk`` probe reaches 100% at its current rate (as learned by the
    checks so far on this host), or None with why not."""
    now = now or timezone.now()
    state = ProbeState.objects.filter(probe=disk, host=host or socket.gethostname()).first()
    covered = (
        state.updated_at - state.rate_since
        if state and state.rate_since and state.rate_per_hour is not None
        else dt.timedelta(0)
    )
    per_hour = rate(state.rate_per_hour if state else None, covered, RATE_WINDOW)
    hours = hours_until_full(percent, per_hour, covered, MIN_HISTORY)
    if hours is not None:
        return hours, f"full in {hours:.1f} h at {per_hour:+.2f} points/h ({disk} {percent:.1f}%)"
    if per_hour is None or covered < MIN_HISTORY:
        minutes = int(MIN_HISTORY.total_seconds() // 60)
        return None, f"learning the rate ({minutes} min of checks needed)"
    return None, f"not filling ({per_hour:+.2f} points/h)"


def check(
    warn: float | None = None,
    crit: float | None = None,
    values: dict[str, tuple[float | None, str, str]] | None = None,
    now: dt.datetime | None = None,
    host: str | None = None,
) -> list[Reading]:
    """Measure, evaluate with damping, and record alert state for this host."""
    now = now or timezone.now()
    host = host or socket.gethostname()
    values = values if values is not None else measure()
    damping = dt.timedelta(seconds=settings.RESOURCE_DAMPING_SECONDS)
    readings = []
    with transaction.atomic():
        for name, (value, detail, error) in values.items():
            th = threshold_for(name, warn, crit)
            sev = severity(value, th) if not error else UNKNOWN
            state, _ = ProbeState.objects.select_for_update().get_or_create(probe=name, host=host)
            alert = ResourceAlert.objects.filter(
                probe=name, host=host, resolved_at__isnull=True
            ).first()
            memory = Memory(state.pending_severity, state.pending_since,
                            alert.severity if alert else "")  # fmt: skip
            decision = step(memory, sev, now, damping)
            if decision.action in {"open", "change"}:
                if alert:
                    alert.resolved_at = now
                    alert.save(update_fields=["resolved_at"])
                alert = ResourceAlert.objects.create(
                    probe=name, host=host, severity=decision.severity, value=value or 0,
                    threshold=th.crit if decision.severity == "critical" else th.warn,
                    message=f"{name} at {show(value, name)} ({detail})", opened_at=now,
                    updated_at=now,
                )  # fmt: skip
            elif decision.action == "resolve" and alert:
                alert.resolved_at = now
                alert.save(update_fields=["resolved_at"])
                alert = None
            elif alert and value is not None:
                alert.value, alert.updated_at = value, now
                alert.save(update_fields=["value", "updated_at"])
            if name in FILL.values() and value is not None:
                raw = smoothed_rate(state.rate_per_hour, state.last_value,
                                    state.updated_at if state.last_value is not None else None,
                                    value, now, RATE_WINDOW)  # fmt: skip
                if raw is not None and state.rate_since is None:
                    state.rate_since = state.updated_at
                state.rate_per_hour = raw
            state.pending_severity = decision.memory.pending_severity
            state.pending_since = decision.memory.pending_since
            state.last_value = value
            state.updated_at = now
            state.save()
            readings.append(
                Reading(
                    name,
                    value,
                    detail or error,
                    th.warn,
                    th.crit,
                    sev,
                    "open" if alert else ("pending" if decision.action == "pending" else "none"),
                    error,
                    unit(name),
                )
            )
    return readings


def summary(readings: list[Reading]) -> tuple[int, str]:
    code = nagios([r.severity for r in readings])
    word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code]
    bad = [r for r in readings if r.severity != OK]
    if not bad:
        return code, f"RESOURCES {word} - {len(readings)} probes under their thresholds"
    parts = [f"{r.probe} {_short(r)} ({r.severity})" for r in bad]
    return code, f"RESOURCES {word} - " + ", ".join(parts)


def _short(r: Reading) -> str:
    if r.value is None:
        return "?"
    return f"{r.value:.0f}%" if r.unit == "%" else show(r.value, r.probe)


def perfdata(readings: list[Reading]) -> str:
    """The readings as Nagios performance data (after ``|`` in ``resources --check``):
    percentages 0-100 with %, the load per core as a number, hours until full in seconds
    (Nagios has no hour unit)."""
    items = []
    for r in readings:
        th = Threshold(r.warn, r.crit, threshold_for(r.probe).lower_is_worse)
        if r.unit == "%":
            items.append((r.probe, r.value, "%", th, 0.0, 100.0))
        elif r.unit == "h":
            secs = None if r.value is None else r.value * 3600
            th = Threshold(th.warn * 3600, th.crit * 3600, th.lower_is_worse)
            items.append((r.probe, secs, "s", th, 0.0, None))
        else:
            items.append((r.probe, r.value, "", th, 0.0, None))
    return perf_data(items)


def open_alerts() -> list[ResourceAlert]:
    return list(ResourceAlert.objects.filter(resolved_at__isnull=True).order_by("-opened_at"))


def alert_history(limit: int = 50) -> list[ResourceAlert]:
    return list(ResourceAlert.objects.order_by("-opened_at")[:limit])


def register_gauges(meter) -> None:
    """The probes as OpenTelemetry gauges: ``exam.resource.utilization`` (percent) by probe,
    read at each metric export; the host is the resource's ``host.name``."""
    from opentelemetry.metrics import Observation

    def observe(_options):
        # Only the cheap probes: no DB round trip inside the exporter thread.
        for name in ("memory", "swap", "disk.var", "disk.telemetry", "disk.logs",
                     "inodes.var", "inodes.telemetry", "inodes.logs"):  # fmt: skip
            try:
                got = probes()[name]()
            except Exception:
                continue
            if got:
                # The host is the resource's host.name (a label after the Collector).
                yield Observation(got[0], {"probe": name})

    meter.create_observable_gauge(
        "exam.resource.utilization", callbacks=[observe], unit="%",
        description="Resource use in percent of capacity, by probe",
    )  # fmt: skip
