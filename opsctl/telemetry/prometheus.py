"""Route RED and SQL latency from Prometheus, for production where spans go to a Collector.

The PromQL is over the metric names and labels the Grafana dashboard uses
(dashboards/exam-backend.json): ``http_server_request_duration_seconds`` (labels
``http_route``, ``http_response_status_code``) and ``db_client_operation_duration_seconds``
(``db_query_fingerprint``, ``http_route``), as the Collector's Prometheus exporter names the
OpenTelemetry histograms. Latency percentiles come from the histogram buckets
(``histogram_quantile``), so they are as fine as the buckets, not exact.

Only the standard library (urllib): importing this costs nothing."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from opsctl.telemetry.model import Coverage, QueryStats, RouteStats

HTTP = "http_server_request_duration_seconds"
DB = "db_client_operation_duration_seconds"
ENV = "OPS_PROMETHEUS_URL"
#: Label matchers added to every query, as the dashboard's $env/$service variables do, e.g.
#: ``deployment_environment="production",service_name="exam-backend"``.
SELECTOR_ENV = "OPS_PROMETHEUS_SELECTOR"


def _sel(*extra: str) -> str:
    parts = [p for p in (os.environ.get(SELECTOR_ENV, "").strip(), *extra) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


class PrometheusError(Exception):
    """Prometheus could not be asked or refused the query (one line, URL included)."""


def _range(window: float) -> str:
    return f"{max(int(window), 1)}s"


def query(url: str, promql: str, at: float | None = None, timeout: float = 10.0) -> list[dict]:
    """An instant query's vector: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except Exception:
            detail = ""
        raise PrometheusError(f"Prometheus at {url} refused a query: {detail or exc}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"Prometheus at {url} unreachable: {reason}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url}: {body.get('error', 'query failed')}")
    return body["data"]["result"]


def _by(rows: list[dict], label: str) -> dict[str, float]:
    out = {}
    for r in rows:
        v = float(r["value"][1])
        if not math.isnan(v):
            out[r["metric"].get(label, "")] = v
    return out


def _coverage(url: str, metric: str, window: float, at: float, spans: int) -> Coverage:
    """The seconds the window's samples actually cover: from the oldest to the newest
    sample of the metric within it (a backend up for 2 minutes covers 2 minutes)."""
    r = _range(window)
    series = f"{metric}_count{_sel()}"
    rows = query(url, f"min(min_over_time(timestamp({series})[{r}:15s]))", at)
    first = float(rows[0]["value"][1]) if rows else 0.0
    rows = query(url, f"max(timestamp({series}))", at)
    last = float(rows[0]["value"][1]) if rows else 0.0
    covered = max(last - first, 1.0) if spans else 0.0
    newest_ns = int(last * 1e9) if last else 0
    return Coverage(window, spans, covered, newest_ns, True, "prometheus")


def route_stats(url: str, window: float, at: float | None = None):
    """(RED per route, coverage) over the last ``window`` seconds (at ``at``, default now).
    ``requests`` is the increase of the request counter; req/s divides it by the time the
    samples cover."""
    at = time.time() if at is None else at
    r = _range(window)
    route = "http_route"
    count = _by(query(url, f"sum by ({route}) (increase({HTTP}_count{_sel()}[{r}]))", at), route)
    five = _sel('http_response_status_code=~"5.."')
    errors = _by(query(url, f"sum by ({route}) (increase({HTTP}_count{five}[{r}]))", at), route)
    quantiles = {}
    for q in (0.5, 0.95, 0.99):
        promql = f"histogram_quantile({q}, sum by (le, {route}) (rate({HTTP}_bucket{_sel()}[{r}])))"
        quantiles[q] = _by(query(url, promql, at), route)
    total = round(sum(count.values()))
    cov = _coverage(url, HTTP, window, at, total)
    covered = cov.covered_seconds or 1.0
    rows = []
    for name, n in count.items():
        if n <= 0:
            continue
        ms = [round(1000 * quantiles[q].get(name, math.nan), 2) for q in (0.5, 0.95, 0.99)]
        error_pct = round(100 * errors.get(name, 0.0) / n, 2)
        rows.append(RouteStats(name, round(n), round(n / covered, 3), error_pct, *ms))
    rows.sort(key=lambda x: (not x.route.endswith("/answers/"), -x.requests))
    return rows, cov


def query_stats(url: str, window: float, by: str = "total", limit: int = 50,
                at: float | None = None):  # fmt: skip
    """(SQL per fingerprint, coverage): calls, total and mean time, p95 from the buckets.
    Prometheus keeps no maximum, no rows and no statement text: those are None/0/""."""
    at = time.time() if at is None else at
    r = _range(window)
    fp = "db_query_fingerprint"
    sel = _sel()
    calls = _by(query(url, f"sum by ({fp}) (increase({DB}_count{sel}[{r}]))", at), fp)
    total = _by(query(url, f"sum by ({fp}) (increase({DB}_sum{sel}[{r}]))", at), fp)
    promql = f"histogram_quantile(0.95, sum by (le, {fp}) (rate({DB}_bucket{sel}[{r}])))"
    p95 = _by(query(url, promql, at), fp)
    routes: dict[str, set] = {}
    for row in query(url, f"sum by ({fp}, http_route) (increase({DB}_count{sel}[{r}])) > 0", at):
        routes.setdefault(row["metric"].get(fp, ""), set()).add(row["metric"].get("http_route"))
    cov = _coverage(url, DB, window, at, round(sum(calls.values())))
    out = []
    for key, n in calls.items():
        if n <= 0:
            continue
        ms = 1000 * total.get(key, 0.0)
        p = p95.get(key)
        p95_ms = None if p is None else round(1000 * p, 3)
        used = sorted(x for x in routes.get(key, ()) if x)
        out.append(QueryStats(key, round(n), round(ms, 3), round(ms / n, 3), p95_ms, None, 0,
                              used, ""))  # fmt: skip
    from opsctl.telemetry.files import sort_queries

    return sort_queries(out, by, limit), cov
