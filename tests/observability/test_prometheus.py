"""Every dashboard and alert expression, evaluated by a real Prometheus (Debian 2.42) against
series produced by the real backend (gunicorn, both databases) under load.

How the series get to Prometheus: the backend writes its metrics as OTLP JSON lines (the
official file exporter, one file per worker); a small HTTP endpoint in this test serves them
as the Collector's Prometheus exporter would (otlp_to_prometheus.py: the Collector config's
label transform and the exporter's documented naming rules, workers added up), and Prometheus
scrapes it with the shipped scrape config (deploy/prometheus/prometheus.yml, targets swapped
for local ones), along with real node_exporter, postgres_exporter (PostgreSQL pass) and
blackbox_exporter probing the gunicorn's /readyz. The shipped rules are loaded, so recorded
SLIs are evaluated by Prometheus itself.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.gunicorn_server import GunicornServer, django_database_url, free_port
from tests.observability import otlp_to_prometheus
from tests.observability.stack import ROOT, Process, Prometheus, ensure

pytestmark = pytest.mark.slow

ENV = "production"
RULES = ROOT / "dashboards" / "alerts" / "exam-backend.rules.yml"
GROUPING = re.compile(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)")
FUNCS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "topk", "max", "min", "avg",
    "count", "by", "without", "on", "ignoring", "and", "or", "unless", "bool", "absent",
    "vector", "predict_linear", "group_left", "group_right", "offset",
}  # fmt: skip


def _on_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def selectors(expr: str) -> list[str]:
    """The instant/range vector selectors of ``expr`` (metric name with its matchers)."""
    text = GROUPING.sub("", expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = m.group(1), m.group(2) or "", m.group(3)
        if call or name in FUNCS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        if m.start() > 0 and text[m.start() - 1] in "\"'=~":
            continue
        out.append(name + matchers)
    return out


def used_labels(expr: str, templates: str = "") -> set[str]:
    labels = set()
    for group in GROUPING.findall(expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    labels |= set(re.findall(r"\$labels\.(\w+)", templates))
    labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", templates))
    return labels - {"le"}


class _Collector(BaseHTTPRequestHandler):
    directory: Path

    def do_GET(self):
        body = otlp_to_prometheus.exposition(self.directory).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _scrape_config(tmp: Path, ports: dict, backend_url: str) -> Path:
    """The shipped prometheus.yml with local targets, 2 s intervals and the shipped rules."""
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "2s", "evaluation_interval": "2s"}
    cfg.pop("alerting", None)
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group.pop("interval", None)  # the global 2 s, so a short test sees recorded SLIs
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    cfg["rule_files"] = [str(tmp / "rules.yml")]
    targets = {
        "otel-collector": [f"127.0.0.1:{ports['collector']}"],
        "node": [f"127.0.0.1:{ports['node']}"],
        "postgres": [f"127.0.0.1:{ports['postgres']}"],
        "blackbox-readyz": [f"{backend_url}/readyz"],
        "blackbox": [f"127.0.0.1:{ports['blackbox']}"],
    }
    jobs = []
    for job in cfg["scrape_configs"]:
        name = job["job_name"]
        if name == "postgres" and not ports.get("postgres_on"):
            continue
        job["static_configs"] = [{"targets": targets[name], "labels": sc.get("labels", {})}
                                 for sc in job["static_configs"][:1]]  # fmt: skip
        job["scrape_interval"] = "2s"
        for relabel in job.get("relabel_configs", []):
            if relabel.get("replacement") == "blackbox:9115":
                relabel["replacement"] = f"127.0.0.1:{ports['blackbox']}"
        jobs.append(job)
    cfg["scrape_configs"] = jobs
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _load(base: str, exam_id: int, tokens: list[str], saves_per_student: int) -> int:
    """Students start sessions and save answers (bounded count), plus reads of other routes."""

    def student(token: str) -> int:
        ok = 0
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=30, headers=headers) as c:
            sid = c.post(f"/api/exams/{exam_id}/sessions/").json()["session_id"]
            for seq in range(1, saves_per_student + 1):
                r = c.post(f"/api/sessions/{sid}/answers/",
                           json={"question": 1, "answer": str(seq), "seq": seq})  # fmt: skip
                ok += r.status_code == 200
                c.get("/healthz")
            c.post(f"/api/sessions/{sid}/answers/", json={"question": "x"})  # a 4xx
            c.post(f"/api/sessions/{sid}/submit/")
            c.get(f"/api/sessions/{sid}/results/")
            c.get("/api/leaderboard/", params={"exam": exam_id})
            c.get("/api/exams/")
        return ok

    with ThreadPoolExecutor(max_workers=6) as pool:
        return sum(pool.map(student, tokens))


@pytest.fixture
def stack(transactional_db, tmp_path):
    from django.db import connections

    from backend.ops.models import RetentionRun
    from tests.backend.factories import make_exam, make_student

    tools = ensure("prometheus", "prometheus-node-exporter", "prometheus-blackbox-exporter",
                   *(["prometheus-postgres-exporter"] if _on_postgres() else []))  # fmt: skip
    RetentionRun.objects.create(outcome="ok")
    exam = make_exam()
    tokens = [make_student(f"P{i}", ext=f"prom-{i}")[1] for i in range(6)]
    db_url = django_database_url()
    for conn in connections.all():
        conn.close()

    telemetry = tmp_path / "telemetry"
    backend = GunicornServer(db_url, workers=2, threads=4, log_path=tmp_path / "gunicorn.log",
                             env={"OPS_TELEMETRY_DIR": str(telemetry), "DEPLOY_ENV": ENV,
                                  "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                                  "OPS_N_PLUS_ONE_THRESHOLD": "1"})  # fmt: skip
    procs: list[Process] = []
    server = None
    try:
        backend.start(timeout=60)
        handler = type("Collector", (_Collector,), {"directory": telemetry})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports = {"collector": server.server_address[1], "node": free_port(),
                 "blackbox": free_port(), "postgres": free_port(), "prometheus": free_port(),
                 "postgres_on": _on_postgres()}  # fmt: skip
        node = Process([tools["prometheus-node-exporter"],
                        f"--web.listen-address=127.0.0.1:{ports['node']}"],
                       tmp_path / "node.log")  # fmt: skip
        procs.append(node)
        blackbox = Process([tools["prometheus-blackbox-exporter"],
                            f"--web.listen-address=127.0.0.1:{ports['blackbox']}",
                            f"--config.file={ROOT / 'deploy' / 'prometheus' / 'blackbox.yml'}"],
                           tmp_path / "blackbox.log")  # fmt: skip
        procs.append(blackbox)
        if _on_postgres():
            dsn = db_url + ("&" if "?" in db_url else "?") + "sslmode=disable"
            pg = Process([tools["prometheus-postgres-exporter"],
                          f"--web.listen-address=127.0.0.1:{ports['postgres']}"],
                         tmp_path / "postgres_exporter.log",
                         env={**os.environ, "DATA_SOURCE_NAME": dsn})  # fmt: skip
            procs.append(pg)
            pg.wait_http(f"http://127.0.0.1:{ports['postgres']}/metrics")
        node.wait_http(f"http://127.0.0.1:{ports['node']}/metrics")
        blackbox.wait_http(f"http://127.0.0.1:{ports['blackbox']}/metrics")
        config = _scrape_config(tmp_path, ports, backend.url)
        prom = Process([tools["prometheus"], f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                       tmp_path / "prometheus.log")  # fmt: skip
        procs.append(prom)
        prom.wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready")
        api = Prometheus(f"http://127.0.0.1:{ports['prometheus']}")
        saved, got = 0, []
        # Load in rounds until Prometheus holds the backend's series over several scrapes.
        # Bounded by time, not by a count of rounds: how fast a round goes says nothing about
        # how many scrapes it spans (a faster save path finished 12 rounds before the first).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            saved += _load(backend.url, exam.id, tokens, 15)
            got = api.query(
                "count_over_time(http_server_request_duration_seconds_count"
                '{http_route="api/sessions/<int:session_id>/answers/"}[5m])'
            )
            if got and min(float(r["value"][1]) for r in got) >= 5:
                break
            time.sleep(1.0)
        assert saved > 0 and got, "Prometheus never held the backend's request series"
        yield api, backend
    finally:
        for p in reversed(procs):
            p.stop()
        if server is not None:
            server.shutdown()
        backend.stop()


def _variables(api: Prometheus, dash: dict) -> dict[str, str]:
    """Grafana's query variables, resolved as Grafana does (label_values), all values."""
    values = {}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, f"${var['name']}: {q}"
        match = m.group(1)
        for name, val in values.items():
            match = match.replace(f"${name}", val)
        got = api.label_values(m.group(2), match)
        assert got, f"${var['name']} has no values: {q}"
        assert all(re.fullmatch(r"[\w.:-]+", v) for v in got), got  # no regex escaping needed
        values[var["name"]] = "|".join(got)
    return values


