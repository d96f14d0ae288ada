"""The audit trail: every state-changing operation records one event through ``record``
(the ``ops_auditevent`` table), or, on a database without the backend's tables (opsctl
vacuum on any URL), through ``record_file`` (``var/audit.jsonl``). Importable without Django:
the model is imported when a row is written."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
import uuid
from typing import Any

from backend.ops.errors import InvalidInput

# The columns' limits (AuditEvent.actor / .target max_length; a test keeps them equal),
# checked before the INSERT: PostgreSQL refuses a longer value with an error in the middle of
# a change set, SQLite silently stores it.
ACTOR_MAX = 150
TARGET_MAX = 200


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def check_actor(actor: str | None) -> str | None:
    """``actor`` as given, or ``InvalidInput`` when the audit trail cannot hold it."""
    if actor is not None and len(actor) > ACTOR_MAX:
        raise InvalidInput(
            f"actor is {len(actor)} characters long; at most {ACTOR_MAX} are allowed"
        )
    return actor


def new_change_set() -> str:
    return uuid.uuid4().hex


def record(
    action: str,
    *,
    target: str = "",
    actor: str | None = None,
    reason: str = "",
    old_value: Any = None,
    new_value: Any = None,
    details: dict | None = None,
    change_set: str = "",
):
    """One ``AuditEvent`` row (returned)."""
    from backend.ops.models import AuditEvent

    actor = check_actor(actor) or default_actor()
    return AuditEvent.objects.create(
        action=action,
        target=target[:TARGET_MAX],
        actor=actor[:ACTOR_MAX],
        reason=reason,
        old_value=old_value,
        new_value=new_value,
        details=details or {},
        change_set=change_set,
        host=socket.gethostname(),
    )


def record_file(
    action: str,
    *,
    target: str = "",
    actor: str | None = None,
    reason: str = "",
    details: dict | None = None,
) -> str:
    """The same event as a JSON line in ``var/audit.jsonl``, for a database that has no audit
    table; returns the file's path."""
    from backend import config

    actor = check_actor(actor) or default_actor()
    path = config.var_dir() / "audit.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    event = {"at": dt.datetime.now(dt.UTC).isoformat(), "actor": actor, "action": action,
             "target": target, "host": socket.gethostname(), "details": details or {}}  # fmt: skip
    if reason:
        event["reason"] = reason
    with open(path, "a") as fh:
        fh.write(json.dumps(event, default=str) + "\n")
    return str(path)
