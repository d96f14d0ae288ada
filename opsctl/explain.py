"""Moved to ``opsctl.db.explain`` (the console's sources still import this name)."""

from opsctl.db.explain import DatabaseUnavailable, ExplainResult, explain

__all__ = ["DatabaseUnavailable", "ExplainResult", "explain"]
