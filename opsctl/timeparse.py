"""Operator time inputs. The grammar is ``backend.durations`` (one grammar for the backend and
opsctl alike); this name stays for the modules that import it from opsctl."""

from __future__ import annotations

from backend.durations import parse_duration, parse_seconds, parse_since

__all__ = ["parse_duration", "parse_seconds", "parse_since"]
