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
