"""OpenTelemetry for the backend: traces and metrics, set up once per process.

- HTTP server spans and the stable ``http.server.request.duration`` metric come from
  opentelemetry-instrumentation-django.
- Every SQL statement gets a client span from a Django ``execute_wrapper`` (the DB-API
  instrumentations cannot add the route, the fingerprint or N+1 detection): ``db.system``,
  ``db.query.text`` (placeholders only, never parameter values), ``db.query.fingerprint``,
  rows affected and ``http.route``; and the histogram ``db.client.operation.duration``.
- N+1: the same fingerprint more than ``TELEMETRY_N_PLUS_ONE`` times (default 10) in one
  request adds a ``db.n_plus_one`` event to the request span and counts ``exam.db.n_plus_one``.
- Exporters: OTLP (http/protobuf) when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (every
  standard OTEL_* variable applies, sampling included); otherwise OTLP JSON lines through the
  official file exporter, one file per process and hour under var/telemetry/, so workers
  never interleave writes.
- The ``telemetry.tracing`` flag switches spans off (and back on) without a restart.
- Every duration histogram has bucket boundaries in its own unit (``HISTOGRAM_BUCKETS``): the
  SDK's default boundaries (0, 5, 10 ... 10000) are sized for milliseconds and put every SQL
  statement, measured in seconds, in the first bucket.
- Over OTLP, counters and histograms are exported with delta temporality: the Collector drops
  per-process resource attributes (dashboards/otel-collector.yaml) and its Prometheus exporter
  adds up the deltas of every worker on a host into one cumulative series.
- The global providers are installed once per process tree, as forwarding providers; a later
  ``setup`` (after a fork, or in tests) points them at the new SDK providers. OpenTelemetry's
  set-once guard is never reset.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter as SdkCounter,
)
from opentelemetry.sdk.metrics import (
    Histogram as SdkHistogram,
)
from opentelemetry.sdk.metrics import (
    MeterProvider,
    ObservableCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from backend.ops.fingerprint import fingerprint, operation
from backend.ops.telemetry_queue import (
    QueuedMeterProvider,
    TelemetryQueue,
    register_dropped_counter,
)

log = logging.getLogger(__name__)

_setup_pid: int | None = None
_lock = threading.Lock()
_request: contextvars.ContextVar[dict | None] = contextvars.ContextVar("exam_request", default=None)
_instruments: dict = {}

# Bucket boundaries per duration histogram, in the histogram's unit. The save SLO ("within
# 100 ms") is read from the ``le="0.1"`` bucket, so 0.1 must stay a boundary.
HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DB_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
              0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    "http.server.request.duration": HTTP_SECONDS,  # s (stable HTTP semantic conventions)
    "http.server.duration": tuple(b * 1000 for b in HTTP_SECONDS),  # ms (old conventions)
    "db.client.operation.duration": DB_SECONDS,  # s
}


def views() -> list[View]:
    return [
        View(instrument_name=name,
             aggregation=ExplicitBucketHistogramAggregation(boundaries=list(bounds)))
        for name, bounds in HISTOGRAM_BUCKETS.items()
    ]  # fmt: skip


# Monotonic counters and histograms as deltas over OTLP (module docstring says why); gauges
# and up/down counters stay cumulative, as the Prometheus exporter needs them.
DELTA = {
    SdkCounter: AggregationTemporality.DELTA,
    SdkHistogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
}


class _ForwardingTracerProvider(trace.TracerProvider):
    """The process's global tracer provider: forwards to the current SDK provider."""

    def __init__(self):
        self.delegate: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(self, *args, **kwargs):
        return self.delegate.get_tracer(*args, **kwargs)


class _ForwardingMeterProvider(metrics.MeterProvider):
    """The process's global meter provider: forwards to the current SDK provider."""

    def __init__(self):
        self.delegate: metrics.MeterProvider = metrics.NoOpMeterProvider()

    def get_meter(self, *args, **kwargs):
        return self.delegate.get_meter(*args, **kwargs)


_global_tracer = _ForwardingTracerProvider()
_global_meter = _ForwardingMeterProvider()
_globals_installed = False


