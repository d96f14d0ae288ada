"""Retention: policies, what is eligible, the last runs; dry run and run (confirmed)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from opsctl.tui.modals import TextScreen
from opsctl.tui.panes.base import Pane, fill, table


class RetentionPane(Pane):
    title = "Retention"
    short = "Ret"
    # `r` is refresh on every pane; the purge is `p`, after the same confirmation.
    BINDINGS = [Binding("d", "dry_run", "Dry run"), Binding("p", "retention_run", "Purge")]

    def body(self) -> ComposeResult:
        yield table(self.id, "policy", "period d", "eligible", "oldest d", "last run", "outcome")

    def fetch(self):
        return self.sources.retention()

    def show(self, data) -> None:
        fill(
            self.query_one(DataTable),
            [
                (
                    p.name,
                    f"{p.period_days:g}",
                    p.eligible_now,
                    p.oldest_age_days,
                    f"{p.last_run_at:%m-%d %H:%M}" if p.last_run_at else "never",
                    (p.last_outcome or "-") + (" OVERDUE" if p.overdue else ""),
                )
                for p in data
            ],
        )

    def action_dry_run(self) -> None:
        self.run_worker(self._dry, thread=True)

    def _dry(self) -> None:
        try:
            report = self.sources.retention_run(dry_run=True)
        except Exception as exc:
            self.app.call_from_thread(self.app.notify, f"retention dry run failed: {exc}",
                                      severity="error")  # fmt: skip
            return
        text = "\n".join(f"{r.name}: would delete {r.eligible_before}" for r in report.policies)
        self.app.call_from_thread(self.app.log_event, "action", "retention dry run: "
                                  + "; ".join(text.splitlines()))  # fmt: skip
        self.app.call_from_thread(self.app.push_screen, TextScreen("retention dry run", text))

    def action_retention_run(self) -> None:
        def plan() -> str:
            report = self.sources.retention_run(dry_run=True)
            lines = [f"{r.name}: delete {r.eligible_before}" for r in report.policies]
            return "\n".join(lines) + "\n\nDeletes in batches; exam traffic goes first."

        self.act(
            "Run retention now?",
            plan,
            lambda: self.sources.retention_run(dry_run=False),
            "retention run finished",
        )
