"""Overview: RED per route over the window with each route's req/s and p95 per minute as
sparklines (min-max), the selected route's trend drawn large, how old the newest span is
(stale warning), the exams in progress, open alerts, recent flag changes, jobs. Enter on a
route opens its slowest traces."""

from __future__ import annotations

import time

from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.renderables.sparkline import Sparkline as SparklineBars
from textual.widgets import DataTable, Label, Sparkline, Static

from opsctl.tui.panes.base import Pane, ago, cancelled, fill, selected_key, table, window_line

#: Newer spans than this are "live"; older ones get a stale warning.
STALE_SECONDS = 60.0


def min_max(values: list[float], unit: str) -> str:
    if not values:
        return "no data"
    return f"min {min(values):.1f}{unit}  max {max(values):.1f}{unit}"


#: Width of the sparkline in a route's row (minutes are bucketed into it, the max of each).
TREND_WIDTH = 10


def trend(values: list[float]) -> Text:
    """A row's sparkline with its range: Textual's Sparkline renderable drawn into text (a
    table cell holds text), then "min-max"."""
    if not values:
        return Text("-")
    width = min(len(values), TREND_WIDTH)
    console = Console(width=width, color_system="truecolor", force_terminal=True)
    segments = console.render(SparklineBars(values, width=width), console.options)
    out = Text.assemble(*[(seg.text, seg.style) for seg in segments if seg.text != "\n"])
    out.append(f" {min(values):.3g}-{max(values):.3g}")
    return out


