"""Starting the server: no public signing key outside DEBUG, and two instances on one host
each keep their own gunicorn control socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.gunicorn_server import ROOT, GunicornServer

pytestmark = pytest.mark.slow


def _import_wsgi(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import backend.wsgi"],
        env={**base, "OPS_VAR_DIR": str(tmp_path), "OPS_TELEMETRY": "0", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_server_refuses_the_public_key_outside_debug(tmp_path):
    r = _import_wsgi(tmp_path)
    assert r.returncode != 0
    assert "SECRET_KEY is not set" in r.stderr
    assert _import_wsgi(tmp_path, DEBUG="1").returncode == 0
    assert _import_wsgi(tmp_path, SECRET_KEY="k" * 50).returncode == 0


def test_make_runs_key_file_is_generated_once_private_and_used(tmp_path, monkeypatch):
    from backend import config

    monkeypatch.setenv("OPS_VAR_DIR", str(tmp_path))
    path = config.ensure_secret_key_file()
    key = path.read_text().strip()
    assert len(key) >= 50 and (path.stat().st_mode & 0o777) == 0o600
    assert config.ensure_secret_key_file().read_text().strip() == key  # kept, not regenerated
    assert _import_wsgi(tmp_path).returncode == 0


def _control_sockets(var_dir: Path) -> set[str]:
    return {p.name for p in (var_dir / "run").glob("*.ctl")}


def test_two_instances_on_one_host_keep_their_own_control_sockets(database_url, tmp_path):
    from tests.e2e.gunicorn_server import django_database_url

    var = tmp_path / "v"  # short: a control socket path must fit AF_UNIX's 107 bytes
    servers = [
        GunicornServer(
            django_database_url(),
            workers=1,
            threads=1,
            env={"OPS_VAR_DIR": str(var), "OPS_TELEMETRY": "0"},
            log_path=tmp_path / f"g{i}.log",
        )
        for i in range(2)
    ]
    first, second = servers
    first.start(timeout=90)
    try:
        second.start(timeout=90)
        try:
            names = _control_sockets(var)
            assert names == {
                f"gunicorn-127_0_0_1_{first.port}.ctl",
                f"gunicorn-127_0_0_1_{second.port}.ctl",
            }
        finally:
            second.stop()
        # Stopping the second removed its socket only; the first still serves and has its own.
        assert _control_sockets(var) == {f"gunicorn-127_0_0_1_{first.port}.ctl"}
        import httpx

        assert httpx.get(f"{first.url}/readyz", timeout=10).status_code == 200
    finally:
        first.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "ture"}, "DEBUG='ture' is not a boolean"),
        ({"EXAM_SUBMIT_GRACE_SECONDS": "30s"}, "EXAM_SUBMIT_GRACE_SECONDS='30s' is not an integer"),
        ({"RETENTION_BUSY_BATCH_SIZE": "0"}, "RETENTION_BUSY_BATCH_SIZE='0' must be at least 1"),
        ({"RESOURCE_WARN": "nan"}, "RESOURCE_WARN='nan' is not a number"),
    ],
)
def test_bad_settings_stop_the_server_naming_the_variable(tmp_path, env, message):
    r = _import_wsgi(tmp_path, SECRET_KEY="k" * 50, **env)
    assert r.returncode != 0
    assert message in r.stderr.strip().splitlines()[-1]