# Series that exist only once something went wrong: a 5xx, an N+1 request (the backend has no
# route that repeats a statement). Every expression that reads them falls back with `or`
# (checked below), so it still returns data at zero; their labels are checked in-process by
# tests/opsctl/test_dashboards.py, which provokes both.
OPTIONAL = re.compile(r'http_response_status_code=~"5\.\."|exam_db_n_plus_one_total')
ZERO_FALLBACK = re.compile(r"or (on\(\) )?vector\(0\)\s*$")


def _needs_postgres(expr: str) -> bool:
    return "pg_" in expr


def test_dashboards_and_alerts_on_a_real_prometheus(stack):
    api, backend = stack
    _check_sql_latency_is_measured_in_seconds_buckets(api)
    _check_series_carry_only_service_environment_and_host(api)
    _check_outage_is_seen_by_the_probe(api)
    _check_every_expression_returns_data_with_its_labels(api)
    _check_total_outage_pages(api, backend)


def _check_every_expression_returns_data_with_its_labels(api):
    failures = []
    dash = json.loads((ROOT / "dashboards" / "exam-backend.json").read_text())
    variables = _variables(api, dash)
    assert variables["env"] == ENV and "exam-backend" in variables["service"].split("|")
    # Recorded SLIs first: Prometheus evaluates the shipped recording rules itself.
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        if "record" in rule:
            got = api.wait_for(rule["record"], timeout=120)
            if not got:
                failures.append(f"recording rule {rule['record']}: no data")
            for series in got:
                missing = used_labels(rule["expr"]) - set(series["metric"])
                if missing:
                    failures.append(f"{rule['record']}: lacks {missing}")
    checked = skipped = 0
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, val in variables.items():
                expr = expr.replace(f"${name}", val)
            if _needs_postgres(expr) and not _on_postgres():
                skipped += 1
                continue
            got = api.wait_for(expr, timeout=60)
            checked += 1
            if not got:
                failures.append(f"panel {panel['title']!r}: no data for {expr}")
                continue
            need = used_labels(expr, target.get("legendFormat", ""))
            if OPTIONAL.search(expr) and ZERO_FALLBACK.search(expr):
                # Nothing went wrong in this run: the fallback's single unlabelled zero.
                if got == [] or any(s["metric"] for s in got if not need <= set(s["metric"])):
                    failures.append(f"panel {panel['title']!r}: bad zero fallback {got}")
                continue
            for series in got:
                if need - set(series["metric"]):
                    failures.append(
                        f"panel {panel['title']!r}: lacks {need - set(series['metric'])}"
                    )
                    break
    for rule in rules:
        if "alert" not in rule:
            continue
        api.query(rule["expr"])  # evaluates without error (asserted inside)
        need = used_labels(rule["expr"], json.dumps(rule.get("annotations", {})))
        for sel in selectors(rule["expr"]):
            if OPTIONAL.search(sel):
                assert " or " in rule["expr"], f"{rule['alert']}: no fallback for {sel}"
                continue
            if _needs_postgres(sel) and not _on_postgres():
                skipped += 1
                continue
            got = api.wait_for(sel, timeout=60)
            checked += 1
            if not got:
                failures.append(f"alert {rule['alert']}: no data for {sel}")
                continue
            lacking = [need - set(s["metric"]) for s in got if need - set(s["metric"])]
            if lacking:
                failures.append(f"alert {rule['alert']}: {sel} lacks {lacking[0]}")
    assert not failures, "\n".join(failures)
    assert checked >= 60
    if _on_postgres():
        assert skipped == 0


