"""Real Prometheus components for the tests: Debian packages, installed by the project's own
script when missing, started on free loopback ports, stopped afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "systemd-analyze": "systemd",
}


def ensure(*commands: str) -> dict[str, str]:
    """Paths of ``commands``; their Debian packages are installed first when missing."""
    missing = sorted({PACKAGES[c] for c in commands if shutil.which(c) is None})
    if missing:
        subprocess.run([str(ROOT / "scripts" / "ensure-debs.sh"), *missing], check=True,
                       timeout=900)  # fmt: skip
    paths = {}
    for c in commands:
        path = shutil.which(c) or shutil.which(c, path="/usr/bin:/usr/sbin:/bin")
        assert path, f"{c} is still missing after installing {PACKAGES[c]}"
        paths[c] = path
    return paths


class Process:
    """A daemon started for one test, stopped (and its log kept) at the end."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=self._log, env=env)

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} not ready within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match},
                      timeout=30)  # fmt: skip
        return r.json()["data"]

    def wait_for(self, expr: str, timeout: float = 180.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(1.0)
