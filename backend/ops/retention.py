"""The retention engine: batched primary-key purges, recorded runs, status.

A run first counts a policy's eligible rows and finds their key range in one scan, then
walks that range in batches of ``batch_size`` consecutive primary keys: each batch is one
DELETE of the eligible rows in its key range, in its own short transaction (with a lock
timeout on PostgreSQL), so a run killed half-way leaves whole batches deleted and the rest
for next time. Keyset batches never rescan what earlier batches deleted, so a purge costs the
same per row on a journal of any size. Raw SQL, never Django's collect-then-delete (which
loads every row into Python to send signals and cascade). A global job lock lets the same
cron entry run on every host while exactly one purges.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from backend import config
from backend.ops import audit
from backend.ops.errors import InvalidInput
from backend.ops.locks import ABANDONED, LOCK_APPLICATION_NAME, LockHeld, job_lock, outcome_now
from backend.ops.models import RetentionRun
from backend.ops.retention_policy import DEFAULTS, Policy, build, read_policy_file

SCORED = ("submitted", "expired")
LOCK = "retention"
# Outcomes that mean a run did not do its work (an alert and `retention status` say so).
FAILED_OUTCOMES = {"failed", ABANDONED}


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
    outcome: str  # ok | budget | failed | locked (the ledger also has running | abandoned)
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
    last_failed: bool = False  # the last run failed or was abandoned (its process died)


def policies(policy_file: str | None = None) -> list[Policy]:
    entries = getattr(settings, "RETENTION_POLICIES", None) or DEFAULTS
    if policy_file:
        entries = read_policy_file(policy_file, entries)
    return build(entries)


# --- what is eligible, per kind ------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A table policy in SQL: the table (aliased ``t``), its key, and the predicate on ``t``
    that makes a row eligible (one ``%s``: the cut-off). Written as a single-table predicate
    (EXISTS for the journal's session guard) so a DELETE can range-scan the table's key."""

    table: str
    key: str
    predicate: str


def _target(policy: Policy) -> _Target:
    if policy.kind == "answer_journal":
        return _Target(
            "exams_answerevent",
            "id",
            "EXISTS (SELECT 1 FROM exams_examsession s WHERE s.id = t.session_id "
            f"AND s.status IN ('{SCORED[0]}', '{SCORED[1]}') AND s.submitted_at < %s)",
        )
    if policy.kind == "resolved_alerts":
        return _Target(
            "ops_resourcealert", "id", "t.resolved_at IS NOT NULL AND t.resolved_at < %s"
        )
    if policy.kind == "audit_events":
        return _Target("ops_auditevent", "id", "t.created_at < %s")
    if policy.kind == "django_sessions":
        return _Target("django_session", "session_key", "t.expire_date < %s")
    raise ValueError(policy.kind)


def _param(value: dt.datetime):
    return connection.ops.adapt_datetimefield_value(value)


@dataclass
class _Span:
    """The eligible rows at the start of a run: how many, and their lowest and highest key."""

    count: int
    first: object
    last: object


def _eligible_span(policy: Policy, cutoff: dt.datetime) -> _Span:
    """Count the eligible rows and find their key range in one scan."""
    if policy.kind == "telemetry_files":
        return _Span(len(_old_files(cutoff)), None, None)
    tg = _target(policy)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*), MIN(t.{tg.key}), MAX(t.{tg.key}) FROM {tg.table} t "
            f"WHERE {tg.predicate}",
            [_param(cutoff)],
        )
        return _Span(*cur.fetchone())


def _count(policy: Policy, cutoff: dt.datetime) -> int:
    return _eligible_span(policy, cutoff).count


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


def default_batch_size() -> int:
    return settings.RETENTION_BATCH_SIZE or (20000 if connection.vendor == "postgresql" else 2000)


