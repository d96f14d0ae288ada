"""Pure parsing of operator time inputs: ``15m``, ``2h``, ``7d``, ``30s`` or an ISO time."""

from __future__ import annotations

import datetime as dt
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 2h, 7d)")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A relative duration back from now, or an absolute ISO 8601 time (UTC if naive)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use a duration like 15m or 2h, or an ISO time)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
