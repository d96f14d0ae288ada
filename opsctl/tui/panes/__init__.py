"""The panes of `opsctl top`, one module each, in key order (1-9)."""

from opsctl.tui.panes.activity import ActivityPane
from opsctl.tui.panes.database import DatabasePane
from opsctl.tui.panes.flags import FlagsPane
from opsctl.tui.panes.jobs import JobsPane
from opsctl.tui.panes.overview import OverviewPane
from opsctl.tui.panes.queries import QueriesPane
from opsctl.tui.panes.resources import ResourcesPane
from opsctl.tui.panes.retention import RetentionPane
from opsctl.tui.panes.traces import TracesPane

PANES = [
    ("overview", OverviewPane),
    ("traces", TracesPane),
    ("queries", QueriesPane),
    ("database", DatabasePane),
    ("resources", ResourcesPane),
    ("retention", RetentionPane),
    ("flags", FlagsPane),
    ("jobs", JobsPane),
    ("activity", ActivityPane),
]

__all__ = ["PANES"]
