"""The one-shot reader of OTLP JSON lines: the backend's own files
(``traces-<host>-<pid>-<YYYYmmddHH>.jsonl``, one per process and hour) or a Collector's
``file`` exporter output (``traces.jsonl`` and its rotated backups). No Django.

It reads only what the window needs: a file is skipped when it was last written before the
window starts (its mtime) or when its name's hour ends before it; inside a file, a line whose
every span started before the window is skipped after a regular-expression scan of its start
times, without parsing its JSON. A corrupt or truncated line is skipped and counted."""

from __future__ import annotations

import datetime as dt
import gc
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from opsctl.stats import percentile
from opsctl.telemetry.model import (
    CLIENT,
    SERVER,
    STATUS_ERROR,
    NPlusOne,
    QueryStats,
    ReadStats,
    RouteStats,
    Span,
    TraceNode,
    TraceSummary,
)

_START = re.compile(rb'"startTimeUnixNano":"?(\d+)')
_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(v: dict):
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in v:
            val = v[key]
            return int(val) if key == "intValue" else val
    return None


def _attrs(items: list | None) -> dict:
    return {a["key"]: _value(a.get("value", {})) for a in items or ()}


def telemetry_files(directory: Path, kind: str, since_ts: float | None) -> list[Path]:
    """``kind`` is "traces" or "metrics". With ``since_ts``, files last written before it are
    left out: a span is written after it starts, so such a file holds only older spans. (The
    hour in a backend file's name says the same for files that were not copied, but names
    are not trusted over the modification time.)"""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.iterdir()):
        if p.suffix not in {".jsonl", ".json"} or not p.is_file():
            continue
        if p.name.startswith(("traces", "metrics", "logs")) and not p.name.startswith(kind):
            continue
        if since_ts is not None and p.stat().st_mtime < since_ts:
            continue
        out.append(p)
    return out


def line_reaches(line: bytes, since_ns: int) -> bool:
    """Whether any span in this OTLP JSON line started at or after ``since_ns``, from a scan
    of its start times (a tenth of the cost of parsing it). Unsure (no start found): True."""
    found = _START.findall(line)
    return not found or max(map(int, found)) >= since_ns


#: A batch line is written within this long after its newest span started (the exporters
#: batch for seconds; a request lasts at most its timeout). Lines are appended in the order
#: they are written, so a line whose newest span started more than this before the window
#: has only older lines before it.
SLACK_NS = 300 * 1_000_000_000


def first_line_at(fh, since_ns: int) -> int:
    """The offset of the first line that may hold a span started at or after ``since_ns``,
    found by bisection over the file (a few reads of one line each), so the part of an hour's
    file written before the window is not even read. Any line not understood stops the
    search where it is (then the lines are read and skipped one by one, as without it)."""
    lo, hi = 0, os.fstat(fh.fileno()).st_size  # every line starting before lo is too old
    while hi - lo > 1 << 20:
        mid = (lo + hi) // 2
        fh.seek(mid)
        fh.readline()  # the rest of the line mid falls in
        at = fh.tell()
        line = fh.readline()
        found = _START.findall(line) if line.endswith(b"\n") else None
        if not found:
            break
        if max(map(int, found)) + SLACK_NS < since_ns:
            lo = at + len(line)  # this line, and so every line before it, is too old
        else:
            hi = mid
    return lo


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for a read. Parsed OTLP lines are thousands of
    short-lived containers, and a read keeps growing ones (a duration list per route, a
    summary per trace); with the collector on, every few thousand allocations set off a
    collection, and the full ones walk everything kept so far, so a read of millions of
    spans spent about half its CPU collecting (measured: `traces stats` over 1.5 M spans,
    13.1 -> 6.7 CPU s). What the readers build holds no reference cycles, so nothing is
    lost by collecting only after the read."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def iter_raw(
    directory: Path, since: dt.datetime | None = None, stats: ReadStats | None = None,
    must_contain: bytes | None = None, kind: int | None = None,
) -> Iterator[dict]:  # fmt: skip
    """Raw OTLP span dicts that started in the window, in file order; with ``kind``, only
    spans of that kind (the others are still counted in ``stats.in_window``, so "no data"
    means no span at all). ``stats`` counts what was read and what the window holds; its
    first/last start are those of the spans yielded. This is the hot loop of every CLI
    reader: per span it does as little as it can. The collector is paused while it runs
    (the caller's work on each span included), until it ends or is closed."""
    with collector_paused():
        yield from _iter_raw(directory, since, stats, must_contain, kind)


