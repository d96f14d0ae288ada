"""The maths of pg_stat_statements over time (pure: no I/O, no Django).

pg_stat_statements keeps counters that only grow from its last reset. Two readings (a stored
snapshot and a later one, or the live view) give what happened between them by subtraction,
unless the counters were reset in between, which shows in two ways:

- the whole view was reset: ``pg_stat_statements_info.stats_reset`` moved (PostgreSQL 14+);
- one statement was reset, or evicted and seen again (``pg_stat_statements.max``): its
  counters went down.

Either way the older reading says nothing about the interval any more: what is known is the
newer reading itself, the counts since the reset, a lower bound for the interval. Such a
delta is marked ``reset`` and is never a negative number.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOW_TO_ENABLE = (
    "pg_stat_statements is not available: add it to shared_preload_libraries "
    "(ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'), restart PostgreSQL, "
    "then CREATE EXTENSION pg_stat_statements in this database (scripts/pg-setup.sh does all "
    "three on a local server)"
)
NEEDS_POSTGRES = "pg_stat_statements needs PostgreSQL; this database is SQLite"


@dataclass(frozen=True)
class Counters:
    """One statement's cumulative counters (summed over the users that ran it)."""

    calls: int
    total_ms: float
    rows: int
    shared_blks_hit: int = 0
    shared_blks_read: int = 0


@dataclass(frozen=True)
class Delta:
    calls: int
    total_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    reset: bool  # counters were reset within the interval: the figures are since the reset
    new: bool  # not in the older reading (first run, or evicted and seen again)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


def went_down(old: Counters, new: Counters) -> bool:
    return (
        new.calls < old.calls
        or new.total_ms < old.total_ms - 1e-6
        or new.rows < old.rows
        or new.shared_blks_hit < old.shared_blks_hit
        or new.shared_blks_read < old.shared_blks_read
    )


def delta(old: Counters | None, new: Counters, view_reset: bool = False) -> Delta:
    """What ``new`` adds to ``old``; ``view_reset``: the whole view was reset in between."""
    if old is None or view_reset or went_down(old, new):
        return Delta(new.calls, new.total_ms, new.rows, new.shared_blks_hit,
                     new.shared_blks_read, reset=old is not None or view_reset,
                     new=old is None)  # fmt: skip
    return Delta(new.calls - old.calls, new.total_ms - old.total_ms, new.rows - old.rows,
                 new.shared_blks_hit - old.shared_blks_hit,
                 new.shared_blks_read - old.shared_blks_read, reset=False,
                 new=False)  # fmt: skip


def view_was_reset(old_reset: dt.datetime | None, new_reset: dt.datetime | None) -> bool:
    """Whether ``pg_stat_statements_info.stats_reset`` moved between two readings (unknown,
    before PostgreSQL 14: the per-statement check still catches it)."""
    return old_reset is not None and new_reset is not None and new_reset != old_reset


def deltas(
    old: Mapping[int, Counters], new: Mapping[int, Counters], view_reset: bool = False
) -> dict[int, Delta]:
    """Per queryid, what ran between the two readings; statements with nothing new left out.
    A statement only in ``old`` was reset or evicted: nothing can be said, so it is absent."""
    out = {}
    for qid, counters in new.items():
        d = delta(old.get(qid), counters, view_reset)
        if d.calls or d.total_ms:
            out[qid] = d
    return out


def combine(items: Iterable[Delta]) -> Delta:
    """Several statements' deltas as one (the queryids behind one fingerprint)."""
    items = list(items)
    return Delta(
        sum(d.calls for d in items), sum(d.total_ms for d in items), sum(d.rows for d in items),
        sum(d.shared_blks_hit for d in items), sum(d.shared_blks_read for d in items),
        reset=any(d.reset for d in items), new=bool(items) and all(d.new for d in items),
    )  # fmt: skip


@dataclass(frozen=True)
class Reading:
    """pg_stat_statements at one moment: a stored snapshot or the live view."""

    taken_at: dt.datetime
    stats_reset: dt.datetime | None
    counters: Mapping[int, Counters]


@dataclass(frozen=True)
class Interval:
    start: dt.datetime
    end: dt.datetime
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    reset: bool


def series(readings: list[Reading], queryids: set[int]) -> list[Interval]:
    """The statements ``queryids`` between each reading and the next (oldest first): calls,
    time and mean time per interval, so a deploy or a flag flip shows as a step."""
    out = []
    ordered = sorted(readings, key=lambda r: r.taken_at)
    for a, b in itertools.pairwise(ordered):
        view_reset = view_was_reset(a.stats_reset, b.stats_reset)
        ds = [delta(a.counters.get(q), b.counters[q], view_reset) for q in queryids
              if q in b.counters]  # fmt: skip
        d = combine(ds)
        out.append(Interval(a.taken_at, b.taken_at, d.calls, round(d.total_ms, 3),
                            round(d.mean_ms, 3), d.rows, d.reset))  # fmt: skip
    return out


def pick_start(taken: list[dt.datetime], since: dt.datetime) -> tuple[dt.datetime | None, bool]:
    """The snapshot a window starting at ``since`` is measured from: the newest taken at or
    before ``since``; when there is none, the oldest after it (the window is then shorter
    than asked, which the second value says). (None, False) with no snapshot at all."""
    before = [t for t in taken if t <= since]
    if before:
        return max(before), False
    if taken:
        return min(taken), True
    return None, False
