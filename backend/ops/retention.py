"""The retention engine: batched primary-key purges, recorded runs, status.

Each batch selects up to ``batch_size`` eligible ids and deletes them by id in its own short
transaction (with a lock timeout on PostgreSQL), so a run killed half-way leaves whole
batches deleted and the rest for next time. Raw SQL by id, never Django's collect-then-delete
(which loads every row into Python to send signals and cascade). A global job lock lets the
same cron entry run on every host while exactly one purges.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from backend import config
from backend.ops import audit
from backend.ops.models import RetentionRun
from backend.ops.retention_policy import DEFAULTS, Policy, build, load_overrides

SCORED = ("submitted", "expired")


@dataclass
class PolicyResult:
    name: str
    deleted: int = 0
    bytes_reclaimed: int = 0
    eligible_before: int = 0
    remaining: int = 0
    batches: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class RunReport:
    run_id: int | None
    dry_run: bool
    outcome: str  # ok | budget | failed | locked
    started_at: dt.datetime
    finished_at: dt.datetime | None
    policies: list[PolicyResult] = field(default_factory=list)
    error: str = ""
    vacuumed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "locked": 0, "budget": 1}.get(self.outcome, 2)


@dataclass
class PolicyStatus:
    name: str
    target: str
    period_days: float
    guard: str
    eligible_now: int
    oldest_age_days: float | None
    last_run_at: dt.datetime | None
    last_outcome: str | None
    overdue: bool


def policies(policy_file: str | None = None) -> list[Policy]:
    entries = getattr(settings, "RETENTION_POLICIES", None) or DEFAULTS
    if policy_file:
        entries = load_overrides(Path(policy_file).read_text(), entries)
    return build(entries)


# --- what is eligible, per kind ------------------------------------------------------------


def _eligible_sql(policy: Policy) -> tuple[str, str]:
    """(FROM/WHERE clause selecting eligible rows as alias t, the table to delete from)."""
    if policy.kind == "answer_journal":
        return (
            "exams_answerevent t JOIN exams_examsession s ON s.id = t.session_id "
            f"WHERE s.status IN ('{SCORED[0]}', '{SCORED[1]}') AND s.submitted_at < %s",
            "exams_answerevent",
        )
    if policy.kind == "resolved_alerts":
        return "ops_resourcealert t WHERE t.resolved_at IS NOT NULL AND t.resolved_at < %s", (
            "ops_resourcealert"
        )
    if policy.kind == "audit_events":
        return "ops_auditevent t WHERE t.created_at < %s", "ops_auditevent"
    if policy.kind == "django_sessions":
        return "django_session t WHERE t.expire_date < %s", "django_session"
    raise ValueError(policy.kind)


def _id_column(policy: Policy) -> str:
    return "session_key" if policy.kind == "django_sessions" else "id"


def _param(value: dt.datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _count(policy: Policy, cutoff: dt.datetime) -> int:
    if policy.kind == "telemetry_files":
        return len(_old_files(cutoff))
    where, _ = _eligible_sql(policy)
    with connection.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {where}", [_param(cutoff)])
        return cur.fetchone()[0]


def _oldest(policy: Policy) -> dt.datetime | None:
    if policy.kind == "telemetry_files":
        files = list(_telemetry_files())
        if not files:
            return None
        return dt.datetime.fromtimestamp(min(p.stat().st_mtime for p in files), dt.UTC)
    column = {
        "answer_journal": "(SELECT MIN(s.submitted_at) FROM exams_examsession s WHERE "
        "s.submitted_at IS NOT NULL AND EXISTS (SELECT 1 FROM exams_answerevent t "
        "WHERE t.session_id = s.id))",
        "resolved_alerts": "(SELECT MIN(resolved_at) FROM ops_resourcealert)",
        "audit_events": "(SELECT MIN(created_at) FROM ops_auditevent)",
        "django_sessions": "(SELECT MIN(expire_date) FROM django_session)",
    }[policy.kind]
    with connection.cursor() as cur:
        cur.execute(f"SELECT {column}")
        value = cur.fetchone()[0]
    if isinstance(value, str):  # SQLite returns text for aggregates
        value = dt.datetime.fromisoformat(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value


def _telemetry_files():
    d = config.telemetry_dir()
    return [p for p in d.glob("*.jsonl") if p.is_file()] if d.is_dir() else []


def _old_files(cutoff: dt.datetime) -> list[Path]:
    ts = cutoff.timestamp()
    return [p for p in _telemetry_files() if p.stat().st_mtime < ts]


# --- the engine ----------------------------------------------------------------------------


def _busy() -> bool:
    """Whether the database is busy enough that the purge should yield for a moment."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE state = 'active' AND pid <> pg_backend_pid()"
        )
        return cur.fetchone()[0] >= settings.RETENTION_BUSY_ACTIVE


def _delete_batch(policy: Policy, cutoff: dt.datetime, batch_size: int) -> int:
    """One batch in one statement: the ids are chosen and deleted by the server in a single
    round trip (no id lists through the driver), in its own short transaction."""
    where, table = _eligible_sql(policy)
    idcol = _id_column(policy)
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute(f"SET LOCAL lock_timeout = '{settings.RETENTION_LOCK_TIMEOUT_MS}ms'")
        cur.execute(
            f"DELETE FROM {table} WHERE {idcol} IN "
            f"(SELECT t.{idcol} FROM {where} ORDER BY t.{idcol} LIMIT %s)",
            [_param(cutoff), batch_size],
        )
        return cur.rowcount


