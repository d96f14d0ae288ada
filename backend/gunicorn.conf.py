"""gunicorn settings, tuned for this host and overridable from the environment.

The worker model: one process per core, 8 threads each. A save is one database round trip
(the threads cover its wait) and ~0.5 ms of Python (one core's worth per process, the GIL);
PostgreSQL and the load balancer share the cores. Measured on 2 cores, PostgreSQL on the same
host, telemetry on at the shipped sampling, saves only (wrk, 32 connections): 2 x 8 served
1,582 saves/s at 661 us of server CPU per save and p99 69 ms; 4 x 4 (the old default) 1,415/s,
748 us, 95 ms; 3 x 4 1,547/s, 736 us, 82 ms. Under the open-model load at 1,000 students
`make bench ONLY=capacity` compares the models again. Fewer processes also mean fewer pooled
connections per host (DB_POOL_MAX, 10 by default, covers the 8 threads and the background
threads that read flags and job gauges).
"""

import hashlib
import multiprocessing
import os
import re
import tempfile

# Imported under a private name: every public module-level name here is read as a setting.
from backend.config import var_dir as _var_dir

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), so a second
# instance on the host took it over and stopping either removed the other's. Each instance gets
# its own, under its var dir and named after its bind address (unique on a host).
_ctl_dir = _var_dir() / "run"
_ctl_dir.mkdir(parents=True, exist_ok=True)
control_socket = str(_ctl_dir / f"gunicorn-{re.sub(r'[^A-Za-z0-9]+', '_', bind).strip('_')}.ctl")
if len(control_socket) > 100:  # AF_UNIX paths stop at 107 bytes; a deep var dir gets a digest
    _digest = hashlib.sha1(control_socket.encode()).hexdigest()[:16]
    control_socket = os.path.join(tempfile.gettempdir(), f"gunicorn-{_digest}.ctl")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# The load balancers (nginx, deploy/nginx/) whose X-Forwarded-Proto/-For this host trusts:
# list their addresses, comma-separated ("*" only when nothing else can reach the port).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Recycle workers now and then so a slow leak never reaches exam day's peak.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "20000"))
max_requests_jitter = 2000
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
wsgi_app = "backend.wsgi:application"


def post_fork(server, worker):
    # With --preload the app is imported in the master; each worker needs its own
    # exporters (and file names carry the worker's pid), so set up again after the fork.
    from django.conf import settings

    if settings.configured and settings.TELEMETRY_ENABLED:
        from backend.ops import telemetry

        telemetry.setup()


def worker_exit(server, worker):
    # Flush what the batch processors still hold, so a worker recycle loses no spans.
    try:
        from backend.ops import telemetry

        telemetry.shutdown()
    except Exception:  # exiting anyway; never block a worker's exit on telemetry
        pass
