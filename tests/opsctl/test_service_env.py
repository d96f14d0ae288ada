"""opsctl's own Django settings stay in its process: the servers it starts get the shipped ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, subprocess, sys
from opsctl.service import setup_django
setup_django()
from django.conf import settings
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.environ.get('DB_POOL'))"],
    capture_output=True, text=True, check=True,
).stdout.strip()
print(json.dumps({
    "own_pool": "pool" in settings.DATABASES["default"]["OPTIONS"],
    "env": os.environ.get("DB_POOL"),
    "child": child,
}))
"""


def test_opsctl_runs_without_the_pool_and_its_children_inherit_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("DB_POOL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",  # settings only: no connect
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # opsctl itself uses plain connections, and a gunicorn it starts (rehearse, the benchmarks)
    # gets the server's default, the pool: before, every such server connected per request.
    assert seen == {"own_pool": False, "env": None, "child": "None"}