def _iter_raw(directory, since, stats, must_contain, kind) -> Iterator[dict]:
    stats = stats if stats is not None else ReadStats()
    since_ts = since.timestamp() if since else None
    since_ns = int(since_ts * 1e9) if since_ts else 0
    for path in telemetry_files(directory, "traces", since_ts):
        stats.files += 1
        with open(path, "rb") as fh:
            if since_ns:
                start = first_line_at(fh, since_ns)
                stats.skipped_bytes += start
                fh.seek(start)
            for line in fh:
                stats.lines += 1
                if must_contain is not None and must_contain not in line:
                    continue
                if since_ns and not line_reaches(line, since_ns):
                    stats.skipped_lines += 1
                    continue
                try:
                    resource_spans = orjson.loads(line)["resourceSpans"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    stats.corrupt_lines += 1
                    continue
                for rs in resource_spans:
                    stats.instance = instance_of(rs)
                    used = False
                    for ss in rs.get("scopeSpans", ()):
                        spans = ss.get("spans", ())
                        stats.spans += len(spans)
                        for sp in spans:
                            start = int(sp.get("startTimeUnixNano", 0))
                            if start < since_ns:
                                continue
                            if kind is not None and sp.get("kind", 0) != kind:
                                stats.in_window += 1
                                continue
                            stats.in_window += 1
                            if not stats.first_ns or start < stats.first_ns:
                                stats.first_ns = start
                            if start > stats.last_ns:
                                stats.last_ns = start
                            used = True
                            yield sp
                    if used:
                        stats.instances.add(stats.instance)


def instance_of(resource_spans: dict) -> str:
    """The resource's ``service.instance.id``; without one, ``host.name:process.pid``."""
    attrs = _attrs((resource_spans.get("resource") or {}).get("attributes"))
    if attrs.get("service.instance.id"):
        return str(attrs["service.instance.id"])
    return f"{attrs.get('host.name', '')}:{attrs.get('process.pid', '')}"


def to_span(sp: dict) -> Span:
    start = int(sp.get("startTimeUnixNano", 0))
    return Span(
        sp.get("traceId", ""),
        sp.get("spanId", ""),
        sp.get("parentSpanId", ""),
        sp.get("name", ""),
        sp.get("kind", 0),
        start,
        int(sp.get("endTimeUnixNano", start)),
        _attrs(sp.get("attributes")),
        sp.get("events") or [],
        (sp.get("status") or {}).get("code") == STATUS_ERROR,
    )


def iter_spans(
    directory: Path, since: dt.datetime | None = None, stats: ReadStats | None = None,
    server_only: bool = False,
) -> Iterator[Span]:  # fmt: skip
    for sp in iter_raw(directory, since, stats, kind=SERVER if server_only else None):
        yield to_span(sp)


def is_error(span: Span) -> bool:
    code = span.attributes.get("http.response.status_code")
    return span.error or (isinstance(code, int) and code >= 500)


def sort_routes(rows: list[RouteStats]) -> list[RouteStats]:
    # The save route first: it is the one exam day is about.
    rows.sort(key=lambda r: (not r.route.endswith("/answers/"), -r.requests))
    return rows


def route_stats(
    directory: Path, since: dt.datetime, stats: ReadStats | None = None,
    now: dt.datetime | None = None,
) -> list[RouteStats]:  # fmt: skip
    """RED per route from server spans: requests/s over the time the data in the window
    covers (not the window's length: a backend that started 2 minutes ago has 2 minutes of
    data in a 15-minute window), error %, exact latency percentiles. ``now`` is unused
    (kept for callers)."""
    stats = stats if stats is not None else ReadStats()
    durations: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    instances: dict[str, set] = defaultdict(set)
    for sp in iter_raw(directory, since, stats, kind=SERVER):
        instances[_route_of(sp)].add(stats.instance)
        route = code = None
        for a in sp.get("attributes") or ():
            key = a.get("key")
            if key == "http.route":
                route = a["value"].get("stringValue")
            elif key == "http.response.status_code":
                code = int(a["value"].get("intValue") or 0)
        start = int(sp.get("startTimeUnixNano", 0))
        durations[route or sp.get("name", "")].append(
            (int(sp.get("endTimeUnixNano", start)) - start) / 1e6
        )
        errors[route or sp.get("name", "")] += (sp.get("status") or {}).get(
            "code"
        ) == STATUS_ERROR or (code is not None and code >= 500)
    covered = stats.covered_seconds or 1.0
    out = []
    for route, values in durations.items():
        values.sort()
        out.append(
            RouteStats(
                route,
                len(values),
                round(len(values) / covered, 3),
                round(100 * errors[route] / len(values), 2),
                round(percentile(values, 50), 2),
                round(percentile(values, 95), 2),
                round(percentile(values, 99), 2),
                len(instances[route]),
            )
        )
    return sort_routes(out)


def _route_of(sp: dict) -> str:
    for a in sp.get("attributes") or ():
        if a.get("key") == "http.route":
            return a["value"].get("stringValue") or sp.get("name", "")
    return sp.get("name", "")


def summary(trace_id: str, root: Span, spans: int, db_spans: int) -> TraceSummary:
    return TraceSummary(
        trace_id,
        root.attributes.get("http.route") or root.name,
        root.name,
        dt.datetime.fromtimestamp(root.start_ns / 1e9, dt.UTC).isoformat(),
        round(root.duration_ms, 3),
        root.attributes.get("http.response.status_code"),
        is_error(root),
        spans,
        db_spans,
        any(e.get("name") == "db.n_plus_one" for e in root.events),
    )


def keep_trace(t: TraceSummary, route: str | None, min_ms: float, errors_only: bool) -> bool:
    return (
        (not route or route in t.route) and t.duration_ms >= min_ms and (t.error or not errors_only)
    )


def list_traces(
    directory: Path, since: dt.datetime, route: str | None = None, min_ms: float = 0,
    errors_only: bool = False, limit: int = 20, stats: ReadStats | None = None,
) -> list[TraceSummary]:  # fmt: skip
    """Recent traces (their server spans), slowest first."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    roots: dict[str, Span] = {}
    orphans: dict[str, Span] = {}
    for sp in iter_raw(directory, since, stats):
        trace_id = sp.get("traceId", "")
        kind = sp.get("kind", 0)
        c = counts[trace_id]
        c[0] += 1
        c[1] += kind == CLIENT
        if kind == SERVER:
            span = to_span(sp)
            held = roots.get(trace_id)
            if held is None or span.start_ns < held.start_ns:
                roots[trace_id] = span
        elif not sp.get("parentSpanId") and trace_id not in roots:
            orphans.setdefault(trace_id, to_span(sp))
    out = []
    with collector_paused():  # a summary per trace read
        for trace_id, root in {**orphans, **roots}.items():
            t = summary(trace_id, root, *counts[trace_id])
            if keep_trace(t, route, min_ms, errors_only):
                out.append(t)
    out.sort(key=lambda t: (-t.duration_ms, t.trace_id))
    return out[:limit]


def trace_tree(
    directory: Path, trace_id: str, stats: ReadStats | None = None,
    since: dt.datetime | None = None,
) -> list[TraceNode]:  # fmt: skip
    """The waterfall: spans in tree order with offsets from the trace start. Only lines that
    contain the trace id are parsed; with ``since`` (no later than the trace's start, e.g.
    from its summary) only the files and lines from then on are searched."""
    needle = f'"traceId":"{trace_id}"'.encode()
    spans = [
        to_span(sp)
        for sp in iter_raw(directory, since, stats, must_contain=needle)
        if sp.get("traceId") == trace_id
    ]
    if not spans:
        return []
    t0 = min(s.start_ns for s in spans)
    children: dict[str, list[Span]] = defaultdict(list)
    ids = {s.span_id for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        (children[s.parent_id] if s.parent_id in ids else roots).append(s)
    out: list[TraceNode] = []

    def walk(span: Span, depth: int) -> None:
        out.append(
            TraceNode(
                span.span_id,
                span.name,
                _KINDS.get(span.kind, str(span.kind)),
                round((span.start_ns - t0) / 1e6, 3),
                round(span.duration_ms, 3),
                depth,
                span.attributes.get("db.query.text", ""),
                span.attributes.get("db.query.fingerprint", ""),
                [
                    _attrs(e.get("attributes"))
                    for e in span.events
                    if e.get("name") == "db.n_plus_one"
                ],
                is_error(span),
            )
        )
        for child in children.get(span.span_id, ()):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return out


QUERY_ORDER = {"total": "total_ms", "mean": "mean_ms", "p95": "p95_ms", "calls": "calls"}


def sort_queries(rows: list[QueryStats], by: str, limit: int) -> list[QueryStats]:
    key = QUERY_ORDER[by]
    rows.sort(key=lambda q: -(getattr(q, key) or 0))
    return rows[:limit]


def query_stats(
    directory: Path, since: dt.datetime, by: str = "total", limit: int = 20,
    stats: ReadStats | None = None,
) -> list[QueryStats]:  # fmt: skip
    """Per fingerprint, from the DB client spans."""
    durations: dict[str, list[float]] = defaultdict(list)
    rows: dict[str, int] = defaultdict(int)
    routes: dict[str, set] = defaultdict(set)
    example: dict[str, str] = {}
    for sp in iter_raw(directory, since, stats, kind=CLIENT):
        span = to_span(sp)
        fp = span.attributes.get("db.query.fingerprint")
        if not fp:
            continue
        durations[fp].append(span.duration_ms)
        rows[fp] += max(int(span.attributes.get("db.response.rows_affected") or 0), 0)
        if span.attributes.get("http.route"):
            routes[fp].add(span.attributes["http.route"])
        example.setdefault(fp, span.attributes.get("db.query.text", ""))
    out = []
    for fp, values in durations.items():
        values.sort()
        total = sum(values)
        out.append(
            QueryStats(
                fp,
                len(values),
                round(total, 3),
                round(total / len(values), 3),
                round(percentile(values, 95), 3),
                round(values[-1], 3),
                rows[fp],
                sorted(routes[fp]),
                example[fp],
            )
        )
    return sort_queries(out, by, limit)


def n_plus_one(
    directory: Path, since: dt.datetime, stats: ReadStats | None = None
) -> list[NPlusOne]:
    found: dict[tuple[str, str], NPlusOne] = {}
    for span in iter_spans(directory, since, stats, server_only=True):
        for e in span.events:
            if e.get("name") != "db.n_plus_one":
                continue
            a = _attrs(e.get("attributes"))
            route = span.attributes.get("http.route") or span.name
            key = (route, a.get("db.query.fingerprint", ""))
            if key in found:
                found[key].requests += 1
            else:
                found[key] = NPlusOne(route, key[1], 1, a.get("db.query.text", ""), span.trace_id)
    return sorted(found.values(), key=lambda n: -n.requests)


def empty_hint(directory: Path, window: str) -> str:
    return (
        f"no data: no spans read in {directory} since {window}; is the backend running with "
        "telemetry on (OPS_TELEMETRY, the telemetry.tracing flag), or, in production, is "
        "--telemetry-dir the Collector's file exporter directory (or use --prometheus)?"
    )


def since_from(window: str) -> dt.datetime:
    from backend.durations import parse_since

    return parse_since(window)


def file_age_seconds(path: Path) -> float:
    return time.time() - os.stat(path).st_mtime
