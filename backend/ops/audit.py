"""The audit trail: every state-changing operation records one event through ``record``."""

from __future__ import annotations

import getpass
import socket
import uuid
from typing import Any

from backend.ops.models import AuditEvent


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


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
    return AuditEvent.objects.create(
        action=action,
        target=target,
        actor=actor or default_actor(),
        reason=reason,
        old_value=old_value,
        new_value=new_value,
        details=details or {},
        change_set=change_set,
        host=socket.gethostname(),
    )
