"""The audit trail: every state-changing operation records one event through ``record``."""

from __future__ import annotations

import getpass
import socket
import uuid
from typing import Any

from backend.ops.errors import InvalidInput
from backend.ops.models import AuditEvent

# The columns' limits, checked before the INSERT: PostgreSQL refuses a longer value with an
# error in the middle of a change set, SQLite silently stores it.
ACTOR_MAX = AuditEvent._meta.get_field("actor").max_length
TARGET_MAX = AuditEvent._meta.get_field("target").max_length


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
) -> AuditEvent:
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