def _busy() -> bool:
    """Whether students (or anything else) are using the database: another client connection
    is running a statement or ran one within the last second. The purge then goes gently:
    small batches with a pause after each, so its WAL never piles up in front of a save's
    commit. Unknown on SQLite, where every batch is already small."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name <> %s "
            "AND (state <> 'idle' OR state_change > clock_timestamp() - interval '1 second')",
            [LOCK_APPLICATION_NAME],
        )
        return cur.fetchone()[0] >= settings.RETENTION_BUSY_CLIENTS


def _from(key: str, after, span: _Span) -> tuple[str, object]:
    """The lower bound of a batch on ``key``: past ``after``, or from the first eligible key
    when ``after`` is None (the first batch)."""
    return (f"{key} >= %s", span.first) if after is None else (f"{key} > %s", after)


def _batch_end(tg: _Target, after, span: _Span, batch_size: int):
    """The key ``batch_size`` keys on from ``after``, capped at the last eligible key: an
    index-only walk of the primary key. A batch is a run of consecutive keys, whatever their
    eligibility, so no batch rescans what earlier batches deleted and a run costs the same per
    row on a journal of any size."""
    lower, bound = _from(tg.key, after, span)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT {tg.key} FROM {tg.table} WHERE {lower} AND {tg.key} <= %s "
            f"ORDER BY {tg.key} LIMIT 1 OFFSET %s",
            [bound, span.last, batch_size - 1],
        )
        row = cur.fetchone()
    return row[0] if row else span.last


def _delete_batch(tg: _Target, cutoff: dt.datetime, after, upto, span: _Span) -> int:
    """Delete the eligible rows with keys after ``after`` up to ``upto`` in one statement, in
    its own short transaction (the walk sets a lock timeout on PostgreSQL, so a purge never
    queues behind exam traffic)."""
    lower, bound = _from(f"t.{tg.key}", after, span)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"DELETE FROM {tg.table} AS t WHERE {lower} AND t.{tg.key} <= %s AND {tg.predicate}",
            [bound, upto, _param(cutoff)],
        )
        return cur.rowcount


def _purge_table(
    p: Policy,
    cutoff: dt.datetime,
    batch_size: int,
    deadline: float,
    result: PolicyResult,
    progress: Callable[[str, int, int], None] | None,
    lock_timeout_ms: int,
) -> bool:
    """Walk the eligible key range batch by batch; False when the budget ran out first."""
    span = _eligible_span(p, cutoff)
    result.eligible_before = span.count
    if not span.count:
        return True
    tg = _target(p)
    after = None
    busy, next_busy_check = False, 0.0
    with _batch_settings(lock_timeout_ms):
        while after != span.last:
            if time.monotonic() > deadline:
                return False
            if time.monotonic() >= next_busy_check:
                busy = _busy()
                next_busy_check = time.monotonic() + 0.25
            size = min(batch_size, settings.RETENTION_BUSY_BATCH_SIZE) if busy else batch_size
            t_batch = time.monotonic()
            upto = _batch_end(tg, after, span, size)
            result.deleted += _delete_batch(tg, cutoff, after, upto, span)
            result.batches += 1
            after = upto
            if progress:
                progress(p.name, result.deleted, result.eligible_before)
            if after == span.last:
                break
            # Yield to exam traffic: while the database is busy, or after a slow batch, rest
            # at least as long as the batch took (so the purge takes at most half the time).
            took = time.monotonic() - t_batch
            if settings.RETENTION_PAUSE_SECONDS or busy or took > 0.5:
                time.sleep(max(settings.RETENTION_PAUSE_SECONDS, min(took, 2)))
    return True


@contextmanager
def _batch_settings(lock_timeout_ms: int):
    """PostgreSQL settings for the walk, set once for it rather than once per batch.

    - lock_timeout: a batch gives up on a lock it cannot take in time, so a purge never
      queues behind exam traffic.
    - no hash or merge joins: a batch touches ``batch_size`` rows, so checking each against
      its session by primary key costs O(batch); a hash join would scan every session in the
      database once per batch, a cost that grows with every exam ever held.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cur:
        cur.execute(f"SET lock_timeout = '{int(lock_timeout_ms)}ms'")
        cur.execute("SET enable_hashjoin = off")
        cur.execute("SET enable_mergejoin = off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cur:
                cur.execute("RESET lock_timeout")
                cur.execute("RESET enable_hashjoin")
                cur.execute("RESET enable_mergejoin")
        except DatabaseError:  # the connection is gone; don't hide why
            pass


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
    lock_timeout_ms: int | None = None,
) -> RunReport:
    """Purge (or with ``dry_run`` count) what the policies say, once across all hosts.
    ``lock_timeout_ms`` bounds every lock wait of a batch and of the VACUUM after (default:
    the RETENTION_LOCK_TIMEOUT_MS setting)."""
    now = now or timezone.now()
    if lock_timeout_ms is None:
        lock_timeout_ms = settings.RETENTION_LOCK_TIMEOUT_MS
    chosen = policies(policy_file)
    if only:
        unknown = set(only) - {p.name for p in chosen}
        if unknown:
            raise InvalidInput(f"unknown policy {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(p.name for p in chosen)}")  # fmt: skip
        chosen = [p for p in chosen if p.name in only]
    batch_size = batch_size or default_batch_size()
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
        with job_lock(LOCK):
            # Holding the lock, any run still recorded as running is dead: say so for good.
            RetentionRun.objects.filter(outcome="running").update(
                outcome=ABANDONED,
                error="its process ended without recording an outcome (killed?)",
            )
            # The policies it covers are recorded up front, so a run killed half-way still
            # shows against each of them in `retention status`.
            record = RetentionRun.objects.create(
                host=socket.gethostname(), dry_run=False, policies={p.name: {} for p in chosen}
            )
            report.run_id = record.id
            deadline = time.monotonic() + (max_seconds or float("inf"))
            try:
                for p in chosen:
                    result = PolicyResult(p.name)
                    report.policies.append(result)
                    t0 = time.monotonic()
                    cutoff = p.cutoff(now)
                    if p.kind == "telemetry_files":
                        result.eligible_before = _count(p, cutoff)
                        finished = _purge_files(cutoff, result, deadline)
                    else:
                        finished = _purge_table(
                            p, cutoff, batch_size, deadline, result, progress, lock_timeout_ms
                        )
                    # The cut-off is fixed for the run and nothing becomes eligible behind it
                    # (a session scored before the cut-off takes no more saves): a finished
                    # walk leaves nothing, a stopped one what was eligible less what went.
                    result.remaining = (
                        0 if finished else max(result.eligible_before - result.deleted, 0)
                    )
                    result.seconds = round(time.monotonic() - t0, 3)
                    if not finished:
                        report.outcome = "budget"
                        break
                if vacuum and report.outcome in {"ok", "budget"}:
                    report.vacuumed = _vacuum(chosen, report, actor, lock_timeout_ms)
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


