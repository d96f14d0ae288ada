"""Feature flags: read on the hot path through a short per-process cache, changed only through
audited change sets, rolled back change set by change set.

A flag's value is ``{"enabled": bool, "percent": 0..100}``. The percentage is a per-student
rollout: a student is in when a stable hash of (flag, student id) falls under it, so the
same student always gets the same answer. A check with no student sees the flag on when it
is enabled with any percentage above 0.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.ops import audit
from backend.ops.errors import InvalidInput, OpsError, Unavailable
from backend.ops.flag_registry import KNOWN_FLAGS
from backend.ops.models import AuditEvent, FeatureFlag, FlagUsage, ScheduledFlagChange

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: dict = {"until": 0.0, "flags": {}}
_warned_unknown: set[str] = set()


class FlagError(InvalidInput):
    """A flag operation a user asked for cannot be done (unknown key, bad value, no reason)."""


class FlagsUnreadable(Unavailable):
    """The flag table cannot be read, so no one can say whether a flag is on."""


@dataclass(frozen=True)
class FlagState:
    key: str
    enabled: bool
    percent: int
    description: str
    owner: str
    updated_at: dt.datetime | None

    @property
    def value(self) -> dict:
        return {"enabled": self.enabled, "percent": self.percent}


@dataclass(frozen=True)
class FlagEvent:
    id: int
    at: dt.datetime
    actor: str
    action: str
    key: str
    old_value: dict | None
    new_value: dict | None
    reason: str
    change_set: str


@dataclass
class RollbackStep:
    key: str
    current: dict | None
    target: dict | None
    undoes_change_set: str
    undoes_event: int


@dataclass
class RollbackPlan:
    change_sets: list[str]
    steps: list[RollbackStep] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps


def _ttl() -> float:
    return float(getattr(settings, "FLAGS_CACHE_SECONDS", 5.0))


# After a failed read, flags count as unreadable for this long before the next attempt, so
# a database outage costs each request no extra query and the log one line, not one a call.
_RETRY_AFTER_FAILURE = 1.0


class _Unreadable(Exception):
    pass


def _load() -> dict[str, tuple[bool, int]]:
    now = time.monotonic()
    if _cache["until"] > now:
        if _cache.get("error"):
            raise _Unreadable(_cache["error"])
        return _cache["flags"]
    # One query for every flag per TTL, whatever the number of keys checked.
    try:
        flags = {
            k: (e, p)
            for k, e, p in FeatureFlag.objects.values_list("key", "enabled", "rollout_percent")
        }
    except Exception as exc:
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with _lock:
            first = not _cache.get("error")
            _cache["error"], _cache["until"] = error, now + min(_ttl(), _RETRY_AFTER_FAILURE)
        if first:
            log.warning("feature flags unreadable (%s): treating every flag as off", error)
        raise _Unreadable(error) from exc
    with _lock:
        if _cache.get("error"):
            log.warning("feature flags readable again")
        _cache["flags"], _cache["until"], _cache["error"] = flags, now + _ttl(), ""
    return flags


def clear_cache() -> None:
    with _lock:
        _cache["until"] = 0.0
        _cache["error"] = ""


def bucket(key: str, student_id: int) -> int:
    """0..99, stable across processes and hosts (Python's hash() is randomised)."""
    digest = hashlib.sha256(f"{key}:{student_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def is_enabled(key: str, student: int | None = None) -> bool:
    """Whether ``key`` is on (for ``student``, a Student or its id). Never raises: an unknown
    key, or a database that cannot be read, is off."""
    try:
        flags = _load()
    except _Unreadable:  # the hot path must not fail because flags are unreadable
        return False
    result = _decide(flags, key, student)
    _count(key, result)
    return result


def require_state(key: str) -> bool:
    """Whether ``key`` is on, for a job that must not mistake "unreadable" for "off":
    ``FlagsUnreadable`` when the flag table cannot be read."""
    try:
        flags = _load()
    except _Unreadable as exc:
        raise FlagsUnreadable(f"cannot read feature flag {key!r}: {exc}") from None
    result = _decide(flags, key, None)
    _count(key, result)
    return result


# --- Evaluation counts -----------------------------------------------------------------------
# Each process counts its evaluations in memory (a dict increment under a lock: no query per
# evaluation) and adds them to FlagUsage, one row per (flag, result, UTC day), every
# FLAGS_USAGE_FLUSH_SECONDS from a background thread, and once more at exit. A process killed
# outright loses at most one interval of counts; a flush that fails keeps its counts for the
# next one.

_usage_lock = threading.Lock()
_usage: Counter = Counter()  # (key, result) -> evaluations not yet flushed
_usage_seen: dict[str, float] = {}  # key -> time.time() of its last evaluation
_flusher: dict = {"pid": None}


def _flush_interval() -> float:
    return float(getattr(settings, "FLAGS_USAGE_FLUSH_SECONDS", 30.0))


def _count(key: str, result: bool) -> None:
    if _flusher["pid"] != os.getpid():  # first evaluation in this process (or after a fork)
        _start_flusher()
    with _usage_lock:
        _usage[(key, result)] += 1
        _usage_seen[key] = time.time()


def _start_flusher() -> None:
    with _usage_lock:
        if _flusher["pid"] == os.getpid():
            return
        if _flusher["pid"] is not None:  # a forked child: the parent flushes its own counts
            _usage.clear()
            _usage_seen.clear()
        _flusher["pid"] = os.getpid()
    interval = _flush_interval()
    if interval <= 0:  # counting off; flush_usage() still writes what was counted
        return

    def loop() -> None:
        from django.db import connection

        while True:
            time.sleep(interval)
            try:
                flush_usage()
            except Exception as exc:  # logged in flush_usage; the thread must live on
                log.debug("flag usage flush failed: %s", exc)
            finally:
                connection.close()

    threading.Thread(target=loop, name="flag-usage-flush", daemon=True).start()
    atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    # The process is ending: when the database cannot take the counts, nothing else can (and
    # logging may already be shut down, so nothing is logged).
    with contextlib.suppress(Exception):
        flush_usage(quiet=True)


def flush_usage(now: dt.datetime | None = None, quiet: bool = False) -> int:
    """Add this process's evaluation counts to FlagUsage (one UPDATE, or an INSERT the first
    time, per flag and result); returns the number of evaluations written."""
    from django.db import IntegrityError
    from django.db.models import F
    from django.db.models.functions import Greatest

    with _usage_lock:
        pending, seen = dict(_usage), dict(_usage_seen)
        _usage.clear()
        _usage_seen.clear()
    if not pending:
        return 0
    now = now or timezone.now()
    day = now.astimezone(dt.UTC).date()
    written = 0
    try:
        for (key, result), n in sorted(pending.items()):
            last = dt.datetime.fromtimestamp(seen.get(key, now.timestamp()), dt.UTC)
            rows = FlagUsage.objects.filter(key=key, result=result, day=day)
            bump = {"count": F("count") + n, "last_seen_at": Greatest("last_seen_at", last)}
            if rows.update(**bump):
                pending[(key, result)] = 0
                written += n
                continue
            try:
                with transaction.atomic():
                    FlagUsage.objects.create(
                        key=key, result=result, day=day, count=n, last_seen_at=last
                    )
            except IntegrityError:  # another process inserted the row first
                rows.update(**bump)
            pending[(key, result)] = 0
            written += n
    except Exception as exc:
        with _usage_lock:  # keep what was not written for the next flush
            _usage.update({k: n for k, n in pending.items() if n})
            for key, t in seen.items():
                _usage_seen[key] = max(t, _usage_seen.get(key, 0.0))
        if not quiet:
            log.warning("flag evaluation counts not written (%s): kept for the next flush", exc)
        raise
    return written


@dataclass(frozen=True)
class FlagUsageSummary:
    key: str
    on: int
    off: int
    last_seen_at: dt.datetime | None
    since: dt.date  # the first day counted


def usage(days: int = 7, now: dt.datetime | None = None) -> dict[str, FlagUsageSummary]:
    """Evaluations per flag over the last ``days`` UTC days (today included), by result,
    with the last time each was evaluated (as of the last flush)."""
    from django.db.models import Max, Sum

    now = now or timezone.now()
    since = now.astimezone(dt.UTC).date() - dt.timedelta(days=days - 1)
    out: dict[str, dict] = {}
    rows = (
        FlagUsage.objects.filter(day__gte=since)
        .values("key", "result")
        .annotate(n=Sum("count"), last=Max("last_seen_at"))
    )
    for r in rows:
        entry = out.setdefault(r["key"], {"on": 0, "off": 0, "last": None})
        entry["on" if r["result"] else "off"] += r["n"] or 0
        if entry["last"] is None or (r["last"] and r["last"] > entry["last"]):
            entry["last"] = r["last"]
    return {
        k: FlagUsageSummary(k, v["on"], v["off"], v["last"], since) for k, v in sorted(out.items())
    }


def _decide(flags: dict[str, tuple[bool, int]], key: str, student) -> bool:
    state = flags.get(key)
    if state is None and key in KNOWN_FLAGS:
        # A known kill switch without its row (a restored or freshly flushed database) keeps
        # its default, on: losing a row must not silently switch the journal off.
        state = (True, 100)
    if state is None:
        if key not in _warned_unknown:
            _warned_unknown.add(key)
            log.warning("unknown feature flag %r: treated as off", key)
        return False
    enabled, percent = state
    if not enabled or percent <= 0:
        return False
    if percent >= 100 or student is None:
        return True
    student_id = getattr(student, "pk", student)
    return bucket(key, int(student_id)) < percent


def _state(flag: FeatureFlag) -> FlagState:
    return FlagState(
        flag.key, flag.enabled, flag.rollout_percent, flag.description, flag.owner,
        flag.updated_at,
    )  # fmt: skip


def list_flags() -> list[FlagState]:
    stored = {f.key: _state(f) for f in FeatureFlag.objects.all()}
    for key, description in KNOWN_FLAGS.items():
        stored.setdefault(key, FlagState(key, True, 100, description, "", None))
    return [stored[k] for k in sorted(stored)]


def get_flag(key: str) -> FlagState:
    flag = FeatureFlag.objects.filter(key=key).first()
    if flag is None and key in KNOWN_FLAGS:
        return FlagState(key, True, 100, KNOWN_FLAGS[key], "", None)
    if flag is None:
        known = ", ".join(FeatureFlag.objects.order_by("key").values_list("key", flat=True))
        raise FlagError(f"unknown flag {key!r}; known flags: {known or 'none'}")
    return _state(flag)


def parse_value(text: str) -> dict:
    """``on`` / ``off`` / a percentage (``25`` or ``25%``) as a flag value."""
    t = text.strip().lower()
    if t in {"on", "true", "enable", "enabled"}:
        return {"enabled": True, "percent": 100}
    if t in {"off", "false", "disable", "disabled"}:
        return {"enabled": False, "percent": 0}
    try:
        pct = int(t.rstrip("%"))
    except ValueError:
        raise FlagError(f"value must be on, off or a percentage 0-100, not {text!r}") from None
    if not 0 <= pct <= 100:
        raise FlagError(f"percentage must be between 0 and 100, not {pct}")
    return {"enabled": pct > 0, "percent": pct}


def _require_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise FlagError("a reason is required for every flag change (--reason)")
    return reason.strip()


def _apply(key: str, value: dict, *, actor, reason, change_set, action) -> FlagEvent:
    flag = FeatureFlag.objects.select_for_update().filter(key=key).first()
    if flag is None and key in KNOWN_FLAGS:
        flag = FeatureFlag.objects.create(key=key, description=KNOWN_FLAGS[key], enabled=True)
    if flag is None:
        raise FlagError(f"unknown flag {key!r}")
    old = {"enabled": flag.enabled, "percent": flag.rollout_percent}
    flag.enabled, flag.rollout_percent = value["enabled"], value["percent"]
    flag.updated_at = timezone.now()
    flag.save(update_fields=["enabled", "rollout_percent", "updated_at"])
    ev = audit.record(
        action, target=f"flag:{key}", actor=actor, reason=reason, old_value=old,
        new_value=dict(value), change_set=change_set,
    )  # fmt: skip
    return _event(ev)


def set_flag(
    key: str, value: str | dict, reason: str, actor: str | None = None, change_set: str = ""
) -> FlagEvent:
    """Change one flag; recorded as an audit event in ``change_set`` (a new one if empty)."""
    reason = _require_reason(reason)
    audit.check_actor(actor)
    new = parse_value(value) if isinstance(value, str) else value
    with transaction.atomic():
        ev = _apply(
            key, new, actor=actor, reason=reason,
            change_set=change_set or audit.new_change_set(), action="flag.set",
        )  # fmt: skip
    clear_cache()
    return ev


def _event(ev: AuditEvent) -> FlagEvent:
    return FlagEvent(
        ev.id, ev.created_at, ev.actor, ev.action, ev.target.removeprefix("flag:"),
        ev.old_value, ev.new_value, ev.reason, ev.change_set,
    )  # fmt: skip


def history(key: str | None = None, since: dt.datetime | None = None) -> list[FlagEvent]:
    """Flag changes, newest first."""
    qs = AuditEvent.objects.filter(action__in=["flag.set", "flag.rollback"])
    if key:
        qs = qs.filter(target=f"flag:{key}")
    if since:
        qs = qs.filter(created_at__gte=since)
    return [_event(e) for e in qs.order_by("-created_at", "-id")]


def rollback_plan(
    last: int | None = None, to: str | None = None, since: dt.datetime | None = None
) -> RollbackPlan:
    """Which change sets to revert, newest first, and each flag's value afterwards.

    ``last``: the newest N change sets. ``to``: every change set after CHANGE_ID (the state
    right after CHANGE_ID is restored). ``since``: every change set made at or after TIME.
    """
    if sum(x is not None for x in (last, to, since)) != 1:
        raise FlagError("say what to roll back: exactly one of --last N, --to CHANGE_ID, --since")
    events = history()
    order: list[str] = []
    for e in events:
        if e.change_set and e.change_set not in order:
            order.append(e.change_set)
    if last is not None:
        if last < 1:
            raise FlagError("--last must be at least 1")
        chosen = order[:last]
    elif to is not None:
        matches = [cs for cs in order if cs.startswith(to)]
        if len(matches) != 1:
            raise FlagError(f"no single change set starts with {to!r}")
        chosen = order[: order.index(matches[0])]
    else:
        chosen = [cs for cs in order if any(e.change_set == cs and e.at >= since for e in events)]
    plan = RollbackPlan(change_sets=chosen)
    current = {f.key: f.value for f in list_flags()}
    for e in events:  # newest first: each step undoes one event
        if e.change_set in chosen:
            plan.steps.append(
                RollbackStep(e.key, current.get(e.key), e.old_value, e.change_set, e.id)
            )
            current[e.key] = e.old_value
    return plan


def rollback(plan: RollbackPlan, reason: str, actor: str | None = None) -> tuple[str, list]:
    """Apply a plan as one new change set (so a rollback can itself be rolled back)."""
    reason = _require_reason(reason)
    audit.check_actor(actor)
    if plan.empty:
        raise FlagError("nothing to roll back")
    final: dict[str, dict] = {}
    for step in plan.steps:  # newest first, so the last step per key is the oldest value
        final[step.key] = step.target
    change_set = audit.new_change_set()
    events = []
    with transaction.atomic():
        for key, target in final.items():
            if target is None:
                continue
            events.append(
                _apply(
                    key,
                    target,
                    actor=actor,
                    change_set=change_set,
                    action="flag.rollback",
                    reason=f"{reason} (rollback of {', '.join(c[:8] for c in plan.change_sets)})",
                )
            )
    clear_cache()
    return change_set, events


# --- Scheduled changes -------------------------------------------------------------------------

APPLY_DUE_LOCK = "flags-apply-due"


@dataclass(frozen=True)
class ScheduledChange:
    id: int
    key: str
    value: dict
    apply_at: dt.datetime
    reason: str
    actor: str
    created_at: dt.datetime
    status: str  # pending, applied, failed, cancelled
    applied_at: dt.datetime | None
    change_set: str
    result: str
    cancelled_at: dt.datetime | None
    cancelled_by: str
    cancel_reason: str


@dataclass
class ApplyDueReport:
    """What one `flags apply-due` run did: ``lock_held`` when another process was running it."""

    lock_held: bool = False
    applied: list[ScheduledChange] = field(default_factory=list)
    failed: list[ScheduledChange] = field(default_factory=list)


def _scheduled(row: ScheduledFlagChange) -> ScheduledChange:
    return ScheduledChange(
        row.id, row.key, row.value, row.apply_at, row.reason, row.actor, row.created_at,
        row.status, row.applied_at, row.change_set, row.result, row.cancelled_at,
        row.cancelled_by, row.cancel_reason,
    )  # fmt: skip


def parse_apply_at(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """When a scheduled change applies: ``in 30m`` / ``+30m`` (a duration from now) or an
    ISO 8601 time (UTC when it names no zone)."""
    from backend.durations import parse_duration

    now = now or timezone.now()
    t = (text or "").strip()
    rel = t.removeprefix("+").removeprefix("in ").strip()
    if rel != t:
        try:
            return now + parse_duration(rel)
        except ValueError as exc:
            raise FlagError(f"--at: {exc}") from None
    try:
        at = dt.datetime.fromisoformat(t)
    except ValueError:
        raise FlagError(
            f"--at: not a time: {text!r} (use an ISO time like 2026-12-01T09:00Z, or +30m)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def schedule(
    key: str, value: str | dict, apply_at: dt.datetime, reason: str, actor: str | None = None,
    now: dt.datetime | None = None,
) -> ScheduledChange:  # fmt: skip
    """Ask for ``key`` to take ``value`` at ``apply_at`` (in the future); audited."""
    reason = _require_reason(reason)
    actor = audit.check_actor(actor) or audit.default_actor()
    new = parse_value(value) if isinstance(value, str) else value
    get_flag(key)  # an unknown key is refused now, not at exam start
    now = now or timezone.now()
    if apply_at <= now:
        raise FlagError(
            f"{apply_at:%Y-%m-%d %H:%M:%S %Z} is not in the future: use `opsctl flags set` to "
            f"change a flag now"
        )
    with transaction.atomic():
        row = ScheduledFlagChange.objects.create(
            key=key, value=new, apply_at=apply_at, reason=reason, actor=actor[: audit.ACTOR_MAX]
        )
        audit.record(
            "flag.schedule", target=f"flag:{key}", actor=actor, reason=reason, new_value=new,
            details={"scheduled_id": row.id, "apply_at": apply_at.isoformat()},
        )  # fmt: skip
    return _scheduled(row)


def scheduled(include_done: bool = False, limit: int = 100) -> list[ScheduledChange]:
    """Pending scheduled changes, soonest first; with ``include_done`` also the applied,
    failed and cancelled ones (newest first after the pending)."""
    pending = ScheduledFlagChange.objects.filter(status=ScheduledFlagChange.PENDING)
    out = [_scheduled(r) for r in pending.order_by("apply_at", "id")]
    if include_done:
        done = ScheduledFlagChange.objects.exclude(status=ScheduledFlagChange.PENDING)
        out += [_scheduled(r) for r in done.order_by("-apply_at", "-id")[:limit]]
    return out


def cancel_scheduled(change_id: int, reason: str, actor: str | None = None) -> ScheduledChange:
    """Cancel a pending scheduled change; audited. One that already applied is refused."""
    reason = _require_reason(reason)
    actor = audit.check_actor(actor) or audit.default_actor()
    with transaction.atomic():
        row = ScheduledFlagChange.objects.select_for_update().filter(id=change_id).first()
        if row is None:
            raise FlagError(f"no scheduled change #{change_id}")
        if row.status != ScheduledFlagChange.PENDING:
            raise FlagError(f"scheduled change #{change_id} is already {row.status}")
        row.status = ScheduledFlagChange.CANCELLED
        row.cancelled_at, row.cancelled_by, row.cancel_reason = timezone.now(), actor, reason
        row.save(update_fields=["status", "cancelled_at", "cancelled_by", "cancel_reason"])
        audit.record(
            "flag.schedule.cancel", target=f"flag:{row.key}", actor=actor, reason=reason,
            new_value=row.value, details={"scheduled_id": row.id,
                                          "apply_at": row.apply_at.isoformat()},
        )  # fmt: skip
    return _scheduled(row)


def apply_due(now: dt.datetime | None = None) -> ApplyDueReport:
    """Apply every pending scheduled change whose time has come, oldest first, each through
    ``set_flag`` (audited, its own change set, actor = who scheduled it). Safe to run on every
    host at once: the job lock lets one run at a time, and each change is claimed by a
    conditional UPDATE in the same transaction as the flag change, so it applies exactly once
    even without the lock."""
    from backend.ops.locks import LockHeld, job_lock

    try:
        with job_lock(APPLY_DUE_LOCK):
            return apply_due_unlocked(now)
    except LockHeld:
        return ApplyDueReport(lock_held=True)


def apply_due_unlocked(now: dt.datetime | None = None) -> ApplyDueReport:
    """``apply_due`` without the job lock (the exactly-once claim alone)."""
    now = now or timezone.now()
    report = ApplyDueReport()
    due = ScheduledFlagChange.objects.filter(
        status=ScheduledFlagChange.PENDING, apply_at__lte=now
    ).order_by("apply_at", "id")
    for row_id in list(due.values_list("id", flat=True)):
        pending = ScheduledFlagChange.objects.filter(id=row_id, status=ScheduledFlagChange.PENDING)
        try:
            with transaction.atomic():
                # The claim: only one transaction turns this row from pending to applied (on
                # PostgreSQL a second UPDATE waits for the first to commit, then matches nothing).
                if not pending.update(
                    status=ScheduledFlagChange.APPLIED, applied_at=timezone.now()
                ):
                    continue
                row = ScheduledFlagChange.objects.get(id=row_id)
                ev = set_flag(
                    row.key, row.value, f"{row.reason} (scheduled change #{row.id})",
                    actor=row.actor,
                )  # fmt: skip
                row.change_set = ev.change_set
                row.result = f"{_show_value(ev.old_value)} -> {_show_value(ev.new_value)}"
                row.save(update_fields=["change_set", "result"])
            report.applied.append(_scheduled(row))
        except OpsError as exc:
            # Nothing of it applied (the transaction rolled back); it failed, it is not retried.
            if pending.update(
                status=ScheduledFlagChange.FAILED, applied_at=timezone.now(), result=exc.message
            ):
                failed = ScheduledFlagChange.objects.get(id=row_id)
                audit.record(
                    "flag.schedule.failed", target=f"flag:{failed.key}", actor=failed.actor,
                    reason=exc.message, details={"scheduled_id": row_id},
                )  # fmt: skip
                report.failed.append(_scheduled(failed))
    return report


def _show_value(value: dict | None) -> str:
    # The same words as opsctl.render.flag_value (backend never imports opsctl).
    if value is None:
        return "-"
    if not value.get("enabled"):
        return "off"
    return "on" if value.get("percent", 100) >= 100 else f"{value['percent']}%"


# --- Stale flags -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleFlag:
    """A flag unchanged for ``days`` and evaluated to one result all that time (or never)."""

    key: str
    value: dict
    unchanged_since: dt.datetime | None  # None: never changed since it was created
    on: int  # evaluations in the window
    off: int
    last_seen_at: dt.datetime | None
    verdict: str  # "always on", "always off", "never evaluated"


def stale(days: int, now: dt.datetime | None = None) -> list[StaleFlag]:
    """Flags not changed for ``days`` days whose every evaluation in those days (counted per
    UTC day, see FlagUsage) had one result, or which nobody evaluated. A flag whose counts
    do not reach back ``days`` days (counting started later) is not reported: nothing is known
    about the days before."""
    if days < 1:
        raise FlagError("--days must be at least 1")
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=days)
    first_day = FlagUsage.objects.order_by("day").values_list("day", flat=True).first()
    window = usage(days, now)
    changed = set(
        AuditEvent.objects.filter(
            action__in=["flag.set", "flag.rollback"], created_at__gt=cutoff
        ).values_list("target", flat=True)
    )
    out = []
    for f in list_flags():
        if (f.updated_at is not None and f.updated_at > cutoff) or f"flag:{f.key}" in changed:
            continue
        u = window.get(f.key)
        on, off = (u.on, u.off) if u else (0, 0)
        if first_day is None or first_day > window_start(days, now):
            continue  # counting did not cover the whole window
        if on and off:
            continue
        verdict = "always on" if on else "always off" if off else "never evaluated"
        out.append(StaleFlag(f.key, f.value, f.updated_at, on, off,
                             u.last_seen_at if u else None, verdict))  # fmt: skip
    return out


def window_start(days: int, now: dt.datetime) -> dt.date:
    """The first UTC day of a ``days``-day window ending today."""
    return now.astimezone(dt.UTC).date() - dt.timedelta(days=days - 1)
