"""Dashboards, alert rules and the Collector config: structure, the dashboard parsed by
Grafana's own schema library, and every backend metric they query is one the backend really
emits (names collected from an in-memory reader after real requests, translated to
Prometheus names the standard way). Exporter metrics (node, postgres, blackbox, up) and
every expression's data and labels are checked against a real Prometheus in
tests/observability/test_prometheus.py."""

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
    "vector", "absent", "predict_linear",
}  # fmt: skip
# Series from the standard exporters and Prometheus itself, not from the backend.
EXPORTER_PREFIXES = ("pg_", "node_", "probe_", "up")


def exprs() -> list[str]:
    out = []
    for path in DASHBOARDS:
        for p in json.loads(path.read_text())["panels"]:
            out += [t["expr"] for t in p.get("targets", [])]
    out += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return out


def panel_targets() -> list[tuple[str, str]]:
    panels = [p for path in DASHBOARDS for p in json.loads(path.read_text())["panels"]]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def recorded() -> set[str]:
    return {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
            if "record" in r}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Backend metric names in ``expr`` (recorded series and exporter metrics left out)."""
    text = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    names = set(re.findall(r"(?<![\w:])[a-z_][a-z0-9_:]*(?![\w:])", text))
    return {t for t in names - PROMQL_WORDS - recorded() if not t.startswith(EXPORTER_PREFIXES)}


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
    assert "exam_calibration_exams_failing" in emitted
    used = set().union(*(metric_names(e) for e in exprs()))
    assert "exam_resource_utilization_percent" in used
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
             for r in g["rules"] if "alert" in r}  # fmt: skip
    assert {"SaveErrorBudgetBurn", "SaveErrorBudgetBurnSlow", "SaveLatencyBudgetBurn",
            "SaveLatencyBudgetBurnSlow", "BackendDown", "BackendProbeMissing",
            "BackendTelemetryAbsent", "CollectorDown", "ErrorRateHigh", "DiskCritical",
            "MemoryCritical", "RetentionOverdue", "RetentionNeverSucceeded", "RetentionFailed",
            "CalibrationFailed", "CalibrationMetricsAbsent", "PostgresDown",
            "PostgresConnectionsNearLimit", "PostgresLongTransaction", "PostgresDeadlocks",
            "HostDiskWillFill", "HostInodesLow", "HostMemoryLow",
            "HostLoadHigh"} <= set(rules)  # fmt: skip
    # Recorded series used by alerts are defined.
    for name, rule in rules.items():
        for used in re.findall(r"exam:[a-z_]+:[a-z_0-9]+", rule["expr"]):
            assert used in recorded(), f"{name}: {used} is not recorded"
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


def test_collector_keeps_only_service_environment_and_host_as_labels():
    cfg = yaml.safe_load((ROOT / "dashboards" / "otel-collector.yaml").read_text())
    metrics = cfg["service"]["pipelines"]["metrics"]["processors"]
    transform = next(p for p in metrics if p.startswith("transform"))
    assert metrics.index(transform) < metrics.index("batch")
    statements = [s for st in cfg["processors"][transform]["metric_statements"]
                  for s in st["statements"]]  # fmt: skip
    assert statements == [
        'keep_keys(attributes, ["service.name", "deployment.environment", "host.name"])'
    ]
    assert cfg["processors"][transform]["metric_statements"][0]["context"] == "resource"


def test_collector_writes_rotated_otlp_json_lines_where_opsctl_reads():
    """Issue 16: production has local files too: the file exporter with rotation, one file
    name per signal in one directory, named so opsctl tells traces from metrics."""
    cfg = yaml.safe_load((ROOT / "dashboards" / "otel-collector.yaml").read_text())
    pipelines = cfg["service"]["pipelines"]
    for signal in ("traces", "metrics"):
        name = next(e for e in pipelines[signal]["exporters"] if e.startswith("file"))
        exporter = cfg["exporters"][name]
        path = Path(exporter["path"])
        assert path.parent == Path("/var/lib/otelcol/exam"), path
        assert path.name.startswith(f"{signal}-") and path.suffix == ".jsonl", path
        assert exporter["format"] == "json"
        assert exporter["rotation"]["max_megabytes"] > 0 and exporter["rotation"]["max_backups"]
    readme = (ROOT / "README.md").read_text()
    assert "OPS_TELEMETRY_DIR=/var/lib/otelcol/exam" in readme


def test_dashboard_parses_with_grafana_foundation_sdk():
    """Grafana's own schema library: every key we write is one the schema knows (a key it
    does not know is dropped when parsed), and each panel and query has its typed model."""
    from grafana_foundation_sdk.cog import encoder, plugins
    from grafana_foundation_sdk.models import prometheus, stat, timeseries
    from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel

    plugins.register_default_plugins()

    def paths(o, p=""):
        if isinstance(o, dict):
            for k, v in o.items():
                yield from paths(v, f"{p}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                yield from paths(v, f"{p}[{i}]")
        else:
            yield p

    for path in DASHBOARDS:
        raw = json.loads(path.read_text())
        model = Dashboard.from_json(raw)
        again = json.loads(encoder.JSONEncoder().encode(model))
        unknown = set(paths(raw)) - set(paths(again))
        assert not unknown, f"{path.name}: not in Grafana's schema: {sorted(unknown)}"
        options = {"timeseries": timeseries.Options, "stat": stat.Options}
        for panel in model.panels:
            if isinstance(panel, RowPanel):
                continue
            assert isinstance(panel.options, options[panel.type_val]), panel.title
            assert all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title


def test_panels_filter_by_environment_and_service():
    dash = json.loads((ROOT / "dashboards" / "exam-backend.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["env"]["type"] == variables["service"]["type"] == "query"
    assert "$env" in variables["service"]["query"]["query"]
    for title, expr in panel_targets():
        for selector in re.findall(r"([a-z_:]+)\{([^}]*)\}", expr):
            name, matchers = selector
            if name in {"vector"}:
                continue
            assert 'deployment_environment=~"$env"' in matchers, (title, name)
            if not name.startswith(EXPORTER_PREFIXES):
                assert 'service_name=~"$service"' in matchers, (title, name)


def test_error_panels_show_zero_not_no_data():
    for title, expr in panel_targets():
        if "5.." in expr:
            assert "or vector(0)" in expr or "or 0 *" in expr, title


def test_provisioning_loads_dashboards_and_datasources():
    prov = ROOT / "dashboards" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "datasources.yaml").read_text())
    assert {d["type"] for d in ds["datasources"]} == {"prometheus", "tempo"}
    # No exemplar links: the backend's metrics carry no exemplars (datasources.yaml says why).
    prom = next(d for d in ds["datasources"] if d["type"] == "prometheus")
    assert "exemplarTraceIdDestinations" not in prom.get("jsonData", {})
    dash = yaml.safe_load((prov / "dashboards" / "exam.yaml").read_text())
    assert dash["providers"][0]["type"] == "file"