def _vacuum(
    chosen: list[Policy], report: RunReport, actor: str | None, lock_timeout_ms: int
) -> list[str]:
    """The purged tables through the one VACUUM (``backend.ops.vacuum``): on PostgreSQL
    VACUUM (ANALYZE) under the purge's lock timeout, on SQLite ANALYZE only (a whole-file
    VACUUM locks every save out); each table audited as `opsctl vacuum` does."""
    from backend.ops.vacuum import vacuum

    tables = []
    for p, r in zip(chosen, report.policies, strict=False):
        if p.kind != "telemetry_files" and r.deleted:
            tables.append(_target(p).table)
    if not tables:
        return []
    connection.ensure_connection()
    results = vacuum(
        connection.connection, connection.vendor, tables, analyze=True,
        lock_timeout_ms=lock_timeout_ms, file_vacuum=False,
    )  # fmt: skip
    for r in results:
        details = asdict(r)
        details.pop("audit", None)
        audit.record("vacuum", target=r.table, actor=actor, details=details)
    return [r.table for r in results]


def status(policy_file: str | None = None, now: dt.datetime | None = None) -> list[PolicyStatus]:
    now = now or timezone.now()
    last_runs = list(RetentionRun.objects.filter(dry_run=False).order_by("-started_at")[:50])
    overdue_after = dt.timedelta(hours=settings.RETENTION_OVERDUE_HOURS)
    out = []
    newest_running = True
    for r in last_runs:  # newest first: only the newest running run can still be alive
        if r.outcome == "running":
            r.outcome = outcome_now(r.outcome, LOCK) if newest_running else ABANDONED
            newest_running = False
    for p in policies(policy_file):
        # A run that died before its policies were recorded covers every policy.
        run = next((r for r in last_runs if p.name in (r.policies or {}) or not r.policies), None)
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
                bool(run and run.outcome in FAILED_OUTCOMES),
            )
        )
    return out


def pid_host() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
