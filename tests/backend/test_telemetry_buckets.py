"""Metrics as Prometheus will see them: duration histograms with boundaries in their unit,
deltas over OTLP (so the Collector can add workers up), and global providers installed once
through the public API."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backend.ops import telemetry
from tests.backend.factories import auth, make_exam, make_student


def _saves(client, n: int) -> None:
    exam = make_exam()
    _, token = make_student()
    sid = client.post(f"/api/exams/{exam.id}/sessions/", **auth(token)).json()["session_id"]
    for seq in range(1, n + 1):
        r = client.post(f"/api/sessions/{sid}/answers/", {"question": 1, "answer": str(seq),
                        "seq": seq}, content_type="application/json", **auth(token))  # fmt: skip
        assert r.status_code == 200


def _histograms(reader) -> dict[str, list]:
    from opentelemetry.sdk.metrics.export import Histogram

    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if isinstance(m.data, Histogram):
                    out[m.name] = (m.unit, list(m.data.data_points))
    return out


@pytest.mark.django_db
def test_duration_histograms_have_buckets_in_their_unit(client, tmp_path):
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    telemetry.setup(directory=tmp_path, span_exporter=InMemorySpanExporter(),
                    metric_reader=reader, force=True)  # fmt: skip
    try:
        _saves(client, 5)
        telemetry.force_flush()
        hist = _histograms(reader)
    finally:
        telemetry.teardown()
    assert {"db.client.operation.duration", "http.server.request.duration"} <= set(hist)
    for name, (unit, points) in hist.items():
        assert name in telemetry.HISTOGRAM_BUCKETS, f"{name}: no explicit buckets"
        assert unit == "s", name
        for p in points:
            assert tuple(p.explicit_bounds) == telemetry.HISTOGRAM_BUCKETS[name], name
    # The save SLO reads the 100 ms bucket.
    assert 0.1 in telemetry.HISTOGRAM_BUCKETS["http.server.request.duration"]
    # SQL statements of a save take well under 10 ms: they land below the 0.01 s boundary,
    # not all in the first bucket of the SDK's millisecond-sized defaults (0..5 "s").
    bounds = telemetry.HISTOGRAM_BUCKETS["db.client.operation.duration"]
    below_10ms = bounds.index(0.01) + 1
    points = hist["db.client.operation.duration"][1]
    assert sum(sum(p.bucket_counts[:below_10ms]) for p in points) > 0


class _Receiver(BaseHTTPRequestHandler):
    bodies: list

    def do_POST(self):
        self.bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.django_db
def test_otlp_exports_counters_and_histograms_as_deltas(client, tmp_path, monkeypatch):
    """What the Collector receives: counters and histograms with delta temporality (its
    Prometheus exporter adds up the deltas of every worker into one series per host)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    handler = type("Receiver", (_Receiver,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", raising=False)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    telemetry.setup(directory=tmp_path, span_exporter=InMemorySpanExporter(), force=True)
    try:
        _saves(client, 3)
        telemetry.force_flush()
    finally:
        telemetry.teardown()
        server.shutdown()
    kinds = {}
    for path, body in handler.bodies:
        if path != "/v1/metrics":
            continue
        req = ExportMetricsServiceRequest()
        req.ParseFromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    field = m.WhichOneof("data")
                    if field in ("histogram", "sum"):
                        kinds[m.name] = getattr(m, field).aggregation_temporality
    assert (
        kinds["db.client.operation.duration"]
        == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )
    assert (
        kinds["http.server.request.duration"]
        == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )


def test_global_providers_are_set_once_through_the_public_api(tmp_path):
    """A second setup in the same process (a test, or a fork) points the globals at the new
    SDK providers without touching OpenTelemetry's private set-once guard."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    source = Path(telemetry.__file__).read_text()
    assert "_SET_ONCE" not in source and "metrics._internal" not in source
    seen = []
    for _ in range(2):
        telemetry.setup(directory=tmp_path, span_exporter=InMemorySpanExporter(),
                        metric_reader=InMemoryMetricReader(), force=True)  # fmt: skip
        try:
            tracer_provider, meter_provider = telemetry._instruments["providers"]
            assert trace.get_tracer_provider().delegate is tracer_provider
            assert metrics.get_meter_provider().delegate is meter_provider
            seen.append((trace.get_tracer_provider(), tracer_provider))
        finally:
            telemetry.teardown()
    assert seen[0][0] is seen[1][0]  # one global, installed once
    assert seen[0][1] is not seen[1][1]  # forwarding to the newest SDK provider
