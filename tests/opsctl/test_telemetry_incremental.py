"""The incremental reader against the one-shot reader on the same files: identical counts,
percentiles within the sketch's stated relative error; following appends, partial lines,
rotation and truncation; start-up backfill; cooperative cancellation. And the one-shot
reader's window skipping, coverage and the CLI's "no data" exit code."""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import random
import shutil
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.stats import percentile
from opsctl.telemetry import NO_DATA_EXIT, LatencySketch, ReadStats, files
from opsctl.telemetry.incremental import MINUTE_NS, IncrementalReader
from tests.bench import spangen

ERR = LatencySketch.RELATIVE_ERROR


def minute_start(ts: float) -> float:
    return ts // 60 * 60


@pytest.fixture
def folder(tmp_path) -> tuple[Path, float, float]:
    """Nine to ten minutes of spans ending now, 100 spans/s, two writers."""
    now = time.time()
    start = minute_start(now) - 540
    spangen.fill(tmp_path, start, now, 100)
    return tmp_path, start, now


def read_all(reader: IncrementalReader) -> None:
    while not reader.poll(budget=5.0):
        pass


def close(a: float, b: float, rounding: float = 0.0) -> bool:
    """Within the sketch's relative error (plus the rounding of the figures compared)."""
    return abs(a - b) <= ERR * abs(b) + rounding + 1e-9


