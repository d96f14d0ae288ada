"""Route RED and SQL latency from a real Prometheus (the Debian package, started on a free
port with data backfilled by promtool), with the PromQL over the dashboard's metric names."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opsctl.cli import app
from opsctl.telemetry import NO_DATA_EXIT
from opsctl.telemetry import prometheus as prom
from tests.opsctl.promfixture import ROUTE, Prometheus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Prometheus(tmp_path_factory.mktemp("prometheus"), minutes=30) as p:
        yield p


def test_route_red_over_a_window(server):
    rows, cov = prom.route_stats(server.url, 900, at=server.end)
    by = {r.route: r for r in rows}
    assert rows[0].route == ROUTE  # the save route first
    save = by[ROUTE]
    # 10 ok + 0.1 failing saves a second over 15 minutes (the counters are exact).
    assert save.requests == pytest.approx(10.1 * 900, rel=0.01)
    assert save.rps == pytest.approx(10.1, rel=0.02)
    assert save.error_pct == pytest.approx(100 * 0.1 / 10.1, rel=0.02)
    # Half of the requests take at most 5 ms, 80% at most 10 ms, all at most 25 ms.
    assert save.p50_ms == pytest.approx(5.0, rel=0.01)
    assert 10.0 < save.p95_ms <= 25.0 and save.p95_ms <= save.p99_ms <= 25.0
    assert by["api/leaderboard/"].error_pct == 0.0
    assert cov.source == "prometheus" and cov.covered_seconds == pytest.approx(900, abs=15)
    assert cov.newest_ns == server.end * 10**9


def test_req_per_second_is_over_the_time_the_samples_cover(server):
    # A one-hour window over 30 minutes of data: the rate is not halved.
    rows, cov = prom.route_stats(server.url, 3600, at=server.end)
    save = next(r for r in rows if r.route == ROUTE)
    assert cov.covered_seconds == pytest.approx(1800, abs=30)
    assert save.rps == pytest.approx(10.1, rel=0.03)


def test_sql_latency_by_fingerprint(server):
    rows, _ = prom.query_stats(server.url, 900, "total", 10, at=server.end)
    by = {q.fingerprint: q for q in rows}
    fast, slow = by["0ea7a938eae128df"], by["e47b69fb2ad7eb4f"]
    assert fast.calls == pytest.approx(20 * 900, rel=0.01)
    assert fast.mean_ms == pytest.approx(2.0, rel=0.01)
    assert slow.mean_ms == pytest.approx(20.0, rel=0.01)
    assert [q.fingerprint for q in rows] == ["e47b69fb2ad7eb4f", "0ea7a938eae128df"]  # by total
    assert fast.routes == [ROUTE] and fast.max_ms is None and fast.example == ""
    assert 10.0 < fast.p95_ms <= 25.0


def test_no_samples_in_the_window_is_no_data(server):
    rows, cov = prom.route_stats(server.url, 900, at=server.start - 3600)
    assert rows == [] and cov.empty


def test_label_selector_narrows_every_query(server, monkeypatch):
    monkeypatch.setenv(prom.SELECTOR_ENV, 'http_route="api/leaderboard/"')
    rows, _ = prom.route_stats(server.url, 900, at=server.end)
    assert [r.route for r in rows] == ["api/leaderboard/"]


def test_cli_traces_stats_from_prometheus(server):
    runner = CliRunner()
    r = runner.invoke(app, ["traces", "stats", "--json", "--prometheus", server.url])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["route"] == ROUTE and rows[0]["requests"] > 8000
    r = runner.invoke(app, ["traces", "stats", "--prometheus", server.url],
                      env={"OPS_PROMETHEUS_URL": server.url})  # fmt: skip
    # Not a terminal: the table is TSV on stdout, its caption (the source) on stderr.
    assert r.exit_code == 0 and f"Prometheus {server.url}" in r.stderr
    assert r.stdout.splitlines()[0].split("\t")[0] == "route"
    assert r.stdout.splitlines()[1].split("\t")[0] == ROUTE
    # Nothing counted for what is asked: no data, exit 3, not an empty success.
    r = runner.invoke(app, ["traces", "stats", "--prometheus", server.url, "--json"],
                      env={prom.SELECTOR_ENV: 'service_name="not-deployed"'})  # fmt: skip
    assert r.exit_code == NO_DATA_EXIT and json.loads(r.stdout) == [] and "no data" in r.stderr
    # Unreachable: one line, exit 1.
    r = runner.invoke(app, ["traces", "stats", "--prometheus", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "unreachable" in r.stderr and len(r.stderr.splitlines()) == 1
