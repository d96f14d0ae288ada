"""HTTP server telemetry for a request served outside Django's middleware.

``backend/exams/save_fastpath.py`` serves the auto-save straight from WSGI. Its requests must
look exactly like those the Django instrumentation records, so dashboards, alerts and opsctl
cannot tell the difference: the same server span (name, kind, parent from ``traceparent``,
attributes) and the same ``http.server.request.duration`` and ``http.server.active_requests``
instruments, with the same attributes. The instruments are the instrumentation's own: asked
for under its meter's name, version and schema, the SDK hands back the same objects.

What is cheaper than the middleware: the sampling decision comes first, and a request the
sampler drops costs no span attributes at all; the metric attributes are built once per
(method, scheme, protocol, status).
"""

from __future__ import annotations

import functools
import os
import time
from timeit import default_timer

from opentelemetry import context, trace
from opentelemetry.instrumentation.django.version import __version__ as _django_inst_version
from opentelemetry.propagate import extract
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanKind, Status, StatusCode

from backend.ops import telemetry

# The meter and tracer identity of opentelemetry-instrumentation-django under the stable HTTP
# conventions (OTEL_SEMCONV_STABILITY_OPT_IN=http, set by telemetry.setup).
_SCOPE = "opentelemetry.instrumentation.django"
_SCHEMA = Schemas.V1_21_0.value

_cache: dict = {}


def _instruments():
    """(tracer, duration histogram, active-requests counter) for this process's providers, or
    None while telemetry is off."""
    current = telemetry.providers()
    if current is None:
        return None
    if _cache.get("providers") is not current:
        tracer_provider, meter_provider = current
        meter = meter_provider.get_meter(_SCOPE, _django_inst_version, schema_url=_SCHEMA)
        from opentelemetry.instrumentation._semconv import HTTP_DURATION_HISTOGRAM_BUCKETS_NEW
        from opentelemetry.semconv._incubating.metrics.http_metrics import (
            create_http_server_active_requests,
        )
        from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION

        _cache["instruments"] = (
            tracer_provider.get_tracer(_SCOPE, _django_inst_version, schema_url=_SCHEMA),
            meter.create_histogram(
                name=HTTP_SERVER_REQUEST_DURATION,
                description="Duration of HTTP server requests.",
                unit="s",
                # The instrumentation's advisory (its values are telemetry.HTTP_SECONDS); a
                # different one would make the SDK warn on every process start.
                explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
            ),
            create_http_server_active_requests(meter),
        )
        _cache["providers"] = current
    return _cache["instruments"]


@functools.lru_cache(maxsize=256)
def _duration_attrs(method: str, scheme: str, protocol: str, route: str, status: int) -> dict:
    attrs = {
        "http.request.method": method,
        "url.scheme": scheme,
        "network.protocol.version": protocol,
        "http.route": route,
        "http.response.status_code": status,
    }
    if status >= 500:
        attrs["error.type"] = str(status)
    return attrs


@functools.lru_cache(maxsize=16)
def _active_attrs(method: str, scheme: str) -> dict:
    return {"http.request.method": method, "url.scheme": scheme}


def _span_attributes(environ: dict, route: str, protocol: str) -> dict:
    """What the instrumentation puts on a server span (stable HTTP conventions)."""
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
    attrs = {
        "http.request.method": environ["REQUEST_METHOD"],
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
        "url.path": environ.get("PATH_INFO", ""),
        "server.address": name,
        "server.port": int(port or environ.get("SERVER_PORT") or 0),
        "network.protocol.version": protocol,
        "http.route": route,
    }
    if environ.get("QUERY_STRING"):
        attrs["url.query"] = environ["QUERY_STRING"]
    if environ.get("REMOTE_ADDR"):
        attrs["client.address"] = environ["REMOTE_ADDR"]
    if environ.get("HTTP_USER_AGENT"):
        attrs["user_agent.original"] = environ["HTTP_USER_AGENT"]
    return attrs


class ServerRequest:
    """One request's span and measurements: ``begin`` when it arrives, ``end`` with its status.
    Use it as ``rec = ServerRequest.begin(environ, route)`` (None while telemetry is off)."""

    __slots__ = ("active", "histogram", "method", "protocol", "remote", "route", "scheme",
                 "span", "start", "token")  # fmt: skip

    @classmethod
    def begin(cls, environ: dict, route: str) -> ServerRequest | None:
        instruments = _instruments()
        if instruments is None:
            return None
        self = cls()
        tracer, self.histogram, self.active = instruments
        self.route = route
        self.method = environ["REQUEST_METHOD"]
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1").rpartition("/")[2]
        self.start = default_timer()
        self.remote = "HTTP_TRACEPARENT" in environ
        parent = extract(environ_carrier(environ)) if self.remote else None
        # The sampler decides before any attribute is collected: a dropped request costs only
        # the decision (and the span is a no-op the DB wrapper sees as not recording).
        self.span = tracer.start_span(
            f"{self.method} {route}", context=parent, kind=SpanKind.SERVER,
            start_time=time.time_ns(),
        )  # fmt: skip
        if self.span.is_recording():
            self.span.set_attributes(_span_attributes(environ, route, self.protocol))
        self.token = context.attach(trace.set_span_in_context(self.span))
        self.active.add(1, _active_attrs(self.method, self.scheme))
        return self

    def end(self, status: int, error: BaseException | None = None) -> None:
        duration = max(default_timer() - self.start, 0.0)
        if not self.span.is_recording() and (status >= 500 or duration >= slow_seconds()):
            self._keep(status, duration, error)
        try:
            if self.span.is_recording():
                self.span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    self.span.set_attribute("error.type", str(status))
                    self.span.set_status(Status(StatusCode.ERROR))
                if error is not None:
                    self.span.record_exception(error)
            self.span.end()
        finally:
            context.detach(self.token)
        self.histogram.record(
            duration,
            _duration_attrs(self.method, self.scheme, self.protocol, self.route, status),
        )
        self.active.add(-1, _active_attrs(self.method, self.scheme))

    def _keep(self, status: int, duration: float, error: BaseException | None) -> None:
        """The server span of an unsampled request that failed or was slow, made afterwards
        (without its SQL children, which were not recorded)."""
        if self.remote:  # the caller decided this trace's sampling; its decision stands
            return
        end_ns = time.time_ns()
        span = _instruments()[0].start_span(
            f"{self.method} {self.route}", kind=SpanKind.SERVER,
            context=context.Context(),  # a root: under the dropped span it would be dropped too
            start_time=end_ns - int(duration * 1e9),
            attributes={telemetry.KEPT_ATTRIBUTE: "error" if status >= 500 else "slow",
                        "http.route": self.route, "http.request.method": self.method,
                        "http.response.status_code": status},
        )  # fmt: skip
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        if error is not None:
            span.record_exception(error)
        span.end(end_time=end_ns)


def slow_seconds() -> float:
    """A request at least this slow keeps its span unsampled (OPS_SLOW_REQUEST_MS, 500)."""
    if "slow" not in _cache:
        _cache["slow"] = float(os.environ.get("OPS_SLOW_REQUEST_MS") or 500) / 1000
    return _cache["slow"]


def environ_carrier(environ: dict) -> dict[str, str]:
    """The W3C trace-context headers of a WSGI environ, as the propagator reads them."""
    carrier = {"traceparent": environ["HTTP_TRACEPARENT"]}
    if "HTTP_TRACESTATE" in environ:
        carrier["tracestate"] = environ["HTTP_TRACESTATE"]
    return carrier