def test_sketch_quantiles_are_within_the_stated_error_and_merge():
    rng = random.Random(3)
    values = [rng.lognormvariate(1.5, 1.2) for _ in range(20_000)] + [0.0] * 30
    whole, a, b = LatencySketch(), LatencySketch(), LatencySketch()
    for i, v in enumerate(values):
        whole.add(v)
        (a if i % 2 else b).add(v)
    a.merge(b)
    values.sort()
    for q in (0.001, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = percentile(values, q * 100)
        assert close(whole.quantile(q), exact), (q, whole.quantile(q), exact)
        assert a.quantile(q) == whole.quantile(q) and a.count == whole.count
    assert LatencySketch().quantile(0.5) == 0.0


def test_incremental_matches_one_shot(folder):
    d, start, _ = folder
    since = dt.datetime.fromtimestamp(start, dt.UTC)
    reader = IncrementalReader(d)
    read_all(reader)
    since_ns = int(start * 1e9)

    stats = ReadStats()
    exact = {r.route: r for r in files.route_stats(d, since, stats)}
    rows, cov = reader.route_stats(900, since_ns=since_ns)
    live = {r.route: r for r in rows}
    assert cov.spans == stats.in_window > 50_000 and cov.complete
    assert set(live) == set(exact) and len(exact) == 3
    for route, r in exact.items():
        got = live[route]
        assert got.requests == r.requests and got.error_pct == r.error_pct
        assert got.instances == r.instances == 2  # two writers
        assert got.rps == r.rps  # both over the time the data covers
        for p in ("p50_ms", "p95_ms", "p99_ms"):
            assert close(getattr(got, p), getattr(r, p), 0.01), (route, p)

    exact_q = {q.fingerprint: q for q in files.query_stats(d, since, "total", 100)}
    live_q = {q.fingerprint: q for q in reader.query_stats(900, "total", 100, since_ns=since_ns)[0]}
    assert set(live_q) == set(exact_q) and len(exact_q) == len(spangen.FINGERPRINTS)
    for fp, q in exact_q.items():
        got = live_q[fp]
        assert (got.calls, got.rows, got.routes, got.example) == (
            q.calls,
            q.rows,
            q.routes,
            q.example,
        )
        assert math.isclose(got.total_ms, q.total_ms, abs_tol=0.01)
        assert math.isclose(got.max_ms, q.max_ms, abs_tol=0.001)
        assert close(got.p95_ms, q.p95_ms, 0.001)

    exact_n = {(n.route, n.fingerprint): n.requests for n in files.n_plus_one(d, since)}
    live_n = {(n.route, n.fingerprint): n.requests for n in reader.n_plus_one(900, since_ns)[0]}
    assert live_n == exact_n and exact_n

    # The slowest traces: the same ones, with the same span counts.
    want = files.list_traces(d, since, limit=20)
    got, _ = reader.list_traces(900, limit=20, since_ns=since_ns)
    assert [(t.trace_id, t.duration_ms, t.spans, t.db_spans, t.error) for t in got] == [
        (t.trace_id, t.duration_ms, t.spans, t.db_spans, t.error) for t in want
    ]
    errors = reader.list_traces(900, errors_only=True, limit=500, since_ns=since_ns)[0]
    assert errors and all(t.error for t in errors)
    assert {t.trace_id for t in errors} == {
        t.trace_id for t in files.list_traces(d, since, errors_only=True, limit=500)
    }


def test_a_refresh_reads_only_what_was_appended(folder):
    d, _, now = folder
    reader = IncrementalReader(d)
    read_all(reader)
    before = reader.spans_read
    total_before = reader.route_stats(900)[1].spans
    # A writer appends 2 lines; the last one is still being written (no newline yet).
    writer = spangen.SpanWriter(d, host="gen0", pid=100, seed=9)
    line = writer.line([int((now + 1) * 1e9) + i * 1000 for i in range(10)])
    path = writer._file(int((now + 1) * 1e9)).name
    writer.close()
    with open(path, "ab") as fh:
        fh.write(line + line[:200])
    read_all(reader)
    assert reader.spans_read - before == 10 * spangen.SPANS_PER_REQUEST
    with open(path, "ab") as fh:
        fh.write(line[200:])
    read_all(reader)
    assert reader.spans_read - before == 20 * spangen.SPANS_PER_REQUEST
    assert reader.route_stats(900)[1].spans == total_before + 20 * spangen.SPANS_PER_REQUEST
    assert reader.corrupt_lines == 0


def test_a_refresh_opens_only_the_files_that_grew(folder):
    d, _, now = folder
    reader = IncrementalReader(d)
    read_all(reader)
    followed = []
    follow = reader._follow

    def counted(state, *args):
        followed.append(state.path.name)
        return follow(state, *args)

    reader._follow = counted
    assert reader.poll(budget=5) and followed == []  # nothing new: no file opened
    writer = spangen.SpanWriter(d, host="gen1", pid=101, seed=9)
    writer.write([int((now + 1) * 1e9) + i * 1000 for i in range(10)])
    grown = Path(next(iter(writer.handles.values())).name).name
    writer.close()
    spans = reader.spans_read
    read_all(reader)
    assert followed == [grown] and reader.spans_read == spans + 10 * spangen.SPANS_PER_REQUEST


def _line(start_ns: int, route: str = "r/", ms: float = 5.0) -> bytes:
    span = {"traceId": f"{start_ns:032x}", "spanId": "1" * 16, "name": "GET", "kind": 2,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + int(ms * 1e6)),
            "attributes": [{"key": "http.route", "value": {"stringValue": route}}]}  # fmt: skip
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + b"\n"


def test_rotation_by_rename_and_truncation(tmp_path):
    now_ns = time.time_ns()
    live = tmp_path / "traces.jsonl"  # a Collector's file exporter output
    live.write_bytes(_line(now_ns) + _line(now_ns + 1))
    reader = IncrementalReader(tmp_path)
    read_all(reader)
    assert reader.route_stats(900)[1].spans == 2
    # Rotation: the file is renamed (same inode, its place kept) and a new one started.
    live.rename(tmp_path / "traces-2026-11-30T10-00-00.000.jsonl")
    live.write_bytes(_line(now_ns + 2))
    with open(tmp_path / "traces-2026-11-30T10-00-00.000.jsonl", "ab") as fh:
        fh.write(_line(now_ns + 3))  # a last batch that reached the old file
    read_all(reader)
    assert reader.route_stats(900)[1].spans == 4 and reader.spans_read == 4
    # Truncation: the file is shorter than where we stopped, so it is read from the start.
    live.write_bytes(b"")
    read_all(reader)
    live.write_bytes(_line(now_ns + 4))
    read_all(reader)
    assert reader.route_stats(900)[1].spans == 5


