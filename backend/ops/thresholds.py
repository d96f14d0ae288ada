"""Threshold evaluation with damping (pure: values and times in, decisions out).

A probe must stay at or over a threshold for the damping interval before an alert opens
(no alert for a one-off spike); an open alert resolves as soon as the value falls back under
the warning threshold, and changes severity after the same damping.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
RANK = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


@dataclass(frozen=True)
class Threshold:
    warn: float
    crit: float


def severity(value: float | None, threshold: Threshold) -> str:
    if value is None:
        return UNKNOWN
    if value >= threshold.crit:
        return CRITICAL
    if value >= threshold.warn:
        return WARNING
    return OK


@dataclass(frozen=True)
class Memory:
    pending_severity: str = ""
    pending_since: dt.datetime | None = None
    open_severity: str = ""  # the severity of the open alert, "" when none is open


@dataclass(frozen=True)
class Decision:
    action: str  # none | pending | open | change | resolve
    severity: str
    memory: Memory


def step(memory: Memory, current: str, now: dt.datetime, damping: dt.timedelta) -> Decision:
    if current == UNKNOWN:
        return Decision("none", current, memory)
    if current == OK:
        if memory.open_severity:
            return Decision("resolve", OK, Memory())
        return Decision("none", OK, Memory())
    if memory.open_severity == current:
        return Decision("none", current, Memory(open_severity=current))
    if memory.pending_severity == current and memory.pending_since is not None:
        if now - memory.pending_since >= damping:
            action = "change" if memory.open_severity else "open"
            return Decision(action, current, Memory(open_severity=current))
        return Decision("pending", current, memory)
    pending = Memory(current, now, memory.open_severity)
    if damping <= dt.timedelta(0):
        action = "change" if memory.open_severity else "open"
        return Decision(action, current, Memory(open_severity=current))
    return Decision("pending", current, pending)


def nagios(severities: list[str]) -> int:
    """0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (critical outranks unknown: act on it)."""
    if CRITICAL in severities:
        return 2
    if WARNING in severities:
        return 1
    if UNKNOWN in severities:
        return 3
    return 0
