"""Alert rules checked by the real promtool (Debian's prometheus 2.42): syntax, and unit tests
in which every alert fires on the series that should page and resolves once they recover."""

from __future__ import annotations

import subprocess

import yaml

from tests.observability.stack import ROOT, ensure

ALERTS = ROOT / "dashboards" / "alerts"
RULES = ALERTS / "exam-backend.rules.yml"
TESTS = ALERTS / "exam-backend.tests.yml"


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules():
    promtool = ensure("promtool")["promtool"]
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


def test_promtool_unit_tests_pass():
    promtool = ensure("promtool")["promtool"]
    r = subprocess.run([promtool, "test", "rules", str(TESTS)], capture_output=True, text=True,
                       cwd=ALERTS, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_tested_firing_and_resolved():
    """Each alert has at least one case where it fires and a later one where it is gone."""
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    cases: dict[str, list[tuple[str, bool]]] = {a: [] for a in alerts}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            assert case["alertname"] in alerts, f"test for unknown alert {case['alertname']}"
            cases[case["alertname"]].append((case["eval_time"], bool(case["exp_alerts"])))
    for alert, seen in cases.items():
        assert any(firing for _, firing in seen), f"{alert}: no test where it fires"
        assert any(not firing for _, firing in seen), f"{alert}: no test where it resolves"


def test_page_alerts_use_multiwindow_burn_rates_with_a_traffic_guard():
    rules = {r["alert"]: r for r in _rules() if "alert" in r}
    for name, windows in {"SaveErrorBudgetBurn": ("1h", "5m", "6h", "30m"),
                          "SaveLatencyBudgetBurn": ("1h", "5m", "6h", "30m")}.items():  # fmt: skip
        expr = rules[name]["expr"]
        assert "14.4" in expr and "6 *" in expr, name
        assert all(f"rate{w}" in expr for w in windows), name
        assert "exam:save_requests:rate1h * 3600 >= 100" in expr, name
        assert rules[name]["labels"]["severity"] == "page"
    for name in ("SaveErrorBudgetBurnSlow", "SaveLatencyBudgetBurnSlow"):
        assert "rate3d" in rules[name]["expr"] and rules[name]["labels"]["severity"] == "ticket"


def test_shipped_prometheus_and_blackbox_configs_are_valid(tmp_path):
    tools = ensure("promtool", "prometheus-blackbox-exporter")
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    cfg["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([tools["promtool"], "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert {"otel-collector", "node", "postgres", "blackbox-readyz"} <= jobs
    r = subprocess.run(
        [tools["prometheus-blackbox-exporter"], "--config.check",
         f"--config.file={ROOT / 'deploy' / 'prometheus' / 'blackbox.yml'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