def test_start_up_reads_newest_first_and_says_how_far_back_it_is_complete(folder):
    d, start, now = folder
    reader = IncrementalReader(d)
    steps = 0
    # One block per step, newest first, until three whole minutes are complete.
    while reader.complete_since_ns == 0 or reader.complete_since_ns > (now - 180) * 1e9:
        assert not reader.poll(budget=0.0)
        steps += 1
    assert reader.loading and reader.complete_since_ns > int(start * 1e9) + MINUTE_NS
    _, cov = reader.route_stats(900)
    assert not cov.complete and cov.spans > 0
    # What it shows covers only the complete part: whole minutes after complete_since.
    shown = [k for k, m in reader.minutes.items() if k * MINUTE_NS >= reader.complete_since_ns]
    assert cov.spans == sum(reader.minutes[k].spans for k in shown)
    assert cov.covered_seconds <= now - reader.complete_since_ns / 1e9
    read_all(reader)
    assert not reader.loading and reader.route_stats(900)[1].complete


def test_cancelled_poll_stops_within_one_step(folder):
    d, _, _ = folder
    reader = IncrementalReader(d)
    calls = []

    def cancelled():
        calls.append(1)
        return True

    assert reader.poll(cancelled, budget=60) is False
    assert len(calls) == 1 and reader.loading


@pytest.mark.parametrize("phase", ["start-up", "following"])
def test_a_read_cancelled_midway_stops_after_that_step_and_loses_nothing(folder, phase):
    """What quitting `opsctl top` mid-read relies on: cancelled after its second block, a
    read stops there (it does not finish the scan), and reading on later gives the same
    answer as a read never interrupted."""
    d, _, now = folder
    reader = IncrementalReader(d)
    if phase == "following":
        read_all(reader)
        # A burst of some 7 MB (several read blocks) appended at once, as after a stall.
        writer = spangen.SpanWriter(d, host="gen0", pid=100, seed=5)
        writer.write([int((now + 1) * 1e9) + i * 100_000 for i in range(2_000)])
        writer.close()
    steps = 0
    fold = reader._fold

    def counted(*args):
        nonlocal steps
        steps += 1
        return fold(*args)

    reader._fold = counted
    assert reader.poll(lambda: steps >= 2, budget=600) is False
    assert steps == 2
    read_all(reader)
    assert steps > 3  # there was more to read than the two blocks
    whole = IncrementalReader(d)
    read_all(whole)
    assert reader.spans_read == whole.spans_read
    assert reader.route_stats(3600) == whole.route_stats(3600)
    assert reader.query_stats(3600) == whole.query_stats(3600)


def test_the_garbage_collector_is_back_on_after_every_read(folder):
    """Reads pause Python's collector (see files.collector_paused); a read that ends, is
    closed early or is abandoned by an error must switch it back on, or the process would
    never free reference cycles again."""
    d, start, _ = folder
    since = dt.datetime.fromtimestamp(start, dt.UTC)
    assert gc.isenabled()
    assert files.route_stats(d, since) and gc.isenabled()
    assert files.list_traces(d, since) and gc.isenabled()
    spans = files.iter_raw(d, since)
    next(spans)
    assert not gc.isenabled()  # paused while the read runs
    spans.close()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        for _ in files.iter_raw(d, since):
            raise ValueError("the caller fails mid-read")
    assert gc.isenabled()
    reader = IncrementalReader(d)
    read_all(reader)
    assert gc.isenabled()


