"""The console's data sources: thin adapters over the service and reader functions that the
CLI uses too. Each returns plain data; the app calls them in worker threads.

Telemetry comes from one incremental reader shared by the panes (a refresh costs the spans
written since the last one), or, for route RED and SQL, from Prometheus when a URL is set.
Calls take ``cancelled`` (checked between read steps) so a hidden or quitting pane stops
reading at once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opsctl.telemetry.model import Coverage

#: Windows the console offers (minutes); `w` cycles through them.
WINDOWS = (5, 15, 60)
#: How long one refresh may spend reading before it shows what it has.
READ_BUDGET = 0.5
#: How many routes (the busiest) get a per-minute series on the Overview.
ROUTE_SERIES = 12
#: At start-up, how long the first refresh may read to have one whole minute to show.
FIRST_BUDGET = 4.0


def _never() -> bool:
    return False


@dataclass
class TelemetryView:
    """One telemetry answer for a pane: its rows and what they rest on."""

    rows: list
    coverage: Coverage
    loading: bool = False  # older data is still being read (numbers cover less)
    age: float | None = None  # seconds since the newest span started
    complete_for: float | None = None  # while loading: seconds back the data is complete
    series: list = field(default_factory=list)  # (minute, save req/s, save p95 ms)
    #: Per route shown (the busiest ROUTE_SERIES): [(minute, req/s, p95 ms)], oldest first.
    route_series: dict = field(default_factory=dict)


@dataclass
class Sources:
    telemetry_dir: Path
    database_url: str
    window_minutes: int = 15
    prometheus_url: str | None = None
    _reader: object = field(default=None, repr=False)
    _reader_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # telemetry (no Django)
    @property
    def reader(self):
        with self._reader_lock:
            if self._reader is None:
                from opsctl.telemetry.incremental import IncrementalReader

                self._reader = IncrementalReader(self.telemetry_dir, max_window=max(WINDOWS) * 60)
            return self._reader

    def telemetry_source(self) -> str:
        return self.prometheus_url or str(self.telemetry_dir)

    def _read(self, cancelled: Callable[[], bool]) -> dict:
        """Read what is new (bounded by READ_BUDGET); the view's common fields."""
        r = self.reader
        done = r.poll(cancelled, budget=READ_BUDGET, wait=False)
        # At start-up, read on (up to FIRST_BUDGET) until one whole minute can be shown.
        deadline = time.monotonic() + FIRST_BUDGET
        while (not done and r.loading and not cancelled() and time.monotonic() < deadline
               and r.route_stats(3600)[1].empty):  # fmt: skip
            done = r.poll(cancelled, budget=READ_BUDGET)
        complete = r.complete_since_ns
        complete_for = (r.clock() - complete / 1e9) if complete else None
        return {
            "loading": r.loading or not done,
            "age": r.data_age(),
            "complete_for": complete_for,
        }

    def routes(self, window: float, cancelled: Callable[[], bool] = _never) -> TelemetryView:
        if self.prometheus_url:
            from opsctl.telemetry import prometheus

            rows, cov = prometheus.route_stats(self.prometheus_url, window)
            age = (
                (dt.datetime.now(dt.UTC).timestamp() - cov.newest_ns / 1e9)
                if cov.newest_ns
                else None
            )
            return TelemetryView(rows, cov, age=age)
        state = self._read(cancelled)
        rows, cov = self.reader.route_stats(window)
        per_route = {
            r.route: self.reader.route_series(window, suffix=r.route)
            for r in sorted(rows, key=lambda r: -r.requests)[:ROUTE_SERIES]
        }
        return TelemetryView(rows, cov, series=self.reader.route_series(window),
                             route_series=per_route, **state)  # fmt: skip

    def traces(self, window: float, route: str | None = None,
               cancelled: Callable[[], bool] = _never) -> TelemetryView:  # fmt: skip
        state = self._read(cancelled)
        rows, cov = self.reader.list_traces(window, route=route, limit=200)
        return TelemetryView(rows, cov, **state)

    def trace(self, trace_id: str, start: str | None = None):
        """One trace's waterfall; ``start`` (its summary's ISO start) narrows the search."""
        from opsctl import telemetry

        since = None
        if start:
            since = dt.datetime.fromisoformat(start) - dt.timedelta(seconds=1)
        return telemetry.trace_tree(self.telemetry_dir, trace_id, since=since)

    def queries(self, window: float, by: str = "total",
                cancelled: Callable[[], bool] = _never) -> TelemetryView:  # fmt: skip
        if self.prometheus_url:
            from opsctl.telemetry import prometheus

            rows, cov = prometheus.query_stats(self.prometheus_url, window, by, 50)
            return TelemetryView(rows, cov)
        state = self._read(cancelled)
        rows, cov = self.reader.query_stats(window, by, 50)
        return TelemetryView(rows, cov, **state)

    def n_plus_one(self, window: float):
        return self.reader.n_plus_one(window)[0]

    def explain(self, sql: str):
        from opsctl.db.explain import explain
        from opsctl.db.sqlsafety import number_placeholders

        # Values are never recorded: every placeholder (positional or named) is unknown.
        return explain(self.database_url, sql, [None] * number_placeholders(sql)[1])

    # database doctor (SQLAlchemy)
    def activity(self):
        from opsctl.db.activity import activity

        return activity(self.database_url)

    def tables(self):
        from opsctl.db.health import table_health

        return table_health(self.database_url, "size")

    def vacuum(self, table: str, actor: str | None = None):
        from opsctl.db.health import vacuum

        return vacuum(self.database_url, [table], analyze=True, confirmed=True, actor=actor)

    # backend services (Django)
    def resources(self):
        from backend.ops import resources
        from backend.ops.thresholds import severity

        rows = []
        for name, (value, detail, error) in resources.measure().items():
            th = resources.threshold_for(name)
            rows.append((name, value, th.warn, th.crit, severity(value, th), detail or error))
        return rows, resources.alert_history(30)

    def open_alerts(self):
        from backend.ops import resources

        return resources.open_alerts()

    def retention(self):
        from backend.ops import retention

        return retention.status()

    def retention_run(self, dry_run: bool, progress=None):
        from backend.ops import retention

        return retention.run(dry_run=dry_run, progress=progress)

    def flags(self):
        from backend.ops import flags

        return flags.list_flags(), flags.history()[:50]

    def scheduled_flags(self):
        """Pending scheduled flag changes, soonest first."""
        from backend.ops import flags

        return flags.scheduled()

    def recent_flag_changes(self):
        from backend.ops import flags

        return flags.history(since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))

    def check_flag_value(self, text: str) -> None:
        """Raises (with the message to show) unless ``text`` is a value a flag can take."""
        from backend.ops import flags

        flags.parse_value(text)

    def set_flag(self, key: str, value: str, reason: str):
        from backend.ops import flags

        return flags.set_flag(key, value, reason)

    def rollback_plan(self):
        from backend.ops import flags

        return flags.rollback_plan(last=1)

    def rollback(self, plan, reason: str):
        from backend.ops import flags

        return flags.rollback(plan, reason)

    def jobs(self):
        from backend.exams.calibration import calibration_status
        from backend.ops import schema_changes
        from backend.ops.models import RetentionRun

        last_retention = RetentionRun.objects.filter(dry_run=False).order_by("-started_at").first()
        return schema_changes.status(), calibration_status(), last_retention

    def exams_in_progress(self):
        from backend.exams.live import exams_in_progress

        return exams_in_progress()

    def calibrate(self, exam_id: int):
        from backend.exams.calibration import calibrate_exam

        return calibrate_exam(exam_id, actor="opsctl-top")
