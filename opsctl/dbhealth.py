"""Moved to ``opsctl.db.health`` (the console's sources still import this name)."""

from opsctl.db.health import index_issues, table_health, vacuum

__all__ = ["index_issues", "table_health", "vacuum"]
