"""One pane per area of `opsctl top`. Each loads its data in a worker thread (the UI never
waits on a slow source) and shows a failing source's error in place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Label, Sparkline, Static

from opsctl.tui.modals import ConfirmScreen, FlagChangeScreen, TextScreen

ACTIONS = {"vacuum", "retention_run", "set_flag", "rollback", "calibrate"}


def _closing(work):
    """Run ``work`` and close the thread's database connections after it: each worker is a
    new thread, and Django opens one connection per thread."""

    def run():
        try:
            return work()
        finally:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # Django not configured (telemetry-only use)
                pass

    return run


class Pane(Vertical):
    """Base: ``fetch()`` runs in a thread, ``show(data)`` on the UI thread."""

    title = ""

    def run_worker(self, work, *args, thread: bool = False, **kwargs):
        return super().run_worker(_closing(work) if thread else work, *args, thread=thread,
                                  **kwargs)  # fmt: skip

    def compose(self) -> ComposeResult:
        yield Label("", classes="error", id=f"{self.id}-error")
        yield from self.body()

    def body(self) -> ComposeResult:
        yield from ()

    @property
    def sources(self):
        return self.app.sources

    def reload(self) -> None:
        self.run_worker(self._load, thread=True, exclusive=True, group=self.id)

    def _load(self) -> None:
        try:
            data = self.fetch()
        except Exception as exc:  # the source's failure is shown here; other panes go on
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.app.call_from_thread(self._error, f"{self.title}: {message}")
            return
        self.app.call_from_thread(self._show, data)

    def _error(self, message: str) -> None:
        self.query_one(f"#{self.id}-error", Label).update(message)

    def _show(self, data) -> None:
        self.query_one(f"#{self.id}-error", Label).update("")
        self.show(data)

    def fetch(self):
        return None

    def show(self, data) -> None:
        pass

    def check_action(self, action: str, parameters) -> bool | None:
        return not (action in ACTIONS and self.app.read_only)

    def act(self, title: str, plan, work, done_message: str) -> None:
        """Confirm (showing the plan), then run ``work`` in a thread and report. ``plan`` is
        text, or a function computed in a thread (it may touch the database) returning the
        text, or None when there is nothing to do."""
        if isinstance(plan, str):
            self._confirm(title, plan, work, done_message)
            return

        def compute() -> None:
            try:
                text = plan()
            except Exception as exc:
                self.app.call_from_thread(self.app.notify, f"failed: {exc}", severity="error")
                return
            if text is None:
                self.app.call_from_thread(self.app.notify, "nothing to do")
                return
            self.app.call_from_thread(self._confirm, title, text, work, done_message)

        self.run_worker(compute, thread=True)

    def _confirm(self, title: str, plan: str, work, done_message: str) -> None:
        def go(confirmed: bool | None) -> None:
            if confirmed:
                self.run_worker(lambda: self._act(work, done_message), thread=True)
            else:
                self.app.notify("cancelled: nothing changed")

        self.app.push_screen(ConfirmScreen(title, plan), go)

    def _act(self, work, done_message: str) -> None:
        try:
            result = work()
        except Exception as exc:
            self.app.call_from_thread(self.app.notify, f"failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self.app.notify, done_message.format(result=result))
        self.app.call_from_thread(self.reload)


def _table(pane_id: str, *columns: str) -> DataTable:
    t = DataTable(id=f"{pane_id}-table", cursor_type="row", zebra_stripes=True)
    t.add_columns(*columns)
    return t


def _fill(table: DataTable, rows: list[tuple], keys: list[str] | None = None) -> None:
    cursor = table.cursor_row
    table.clear()
    for i, row in enumerate(rows):
        table.add_row(*[("-" if v is None else str(v)) for v in row], key=keys[i] if keys else None)
    if rows:
        table.move_cursor(row=min(cursor, len(rows) - 1))


def _selected_key(table: DataTable) -> str | None:
    if table.row_count == 0:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


class OverviewPane(Pane):
    title = "Overview"

    def body(self) -> ComposeResult:
        yield Label("save p95 (ms), last refreshes", classes="section")
        yield Sparkline([], id="overview-spark")
        yield _table(self.id, "route", "req/s", "errors %", "p95 ms")
        yield Static("", id="overview-status")

    def on_mount(self) -> None:
        self.history: list[float] = []

    def fetch(self):
        s = self.sources
        out = {"routes": s.routes(), "alerts": [], "flags": [], "jobs": None, "errors": []}
        for key, fn in (
            ("alerts", s.open_alerts),
            ("flags", s.recent_flag_changes),
            ("jobs", s.jobs),
        ):
            try:
                out[key] = fn()
            except Exception as exc:
                out["errors"].append(f"{key}: {str(exc).strip().splitlines()[0]}")
        return out

    def show(self, data) -> None:
        routes = data["routes"]
        save = next((r for r in routes if r.route.endswith("/answers/")), None)
        if save:
            self.history = [*self.history, save.p95_ms][-60:]
            self.query_one("#overview-spark", Sparkline).data = self.history
        _fill(
            self.query_one(DataTable),
            [(r.route, f"{r.rps:.2f}", f"{r.error_pct:.1f}", f"{r.p95_ms:.1f}") for r in routes],
        )
        lines = [f"open alerts: {len(data['alerts'])}"]
        lines += [
            f"  {a.severity.upper()} {a.probe} on {a.host}: {a.message}" for a in data["alerts"]
        ]
        lines.append(f"flags changed in the last hour: {len(data['flags'])}")
        lines += [f"  {e.key}: {e.reason} ({e.actor})" for e in data["flags"][:5]]
        if data["jobs"]:
            _, calib, retention = data["jobs"]
            lines.append(
                "last retention run: "
                + (
                    f"{retention.started_at:%Y-%m-%d %H:%M} {retention.outcome}"
                    if retention
                    else "never"
                )
            )
            done = [c for c in calib if c.current_run_id]
            lines.append(
                f"calibrated exams: {len(done)} of {len(calib)}; due: "
                f"{sum(c.needs_calibration for c in calib)}"
            )
        lines += data["errors"]
        if not routes:
            lines.append(
                f"no spans in {self.sources.telemetry_dir}: is the backend running "
                "with telemetry on?"
            )
        self.query_one("#overview-status", Static).update("\n".join(lines))


class TracesPane(Pane):
    title = "Traces"
    BINDINGS = [Binding("slash", "filter", "Filter"), Binding("enter", "open", "Waterfall")]

    def body(self) -> ComposeResult:
        yield Input(placeholder="filter by route (enter to apply)", id="traces-filter")
        yield _table(self.id, "trace id", "route", "status", "ms", "db", "n+1")

    def on_mount(self) -> None:
        self.query_one("#traces-filter", Input).display = False
        self.route_filter = None

    def fetch(self):
        return self.sources.traces(self.route_filter)

    def show(self, data) -> None:
        _fill(
            self.query_one(DataTable),
            [
                (
                    t.trace_id[:16],
                    t.route,
                    t.status_code,
                    f"{t.duration_ms:.1f}",
                    t.db_spans,
                    "yes" if t.n_plus_one else "",
                )
                for t in data
            ],
            [t.trace_id for t in data],
        )

    def action_filter(self) -> None:
        box = self.query_one("#traces-filter", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.route_filter = event.value.strip() or None
        event.input.display = False
        self.query_one(DataTable).focus()
        self.reload()

    def action_open(self) -> None:
        trace_id = _selected_key(self.query_one(DataTable))
        if trace_id:
            self.run_worker(lambda: self._waterfall(trace_id), thread=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _waterfall(self, trace_id: str) -> None:
        nodes = self.sources.trace(trace_id)
        lines = []
        for n in nodes:
            lines.append(f"{n.offset_ms:8.2f} +{n.duration_ms:7.2f} ms {'  ' * n.depth}{n.name}")
            if n.sql:
                lines.append(f"{'':27}{'  ' * n.depth}{' '.join(n.sql.split())[:100]}")
            for e in n.n_plus_one:
                lines.append(f"{'':27}N+1: {e.get('db.query.fingerprint')}")
        self.app.call_from_thread(
            self.app.push_screen, TextScreen(f"trace {trace_id}", "\n".join(lines))
        )


class QueriesPane(Pane):
    title = "Queries"
    BINDINGS = [
        Binding("t", "sort('total')", "By total"),
        Binding("m", "sort('mean')", "By mean"),
        Binding("p", "sort('p95')", "By p95"),
        Binding("c", "sort('calls')", "By calls"),
        Binding("e", "explain", "Explain"),
        Binding("n", "nplusone", "N+1"),
    ]

    def body(self) -> ComposeResult:
        yield _table(self.id, "fingerprint", "calls", "total ms", "mean ms", "p95 ms", "example")

    def on_mount(self) -> None:
        self.by = "total"
        self.examples: dict[str, str] = {}

    def fetch(self):
        return self.sources.queries(self.by)

    def show(self, data) -> None:
        self.examples = {q.fingerprint: q.example for q in data}
        _fill(
            self.query_one(DataTable),
            [
                (
                    q.fingerprint,
                    q.calls,
                    f"{q.total_ms:.1f}",
                    f"{q.mean_ms:.2f}",
                    f"{q.p95_ms:.2f}",
                    " ".join(q.example.split())[:60],
                )
                for q in data
            ],
            [q.fingerprint for q in data],
        )

    def action_sort(self, by: str) -> None:
        self.by = by
        self.reload()

    def action_explain(self) -> None:
        fp = _selected_key(self.query_one(DataTable))
        if fp:
            self.run_worker(lambda: self._explain(fp), thread=True)

    def _explain(self, fp: str) -> None:
        from opsctl.render_plan import render

        try:
            body = render(self.sources.explain(self.examples[fp]))
        except Exception as exc:
            body = f"explain failed: {exc}"
        self.app.call_from_thread(self.app.push_screen, TextScreen(f"plan of {fp}", body))

    def action_nplusone(self) -> None:
        self.run_worker(self._nplusone, thread=True)

    def _nplusone(self) -> None:
        rows = self.sources.n_plus_one()
        text = (
            "\n".join(
                f"{n.route}  {n.fingerprint}  x{n.requests}  trace {n.trace_id}" for n in rows
            )
            or "no N+1 patterns flagged in the last hour"
        )
        self.app.call_from_thread(self.app.push_screen, TextScreen("N+1 offenders", text))


class DatabasePane(Pane):
    title = "Database"
    BINDINGS = [Binding("v", "vacuum", "VACUUM ANALYZE")]

    def body(self) -> ComposeResult:
        yield _table(self.id, "table", "rows", "MB", "dead", "dead %", "av due")

    def fetch(self):
        return self.sources.tables()

    def show(self, data) -> None:
        _fill(
            self.query_one(DataTable),
            [
                (
                    t.table,
                    f"{t.rows:.0f}",
                    f"{(t.table_bytes + t.index_bytes) / 1e6:.1f}",
                    t.dead_rows,
                    t.dead_pct,
                    "yes" if t.autovacuum_due else "",
                )
                for t in data.tables
            ],
            [t.table for t in data.tables],
        )

    def action_vacuum(self) -> None:
        table = _selected_key(self.query_one(DataTable))
        if table:
            self.act(
                f"VACUUM (ANALYZE) {table}?",
                f"Runs VACUUM (ANALYZE) on {table} outside a transaction with a lock "
                "timeout; it does not block reads or writes. Recorded in the audit trail.",
                lambda: self.sources.vacuum(table),
                f"vacuumed {table}",
            )


class ResourcesPane(Pane):
    title = "Resources"

    def body(self) -> ComposeResult:
        yield _table(self.id, "probe", "value %", "warn", "crit", "state", "detail")
        yield Label("alert history", classes="section")
        yield Static("", id="resources-history")

    def fetch(self):
        return self.sources.resources()

    def show(self, data) -> None:
        rows, history = data
        _fill(
            self.query_one(DataTable),
            [(n, "?" if v is None else f"{v:.1f}", w, c, s, d) for n, v, w, c, s, d in rows],
        )
        self.query_one("#resources-history", Static).update(
            "\n".join(
                f"{a.opened_at:%m-%d %H:%M} {a.severity:8} {a.probe} on {a.host}"
                f"{' (resolved)' if a.resolved_at else ' OPEN'}"
                for a in history
            )
            or "no alerts"
        )


class RetentionPane(Pane):
    title = "Retention"
    BINDINGS = [Binding("d", "dry_run", "Dry run"), Binding("r", "retention_run", "Run")]

    def body(self) -> ComposeResult:
        yield _table(self.id, "policy", "period d", "eligible", "oldest d", "last run", "outcome")

    def fetch(self):
        return self.sources.retention()

    def show(self, data) -> None:
        _fill(
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
        report = self.sources.retention_run(dry_run=True)
        text = "\n".join(f"{r.name}: would delete {r.eligible_before}" for r in report.policies)
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


class FlagsPane(Pane):
    title = "Flags"
    BINDINGS = [Binding("s", "set_flag", "Set"), Binding("b", "rollback", "Roll back last")]

    def body(self) -> ComposeResult:
        yield _table(self.id, "flag", "value", "description")
        yield Label("history", classes="section")
        yield Static("", id="flags-history")

    def fetch(self):
        return self.sources.flags()

    def show(self, data) -> None:
        from opsctl.commands.flags import format_value

        flags, history = data
        self.values = {f.key: format_value(f.value) for f in flags}
        _fill(
            self.query_one(DataTable),
            [(f.key, format_value(f.value), f.description.split(". ")[0]) for f in flags],
            [f.key for f in flags],
        )
        self.query_one("#flags-history", Static).update(
            "\n".join(
                f"{e.at:%m-%d %H:%M} {e.change_set[:8]} {e.key}: {format_value(e.old_value)} -> "
                f"{format_value(e.new_value)} ({e.reason}, {e.actor})"
                for e in history[:15]
            )
            or "no changes"
        )

    def action_set_flag(self) -> None:
        key = _selected_key(self.query_one(DataTable))
        if not key:
            return

        def chosen(answer):
            if answer:
                value, reason = answer
                self.run_worker(
                    lambda: self._act(
                        lambda: self.sources.set_flag(key, value, reason), f"{key} set to {value}"
                    ),
                    thread=True,
                )
            else:
                self.app.notify("cancelled: nothing changed")

        self.app.push_screen(FlagChangeScreen(key, self.values.get(key, "?")), chosen)

    def action_rollback(self) -> None:
        from opsctl.commands.flags import format_value

        state = {}

        def plan() -> str | None:
            state["plan"] = p = self.sources.rollback_plan()
            if p.empty:
                return None
            return "\n".join(
                f"{s.key}: {format_value(s.current)} -> {format_value(s.target)}" for s in p.steps
            )

        self.act(
            "Roll back the last change set?",
            plan,
            lambda: self.sources.rollback(state["plan"], "rolled back from opsctl top"),
            "rolled back",
        )


class JobsPane(Pane):
    title = "Jobs"
    BINDINGS = [Binding("c", "calibrate", "Calibrate exam")]

    def body(self) -> ComposeResult:
        yield _table(self.id, "exam", "title", "closed", "sessions", "calibrated", "due")
        yield Label("migrations", classes="section")
        yield Static("", id="jobs-migrations")

    def fetch(self):
        return self.sources.jobs()

    def show(self, data) -> None:
        migrations, calib, _ = data
        _fill(
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
        exam = _selected_key(self.query_one(DataTable))
        if exam:
            self.act(
                f"Calibrate exam {exam}?",
                "Estimates item difficulties and abilities and replaces the current "
                "results; the run is kept in the history.",
                lambda: self.sources.calibrate(int(exam)),
                f"exam {exam} calibrated",
            )


PANES = [
    ("overview", OverviewPane),
    ("traces", TracesPane),
    ("queries", QueriesPane),
    ("database", DatabasePane),
    ("resources", ResourcesPane),
    ("retention", RetentionPane),
    ("flags", FlagsPane),
    ("jobs", JobsPane),
]
