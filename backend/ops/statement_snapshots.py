"""pg_stat_statements over time: snapshots in the app's database, windows and histories.

``take_snapshot`` is the one service function behind ``opsctl queries snapshot`` (a scheduled
job, on every host at once: a job lock lets one take it, and a snapshot younger than
``min_interval`` counts as this run's); it also drops snapshots older than ``keep``.
``window`` subtracts the snapshot at or just before the window's start from the live view
(``queries top --source pg --since``); ``history`` gives one statement's calls and mean time
per interval between snapshots (``queries history``). The maths is ``statement_stats``.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from collections import defaultdict
from dataclasses import dataclass, field

from backend.ops.errors import InvalidInput, Unavailable
from backend.ops.fingerprint import fingerprint
from backend.ops.statement_stats import (
    HOW_TO_ENABLE,
    NEEDS_POSTGRES,
    Counters,
    Interval,
    Reading,
    combine,
    deltas,
    pick_start,
    series,
    view_was_reset,
)

LOCK_NAME = "statement-snapshot"
DEFAULT_KEEP = dt.timedelta(days=14)
DEFAULT_MIN_INTERVAL = dt.timedelta(minutes=1)
NO_SNAPSHOTS = (
    "no pg_stat_statements snapshot is stored yet: run `opsctl queries snapshot` (from cron "
    "or a systemd timer every 5 minutes, see the README), or leave out --since for the totals "
    "since the statistics' last reset"
)
# Exit code for "no data" (the queries commands' convention).
NO_DATA_EXIT = 3


class NoSnapshots(Unavailable):
    exit_code = NO_DATA_EXIT


@dataclass
class SnapshotReport:
    outcome: str  # ok | skipped (a fresh one exists) | locked (another host is taking it)
    taken_at: dt.datetime | None
    statements: int
    new_texts: int
    purged_snapshots: int
    keep_days: float
    detail: str = ""


@dataclass
class WindowRow:
    fingerprint: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    reset: bool  # counters reset within the window: figures are since that reset
    queryids: list[int]
    example: str


@dataclass
class Window:
    requested_from: dt.datetime
    start: dt.datetime  # the snapshot subtracted from
    end: dt.datetime  # the live view, now
    shorter: bool  # no snapshot as old as requested: the window starts later
    stats_reset_at: dt.datetime | None  # the whole view was reset inside the window, then
    statements: list[WindowRow] = field(default_factory=list)


@dataclass
class History:
    fingerprint: str
    queryids: list[int]
    query: str
    intervals: list[Interval]


def require_postgres() -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        raise InvalidInput(NEEDS_POSTGRES)


def read_live() -> tuple[Reading, dict[int, str]]:
    """pg_stat_statements of this database now, per queryid (summed over users and nesting
    levels), with each statement's text."""
    from django.db import DatabaseError, connection

    require_postgres()
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
        if cur.fetchone() is None:
            raise Unavailable(HOW_TO_ENABLE)
        try:
            cur.execute(
                "SELECT queryid, sum(calls), sum(total_exec_time), sum(rows), "
                "sum(shared_blks_hit), sum(shared_blks_read), min(query) FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND queryid IS NOT NULL GROUP BY queryid"
            )
            rows = cur.fetchall()
        except DatabaseError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unavailable(f"{HOW_TO_ENABLE} ({first})") from None
        cur.execute("SELECT clock_timestamp(), current_setting('server_version_num')::int")
        now, version = cur.fetchone()
        stats_reset = None
        if version >= 140000:  # pg_stat_statements_info is PostgreSQL 14+
            cur.execute("SELECT stats_reset FROM pg_stat_statements_info")
            stats_reset = cur.fetchone()[0]
    counters = {
        int(q): Counters(int(c), float(t), int(r), int(h or 0), int(rd or 0))
        for q, c, t, r, h, rd, _ in rows
    }
    texts = {int(q): text for q, *_, text in rows}
    return Reading(now, stats_reset, counters), texts


def take_snapshot(
    keep: dt.timedelta = DEFAULT_KEEP,
    min_interval: dt.timedelta = DEFAULT_MIN_INTERVAL,
    host: str | None = None,
) -> SnapshotReport:
    """Store pg_stat_statements now (once across hosts) and drop snapshots older than
    ``keep``."""
    from django.db import transaction

    from backend.ops.locks import LockHeld, job_lock
    from backend.ops.models import StatementCounters, StatementSnapshot, StatementText

    require_postgres()
    keep_days = keep.total_seconds() / 86400
    try:
        with job_lock(LOCK_NAME):
            reading, texts = read_live()
            newest = StatementSnapshot.objects.order_by("-taken_at").first()
            if newest is not None and reading.taken_at - newest.taken_at < min_interval:
                return SnapshotReport(
                    "skipped", newest.taken_at, newest.statements, 0, 0, keep_days,
                    f"a snapshot was taken at {newest.taken_at.isoformat()} by "
                    f"{newest.host or 'another host'}, less than {min_interval} ago",
                )  # fmt: skip
            now = reading.taken_at
            with transaction.atomic():
                snap = StatementSnapshot.objects.create(
                    taken_at=reading.taken_at,
                    host=host if host is not None else socket.gethostname(),
                    stats_reset=reading.stats_reset,
                    statements=len(reading.counters),
                )
                rows = [
                    StatementCounters(
                        snapshot=snap,
                        queryid=q,
                        calls=c.calls,
                        total_exec_ms=c.total_ms,
                        rows=c.rows,
                        shared_blks_hit=c.shared_blks_hit,
                        shared_blks_read=c.shared_blks_read,
                    )
                    for q, c in reading.counters.items()
                ]
                StatementCounters.objects.bulk_create(rows, batch_size=1000)
                known = set(
                    StatementText.objects.filter(queryid__in=list(texts)).values_list(
                        "queryid", flat=True
                    )
                )
                new = [
                    StatementText(
                        queryid=q, fingerprint=fingerprint(t)[0], query=t, first_seen_at=now
                    )
                    for q, t in texts.items()
                    if q not in known
                ]
                StatementText.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
            purged = purge(reading.taken_at - keep)
            return SnapshotReport(
                "ok", reading.taken_at, len(reading.counters), len(new), purged, keep_days
            )
    except LockHeld as exc:
        return SnapshotReport("locked", None, 0, 0, 0, keep_days, str(exc))


