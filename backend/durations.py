"""The one duration grammar of the product (pure: no I/O, no Django).

``parse_duration`` accepts one or more ``<number><unit>`` parts, largest first or in any
order (``500ms``, ``30s``, ``1m30s``, ``2h``, ``7d``, ``1w``, ``1.5h``), or a bare number of
seconds (``90``, ``0.5``). Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``. Negative,
zero-length text, ``nan`` and ``inf`` are refused. Used by opsctl's options, the migration
guard's timeouts, the load test and the telemetry windows alike, so ``7d`` or ``500ms``
means the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# Far beyond any window or timeout, and well inside what datetime arithmetic can hold.
MAX_SECONDS = 3650 * 86400.0

HELP = "use e.g. 500ms, 30s, 1m30s, 15m, 2h, 7d"


def parse_seconds(text: str) -> float:
    """Seconds in ``text`` (see the module doc); ValueError with a one-line reason."""
    raw = (text or "").strip().lower()
    if not raw:
        raise ValueError(f"not a duration: {text!r} ({HELP})")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        value = float(raw)
    else:
        pos, value = 0, 0.0
        for m in _PART.finditer(raw):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(raw):
            raise ValueError(f"not a duration: {text!r} ({HELP})")
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is too long (at most 3650d)")
    return value


def parse_duration(text: str) -> dt.timedelta:
    return dt.timedelta(seconds=parse_seconds(text))


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A relative duration back from now, or an absolute ISO 8601 time (UTC if naive)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        at = dt.datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use a duration like 15m or 2h, or an ISO time)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
