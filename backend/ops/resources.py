"""Resource probes (psutil and PostgreSQL), alert state, and the same values as gauges."""

from __future__ import annotations

import datetime as dt
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
from backend.ops.thresholds import OK, UNKNOWN, Memory, Threshold, nagios, severity, step


@dataclass
class Reading:
    probe: str
    value: float | None  # percent
    detail: str
    warn: float
    crit: float
    severity: str
    alert: str  # the alert state after this check: none | pending | open
    error: str = ""


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
        "backend.rss": _rss,
        "backend.open_files": _open_files,
        "postgres.connections": _pg_connections,
    }


def threshold_for(name: str, warn: float | None = None, crit: float | None = None) -> Threshold:
    per = settings.RESOURCE_THRESHOLDS.get(name, {})
    return Threshold(
        warn if warn is not None else per.get("warn", settings.RESOURCE_WARN),
        crit if crit is not None else per.get("crit", settings.RESOURCE_CRIT),
    )


def measure(only: list[str] | None = None) -> dict[str, tuple[float | None, str, str]]:
    out = {}
    for name, fn in probes().items():
        if only and name not in only:
            continue
        try:
            got = fn()
        except Exception as exc:  # a broken probe is UNKNOWN, never a crash
            out[name] = (
                None,
                "",
                str(exc).strip().splitlines()[0] if str(exc).strip() else "error",
            )
            continue
        if got is None:
            continue  # not applicable here (e.g. PostgreSQL probes on SQLite)
        out[name] = (round(float(got[0]), 2), got[1], "")
    return out


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
                    message=f"{name} at {value:.1f}% ({detail})", opened_at=now, updated_at=now,
                )  # fmt: skip
            elif decision.action == "resolve" and alert:
                alert.resolved_at = now
                alert.save(update_fields=["resolved_at"])
                alert = None
            elif alert and value is not None:
                alert.value, alert.updated_at = value, now
                alert.save(update_fields=["value", "updated_at"])
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
                )
            )
    return readings


def summary(readings: list[Reading]) -> tuple[int, str]:
    code = nagios([r.severity for r in readings])
    word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code]
    bad = [r for r in readings if r.severity != OK]
    if not bad:
        return code, f"RESOURCES {word} - {len(readings)} probes under their thresholds"
    parts = [
        f"{r.probe} {'?' if r.value is None else f'{r.value:.0f}%'} ({r.severity})" for r in bad
    ]
    return code, f"RESOURCES {word} - " + ", ".join(parts)


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
        for name in ("memory", "swap", "disk.var", "disk.telemetry", "disk.logs"):
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