def _install_globals(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Point the global providers at this setup's SDK providers. The forwarding providers
    are registered with the public setters once per process (a forked child inherits them);
    afterwards only their delegate changes."""
    global _globals_installed
    _global_tracer.delegate = tracer_provider
    _global_meter.delegate = meter_provider
    if not _globals_installed:
        _globals_installed = True
        trace.set_tracer_provider(_global_tracer)
        metrics.set_meter_provider(_global_meter)


def _hour() -> str:
    return time.strftime("%Y%m%d%H", time.gmtime())


class _HourlyFiles:
    """Rotates the official file exporter: ``<kind>-<host>-<pid>-<YYYYmmddHH>.jsonl``."""

    def __init__(self, directory: Path, kind: str, factory):
        self.directory = directory
        self.kind = kind
        self.factory = factory
        self.hour = ""
        self.exporter = None
        self.lock = threading.Lock()

    def current(self):
        hour = _hour()
        with self.lock:
            if hour != self.hour or self.exporter is None:
                if self.exporter is not None:
                    self.exporter.shutdown()
                self.directory.mkdir(parents=True, exist_ok=True)
                name = f"{self.kind}-{socket.gethostname()}-{os.getpid()}-{hour}.jsonl"
                self.exporter = self.factory(self.directory / name)
                self.hour = hour
            return self.exporter

    def shutdown(self):
        with self.lock:
            if self.exporter is not None:
                self.exporter.shutdown()
                self.exporter = None


class HourlyFileSpanExporter(SpanExporter):
    def __init__(self, directory: Path):
        from opentelemetry.exporter.otlp.json.file import FileSpanExporter

        self.files = _HourlyFiles(directory, "traces", lambda p: FileSpanExporter(path=p))

    def export(self, spans):
        return self.files.current().export(spans) or SpanExportResult.SUCCESS

    def shutdown(self):
        self.files.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class HourlyFileMetricExporter(MetricExporter):
    def __init__(self, directory: Path):
        from opentelemetry.exporter.otlp.json.file import FileMetricExporter

        self.files = _HourlyFiles(directory, "metrics", lambda p: FileMetricExporter(path=p))
        super().__init__()  # cumulative temporality, as the file exporter's default

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        result = self.files.current().export(metrics_data)
        return result if result is not None else MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000, **kwargs):
        self.files.shutdown()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True


# The exam-day default: one request in ten is traced (with its SQL), decided at the root and
# followed by every hop (parent-based), so a trace is whole or absent. Every request still
# counts in the metrics (rates, errors, latency buckets), and on the save route an unsampled
# request that fails (5xx) or is slow keeps its server span (request_telemetry.py). At 100%
# span export cost a save worker ~0.5 ms of CPU. OPS_TRACE_SAMPLE_RATIO changes the ratio;
# the standard OTEL_TRACES_SAMPLER(_ARG) variables, when set, replace this default.
DEFAULT_SAMPLE_RATIO = 0.1
KEPT_ATTRIBUTE = "exam.trace.kept"


def sample_ratio() -> float:
    raw = os.environ.get("OPS_TRACE_SAMPLE_RATIO", "").strip()
    if not raw:
        return DEFAULT_SAMPLE_RATIO
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # also refuses nan
        raise ValueError(f"OPS_TRACE_SAMPLE_RATIO must be a number from 0 to 1, not {raw!r}")
    return ratio


def default_sampler() -> Sampler:
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return _get_from_env_or_default()
    return TraceIdRatioBased(sample_ratio())


class FlagSampler(Sampler):
    """Defers to the configured sampler while the ``telemetry.tracing`` flag is on."""

    def __init__(self, delegate: Sampler):
        self.delegate = delegate

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,
                      links=None, trace_state=None):  # fmt: skip
        if not tracing_enabled():
            return SamplingResult(Decision.DROP)
        if attributes and attributes.get(KEPT_ATTRIBUTE):
            # An unsampled request kept afterwards for what it turned out to be (error, slow):
            # backend/ops/request_telemetry.py.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"FlagSampler({self.delegate.get_description()})"


def tracing_enabled() -> bool:
    from django.conf import settings

    if not getattr(settings, "TELEMETRY_TRACING", True):
        return False
    from backend.ops import flags

    return flags.is_enabled("telemetry.tracing")


def _resource() -> Resource:
    from django.conf import settings

    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "exam-backend"),
            "service.version": getattr(settings, "SERVICE_VERSION", "0.1.0"),
            "deployment.environment": os.environ.get("DEPLOY_ENV", "development"),
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )


def setup(
    directory: Path | None = None,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    force: bool = False,
) -> None:
    """Install tracer and meter providers for this process (again after a fork).

    Tests pass their own exporter/reader; otherwise OTLP or hourly files are chosen.
    """
    global _setup_pid
    with _lock:
        if _setup_pid == os.getpid() and not force:
            return
        if _setup_pid == os.getpid() and "queue" in _instruments:
            _instruments["queue"].stop()  # set up again in this process: one flusher only
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
        from backend import config

        directory = directory or config.telemetry_dir()
        otlp = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        if span_exporter is None:
            if otlp:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                span_exporter = OTLPSpanExporter()
            else:
                span_exporter = HourlyFileSpanExporter(directory)
        if metric_reader is None:
            if otlp:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter,
                )

                temporality = (
                    None
                    if os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                    else DELTA
                )  # an explicit standard variable wins
                exporter = OTLPMetricExporter(preferred_temporality=temporality)
            else:
                exporter = HourlyFileMetricExporter(directory)
            interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000"))
            metric_reader = PeriodicExportingMetricReader(exporter, interval)
        sampler = ParentBased(FlagSampler(default_sampler()))
        tracer_provider = TracerProvider(resource=_resource(), sampler=sampler)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        meter_provider = MeterProvider(
            resource=_resource(), metric_readers=[metric_reader], views=views()
        )
        _install_globals(tracer_provider, meter_provider)
        queue = TelemetryQueue()
        queue.start()
        _instruments["queue"] = queue
        queued = QueuedMeterProvider(meter_provider, queue)
        meter = queued.get_meter("backend.ops.telemetry")
        _instruments["db_duration"] = meter.create_histogram(
            "db.client.operation.duration", unit="s",
            description="Duration of SQL statements, by fingerprint and route",
        )  # fmt: skip
        _instruments["n_plus_one"] = meter.create_counter(
            "exam.db.n_plus_one", unit="{request}",
            description="Requests that ran one statement shape more than the N+1 threshold",
        )  # fmt: skip
        from backend.ops import job_metrics
        from backend.ops.resources import register_gauges

        register_gauges(meter)
        job_metrics.register(meter)
        register_dropped_counter(meter, queue)
        _instruments["tracer"] = tracer_provider.get_tracer("backend.ops.telemetry")
        _instruments["providers"] = (tracer_provider, meter_provider)
        # One tuple per setup: request_telemetry.py rebuilds its instruments when it changes.
        _instruments["request_providers"] = (tracer_provider, queued)
        _instrument_django(tracer_provider, queued)
        _install_db_wrapper()
        _setup_pid = os.getpid()


def _instrument_django(tracer_provider, meter_provider) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    inst = DjangoInstrumentor()
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()
    inst.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


def shutdown() -> None:
    queue = _instruments.get("queue")
    if queue is not None:
        queue.stop()
    providers = _instruments.get("providers")
    if providers:
        for p in providers:
            p.shutdown()


def teardown() -> None:
    """Undo ``setup`` (tests): flush, stop exporters, remove the instrumentation."""
    global _setup_pid
    from django.db import connections
    from django.db.backends.signals import connection_created
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    shutdown()
    inst = DjangoInstrumentor()
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()
    connection_created.disconnect(dispatch_uid="exam-telemetry-db")
    for conn in connections.all(initialized_only=True):
        if _db_wrapper in conn.execute_wrappers:
            conn.execute_wrappers.remove(_db_wrapper)
    _instruments.clear()
    _setup_pid = None


def force_flush() -> None:
    queue = _instruments.get("queue")
    if queue is not None:
        queue.flush()
    providers = _instruments.get("providers")
    if providers:
        providers[0].force_flush()
        providers[1].force_flush()


def _install_db_wrapper() -> None:
    from django.db import connections
    from django.db.backends.signals import connection_created

    def add(connection, **kwargs):
        if _db_wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(_db_wrapper)

    connection_created.connect(add, weak=False, dispatch_uid="exam-telemetry-db")
    for conn in connections.all(initialized_only=True):
        add(conn)


def wsgi_request_class():
    """Django's WSGIRequest, answering ``build_absolute_uri("?")`` once per request.

    OpenTelemetry's Django middleware calls it three times per request (to test the URL
    against its exclusion list: request, view and response), and each call runs Django's
    urljoin: ~65 us of a save's ~1.2 ms. A request's URL does not change while it is served,
    so the first answer stands for the rest."""
    from django.core.handlers.wsgi import WSGIRequest

    class Request(WSGIRequest):
        _uri_query_only: str | None = None

        def build_absolute_uri(self, location=None):
            if location != "?":
                return super().build_absolute_uri(location)
            if self._uri_query_only is None:
                self._uri_query_only = super().build_absolute_uri(location)
            return self._uri_query_only

    return Request


def providers() -> tuple[TracerProvider, metrics.MeterProvider] | None:
    """This process's tracer provider and its queued meter provider (measurements recorded
    off the request thread), or None before ``setup``."""
    return _instruments.get("request_providers")


@contextlib.contextmanager
def request_scope(route: str):
    """The route and per-request statement counts the DB wrapper reads, for one request
    (RequestContextMiddleware for Django views; backend/exams/save_fastpath.py directly)."""
    token = _request.set({"route": route, "counts": Counter(), "flagged": set()})
    try:
        yield
    finally:
        _request.reset(token)


class RequestContextMiddleware:
    """Carries the route and per-request statement counts to the DB wrapper."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with request_scope(""):
            return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        ctx = _request.get()
        match = getattr(request, "resolver_match", None)
        if ctx is not None and match is not None:
            ctx["route"] = match.route or ""


