"""A real gunicorn serving the backend on a free loopback port, for e2e tests and benches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    """Start with ``start()``, stop with ``stop()``; ``url`` is the base URL.

    ``database_url`` must point at a database whose data is committed (a transactional test
    database or a bench database): the workers are other processes. ``workers``/``threads``
    None: as shipped (backend/gunicorn.conf.py's defaults for this host).
    """

    def __init__(
        self,
        database_url: str,
        workers: int | None = 2,
        threads: int | None = 4,
        env: dict | None = None,
        log_path: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.workers = workers
        self.threads = threads
        self.extra_env = env or {}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 30.0) -> GunicornServer:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            **({"GUNICORN_WORKERS": str(self.workers)} if self.workers else {}),
            **({"GUNICORN_THREADS": str(self.threads)} if self.threads else {}),
            "GUNICORN_LOGLEVEL": "warning",
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "backend" / "gunicorn.conf.py")],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn not ready on {self.url} within {timeout}s")

    def worker_pids(self) -> list[int]:
        import psutil

        if not self.proc:
            return []
        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def workers_booted(self) -> bool:
        """All ``workers`` are up and have loaded the app. A gthread worker runs one thread
        until then; loading the app (telemetry's exporter threads) or serving a request (its
        thread pool) adds more. On a busy machine a worker can take seconds to boot."""
        import psutil

        if not self.proc:
            return False
        try:
            workers = psutil.Process(self.proc.pid).children()
            return len(workers) == self.workers and all(
                w.status() != psutil.STATUS_ZOMBIE and w.num_threads() > 1 for w in workers
            )
        except psutil.Error:
            return False

    def kill_worker(self) -> int | None:
        """SIGKILL the oldest worker, as the OOM killer would; returns its pid (None if there
        is no worker right now). The master notices and forks a replacement."""
        import psutil

        if not self.proc:
            return None
        workers = sorted(psutil.Process(self.proc.pid).children(), key=lambda p: p.create_time())
        if not workers:
            return None
        try:
            workers[0].send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            return None
        return workers[0].pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def django_database_url() -> str:
    """The URL of the database Django is connected to now (the test database in tests)."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    pw = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return (
        f"postgresql://{s.get('USER') or 'postgres'}{pw}@{s.get('HOST') or '127.0.0.1'}:"
        f"{s.get('PORT') or 5432}/{s['NAME']}"
    )
