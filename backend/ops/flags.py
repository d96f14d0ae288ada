"""Feature flags: read on the hot path through a short per-process cache, changed only through
audited change sets, rolled back change set by change set.

A flag's value is ``{"enabled": bool, "percent": 0..100}``. The percentage is a per-student
rollout: a student is in when a stable hash of (flag, student id) falls under it, so the
same student always gets the same answer. A check with no student sees the flag on when it
is enabled with any percentage above 0.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.ops import audit
from backend.ops.errors import InvalidInput, Unavailable
from backend.ops.flag_registry import KNOWN_FLAGS
from backend.ops.models import AuditEvent, FeatureFlag

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
    return _decide(flags, key, student)


def require_state(key: str) -> bool:
    """Whether ``key`` is on, for a job that must not mistake "unreadable" for "off":
    ``FlagsUnreadable`` when the flag table cannot be read."""
    try:
        flags = _load()
    except _Unreadable as exc:
        raise FlagsUnreadable(f"cannot read feature flag {key!r}: {exc}") from None
    return _decide(flags, key, None)


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