def _n_plus_one_threshold() -> int:
    threshold = _instruments.get("n_plus_one_threshold")
    if threshold is None:
        from django.conf import settings

        threshold = _instruments["n_plus_one_threshold"] = int(
            getattr(settings, "TELEMETRY_N_PLUS_ONE", 10)
        )
    return threshold


def _db_wrapper(execute, sql, params, many, context):
    """One client span (when the request is sampled) and one duration measurement per
    statement. This runs on every statement of the hot path, so it does the least it can:
    the span and the measurement are queued as plain values (telemetry_queue.py makes them),
    and the metric attributes are built once per statement shape and route."""
    histogram = _instruments.get("db_duration")
    if histogram is None:
        return execute(sql, params, many, context)
    ctx = _request.get()
    route = ctx["route"] if ctx else ""
    fp = fingerprint(sql)[0]
    vendor = context["connection"].vendor
    attrs = _metric_attributes(vendor, fp, route)
    parent = trace.get_current_span()
    start = time.perf_counter()
    if parent.is_recording():
        start_ns = time.time_ns()
        error = None
        try:
            result = execute(sql, params, many, context)
        except Exception as exc:
            error = exc
            raise
        finally:
            rowcount = getattr(context.get("cursor"), "rowcount", -1) if error is None else -1
            _instruments["queue"].put(
                _emit_db_span, parent, sql, attrs, start_ns, time.time_ns(), rowcount, error
            )
    else:
        result = execute(sql, params, many, context)
    histogram.record(time.perf_counter() - start, attrs)
    if ctx is not None:
        counts = ctx["counts"]
        counts[fp] += 1
        if counts[fp] > _n_plus_one_threshold() and fp not in ctx["flagged"]:
            ctx["flagged"].add(fp)
            _instruments["n_plus_one"].add(1, {"http.route": route, "db.query.fingerprint": fp})
            if parent.is_recording():
                parent.add_event(
                    "db.n_plus_one",
                    {"db.query.fingerprint": fp, "db.query.text": sql,
                     "threshold": _n_plus_one_threshold()},
                )  # fmt: skip
    return result


def _emit_db_span(parent, sql, attrs, start_ns, end_ns, rowcount, error) -> None:
    """The client span of one statement, made from the queue (telemetry_queue.py says why)
    with the statement's own start and end times, as a child of the request's span."""
    verb = operation(sql)
    span = _instruments["tracer"].start_span(
        f"{verb} {attrs['db.system']}",
        context=trace.set_span_in_context(parent),
        kind=SpanKind.CLIENT,
        attributes={**attrs, "db.query.text": sql, "db.operation.name": verb},
        start_time=start_ns,
    )
    if rowcount is not None and rowcount >= 0:
        span.set_attribute("db.response.rows_affected", rowcount)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end(end_time=end_ns)


@functools.lru_cache(maxsize=8192)
def _metric_attributes(vendor: str, fp: str, route: str) -> dict:
    """Shared, never mutated: the SDK copies what it keeps."""
    attrs = {"db.system": vendor, "db.query.fingerprint": fp}
    if route:
        attrs["http.route"] = route
    return attrs