class OverviewPane(Pane):
    title = "Overview"
    short = "Over"
    telemetry = True

    def body(self) -> ComposeResult:
        yield Label("", id="overview-window", classes="hint")
        yield Label("", id="overview-age")
        yield Label("req/s per minute", id="overview-rps-label", classes="section")
        yield Sparkline([], id="overview-rps")
        yield Label("p95 ms per minute", id="overview-p95-label")
        yield Sparkline([], id="overview-spark")
        # The trends last: at 80 columns the numbers stay on screen (the table scrolls).
        yield table(self.id, "route", "req/s", "errors %", "p95 ms", "p99 ms", "req/s /min",
                    "p95 /min")  # fmt: skip
        yield Static("", id="overview-exams")
        yield Static("", id="overview-status")

    #: The database-backed parts change rarely: read them at most this often (seconds), so a
    #: refresh costs the new spans, not three queries and a migration plan.
    DB_EVERY = 10.0

    def fetch(self):
        s = self.sources
        view = s.routes(self.window_seconds, cancelled)
        now = time.monotonic()
        held = getattr(self, "_db_parts", None)
        if held is not None and now - held[0] < self.DB_EVERY:
            return _Data({"view": view, **held[1]})
        parts: dict = {"alerts": None, "flags": [], "jobs": None, "exams": None, "errors": []}
        for key, fn in (
            ("alerts", s.open_alerts),
            ("flags", s.recent_flag_changes),
            ("jobs", s.jobs),
            ("exams", s.exams_in_progress),
        ):
            if cancelled():
                break
            try:
                parts[key] = fn()
            except Exception as exc:
                parts["errors"].append(f"{key}: {str(exc).strip().splitlines()[0]}")
        self._db_parts = (now, parts)
        return _Data({"view": view, **parts})

    def show(self, data) -> None:
        d = data.parts
        view = d["view"]
        self.query_one("#overview-window", Label).update(window_line(self, view))
        age = self.query_one("#overview-age", Label)
        if view.coverage.empty and not view.loading:
            age.update(
                f"NO DATA: no spans read in the last {self.app.window_minutes}m from "
                f"{self.sources.telemetry_source()}: is the backend writing telemetry there?"
            )
            age.set_class(True, "error")
        elif view.age is not None and view.age > STALE_SECONDS:
            age.update(f"STALE: the newest span is {ago(view.age)} old; these numbers "
                       "are not live (is the backend still writing telemetry?)")  # fmt: skip
            age.set_class(True, "error")
        else:
            age.update(f"data age: newest span {ago(view.age)} ago")
            age.set_class(False, "error")
        self.series = dict(view.route_series)
        self.save_series = view.series
        rows = []
        for r in view.rows:
            series = view.route_series.get(r.route, [])
            rows.append((r.route, f"{r.rps:.2f}", f"{r.error_pct:.1f}", f"{r.p95_ms:.1f}",
                         f"{r.p99_ms:.1f}", trend([v for _, v, _ in series]),
                         trend([p for _, _, p in series])))  # fmt: skip
        fill(self.query_one(DataTable), rows, [r.route for r in view.rows])
        self._big_trend()
        exams = d.get("exams")
        if exams is None:
            text = "exams in progress: unknown (could not read them)"
        elif not exams:
            text = "exams in progress: none"
        else:
            text = "exams in progress:\n" + "\n".join(
                f"  {e.title} #{e.exam_id} (ends {e.ends_at:%H:%M}): {e.students_active} "
                f"active, {e.saves_per_second:.2f} saves/s"
                f"{' or more' if e.saves_capped else ''}, {e.submitted} submitted"
                for e in exams
            )
        self.query_one("#overview-exams", Static).update(text)
        alerts = d["alerts"]
        if alerts is None:  # not read (the database is unreachable): unknown, not zero
            lines = ["open alerts: unknown (could not read them)"]
        else:
            lines = [f"open alerts: {len(alerts)}"]
            lines += [f"  {a.severity.upper()} {a.probe} on {a.host}: {a.message}" for a in alerts]
        self._alert_changes(alerts)
        lines.append(f"flags changed in the last hour: {len(d['flags'])}")
        lines += [f"  {e.key}: {e.reason} ({e.actor})" for e in d["flags"][:5]]
        if d["jobs"]:
            _, calib, retention = d["jobs"]
            lines.append(
                "last retention run: "
                + (f"{retention.started_at:%Y-%m-%d %H:%M} {retention.outcome}"
                   if retention else "never")
            )  # fmt: skip
            done = [c for c in calib if c.current_run_id]
            lines.append(
                f"calibrated exams: {len(done)} of {len(calib)}; due: "
                f"{sum(c.needs_calibration for c in calib)}"
            )
        lines += d["errors"]
        if not view.rows and not view.coverage.empty:
            lines.append(f"no requests (server spans) among {view.coverage.spans:,} spans")
        self.query_one("#overview-status", Static).update("\n".join(lines))

    def _alert_changes(self, alerts) -> None:
        """Alerts opened and resolved since the last load go to the event log."""
        if alerts is None:
            return
        now = {(a.severity, a.probe, a.host): a.message for a in alerts}
        before = getattr(self, "_alerts", None)
        self._alerts = now
        if before is None:
            for (sev, probe, host), message in now.items():
                self.app.log_event("alert", f"open: {sev.upper()} {probe} on {host}: {message}")
            return
        for key in now.keys() - before.keys():
            sev, probe, host = key
            self.app.log_event("alert", f"opened: {sev.upper()} {probe} on {host}: {now[key]}")
        for key in before.keys() - now.keys():
            sev, probe, host = key
            self.app.log_event("alert", f"resolved: {sev.upper()} {probe} on {host}")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._big_trend()

    def _big_trend(self) -> None:
        """The large sparklines: the selected route's per-minute req/s and p95 (the save
        route's before any route is listed)."""
        t = self.query_one(DataTable)
        route = selected_key(t)
        series = getattr(self, "series", {}).get(route) if route else None
        if series is None:
            route, series = "save", getattr(self, "save_series", [])
        rps = [r for _, r, _ in series]
        p95 = [p for _, _, p in series]
        self.query_one("#overview-rps", Sparkline).data = rps
        self.query_one("#overview-spark", Sparkline).data = p95
        self.query_one("#overview-rps-label", Label).update(
            f"{route} req/s per minute: {min_max(rps, '')}"
        )
        self.query_one("#overview-p95-label", Label).update(
            f"{route} p95 per minute: {min_max(p95, ' ms')}"
        )

    def open(self, route: str) -> None:
        """Enter on a route: its slowest traces."""
        self.app.drill_route(route)


class _Data:
    """The Overview's load: ``loading`` while older telemetry is still being read."""

    def __init__(self, parts: dict):
        self.parts = parts
        self.loading = parts["view"].loading
