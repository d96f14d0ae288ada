"""The delta maths of pg_stat_statements snapshots (pure), reset handling above all."""

from __future__ import annotations

import datetime as dt

from backend.ops.statement_stats import (
    Counters,
    Reading,
    combine,
    delta,
    deltas,
    pick_start,
    series,
    view_was_reset,
)

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_growth_is_the_difference():
    d = delta(Counters(100, 250.0, 100, 40, 2), Counters(160, 400.0, 170, 90, 3))
    assert (d.calls, d.total_ms, d.rows, d.shared_blks_hit, d.shared_blks_read) == (
        60, 150.0, 70, 50, 1
    )  # fmt: skip
    assert d.mean_ms == 2.5 and not d.reset and not d.new


def test_counters_going_down_is_a_reset_never_a_negative_delta():
    d = delta(Counters(1000, 5000.0, 1000), Counters(30, 90.0, 30))
    assert (d.calls, d.total_ms, d.rows, d.reset, d.new) == (30, 90.0, 30, True, False)
    # calls grew but time went down: still a reset (the statement was evicted and came back)
    assert delta(Counters(10, 500.0, 10), Counters(12, 20.0, 12)).reset


def test_a_view_reset_marks_even_counters_that_look_grown():
    old, new = Counters(10, 10.0, 10), Counters(50, 60.0, 50)
    assert delta(old, new).calls == 40
    d = delta(old, new, view_reset=True)
    assert (d.calls, d.reset) == (50, True)
    assert view_was_reset(T0, at(5)) and not view_was_reset(T0, T0)
    assert not view_was_reset(None, T0)  # unknown before: no claim either way


def test_new_statements_count_whole_and_idle_or_vanished_ones_are_left_out():
    old = {1: Counters(10, 5.0, 10), 2: Counters(7, 7.0, 7), 3: Counters(4, 4.0, 4)}
    new = {1: Counters(10, 5.0, 10), 2: Counters(9, 8.0, 9), 4: Counters(3, 1.5, 3)}
    got = deltas(old, new)
    assert set(got) == {2, 4}
    assert (got[2].calls, got[2].new) == (2, False) and (got[4].calls, got[4].new) == (3, True)
    assert not got[4].reset


def test_combined_fingerprint_and_its_history_across_a_reset():
    assert combine([]).calls == 0 and not combine([]).new
    readings = [
        Reading(at(0), T0, {1: Counters(100, 100.0, 100), 2: Counters(10, 50.0, 10)}),
        Reading(at(5), T0, {1: Counters(160, 160.0, 160), 2: Counters(20, 100.0, 20)}),
        Reading(at(10), at(7), {1: Counters(5, 50.0, 5)}),  # reset at :07; 2 not run since
        Reading(at(15), at(7), {1: Counters(25, 250.0, 25), 2: Counters(1, 1.0, 1)}),
    ]
    got = series(list(reversed(readings)), {1, 2})  # order of the input does not matter
    assert [(i.start, i.end) for i in got] == [(at(0), at(5)), (at(5), at(10)), (at(10), at(15))]
    assert [(i.calls, i.total_ms, i.mean_ms, i.reset) for i in got] == [
        (70, 110.0, 1.571, False),  # 60 x 1 ms + 10 x 5 ms
        (5, 50.0, 10.0, True),  # since the reset at :07 only
        (21, 201.0, 9.571, False),  # 2 came back after the reset: counted whole, as new
    ]


def test_the_window_starts_at_the_snapshot_at_or_just_before_since():
    taken = [at(0), at(30), at(60)]
    assert pick_start(taken, at(45)) == (at(30), False)
    assert pick_start(taken, at(30)) == (at(30), False)
    assert pick_start(taken, at(-60)) == (at(0), True)  # nothing that old: shorter window
    assert pick_start([], at(0)) == (None, False)
