"""How domain values read on a terminal, shared by the CLI and the console (pure)."""

from __future__ import annotations


def flag_value(value: dict | None) -> str:
    """A flag value as on-call reads it: on, off or a percentage."""
    if value is None:
        return "-"
    if not value.get("enabled"):
        return "off"
    return "on" if value.get("percent", 100) >= 100 else f"{value['percent']}%"


def megabytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def elapsed(seconds: float | None) -> str:
    """A running time as on-call reads it: 850ms, 12.3s, 4m05s, 2h03m."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