def test_files_and_lines_before_the_window_are_skipped(tmp_path):
    # 40 minutes into the previous hour, so the last 20 minutes of data sit in one hourly file
    # whatever the clock says (just after the hour, the newest file would start inside the
    # window and bisection would rightly skip nothing).
    now = (time.time() // 3600 - 1) * 3600 + 2400
    old, new = tmp_path / "old", tmp_path / "new"
    spangen.fill(old, now - 3 * 3600, now - 3 * 3600 + 600, 100)
    spangen.fill(new, now - 1200, now, 100)
    for p in old.iterdir():
        shutil.move(p, tmp_path / p.name)
    for p in new.iterdir():
        shutil.move(p, tmp_path / p.name)
    since = dt.datetime.fromtimestamp(now - 300, dt.UTC)
    stats = ReadStats()
    rows = files.route_stats(tmp_path, since, stats)
    assert stats.files == 2  # the two files last written 2 hours ago are not opened
    # Most of each recent file is never read (bisection), the rest skipped line by line.
    assert stats.skipped_bytes > 0 and stats.skipped_lines > 0
    assert stats.spans < stats.in_window * 2.5
    # The same answer as a brute-force read of every span.
    count = 0
    for p in tmp_path.glob("traces-*.jsonl"):
        for line in p.read_bytes().splitlines():
            for rs in orjson.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    count += sum(
                        s["kind"] == 2 and int(s["startTimeUnixNano"]) >= since.timestamp() * 1e9
                        for s in ss["spans"]
                    )
    assert sum(r.requests for r in rows) == count > 0


def test_requests_per_second_is_over_the_time_the_data_covers(tmp_path):
    now = time.time()
    spangen.fill(tmp_path, now - 120, now, 100)  # 2 minutes of data in a 15-minute window
    stats = ReadStats()
    rows = files.route_stats(tmp_path, dt.datetime.fromtimestamp(now - 900, dt.UTC), stats)
    total_rps = sum(r.rps for r in rows)
    assert 115 < stats.covered_seconds <= 120
    assert math.isclose(total_rps, 100 / spangen.SPANS_PER_REQUEST, rel_tol=0.05)


def test_cli_no_data_differs_from_nothing_matched(folder, tmp_path_factory):
    d, _, _ = folder
    runner = CliRunner()
    r = runner.invoke(app, ["traces", "list", "--telemetry-dir", str(d), "--route", "nope"])
    assert r.exit_code == 0 and "no traces matched" in r.stdout
    empty = tmp_path_factory.mktemp("empty")
    for argv in (["traces", "list"], ["traces", "stats"], ["queries", "top"],
                 ["queries", "nplusone"]):  # fmt: skip
        r = runner.invoke(app, [*argv, "--telemetry-dir", str(empty)])
        assert r.exit_code == NO_DATA_EXIT and "no data" in r.stderr, argv
        r = runner.invoke(app, [*argv, "--telemetry-dir", str(empty), "--json"])
        assert r.exit_code == NO_DATA_EXIT and json.loads(r.stdout) == [], argv
    # Spans exist, but all before the window: that is no data for the window too.
    r = runner.invoke(app, ["traces", "stats", "--telemetry-dir", str(d), "--since",
                            dt.datetime.now(dt.UTC).isoformat()])  # fmt: skip
    assert r.exit_code == NO_DATA_EXIT
    r = runner.invoke(app, ["traces", "stats", "--telemetry-dir", str(d), "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 3
    assert "3 no data" in runner.invoke(app, ["traces", "stats", "--help"]).stdout


def test_files_older_than_the_hour_are_not_read_at_start_up(tmp_path):
    now = time.time()
    spangen.fill(tmp_path / "old", now - 3 * 3600, now - 3 * 3600 + 120, 100)
    spangen.fill(tmp_path / "new", now - 120, now, 100)
    for p in [*(tmp_path / "old").iterdir(), *(tmp_path / "new").iterdir()]:
        shutil.move(p, tmp_path / p.name)
    reader = IncrementalReader(tmp_path)
    read_all(reader)
    new_spans = reader.route_stats(3600)[1].spans
    assert reader.spans_read == new_spans > 0  # nothing parsed from the old files
    # An old file that grows again is followed from where it was.
    old = sorted(tmp_path.glob("traces-gen0-*.jsonl"))[0]
    with open(old, "ab") as fh:
        fh.write(_line(time.time_ns()))
    read_all(reader)
    assert reader.spans_read == new_spans + 1
