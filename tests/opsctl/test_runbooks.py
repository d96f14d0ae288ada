"""Runbooks stay true: every link resolves to a runbook section, and every `$ opsctl ...`
command exists. Read-only commands run against a seeded demo database; actions are parsed
by the real CLI (they must not change anything in a test)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RUNBOOKS = ROOT / "runbooks"
SECTIONS = ["Symptoms", "What to look at", "Diagnosis", "Mitigation", "Verify", "Escalate"]
# Actions that change state: parsed only.
PARSE_ONLY = {("flags", "set"), ("rollback",), ("migrate", "apply"), ("vacuum",),
              ("retention", "run"), ("rasch", "calibrate"), ("rasch", "auto"),
              ("db", "cancel"), ("db", "terminate")}  # fmt: skip
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]+\b")
# What an operator would type for each placeholder, so parsing checks the types too.
SAMPLES = {
    "EXAM_ID": "1",
    "TRACE_ID": "0" * 32,
    "FINGERPRINT": "0123abcd",
    "CHANGE_ID": "abc123",
    "PID": "4242",
}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+\s+(.+)$", path.read_text(), re.M)}


def commands() -> list[tuple[str, str]]:
    found = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```console\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                if line.startswith("$ opsctl "):
                    found.append((path.name, line[2:]))
    return found


def test_every_runbook_has_the_sections():
    for path in RUNBOOKS.glob("*.md"):
        if path.name == "README.md":
            continue
        have = anchors(path)
        missing = [s for s in SECTIONS if slug(s) not in have]
        assert not missing, f"{path.name} lacks {missing}"
        assert "```console" in path.read_text(), path.name


def _links() -> list[str]:
    urls = []
    for dash in (ROOT / "dashboards").glob("*.json"):
        text = dash.read_text()
        urls += re.findall(r'"url":\s*"([^"]*runbooks/[^"]*)"', text)
    rules = yaml.safe_load((ROOT / "dashboards/alerts/exam-backend.rules.yml").read_text())
    urls += [r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"]
             if "alert" in r]  # fmt: skip
    for md in RUNBOOKS.glob("*.md"):
        urls += [f"runbooks/{u}" for u in re.findall(r"\]\(([\w\-]+\.md(?:#[\w\-]+)?)\)",
                                                       md.read_text())]  # fmt: skip
    return urls


@pytest.mark.parametrize("url", sorted(set(_links())))
def test_links_resolve_to_a_runbook_section(url):
    target = url.split("runbooks/", 1)[1]
    name, _, anchor = target.partition("#")
    path = RUNBOOKS / name
    assert path.exists(), f"{url}: no runbook {name}"
    if anchor:
        assert anchor in anchors(path), f"{url}: no section #{anchor} in {name}"


def _resolve(argv: list[str]):
    import typer.main

    from opsctl.cli import app

    cmd = typer.main.get_command(app)
    path = []
    rest = argv
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd = cmd.commands[rest[0]]
        rest = rest[1:]
    return cmd, tuple(path), rest


@pytest.mark.parametrize("where,line", commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_runbook_commands_exist(where, line):
    argv = [SAMPLES.get(a, a) for a in shlex.split(line)[1:]]
    cmd, path, rest = _resolve(argv)
    assert path, f"{where}: `{line}` names no opsctl command"
    ctx = cmd.make_context("opsctl " + " ".join(path), list(rest), resilient_parsing=False)
    assert ctx is not None


@pytest.mark.django_db(transaction=True)
def test_read_only_runbook_commands_run_on_a_seeded_demo(monkeypatch, tmp_path):
    from django.db import connection
    from typer.testing import CliRunner

    from backend.exams.seed import seed_demo
    from opsctl.cli import app
    from tests.e2e.gunicorn_server import django_database_url

    seed_demo(students=40, exams=3)
    monkeypatch.setenv("DATABASE_URL", django_database_url())
    monkeypatch.setenv("OPS_TELEMETRY_DIR", str(tmp_path))
    connection.close()
    ran = 0
    for where, line in commands():
        argv = shlex.split(line)[1:]
        _, path, _ = _resolve(argv)
        if any(path[: len(p)] == p for p in PARSE_ONLY) or PLACEHOLDER.search(line[7:]):
            continue
        if path == ("explain",) and "--top" in argv:
            continue  # needs query statistics from a running backend
        r = CliRunner().invoke(app, argv)
        # 3: UNKNOWN / no data (telemetry reads on an empty directory), never a crash.
        assert r.exit_code in (0, 1, 2, 3), f"{where}: `{line}` exited {r.exit_code}: {r.output}"
        assert "Traceback" not in r.output, f"{where}: `{line}`"
        ran += 1
    assert ran >= 15


# The Rasch helper owns calibrating-an-exam.md.
OTHERS = {"README.md", "calibrating-an-exam.md"}


def _section(path: Path, name: str) -> str:
    text = path.read_text()
    m = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1) if m else ""


@pytest.mark.parametrize("path", sorted(p for p in RUNBOOKS.glob("*.md") if p.name not in OTHERS),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_verify_step_says_how_it_fails(path):
    """A verify step that cannot fail is no check: each says what makes it fail."""
    assert "Fails if" in _section(path, "Verify"), path.name


def test_disk_critical_runbook_threshold_matches_the_rule():
    rules = yaml.safe_load((ROOT / "dashboards/alerts/exam-backend.rules.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "DiskCritical")
    threshold = re.search(r">\s*(\d+)\s*$", rule["expr"]).group(1)
    verify = _section(RUNBOOKS / "disk-pressure.md", "Verify")
    assert f"at or below {threshold}%" in verify
    assert f"> {threshold}" in verify


def test_every_alert_is_in_the_runbook_index():
    rules = yaml.safe_load((ROOT / "dashboards/alerts/exam-backend.rules.yml").read_text())
    index = (RUNBOOKS / "README.md").read_text()
    for alert in (r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r):
        assert f"`{alert}`" in index, alert
