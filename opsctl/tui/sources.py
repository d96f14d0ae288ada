"""The console's data sources: thin adapters over the service and reader functions that the
CLI uses too. Each returns plain data; the app calls them in worker threads."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sources:
    telemetry_dir: Path
    database_url: str
    window_minutes: int = 15

    def _since(self, minutes: int | None = None) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes or self.window_minutes)

    # telemetry (no Django)
    def routes(self):
        from opsctl import telemetry

        return telemetry.route_stats(self.telemetry_dir, self._since())

    def traces(self, route: str | None = None):
        from opsctl import telemetry

        return telemetry.list_traces(self.telemetry_dir, self._since(), route=route, limit=200)

    def trace(self, trace_id: str):
        from opsctl import telemetry

        return telemetry.trace_tree(self.telemetry_dir, trace_id)

    def queries(self, by: str = "total"):
        from opsctl import telemetry

        return telemetry.query_stats(self.telemetry_dir, self._since(60), by, 50)

    def n_plus_one(self):
        from opsctl import telemetry

        return telemetry.n_plus_one(self.telemetry_dir, self._since(60))

    def explain(self, sql: str):
        from opsctl.explain import explain

        return explain(self.database_url, sql, [None] * sql.count("%s"))

    # database doctor (SQLAlchemy)
    def tables(self):
        from opsctl.dbhealth import table_health

        return table_health(self.database_url, "size")

    def vacuum(self, table: str, actor: str | None = None):
        from opsctl.dbhealth import vacuum

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

    def recent_flag_changes(self):
        from backend.ops import flags

        return flags.history(since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))

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

    def calibrate(self, exam_id: int):
        from backend.exams.calibration import calibrate_exam

        return calibrate_exam(exam_id, actor="opsctl-top")