def purge(before: dt.datetime) -> int:
    """Drop the snapshots taken before ``before`` and the texts no snapshot refers to."""
    from django.db import transaction

    from backend.ops.models import StatementCounters, StatementSnapshot, StatementText

    with transaction.atomic():
        old = StatementSnapshot.objects.filter(taken_at__lt=before)
        StatementCounters.objects.filter(snapshot__in=old.values("id")).delete()
        _, per_model = old.delete()
        StatementText.objects.exclude(
            queryid__in=StatementCounters.objects.values("queryid")
        ).delete()
    return per_model.get(StatementSnapshot._meta.label, 0)


def _stored(snapshot_id: int) -> dict[int, Counters]:
    from backend.ops.models import StatementCounters

    return {
        q: Counters(c, t, r, h, rd)
        for q, c, t, r, h, rd in StatementCounters.objects.filter(
            snapshot_id=snapshot_id
        ).values_list(
            "queryid", "calls", "total_exec_ms", "rows", "shared_blks_hit", "shared_blks_read"
        )
    }


ORDER = {"total": "total_ms", "mean": "mean_ms", "calls": "calls"}


def window(since: dt.datetime, by: str = "total", limit: int = 20) -> Window:
    """Per fingerprint, what ran from the snapshot at or just before ``since`` until now."""
    from backend.ops.models import StatementSnapshot

    if by not in ORDER:
        raise InvalidInput(
            f"--by {by}: between snapshots only totals are known; use total, mean or calls"
        )
    require_postgres()
    snaps = {t: (i, r) for i, t, r in
             StatementSnapshot.objects.values_list("id", "taken_at", "stats_reset")}  # fmt: skip
    start, shorter = pick_start(list(snaps), since)
    if start is None:
        raise NoSnapshots(NO_SNAPSHOTS)
    snap_id, start_reset = snaps[start]
    live, texts = read_live()
    view_reset = view_was_reset(start_reset, live.stats_reset)
    per_query = deltas(_stored(snap_id), live.counters, view_reset)
    groups: dict[str, list[int]] = defaultdict(list)
    for q in per_query:
        groups[fingerprint(texts[q])[0]].append(q)
    rows = []
    for fp, qids in groups.items():
        d = combine(per_query[q] for q in qids)
        busiest = max(qids, key=lambda q: per_query[q].total_ms)
        rows.append(WindowRow(fp, d.calls, round(d.total_ms, 3), round(d.mean_ms, 3), d.rows,
                              d.shared_blks_hit, d.shared_blks_read, d.reset, sorted(qids),
                              texts[busiest]))  # fmt: skip
    rows.sort(key=lambda r: getattr(r, ORDER[by]), reverse=True)
    return Window(since, start, live.taken_at, shorter,
                  live.stats_reset if view_reset else None, rows[:limit])  # fmt: skip


_HEX = re.compile(r"[0-9a-f]{1,16}")
_INT = re.compile(r"-?\d+")


def history(key: str, since: dt.datetime | None = None) -> History:
    """One statement (a fingerprint, or a prefix of it, or a pg_stat_statements queryid):
    calls, time and mean time between consecutive snapshots since ``since``."""
    from backend.ops.models import StatementCounters, StatementSnapshot, StatementText

    require_postgres()
    key = (key or "").strip().lower()
    texts = []
    if _HEX.fullmatch(key):
        texts = list(StatementText.objects.filter(fingerprint__startswith=key))
    if not texts and _INT.fullmatch(key) and -(2**63) <= int(key) < 2**63:
        texts = list(StatementText.objects.filter(queryid=int(key)))
    if not texts:
        raise InvalidInput(
            f"no statement {key!r} in the stored snapshots (give a fingerprint, a prefix of "
            "one, or a pg_stat_statements queryid)"
        )
    fps = sorted({t.fingerprint for t in texts})
    if len(fps) > 1:
        raise InvalidInput(f"{key!r} matches {len(fps)} fingerprints ({', '.join(fps[:5])}): "
                           "give more of it")  # fmt: skip
    qids = {t.queryid for t in texts}
    snaps = StatementSnapshot.objects.order_by("taken_at")
    if since is not None:
        start, _ = pick_start(list(snaps.values_list("taken_at", flat=True)), since)
        snaps = snaps.filter(taken_at__gte=start) if start else snaps.none()
    meta = list(snaps.values_list("id", "taken_at", "stats_reset"))
    found: dict[int, dict[int, Counters]] = defaultdict(dict)
    for sid, q, c, t, r, h, rd in StatementCounters.objects.filter(
        snapshot_id__in=[m[0] for m in meta], queryid__in=qids
    ).values_list("snapshot_id", "queryid", "calls", "total_exec_ms", "rows",
                  "shared_blks_hit", "shared_blks_read"):  # fmt: skip
        found[sid][q] = Counters(c, t, r, h, rd)
    readings = [Reading(taken, reset, found[sid]) for sid, taken, reset in meta]
    return History(fps[0], sorted(qids), texts[0].query, series(readings, qids))
