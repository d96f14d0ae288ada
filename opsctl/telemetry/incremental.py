"""The live reader behind `opsctl top`: it remembers where it stopped in each file, parses
only what was appended since, and keeps rolling per-minute aggregates, so a refresh costs the
new spans, not the window.

Per minute (of span start): per route the request count, errors and a mergeable latency
sketch; per SQL fingerprint the calls, total/max time, rows, routes and a sketch; N+1 events
per (route, fingerprint); and a bounded set of trace summaries (the slowest and the failed
ones per route). Any window up to ``max_window`` (1 h) is answered by merging its minutes.

Files: each is followed by (device, inode) and offset. A file renamed by rotation keeps its
place (same inode under a new name); a new file under an old name, or a file shorter than
where we stopped (truncated), is read from the start. A partly written last line waits for
its newline.

Start-up: what the files already hold is read newest first, in blocks from each file's end,
so the latest minutes are shown within a fraction of a second and older ones fill in;
``complete_since`` says how far back the data is complete, and answers never claim more.
Every read is cut into short steps that check ``cancelled()`` and a time budget, so the
console can stop a load at once (quitting never waits for a scan)."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from opsctl.telemetry.files import (
    _START,
    collector_paused,
    instance_of,
    sort_queries,
    sort_routes,
)
from opsctl.telemetry.model import (
    CLIENT,
    SERVER,
    STATUS_ERROR,
    Coverage,
    LatencySketch,
    NPlusOne,
    QueryStats,
    RouteStats,
    TraceSummary,
)

MINUTE_NS = 60_000_000_000
BLOCK = 1 << 20  # bytes read per step: a cancelled read stops within one
SLACK_NS = 300 * 1_000_000_000  # spans reach a file at most this long after they start
TRACES_KEPT = 20  # per minute and route: the slowest, and the failed
PENDING_TRACES = 50_000  # traces whose server span has not been read yet (their DB spans)
_NAME = re.compile(r"^traces.*\.jsonl?$")
_seq = itertools.count()


@dataclass(slots=True)
class _Route:
    count: int = 0
    errors: int = 0
    sketch: LatencySketch = field(default_factory=LatencySketch)
    instances: set = field(default_factory=set)  # service.instance.id of the writers


@dataclass(slots=True)
class _Query:
    calls: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    rows: int = 0
    routes: set = field(default_factory=set)
    sketch: LatencySketch = field(default_factory=LatencySketch)


@dataclass(slots=True)
class _Minute:
    spans: int = 0
    first_ns: int = 0  # earliest / latest start of a request (server span)
    last_ns: int = 0
    routes: dict = field(default_factory=dict)  # route -> _Route
    queries: dict = field(default_factory=dict)  # fingerprint -> _Query
    nplus1: dict = field(default_factory=dict)  # (route, fp) -> [requests, trace_id]
    slow: dict = field(default_factory=dict)  # route -> heap of (ms, seq, TraceSummary)
    failed: dict = field(default_factory=dict)  # route -> list[TraceSummary]


@dataclass(slots=True)
class _File:
    path: Path
    tail: int  # forward reading resumes here
    back_end: int = 0  # start-up backfill reads [0, back_end) from the end
    frontier_ns: int = 2**63  # backfill has read everything started after this (roughly)
    size: int = 0  # at the last look at the folder


def _attr(value: dict):
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in value:
            v = value[key]
            return int(v) if key == "intValue" else v
    return None


class IncrementalReader:
    def __init__(
        self, directory: Path, max_window: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):  # fmt: skip
        self.directory = Path(directory)
        self.max_window_ns = int(max_window * 1e9)
        self.clock = clock
        self.files: dict[tuple[int, int], _File] = {}
        self.minutes: dict[int, _Minute] = {}
        self.examples: dict[str, str] = {}
        self.summaries: OrderedDict[str, TraceSummary] = OrderedDict()  # recent, by trace
        self.pending: OrderedDict[str, list[int]] = OrderedDict()  # trace -> [spans, db]
        self.started = False
        self.backfilling: list[tuple[int, int, tuple[int, int]]] = []  # heap: -frontier
        self.newest_ns = 0
        self.corrupt_lines = 0
        self.spans_read = 0
        self.instance = ""  # of the resource whose spans are being read
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- reading

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    @property
    def horizon_ns(self) -> int:
        return self._now_ns() - self.max_window_ns

    @property
    def loading(self) -> bool:
        return bool(self.backfilling) or not self.started

    @property
    def complete_since_ns(self) -> int:
        """Data is complete for spans started at or after this (while backfilling)."""
        if not self.backfilling:
            return 0
        return max(self.files[key].frontier_ns for _, _, key in self.backfilling)

    def poll(
        self, cancelled: Callable[[], bool] = lambda: False, budget: float = 0.5,
        wait: bool = True,
    ) -> bool:  # fmt: skip
        """Read what was appended (and, at start-up, older data newest first) for at most
        ``budget`` seconds or until ``cancelled()``. True when nothing is left to read now.
        With ``wait=False`` it returns at once if another thread is reading."""
        if not self.lock.acquire(blocking=wait):
            return False
        try:
            return self._poll(cancelled, time.monotonic() + budget)
        finally:
            self.lock.release()

    def _poll(self, cancelled, deadline) -> bool:
        first = not self.started
        self._discover(first)
        self.started = True
        for state in list(self.files.values()):
            # Only a file that grew is opened: a folder keeps many finished files (one per
            # process and hour, a Collector's rotated backups), and a refresh costs what
            # was appended, not a read of every file.
            if state.size > state.tail and not self._follow(state, cancelled, deadline):
                return False
        while self.backfilling:  # at least one step per poll, then within the budget
            _, _, key = heapq.heappop(self.backfilling)
            state = self.files[key]
            if self._back_step(state):
                heapq.heappush(self.backfilling, (-state.frontier_ns, next(_seq), key))
            if self.backfilling and (cancelled() or time.monotonic() > deadline):
                self._evict()
                return False
        self._evict()
        return True

    def _discover(self, first: bool) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        horizon_s = self.horizon_ns / 1e9
        seen: dict[tuple[int, int], Path] = {}
        for entry in entries:
            if not _NAME.match(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            seen[key] = path = Path(entry.path)
            state = self.files.get(key)
            if state is not None:
                state.path = path  # renamed by rotation: same file, same place
                state.size = st.st_size
                if st.st_size < state.tail:  # truncated: read again from the start
                    state.tail = state.back_end = 0
                continue
            if not first:  # new since the last look: all of it is new
                self.files[key] = _File(path, 0, size=st.st_size)
                continue
            end = self._last_newline(path, st.st_size)
            if st.st_mtime < horizon_s:  # written before the horizon: older spans only
                # Only what is appended from now on.
                self.files[key] = _File(path, end, 0, size=st.st_size)
                continue
            self.files[key] = state = _File(path, end, end, size=st.st_size)
            if end:
                heapq.heappush(self.backfilling, (-state.frontier_ns, next(_seq), key))
        for key in [k for k in self.files if k not in seen]:
            del self.files[key]
        self.backfilling = [b for b in self.backfilling if b[2] in self.files]
        heapq.heapify(self.backfilling)

    @staticmethod
    def _last_newline(path: Path, size: int) -> int:
        """The offset just after the last complete line (a line being written waits)."""
        with open(path, "rb") as fh:
            pos = size
            while pos > 0:
                start = max(0, pos - BLOCK)
                fh.seek(start)
                i = fh.read(pos - start).rfind(b"\n")
                if i >= 0:
                    return start + i + 1
                pos = start
        return 0

    def _follow(self, state: _File, cancelled, deadline) -> bool:
        try:
            fh = open(state.path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError:
            return True
        with fh:
            while True:
                fh.seek(state.tail)
                chunk = fh.read(BLOCK)
                end = chunk.rfind(b"\n")
                if end < 0:
                    if len(chunk) == BLOCK:  # one line longer than a block
                        chunk += fh.readline()
                        end = chunk.rfind(b"\n")
                    if end < 0:
                        return True
                self._lines(chunk[: end + 1], 0)
                state.tail += end + 1
                if cancelled() or time.monotonic() > deadline:
                    return False

    def _back_step(self, state: _File) -> bool:
        """Read one block before ``back_end``; False when this file's backfill is done."""
        if state.back_end <= 0:
            return False
        horizon = self.horizon_ns
        try:
            with open(state.path, "rb") as fh:
                size = BLOCK
                while True:
                    start = max(0, state.back_end - size)
                    fh.seek(start)
                    chunk = fh.read(state.back_end - start)
                    if start == 0:
                        break
                    i = chunk.find(b"\n")
                    if i >= 0:
                        start += i + 1
                        chunk = chunk[i + 1 :]
                        break
                    size *= 2  # a line longer than a block
        except OSError:
            return False
        state.back_end = start
        first_hi, block_hi = self._lines(chunk, horizon)
        if first_hi:
            state.frontier_ns = min(state.frontier_ns, first_hi)
        # Done at the file's start, or once a whole block started well before the window.
        return start > 0 and not (block_hi and block_hi < horizon - SLACK_NS)

    # ---------------------------------------------------------------- aggregating

    def _lines(self, chunk: bytes, skip_before_ns: int = 0) -> tuple[int, int]:
        """Fold the spans of complete lines into the minutes. With ``skip_before_ns``
        (backfill), lines whose spans all started before it are skipped unparsed, and the
        answer is (latest start in the first line, latest start in the block)."""
        # A block's parsed lines would set off full collections over the whole console
        # (its widgets, Django, ...), costing more than the parsing: collection waits until
        # the block is folded (one block, never a scan).
        with collector_paused():
            return self._fold(chunk, skip_before_ns)

    def _fold(self, chunk: bytes, skip_before_ns: int) -> tuple[int, int]:
        first_hi = block_hi = 0
        horizon = self.horizon_ns
        for line in chunk.split(b"\n"):
            if not line:
                continue
            if skip_before_ns:
                found = _START.findall(line)
                if found:
                    hi = max(map(int, found))
                    first_hi = first_hi or hi
                    block_hi = max(block_hi, hi)
                    if hi < skip_before_ns:
                        continue
            try:
                resource_spans = orjson.loads(line)["resourceSpans"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.corrupt_lines += 1
                continue
            for rs in resource_spans:
                self.instance = instance_of(rs)
                for ss in rs.get("scopeSpans", ()):
                    for sp in ss.get("spans", ()):
                        self._span(sp, horizon)
        return first_hi, block_hi

    def _span(self, sp: dict, horizon: int) -> int:
        start = int(sp.get("startTimeUnixNano", 0))
        self.spans_read += 1
        if start < horizon:
            return start
        if start > self.newest_ns:
            self.newest_ns = start
        minute_key = start // MINUTE_NS
        m = self.minutes.get(minute_key)
        if m is None:
            m = self.minutes[minute_key] = _Minute()
        m.spans += 1
        kind = sp.get("kind", 0)
        trace_id = sp.get("traceId", "")
        if kind == SERVER:
            self._server(sp, m, start, trace_id)
        elif kind == CLIENT:
            self._client(sp, m, start, trace_id)
        else:
            self._count(trace_id, 0)
        return start

    def _count(self, trace_id: str, db: int) -> None:
        held = self.summaries.get(trace_id)
        if held is not None:
            held.spans += 1
            held.db_spans += db
            return
        c = self.pending.get(trace_id)
        if c is None:
            c = self.pending[trace_id] = [0, 0]
            if len(self.pending) > PENDING_TRACES:
                self.pending.popitem(last=False)
        c[0] += 1
        c[1] += db

    def _server(self, sp: dict, m: _Minute, start: int, trace_id: str) -> None:
        route = code = None
        for a in sp.get("attributes") or ():
            key = a.get("key")
            if key == "http.route":
                route = _attr(a.get("value") or {})
            elif key == "http.response.status_code":
                code = _attr(a.get("value") or {})
        name = sp.get("name", "")
        route = route or name
        end = int(sp.get("endTimeUnixNano", start))
        ms = (end - start) / 1e6
        error = (sp.get("status") or {}).get("code") == STATUS_ERROR or (
            isinstance(code, int) and code >= 500
        )
        if not m.first_ns or start < m.first_ns:  # the time requests cover (req/s)
            m.first_ns = start
        if start > m.last_ns:
            m.last_ns = start
        r = m.routes.get(route)
        if r is None:
            r = m.routes[route] = _Route()
        r.count += 1
        r.errors += error
        r.sketch.add(ms)
        r.instances.add(self.instance)
        n_plus_one = False
        for e in sp.get("events") or ():
            if e.get("name") != "db.n_plus_one":
                continue
            n_plus_one = True
            attrs = {a.get("key"): _attr(a.get("value") or {}) for a in e.get("attributes") or ()}
            fp = attrs.get("db.query.fingerprint") or ""
            held = m.nplus1.get((route, fp))
            if held is None:
                m.nplus1[(route, fp)] = [1, trace_id]
                if attrs.get("db.query.text"):
                    self.examples.setdefault(fp, attrs["db.query.text"])
            else:
                held[0] += 1
        spans, db = self.pending.pop(trace_id, (0, 0))
        slow = m.slow.get(route)
        if slow is None:
            slow = m.slow[route] = []
        as_slow = len(slow) < TRACES_KEPT or ms > slow[0][0]
        failed = m.failed.setdefault(route, []) if error else None
        as_failed = failed is not None and len(failed) < TRACES_KEPT
        if not (as_slow or as_failed):  # most requests: no summary is made
            return
        t = TraceSummary(
            trace_id, route, name,
            dt.datetime.fromtimestamp(start / 1e9, dt.UTC).isoformat(),
            round(ms, 3), code, error, spans + 1, db, n_plus_one,
        )  # fmt: skip
        if as_slow:
            if len(slow) < TRACES_KEPT:
                heapq.heappush(slow, (ms, next(_seq), t))
            else:
                heapq.heapreplace(slow, (ms, next(_seq), t))
        if as_failed:
            failed.append(t)
        # Later DB spans of this trace still count into its summary.
        self.summaries[trace_id] = t
        if len(self.summaries) > PENDING_TRACES:
            self.summaries.popitem(last=False)

    def _client(self, sp: dict, m: _Minute, start: int, trace_id: str) -> None:
        # The hot path (most spans are DB spans): no helper calls per attribute.
        fp = route = text = None
        rows = 0
        for a in sp.get("attributes") or ():
            key = a.get("key")
            if key == "db.query.fingerprint":
                fp = a["value"].get("stringValue")
            elif key == "http.route":
                route = a["value"].get("stringValue")
            elif key == "db.response.rows_affected":
                rows = int(a["value"].get("intValue") or 0)
            elif key == "db.query.text":
                text = a["value"].get("stringValue")
        self._count(trace_id, 1)
        if not fp:
            return
        ms = (int(sp.get("endTimeUnixNano", start)) - start) / 1e6
        q = m.queries.get(fp)
        if q is None:
            q = m.queries[fp] = _Query()
        q.calls += 1
        q.total_ms += ms
        if ms > q.max_ms:
            q.max_ms = ms
        if rows > 0:
            q.rows += rows
        if route:
            q.routes.add(route)
        q.sketch.add(ms)
        if text is not None and fp not in self.examples:
            self.examples[fp] = text

    def _evict(self) -> None:
        oldest = self.horizon_ns // MINUTE_NS
        for key in [k for k in self.minutes if k < oldest]:
            del self.minutes[key]

    # ---------------------------------------------------------------- answers

    def _window(self, window: float, since_ns: int | None = None) -> tuple[list[_Minute], Coverage]:
        """The minutes that answer for ``window`` seconds back from now (or from
        ``since_ns``, whose minute is included whole), and what they cover."""
        start = since_ns if since_ns is not None else self._now_ns() - int(window * 1e9)
        complete = self.complete_since_ns
        first_minute = max(start, complete) // MINUTE_NS
        if complete and complete % MINUTE_NS:
            first_minute += 1  # a minute only partly read back is not shown
        chosen = [m for k, m in self.minutes.items() if k >= first_minute]
        spans = sum(m.spans for m in chosen)
        first = min((m.first_ns for m in chosen if m.first_ns), default=0)
        last = max((m.last_ns for m in chosen), default=0)
        covered = max((last - first) / 1e9, 1.0) if spans and first else 0.0
        return chosen, Coverage(window, spans, covered, self.newest_ns, not self.loading)

    def route_stats(self, window: float, since_ns: int | None = None):
        with self.lock:
            chosen, cov = self._window(window, since_ns)
            merged: dict[str, _Route] = {}
            for m in chosen:
                for route, r in m.routes.items():
                    into = merged.get(route)
                    if into is None:
                        into = merged[route] = _Route()
                    into.count += r.count
                    into.errors += r.errors
                    into.sketch.merge(r.sketch)
                    into.instances |= r.instances
        covered = cov.covered_seconds or 1.0
        rows = [
            RouteStats(
                route,
                r.count,
                round(r.count / covered, 3),
                round(100 * r.errors / r.count, 2),
                round(r.sketch.quantile(0.50), 2),
                round(r.sketch.quantile(0.95), 2),
                round(r.sketch.quantile(0.99), 2),
                len(r.instances),
            )
            for route, r in merged.items()
            if r.count
        ]
        return sort_routes(rows), cov

    def route_series(self, window: float, suffix: str = "/answers/"):
        """Per minute in the window, for routes ending in ``suffix``: (minute start epoch
        seconds, requests/s, p95 ms), oldest first."""
        with self.lock:
            chosen_keys = sorted(
                k for k in self.minutes
                if k >= (self._now_ns() - int(window * 1e9)) // MINUTE_NS
            )  # fmt: skip
            out = []
            for k in chosen_keys:
                m = self.minutes[k]
                sk = LatencySketch()
                count = 0
                for route, r in m.routes.items():
                    if route.endswith(suffix):
                        sk.merge(r.sketch)
                        count += r.count
                if count:
                    out.append((k * 60, count / 60, sk.quantile(0.95)))
        return out

    def query_stats(self, window: float, by: str = "total", limit: int = 50,
                    since_ns: int | None = None):  # fmt: skip
        with self.lock:
            chosen, cov = self._window(window, since_ns)
            merged: dict[str, _Query] = {}
            for m in chosen:
                for fp, q in m.queries.items():
                    into = merged.get(fp)
                    if into is None:
                        into = merged[fp] = _Query()
                    into.calls += q.calls
                    into.total_ms += q.total_ms
                    into.max_ms = max(into.max_ms, q.max_ms)
                    into.rows += q.rows
                    into.routes |= q.routes
                    into.sketch.merge(q.sketch)
            examples = {fp: self.examples.get(fp, "") for fp in merged}
        rows = [
            QueryStats(
                fp,
                q.calls,
                round(q.total_ms, 3),
                round(q.total_ms / q.calls, 3),
                round(q.sketch.quantile(0.95), 3),
                round(q.max_ms, 3),
                q.rows,
                sorted(q.routes),
                examples[fp],
            )
            for fp, q in merged.items()
        ]
        return sort_queries(rows, by, limit), cov

    def n_plus_one(self, window: float, since_ns: int | None = None):
        with self.lock:
            chosen, cov = self._window(window, since_ns)
            found: dict[tuple[str, str], NPlusOne] = {}
            for m in sorted(chosen, key=lambda m: -m.last_ns):
                for (route, fp), (n, trace_id) in m.nplus1.items():
                    held = found.get((route, fp))
                    if held is None:
                        found[(route, fp)] = NPlusOne(
                            route, fp, n, self.examples.get(fp, ""), trace_id
                        )
                    else:
                        held.requests += n
        return sorted(found.values(), key=lambda n: -n.requests), cov

    def list_traces(
        self, window: float, route: str | None = None, min_ms: float = 0,
        errors_only: bool = False, limit: int = 200, since_ns: int | None = None,
    ):  # fmt: skip
        """Slowest first among the kept summaries (per minute and route: the slowest
        ``TRACES_KEPT`` and the first ``TRACES_KEPT`` failed)."""
        from opsctl.telemetry.files import keep_trace

        with self.lock:
            chosen, cov = self._window(window, since_ns)
            seen: dict[str, TraceSummary] = {}
            for m in chosen:
                for heap in m.slow.values():
                    for _, _, t in heap:
                        seen[t.trace_id] = t
                for failed in m.failed.values():
                    for t in failed:
                        seen[t.trace_id] = t
            out = [t for t in seen.values() if keep_trace(t, route, min_ms, errors_only)]
        out.sort(key=lambda t: (-t.duration_ms, t.trace_id))
        return out[:limit], cov

    def data_age(self) -> float | None:
        """Seconds since the newest span read started, None before any."""
        return (self._now_ns() - self.newest_ns) / 1e9 if self.newest_ns else None
