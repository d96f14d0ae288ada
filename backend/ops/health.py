"""Liveness and readiness probes for the load balancer."""

from __future__ import annotations

import threading
import time

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse

_MIGRATIONS_OK_TTL = 30.0
_state = {"migrations_ok_until": 0.0}
_lock = threading.Lock()


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _unapplied_migrations() -> list[str]:
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{m.app_label}.{m.name}" for m, _ in plan]


def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cur:
            cur.execute("SELECT 1")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JsonResponse({"status": "unavailable", "reason": f"database: {reason}"}, status=503)
    now = time.monotonic()
    if _state["migrations_ok_until"] < now:
        # Loading the migration graph costs milliseconds; a ready answer is cached briefly.
        pending = _unapplied_migrations()
        if pending:
            return JsonResponse(
                {
                    "status": "unavailable",
                    "reason": f"{len(pending)} unapplied migration(s)",
                    "unapplied": pending,
                },
                status=503,
            )
        with _lock:
            _state["migrations_ok_until"] = now + _MIGRATIONS_OK_TTL
    return JsonResponse({"status": "ready"})
