"""The CLI as a real subprocess: help is cheap and teaches, errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("django", "textual", "numpy", "sqlalchemy", "opentelemetry")


def test_help_imports_nothing_heavy():
    code = f"import sys, opsctl.cli\nprint([m for m in {HEAVY!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command_group():
    out = subprocess.run(
        [sys.executable, "-m", "opsctl.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("traces", "queries", "explain", "db", "vacuum", "retention", "resources",
                 "flags", "rollback", "migrate", "rasch", "demo"):  # fmt: skip
        assert name in out.stdout, name


def test_bad_input_is_one_line_on_stderr_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "opsctl.cli", "traces", "list", "--since", "soon",
         "--telemetry-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr


def test_json_output_is_json(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "opsctl.cli", "traces", "stats", "--json",
         "--telemetry-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    # An empty folder is "no data": still valid JSON, and exit 3 so a script can tell.
    assert json.loads(out.stdout) == [] and out.returncode == 3
