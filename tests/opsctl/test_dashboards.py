"""Dashboards, alert rules and the Collector config: structure, and every metric they query
is one the backend really emits (names collected from an in-memory reader after real
requests, translated to Prometheus names the standard way)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "dashboards" / "alerts" / "exam-backend.rules.yml"
PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "topk", "max", "min", "avg",
    "count", "by", "without", "on", "ignoring", "and", "or", "unless", "le", "bool",
}  # fmt: skip


def exprs() -> list[str]:
    out = []
    for path in DASHBOARDS:
        for p in json.loads(path.read_text())["panels"]:
            out += [t["expr"] for t in p.get("targets", [])]
    out += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return out


def metric_names(expr: str) -> set[str]:
    text = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    return {t for t in re.findall(r"\b[a-z_][a-z0-9_]*\b", text) if t not in PROMQL_WORDS}


def prometheus_names(metric) -> set[str]:
    """The OpenTelemetry -> Prometheus translation (spec 'Prometheus and OpenMetrics
    Compatibility'): dots to underscores, unit suffix, _total for monotonic sums,
    _bucket/_sum/_count for histograms."""
    from opentelemetry.sdk.metrics.export import Histogram, Sum

    base = metric.name.replace(".", "_")
    unit = metric.unit or ""
    suffixes = {"s": "seconds", "ms": "milliseconds", "%": "percent", "By": "bytes"}
    unit = "" if unit.startswith("{") else suffixes.get(unit, unit)
    if unit and not base.endswith("_" + unit):
        base = f"{base}_{unit}"
    if isinstance(metric.data, Histogram):
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    if isinstance(metric.data, Sum) and metric.data.is_monotonic:
        return {f"{base}_total"}
    return {base}


@pytest.fixture
def emitted(client, tmp_path):
    from django.test import override_settings
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from backend.ops import telemetry
    from backend.ops.models import RetentionRun
    from tests.backend.factories import auth, make_exam, make_student

    reader = InMemoryMetricReader()
    telemetry.setup(directory=tmp_path, span_exporter=InMemorySpanExporter(),
                    metric_reader=reader, force=True)  # fmt: skip
    try:
        RetentionRun.objects.create(outcome="ok")
        exam = make_exam()
        _, token = make_student()
        sid = client.post(f"/api/exams/{exam.id}/sessions/", **auth(token)).json()["session_id"]
        client.post(f"/api/sessions/{sid}/answers/", {"question": 1, "answer": "1"},
                    content_type="application/json", **auth(token))  # fmt: skip
        client.post(f"/api/sessions/{sid}/submit/", **auth(token))
        with override_settings(ROOT_URLCONF="tests.backend.test_telemetry"):
            client.get("/n-plus-one/")
        names = set()
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    names |= prometheus_names(m)
        yield names
    finally:
        telemetry.teardown()


@pytest.mark.django_db
def test_every_metric_queried_is_emitted(emitted):
    assert "http_server_request_duration_seconds_bucket" in emitted
    assert "db_client_operation_duration_seconds_sum" in emitted
    assert "exam_db_n_plus_one_total" in emitted
    used = set().union(*(metric_names(e) for e in exprs()))
    assert used, "no metric names found in the dashboards"
    assert used <= emitted, f"queried but never emitted: {sorted(used - emitted)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    text = path.read_text()
    dash = json.loads(text)
    assert dash["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        assert any("runbooks/" in link["url"] for link in p.get("links", [])), p["title"]
    # No hard-coded datasource uid anywhere.
    uids = re.findall(r'"uid":\s*"([^"]*)"', text)
    assert set(uids) <= {"${datasource}", dash["uid"]}
    titles = " ".join(p["title"] for p in panels)
    for needed in ("Save", "SQL time by fingerprint", "N+1", "Resource", "retention",
                   "Calibration"):  # fmt: skip
        assert needed.lower() in titles.lower(), needed


def test_alert_rules_cover_the_issue_and_link_runbooks():
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"]}  # fmt: skip
    assert {"SaveLatencyHigh", "ErrorRateHigh", "DiskCritical", "MemoryCritical",
            "RetentionOverdue", "RetentionFailed", "CalibrationFailed"} <= set(rules)  # fmt: skip
    for name, rule in rules.items():
        assert "/runbooks/" in rule["annotations"]["runbook_url"], name


def test_collector_config_is_wired():
    cfg = yaml.safe_load((ROOT / "dashboards" / "otel-collector.yaml").read_text())
    pipelines = cfg["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipe[kind]:
                assert component in cfg[kind], f"{name}: {kind[:-1]} {component} not defined"
    assert "otlp" in pipelines["traces"]["receivers"]
    assert any(e.startswith("prometheus") for e in pipelines["metrics"]["exporters"])
    assert any("tempo" in e for e in pipelines["traces"]["exporters"])


def test_provisioning_loads_dashboards_and_datasources():
    prov = ROOT / "dashboards" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "datasources.yaml").read_text())
    assert {d["type"] for d in ds["datasources"]} == {"prometheus", "tempo"}
    dash = yaml.safe_load((prov / "dashboards" / "exam.yaml").read_text())
    assert dash["providers"][0]["type"] == "file"
