"""The shapes telemetry readers return, the window that every reader answers for, and a
small mergeable latency sketch. Pure: no I/O, no Django."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SERVER, CLIENT = 2, 3
STATUS_ERROR = 2

# `opsctl traces|queries ...` exit with this code when no span at all was read in the window
# (telemetry off, the wrong directory, a Collector writing elsewhere): "no data" must not
# look like "nothing wrong" to a script or a runbook's verify step. "Nothing matched" (spans
# were read, none passed the filter) exits 0.
NO_DATA_EXIT = 3


class NoTelemetry(Exception):
    """No span was read in the window (as opposed to: spans read, none matched)."""


@dataclass
class ReadStats:
    files: int = 0
    lines: int = 0
    corrupt_lines: int = 0
    spans: int = 0  # spans parsed (a line skipped as outside the window parses none)
    skipped_lines: int = 0  # lines whose every span started before the window
    skipped_bytes: int = 0  # the start of files found by bisection to be before the window
    in_window: int = 0  # spans that started inside the window
    first_ns: int = 0  # earliest / latest start of a span in the window
    last_ns: int = 0
    # The `service.instance.id` (else host.name:process.pid) of the span last yielded, and
    # every one seen in the window: N app hosts writing to one place are N instances.
    instance: str = ""
    instances: set = field(default_factory=set)

    def saw(self, start_ns: int) -> None:
        self.in_window += 1
        if not self.first_ns or start_ns < self.first_ns:
            self.first_ns = start_ns
        if start_ns > self.last_ns:
            self.last_ns = start_ns

    @property
    def covered_seconds(self) -> float:
        """The time the data in the window actually covers (at least one second)."""
        return max((self.last_ns - self.first_ns) / 1e9, 1.0) if self.in_window else 0.0


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict
    events: list
    error: bool

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class RouteStats:
    route: str
    requests: int
    rps: float
    error_pct: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    instances: int = 0  # distinct service.instance.id the route's requests came from


@dataclass
class TraceSummary:
    trace_id: str
    route: str
    name: str
    start: str
    duration_ms: float
    status_code: int | None
    error: bool
    spans: int
    db_spans: int
    n_plus_one: bool


@dataclass
class TraceNode:
    span_id: str
    name: str
    kind: str
    offset_ms: float
    duration_ms: float
    depth: int
    sql: str = ""
    fingerprint: str = ""
    n_plus_one: list = field(default_factory=list)
    error: bool = False


@dataclass
class QueryStats:
    fingerprint: str
    calls: int
    total_ms: float
    mean_ms: float
    p95_ms: float | None
    max_ms: float | None
    rows: int
    routes: list[str]
    example: str


@dataclass
class NPlusOne:
    route: str
    fingerprint: str
    requests: int
    example: str
    trace_id: str


@dataclass
class Coverage:
    """What a reader's answer is based on: the window asked for, the span count read in it,
    the seconds the data covers, and how old the newest span is."""

    window_seconds: float
    spans: int
    covered_seconds: float
    newest_ns: int = 0
    complete: bool = True  # False while older data is still being read (live console)
    source: str = "files"

    @property
    def empty(self) -> bool:
        return self.spans == 0


class LatencySketch:
    """A DDSketch-style log-bucketed histogram (Masson, Rim & Lee, VLDB 2019): values fall in
    buckets ``(g^(i-1), g^i]`` with ``g = (1+a)/(1-a)``, so any quantile it answers is within
    relative error ``a`` (``RELATIVE_ERROR``, 1%) of a value of that rank. Sketches merge by
    adding counts, which is what per-minute aggregates need to answer any window.

    Written here rather than taken from the ``ddsketch`` package: that one pulls in protobuf
    bindings and numpy-free but slower dense stores; this is 40 lines, pure and sparse (a
    minute of one route holds a few dozen buckets)."""

    RELATIVE_ERROR = 0.01
    _GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
    _LOG_GAMMA = math.log(_GAMMA)
    _MIN = 1e-6  # ms; anything at or below is counted as zero

    __slots__ = ("buckets", "count", "max", "zeros")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.zeros = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        if value > self.max:
            self.max = value
        if value <= self._MIN:
            self.zeros += 1
            return
        i = math.ceil(math.log(value) / self._LOG_GAMMA)
        b = self.buckets
        b[i] = b.get(i, 0) + 1

    def merge(self, other: LatencySketch) -> None:
        self.count += other.count
        self.zeros += other.zeros
        if other.max > self.max:
            self.max = other.max
        b = self.buckets
        for i, n in other.buckets.items():
            b[i] = b.get(i, 0) + n

    def quantile(self, q: float) -> float:
        """The nearest-rank ``q`` quantile (0 < q <= 1, as ``opsctl.stats.percentile``)
        within the relative error; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count)) - 1  # 0-based index of that value
        seen = self.zeros
        if rank < seen:
            return 0.0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen > rank:
                # The middle of the bucket in relative terms: 2 g^i / (g + 1).
                return 2 * self._GAMMA**i / (self._GAMMA + 1)
        return self.max
