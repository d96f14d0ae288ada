"""Threshold evaluation with damping (pure: values and times in, decisions out).

A probe must stay at or over a threshold for the damping interval before an alert opens
(no alert for a one-off spike); an open alert resolves as soon as the value falls back under
the warning threshold, and changes severity after the same damping.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
RANK = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


@dataclass(frozen=True)
class Threshold:
    warn: float
    crit: float
    # True for a value that is bad when small (hours until a disk is full): warn at or under
    # ``warn``, critical at or under ``crit``; no value then means nothing to predict (OK).
    lower_is_worse: bool = False


def severity(value: float | None, threshold: Threshold) -> str:
    if value is None:
        return OK if threshold.lower_is_worse else UNKNOWN
    if threshold.lower_is_worse:
        if value <= threshold.crit:
            return CRITICAL
        if value <= threshold.warn:
            return WARNING
        return OK
    if value >= threshold.crit:
        return CRITICAL
    if value >= threshold.warn:
        return WARNING
    return OK


def smoothed_rate(
    raw: float | None,
    last_value: float | None,
    last_at: dt.datetime | None,
    value: float,
    now: dt.datetime,
    window: dt.timedelta,
) -> float | None:
    """The running sum behind ``rate``: an exponentially weighted average of the value's
    change per hour over about ``window``, started from 0 (each sample weighs by the time it
    covers, so an irregular check interval is fine). None until two readings exist."""
    if last_value is None or last_at is None or now <= last_at:
        return raw
    sample = (value - last_value) / ((now - last_at) / dt.timedelta(hours=1))
    alpha = 1 - math.exp(-(now - last_at) / window)
    raw = raw or 0.0
    return raw + alpha * (sample - raw)


def rate(raw: float | None, covered: dt.timedelta, window: dt.timedelta) -> float | None:
    """The change per hour from ``smoothed_rate``'s sum after ``covered`` of history: divided
    by the weight the history has so far, so the first minutes are a plain average instead of
    a value pulled towards 0 (or dominated by the first sample)."""
    if raw is None or covered <= dt.timedelta(0):
        return None
    return raw / (1 - math.exp(-covered / window))


def hours_until_full(
    percent: float, rate_per_hour: float | None, measured_for: dt.timedelta,
    min_history: dt.timedelta,
) -> float | None:  # fmt: skip
    """Hours until ``percent`` reaches 100 at ``rate_per_hour`` (percentage points per hour);
    None when it is not growing, or the rate has been measured for less than ``min_history``."""
    if rate_per_hour is None or rate_per_hour <= 0 or measured_for < min_history:
        return None
    return max(0.0, (100.0 - percent) / rate_per_hour)


def _perf_number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in {"", "-0"} else text


def perf_data(items: list[tuple[str, float | None, str, Threshold, float | None, float | None]]):
    """Nagios performance data: ``'label'=value[UOM];warn;crit;min;max`` per item, separated
    by spaces (the part of a check's output after ``|``). ``items``: (label, value, UOM,
    threshold, min, max); no value is ``U`` (undetermined); a lower-is-worse threshold is
    written as a range (``24:`` = alert below 24)."""
    out = []
    for label, value, uom, th, lo, hi in items:
        shown = "U" if value is None else _perf_number(value) + uom
        warn, crit = _perf_number(th.warn), _perf_number(th.crit)
        if th.lower_is_worse:
            warn, crit = warn + ":", crit + ":"
        bounds = ["" if b is None else _perf_number(b) for b in (lo, hi)]
        quoted = "'" + label.replace("'", "''") + "'"
        out.append(f"{quoted}={shown};{warn};{crit};{bounds[0]};{bounds[1]}".rstrip(";"))
    return " ".join(out)


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
