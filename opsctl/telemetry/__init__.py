"""Reading the service's telemetry: OTLP JSON lines (files.py, the one-shot reader the CLI
uses; incremental.py, the live reader `opsctl top` refreshes from) and Prometheus
(prometheus.py). model.py holds the shapes they all return. Importing this package is cheap
(orjson and the standard library only)."""

from opsctl.stats import percentile
from opsctl.telemetry.files import (
    empty_hint,
    file_age_seconds,
    is_error,
    iter_raw,
    iter_spans,
    list_traces,
    n_plus_one,
    query_stats,
    route_stats,
    since_from,
    telemetry_files,
    trace_tree,
)
from opsctl.telemetry.model import (
    CLIENT,
    NO_DATA_EXIT,
    SERVER,
    STATUS_ERROR,
    Coverage,
    LatencySketch,
    NoTelemetry,
    NPlusOne,
    QueryStats,
    ReadStats,
    RouteStats,
    Span,
    TraceNode,
    TraceSummary,
)

__all__ = [
    "CLIENT",
    "NO_DATA_EXIT",
    "SERVER",
    "STATUS_ERROR",
    "Coverage",
    "LatencySketch",
    "NPlusOne",
    "NoTelemetry",
    "QueryStats",
    "ReadStats",
    "RouteStats",
    "Span",
    "TraceNode",
    "TraceSummary",
    "empty_hint",
    "file_age_seconds",
    "is_error",
    "iter_raw",
    "iter_spans",
    "list_traces",
    "n_plus_one",
    "percentile",
    "query_stats",
    "route_stats",
    "since_from",
    "telemetry_files",
    "trace_tree",
]