def _check_sql_latency_is_measured_in_seconds_buckets(api):
    """The SQL p95 reads milliseconds or less, not the 4.75 s of millisecond-sized buckets."""
    got = api.query("histogram_quantile(0.95, sum by (le) "
                    "(rate(db_client_operation_duration_seconds_bucket[5m])))")  # fmt: skip
    assert got
    p95 = float(got[0]["value"][1])
    assert 0 < p95 < 1.0, p95


def _check_series_carry_only_service_environment_and_host(api):
    """No per-process label: two workers (and a recycle) make one series per label set."""
    got = api.query('{job="exam-backend"}')
    assert got
    resource_labels = set()
    for s in got:
        resource_labels |= set(s["metric"])
    assert {"service_name", "deployment_environment", "host_name"} <= resource_labels
    assert not {"process_pid", "service_instance_id", "process_command"} & resource_labels
    # instance is the Collector scraped (one per Collector), not a worker process.
    assert len({s["metric"].get("instance") for s in got}) == 1
    saves = api.query('http_server_request_duration_seconds_count'
                      '{http_route="api/sessions/<int:session_id>/answers/",'
                      'http_response_status_code="200"}')  # fmt: skip
    assert len(saves) == 1, saves


def _check_outage_is_seen_by_the_probe(api):
    """/readyz is probed for real: the probe succeeds while the backend answers."""
    got = api.wait_for('probe_success{job="blackbox-readyz"} == 1', timeout=60)
    assert got and got[0]["metric"]["host_name"] == "127.0.0.1"
    deadline = time.monotonic() + 60
    while not api.query('up{job="otel-collector"} == 1') and time.monotonic() < deadline:
        time.sleep(1)
    assert api.query('up{job="otel-collector"} == 1')


def _check_total_outage_pages(api, backend):
    """Stop the backend: BackendDown's expression (the alert minus its 2-minute `for`) finds
    the host, while the save SLO alerts have nothing to say (no saves, no ratio)."""
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"] if "alert" in r}  # fmt: skip
    assert not api.query(rules["BackendDown"]["expr"])
    backend.stop()
    got = api.wait_for(rules["BackendDown"]["expr"], timeout=120)
    assert got, "the probe did not see the stopped backend"
    assert got[0]["metric"]["host_name"] == "127.0.0.1"
    assert got[0]["metric"]["job"] == "blackbox-readyz"