def _purge_files(cutoff: dt.datetime, result: PolicyResult, deadline: float) -> bool:
    for path in _old_files(cutoff):
        if time.monotonic() > deadline:
            return False
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # another host's run (shared volume) got there first
            continue
        result.deleted += 1
        result.bytes_reclaimed += size
    return True


def run(
    dry_run: bool = False,
    only: list[str] | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    vacuum: bool = False,
    policy_file: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    now: dt.datetime | None = None,
    actor: str | None = None,
) -> RunReport:
    """Purge (or with ``dry_run`` count) what the policies say, once across all hosts."""
    from backend.ops.locks import LockHeld, job_lock

    now = now or timezone.now()
    chosen = policies(policy_file)
    if only:
        unknown = set(only) - {p.name for p in chosen}
        if unknown:
            raise ValueError(f"unknown policy {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(p.name for p in chosen)}")  # fmt: skip
        chosen = [p for p in chosen if p.name in only]
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    report = RunReport(None, dry_run, "ok", timezone.now(), None)
    if dry_run:
        for p in chosen:
            n = _count(p, p.cutoff(now))
            size = sum(f.stat().st_size for f in _old_files(p.cutoff(now))) if (
                p.kind == "telemetry_files") else 0  # fmt: skip
            report.policies.append(PolicyResult(p.name, eligible_before=n, remaining=n,
                                                bytes_reclaimed=size))  # fmt: skip
        report.finished_at = timezone.now()
        return report
    try:
        with job_lock("retention"):
            record = RetentionRun.objects.create(host=socket.gethostname(), dry_run=False)
            report.run_id = record.id
            deadline = time.monotonic() + (max_seconds or float("inf"))
            try:
                for p in chosen:
                    result = PolicyResult(p.name)
                    report.policies.append(result)
                    t0 = time.monotonic()
                    cutoff = p.cutoff(now)
                    result.eligible_before = _count(p, cutoff)
                    if p.kind == "telemetry_files":
                        finished = _purge_files(cutoff, result, deadline)
                    else:
                        finished = True
                        while True:
                            if time.monotonic() > deadline:
                                finished = False
                                break
                            t_batch = time.monotonic()
                            n = _delete_batch(p, cutoff, batch_size)
                            result.deleted += n
                            result.batches += 1
                            if progress:
                                progress(p.name, result.deleted, result.eligible_before)
                            if n < batch_size:
                                break
                            # Yield to exam traffic: a slow batch or a busy server means wait.
                            took = time.monotonic() - t_batch
                            if settings.RETENTION_PAUSE_SECONDS or took > 0.5 or _busy():
                                time.sleep(max(settings.RETENTION_PAUSE_SECONDS, min(took, 2)))
                    result.remaining = _count(p, cutoff)
                    result.seconds = round(time.monotonic() - t0, 3)
                    if not finished:
                        report.outcome = "budget"
                        break
                if vacuum and report.outcome in {"ok", "budget"}:
                    report.vacuumed = _vacuum(chosen, report)
            except Exception as exc:
                report.outcome = "failed"
                report.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            report.finished_at = timezone.now()
            record.finished_at = report.finished_at
            record.outcome = report.outcome
            record.error = report.error
            record.policies = {r.name: asdict(r) for r in report.policies}
            record.save()
            audit.record(
                "retention.run", target=", ".join(p.name for p in chosen), actor=actor,
                details={"run_id": record.id, "outcome": report.outcome,
                         "deleted": {r.name: r.deleted for r in report.policies}},
            )  # fmt: skip
    except LockHeld as exc:
        report.outcome = "locked"
        report.error = str(exc)
        report.finished_at = timezone.now()
    return report


def _vacuum(chosen: list[Policy], report: RunReport) -> list[str]:
    tables = []
    for p, r in zip(chosen, report.policies, strict=False):
        if p.kind != "telemetry_files" and r.deleted:
            tables.append(_eligible_sql(p)[1])
    with connection.cursor() as cur:
        for table in tables:
            if connection.vendor == "postgresql":
                cur.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(table)}")
            else:
                cur.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    return tables


def status(policy_file: str | None = None, now: dt.datetime | None = None) -> list[PolicyStatus]:
    now = now or timezone.now()
    last_runs = list(RetentionRun.objects.filter(dry_run=False).order_by("-started_at")[:50])
    overdue_after = dt.timedelta(hours=settings.RETENTION_OVERDUE_HOURS)
    out = []
    for p in policies(policy_file):
        run = next((r for r in last_runs if p.name in (r.policies or {})), None)
        last_ok = next(
            (r for r in last_runs if p.name in (r.policies or {}) and r.outcome == "ok"), None
        )
        eligible = _count(p, p.cutoff(now))
        oldest = _oldest(p)
        overdue = eligible > 0 and (last_ok is None or now - last_ok.started_at > overdue_after)
        out.append(
            PolicyStatus(
                p.name,
                p.target if p.kind != "telemetry_files" else str(config.telemetry_dir()),
                p.period.total_seconds() / 86400,
                p.guard,
                eligible,
                round((now - oldest).total_seconds() / 86400, 2) if oldest else None,
                run.started_at if run else None,
                run.outcome if run else None,
                overdue,
            )
        )
    return out


def pid_host() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
