"""Jobs: calibration per exam (calibrate, confirmed) and migrations."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label, Static

from opsctl.tui.panes.base import Pane, fill, selected_key, table


class JobsPane(Pane):
    title = "Jobs"
    short = "Jobs"
    BINDINGS = [Binding("c", "calibrate", "Calibrate exam")]

    def body(self) -> ComposeResult:
        yield table(self.id, "exam", "title", "closed", "sessions", "calibrated", "due")
        yield Label("migrations", classes="section")
        yield Static("", id="jobs-migrations")

    def fetch(self):
        return self.sources.jobs()

    def show(self, data) -> None:
        migrations, calib, _ = data
        fill(
            self.query_one(DataTable),
            [
                (
                    c.exam_id,
                    c.title,
                    "yes" if c.closed else "no",
                    c.scored_sessions,
                    c.current_run_id or "-",
                    "yes" if c.needs_calibration else "",
                )
                for c in calib
            ],
            [str(c.exam_id) for c in calib],
        )
        self.query_one("#jobs-migrations", Static).update(
            "\n".join(
                f"{m.app}: {len(m.applied)} applied, unapplied: {', '.join(m.unapplied) or 'none'}"
                for m in migrations
            )
        )

    def action_calibrate(self) -> None:
        exam = selected_key(self.query_one(DataTable))
        if exam:
            self.calibrate(exam)

    def calibrate(self, exam: str) -> None:
        """The key `c` and the command palette: the same confirmation."""
        self.act(
            f"Calibrate exam {exam}?",
            "Estimates item difficulties and abilities and replaces the current "
            "results; the run is kept in the history.",
            lambda: self.sources.calibrate(int(exam)),
            f"exam {exam} calibrated",
        )
