"""The Collector's OTLP -> Prometheus translation, applied to the backend's OTLP JSON files.

This is what dashboards/otel-collector.yaml does in production, step by step:

1. ``transform/keep_service_environment_host`` keeps only ``service.name``,
   ``deployment.environment`` and ``host.name`` of each resource;
2. the ``prometheus`` exporter with ``resource_to_telemetry_conversion`` turns those into the
   labels ``service_name``, ``deployment_environment``, ``host_name`` and sets ``job`` from
   ``service.name`` (kept by the scrape's ``honor_labels``);
3. names follow the exporter's documented rules (OpenTelemetry spec "Prometheus and
   OpenMetrics Compatibility", with metric suffixes on): invalid characters become ``_``, the
   unit is appended (``s`` -> ``seconds``, ``%`` -> ``percent``, ``By`` -> ``bytes``;
   annotations in braces such as ``{request}`` are dropped), monotonic sums get ``_total``,
   histograms become ``_bucket{le}``/``_sum``/``_count``; attribute keys become labels with
   ``.`` -> ``_``;
4. the series of several worker processes that end up with the same labels are added up. In
   production the backend sends deltas and the exporter accumulates them; the files hold each
   process's cumulative totals, and the sum of every process's latest total is the same number.

Written by hand because no Python library performs the Collector's translation; it is small
and its rules are the documented ones above.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import orjson

KEEP = {"service.name": "service_name", "deployment.environment": "deployment_environment",
        "host.name": "host_name"}  # fmt: skip
UNITS = {"s": "seconds", "ms": "milliseconds", "%": "percent", "By": "bytes", "1": "ratio"}


def _value(v: dict):
    for key in ("stringValue", "boolValue", "intValue", "doubleValue"):
        if key in v:
            return v[key]
    return ""


def _attrs(items) -> dict[str, str]:
    return {a["key"]: str(_value(a.get("value", {}))) for a in items or ()}


def _sanitize(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return re.sub(r"__+", "_", name)


def metric_name(name: str, unit: str, kind: str, monotonic: bool = False) -> str:
    base = _sanitize(name)
    unit = re.sub(r"\{[^}]*\}", "", unit or "")
    suffix = UNITS.get(unit, _sanitize(unit) if unit else "")
    if suffix == "ratio" and kind != "gauge":
        suffix = ""
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "sum" and monotonic and not base.endswith("_total"):
        base += "_total"
    return base


def _labels(resource: dict, point_attrs: dict) -> tuple:
    labels = {KEEP[k]: v for k, v in resource.items() if k in KEEP}
    if "service.name" in resource:
        labels["job"] = resource["service.name"]
    for k, v in point_attrs.items():
        labels[_sanitize(k)] = v
    return tuple(sorted(labels.items()))


def _last_line(path: Path) -> bytes | None:
    """The latest export of one process: the last complete line of its file."""
    data = path.read_bytes()
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    for line in reversed(lines):
        try:
            orjson.loads(line)
            return line
        except orjson.JSONDecodeError:
            continue  # a line being written right now
    return None


def samples(directory: Path) -> dict[tuple[str, tuple], float]:
    """``{(name, labels): value}``, as the Collector's exporter would expose them now."""
    counters: dict[tuple[str, tuple], float] = defaultdict(float)
    gauges: dict[tuple[str, tuple], tuple[int, float]] = {}
    for path in sorted(directory.glob("metrics-*.jsonl")):
        line = _last_line(path)
        if line is None:
            continue
        for rm in orjson.loads(line).get("resourceMetrics", []):
            resource = _attrs(rm.get("resource", {}).get("attributes"))
            for sm in rm.get("scopeMetrics", []):
                for m in sm.get("metrics", []):
                    _add(m, resource, counters, gauges)
    out = dict(counters)
    out.update({k: v for k, (_, v) in gauges.items()})
    return out


def _add(m, resource, counters, gauges) -> None:
    name, unit = m["name"], m.get("unit", "")
    if "histogram" in m:
        base = metric_name(name, unit, "histogram")
        for p in m["histogram"].get("dataPoints", []):
            labels = _labels(resource, _attrs(p.get("attributes")))
            cumulative = 0
            for bound, n in zip(
                [*p.get("explicitBounds", []), float("inf")],
                p.get("bucketCounts", []),
                strict=False,
            ):
                cumulative += int(n)
                le = "+Inf" if bound == float("inf") else _format(float(bound))
                counters[(f"{base}_bucket", (*labels, ("le", le)))] += cumulative
            counters[(f"{base}_sum", labels)] += float(p.get("sum", 0))
            counters[(f"{base}_count", labels)] += int(p.get("count", 0))
    elif "sum" in m:
        monotonic = bool(m["sum"].get("isMonotonic"))
        kind = "sum" if monotonic else "gauge"
        base = metric_name(name, unit, kind, monotonic)
        for p in m["sum"].get("dataPoints", []):
            key = (base, _labels(resource, _attrs(p.get("attributes"))))
            value = float(p.get("asDouble", p.get("asInt", 0)))
            if monotonic:
                counters[key] += value
            else:
                _latest(gauges, key, p, value)
    elif "gauge" in m:
        base = metric_name(name, unit, "gauge")
        for p in m["gauge"].get("dataPoints", []):
            key = (base, _labels(resource, _attrs(p.get("attributes"))))
            _latest(gauges, key, p, float(p.get("asDouble", p.get("asInt", 0))))


def _latest(gauges, key, point, value) -> None:
    ts = int(point.get("timeUnixNano", 0))
    if key not in gauges or gauges[key][0] <= ts:
        gauges[key] = (ts, value)


def _format(v: float) -> str:
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def exposition(directory: Path) -> str:
    """Prometheus text format (0.0.4) of ``samples``: what a scrape of :8889 returns."""
    lines = []
    for (name, labels), value in sorted(samples(directory).items()):
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        lines.append(f"{name}{{{body}}} {value!r}")
    return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
