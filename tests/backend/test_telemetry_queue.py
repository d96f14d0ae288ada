"""The telemetry queue: measurements and spans recorded off the request thread arrive whole,
in order, with their attributes and trace context; overflow is counted, never blocking."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from backend.ops.telemetry_queue import (
    QueuedMeterProvider,
    TelemetryQueue,
    register_dropped_counter,
)


def _points(reader, name):
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return list(m.data.data_points)
    return []


def test_items_run_in_order_and_a_failing_one_does_not_stop_the_rest():
    q = TelemetryQueue(chunk=2)
    seen = []
    q.put(seen.append, 1)
    q.put(lambda: 1 / 0)
    for i in range(2, 6):
        q.put(seen.append, i)
    assert seen == [] and len(q) == 6  # nothing runs on the caller's thread
    assert q.flush() == 6
    assert seen == [1, 2, 3, 4, 5] and len(q) == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    q = TelemetryQueue(limit=3)
    seen = []
    for i in range(5):
        q.put(seen.append, i)
    assert q.dropped == 2
    q.flush()
    assert seen == [0, 1, 2]
    reader = InMemoryMetricReader()
    register_dropped_counter(MeterProvider(metric_readers=[reader]).get_meter("t"), q)
    assert [p.value for p in _points(reader, "exam.telemetry.dropped")] == [2]


def test_the_flusher_thread_drains_and_stop_flushes_the_rest():
    q = TelemetryQueue(interval=0.01)
    seen = []
    q.start()
    q.put(seen.append, "a")
    for _ in range(200):
        if seen:
            break
        time.sleep(0.01)
    assert seen == ["a"]
    q.stop()
    q.put(seen.append, "b")  # after stop, only an explicit flush runs it
    q.flush()
    assert seen == ["a", "b"]


def test_queued_instruments_reach_the_sdk_with_their_values_and_attributes():
    reader = InMemoryMetricReader()
    q = TelemetryQueue()
    meter = QueuedMeterProvider(MeterProvider(metric_readers=[reader]), q).get_meter("t")
    hist = meter.create_histogram("h", unit="s")
    updown = meter.create_up_down_counter("active")
    counter = meter.create_counter("c")
    attrs = {"http.route": "a/"}
    hist.record(0.25, attrs)
    hist.record(0.75, attrs)
    updown.add(1, attrs)
    updown.add(-1, attrs)
    counter.add(3, {"k": "v"})
    attrs["http.route"] = "changed/"  # a caller reusing its dict changes nothing recorded
    assert len(q) == 5  # queued, not yet recorded
    q.flush()
    (h,) = _points(reader, "h")
    assert (h.count, h.sum, dict(h.attributes)) == (2, 1.0, {"http.route": "a/"})
    assert [p.value for p in _points(reader, "active")] == [0]
    assert [(p.value, dict(p.attributes)) for p in _points(reader, "c")] == [(3, {"k": "v"})]


def test_a_measurement_inside_a_sampled_span_keeps_its_exemplar():
    reader = InMemoryMetricReader()
    q = TelemetryQueue()
    hist = QueuedMeterProvider(MeterProvider(metric_readers=[reader]), q).get_meter("t")
    hist = hist.create_histogram("h", unit="s")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        hist.record(0.5, {"r": "x"})
        trace_id = span.get_span_context().trace_id
    q.flush()  # outside the span now: the context travelled with the measurement
    (h,) = _points(reader, "h")
    assert [e.trace_id for e in h.exemplars] == [trace_id]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_collection_sees_everything_measured_before_it():
    reader = InMemoryMetricReader()
    q = TelemetryQueue()
    meter = QueuedMeterProvider(MeterProvider(metric_readers=[reader]), q).get_meter("t")
    register_dropped_counter(meter, q)
    meter.create_histogram("h").record(1.0)
    (h,) = _points(reader, "h")  # no explicit flush: collecting drained the queue
    assert h.count == 1 and len(q) == 0
