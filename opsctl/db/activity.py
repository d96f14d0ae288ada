"""Live activity on any database URL (SQLAlchemy, no Django): what pg_activity shows.

PostgreSQL: every client backend and autovacuum worker from ``pg_stat_activity`` with its
state, wait event, application, client and how long it has been running; long-running
statements and sessions idle in a transaction are flagged; the blocking tree comes from
``pg_blocking_pids`` (asked only for sessions waiting on a lock: the function takes the lock
manager's locks, its documentation warns against calling it for every backend).

``signal`` cancels (``pg_cancel_backend``) or terminates (``pg_terminate_backend``) one
backend: the one implementation behind ``opsctl db cancel/terminate`` and the console's
Activity pane, refused unless confirmed, each one an audit event with actor and reason.

SQLite keeps no list of connections: what can be shown is the file, its journal mode, and
whether a write lock is held right now (probed with ``BEGIN IMMEDIATE`` and a zero busy
timeout, rolled back at once); which process holds it cannot be seen from the database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from backend.ops.errors import InvalidInput, OpsError
from opsctl.db.engine import connection, sqlite_path, vendor_of

LONG_AFTER_S = 60.0
IDLE_IN_TRANSACTION_AFTER_S = 5.0
ACTIONS = {"cancel": "pg_cancel_backend", "terminate": "pg_terminate_backend"}
# What a listing shows: sessions of clients and autovacuum workers (autovacuum can hold the
# lock a migration waits for); the server's own background processes are left out.
BACKEND_TYPES = ("client backend", "autovacuum worker")


class NotConfirmed(OpsError):
    """A cancel/terminate that was not confirmed (exit 2: refused)."""

    exit_code = 2


#: The columns of ``Session.row``: what `db activity` and the Activity pane list.
COLUMNS = ("pid", "duration", "state", "wait", "user@db", "application", "client", "flags",
           "query")  # fmt: skip


@dataclass
class Session:
    pid: int
    user: str | None
    database: str | None
    application: str
    client: str | None  # address:port, or "local" (Unix socket)
    backend_type: str
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query: str
    # Seconds since the statement started, the transaction started, the state last changed.
    query_seconds: float | None
    xact_seconds: float | None
    state_seconds: float | None
    blocked_by: list[int] = field(default_factory=list)
    blocking: list[int] = field(default_factory=list)
    long_running: bool = False
    idle_in_transaction: bool = False

    @property
    def seconds(self) -> float | None:
        """What the listing sorts and shows: how long the statement has run (active), or how
        long the session has sat idle (idle in transaction)."""
        if self.state == "active":
            return self.query_seconds
        return self.state_seconds

    def row(self, short: bool = False) -> tuple:
        """The session as a row under ``COLUMNS`` (``short`` flags for a narrow column)."""
        from opsctl.render import elapsed

        wait = (f"{self.wait_event_type}/{self.wait_event}"
                if self.wait_event_type and self.state == "active" else "")  # fmt: skip
        return (self.pid, elapsed(self.seconds), self.state, wait, f"{self.user}@{self.database}",
                self.application, self.client, self.flags(short),
                " ".join(self.query.split())[:80])  # fmt: skip

    def summary(self, show_wait: bool = False) -> str:
        """One line for the blocking tree: state, (what it waits on,) for how long, who, what."""
        from opsctl.render import elapsed

        wait = (f" waiting {self.wait_event_type}/{self.wait_event}"
                if show_wait and self.blocked_by else "")  # fmt: skip
        return (
            f"{self.state}{wait} {elapsed(self.seconds)} {self.application or '-'}: "
            f"{' '.join(self.query.split())[:60]}"
        )

    def flags(self, short: bool = False) -> str:
        """What is wrong with it, in words: long-running, idle in transaction, whom it
        waits for, how many it blocks (``short`` for a narrow column)."""
        words = []
        if self.long_running:
            words.append("long" if short else "long-running")
        if self.idle_in_transaction:
            words.append("idle in tx" if short else "idle in transaction")
        if self.blocked_by:
            words.append(
                ("waits " if short else "waits for ") + ",".join(map(str, self.blocked_by))
            )
        if self.blocking:
            words.append(f"blocks {len(self.blocking)}")
        return (" " if short else ", ").join(words)


@dataclass
class BlockNode:
    """One session in the blocking tree and the sessions waiting for it."""

    pid: int
    blocked: list[BlockNode] = field(default_factory=list)


@dataclass
class SqliteState:
    path: str | None
    file_bytes: int | None
    journal_mode: str | None
    wal_bytes: int | None
    write_lock: str  # free | held | unknown
    detail: str


@dataclass
class Activity:
    vendor: str
    sessions: list[Session]
    blocking_tree: list[BlockNode]
    long_after_s: float
    idle_in_transaction_after_s: float
    hidden_idle: int = 0  # idle sessions left out (shown with include_idle)
    sqlite: SqliteState | None = None
    notes: list[str] = field(default_factory=list)

    def by_pid(self) -> dict[int, Session]:
        return {s.pid: s for s in self.sessions}


@dataclass
class SignalResult:
    pid: int
    action: str  # cancel | terminate
    sent: bool
    reason: str
    actor: str
    session: Session
    audit: str = ""


_SESSIONS_SQL = """
SELECT a.pid, a.usename, a.datname, coalesce(a.application_name, ''),
       CASE WHEN a.client_addr IS NULL THEN
                CASE WHEN a.client_port = -1 THEN 'local' END
            ELSE host(a.client_addr) || ':' || a.client_port END,
       a.backend_type, a.state, a.wait_event_type, a.wait_event, coalesce(a.query, ''),
       extract(epoch FROM clock_timestamp() - a.query_start),
       extract(epoch FROM clock_timestamp() - a.xact_start),
       extract(epoch FROM clock_timestamp() - a.state_change),
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.backend_type IN :types
"""


def _sessions(conn, pid: int | None = None) -> list[Session]:
    from sqlalchemy import bindparam, text

    sql = _SESSIONS_SQL + (" AND a.pid = :pid" if pid is not None else "")
    stmt = text(sql).bindparams(bindparam("types", expanding=True))
    params = {"types": list(BACKEND_TYPES)}
    if pid is not None:
        params["pid"] = pid
    out = []
    for row in conn.execute(stmt, params):
        (pid_, user, db, app, client, btype, state, wtype, wevent, query, q_s, x_s, s_s,
         blockers) = row  # fmt: skip
        out.append(Session(
            int(pid_), user, db, app, client, btype, state, wtype, wevent, query,
            _seconds(q_s), _seconds(x_s), _seconds(s_s), sorted(set(blockers or [])),
        ))  # fmt: skip
    return out


def _seconds(v) -> float | None:
    return None if v is None else round(max(float(v), 0.0), 3)


def blocking_tree(sessions: list[Session]) -> list[BlockNode]:
    """Who blocks whom: the roots are sessions that block others and wait for no one (or
    sit in a wait cycle, which the deadlock detector is about to break); each waiter appears
    under every session it waits for."""
    waiting_for = {s.pid: set(s.blocked_by) for s in sessions}
    waiters: dict[int, list[int]] = {}
    for s in sessions:
        for b in s.blocked_by:
            waiters.setdefault(b, []).append(s.pid)
    roots = [p for p in waiters if not waiting_for.get(p)]
    seen: set[int] = set()

    def node(pid: int, path: frozenset[int]) -> BlockNode:
        seen.add(pid)
        kids = [node(w, path | {pid}) for w in sorted(waiters.get(pid, [])) if w not in path]
        return BlockNode(pid, kids)

    tree = [node(p, frozenset()) for p in sorted(roots)]
    for p in sorted(waiters):  # only cycles are left: start each at its lowest pid
        if p not in seen:
            tree.append(node(p, frozenset()))
    return tree


def activity(
    database_url: str,
    long_after_s: float = LONG_AFTER_S,
    idle_in_transaction_after_s: float = IDLE_IN_TRANSACTION_AFTER_S,
    include_idle: bool = False,
) -> Activity:
    """The sessions on the server now (idle ones only with ``include_idle``, or when they
    block someone), flagged, with the blocking tree; on SQLite, the file's lock state."""
    if vendor_of(database_url) != "postgresql":
        return _sqlite_activity(database_url, long_after_s, idle_in_transaction_after_s)
    with connection(database_url, autocommit=True) as conn:
        everyone = _sessions(conn)
    for s in everyone:
        for b in s.blocked_by:
            blocker = next((x for x in everyone if x.pid == b), None)
            if blocker is not None:
                blocker.blocking.append(s.pid)
        s.long_running = s.state == "active" and (s.query_seconds or 0) >= long_after_s
        s.idle_in_transaction = (s.state or "").startswith("idle in transaction") and (
            s.state_seconds or 0
        ) >= idle_in_transaction_after_s
    shown = [s for s in everyone if include_idle or s.state != "idle" or s.blocking]
    shown.sort(key=lambda s: -(s.seconds or 0))
    notes = []
    if any(s.query == "<insufficient privilege>" for s in shown):
        notes.append("some sessions belong to other users: their statements are hidden unless "
                     "this role has pg_read_all_stats")  # fmt: skip
    return Activity(
        "postgresql", shown, blocking_tree(everyone), long_after_s, idle_in_transaction_after_s,
        hidden_idle=len(everyone) - len(shown), notes=notes,
    )  # fmt: skip


def _sqlite_activity(database_url: str, long_after_s: float, idle_after_s: float) -> Activity:
    from opsctl.db.engine import check_sqlite_exists, check_url, normalise_url

    check_url(database_url)
    check_sqlite_exists(normalise_url(database_url))
    path = sqlite_path(database_url)
    state = sqlite_state(str(path) if path else None)
    return Activity(
        "sqlite", [], [], long_after_s, idle_after_s, sqlite=state,
        notes=["SQLite keeps no list of connections or running statements: which process "
               "holds the write lock, and what it runs, is not visible from the database "
               "(`fuser` or `lsof` on the file lists the processes that have it open)"],
    )  # fmt: skip


def sqlite_state(path: str | None) -> SqliteState:
    """The file, its journal mode and whether a write lock is held now. The probe is
    ``BEGIN IMMEDIATE`` with a zero busy timeout, rolled back at once: it holds the write lock
    for microseconds when it is free (a writer arriving then waits on its own busy timeout)
    and never waits for it when it is held."""
    import os
    import sqlite3
    from pathlib import Path

    if path is None:
        return SqliteState(None, None, None, None, "unknown",
                           "an in-memory database: only its own process sees it")  # fmt: skip
    size = os.path.getsize(path) if os.path.exists(path) else None
    wal = path + "-wal"
    wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else None
    journal = None
    try:
        con = sqlite3.connect(Path(path).as_uri() + "?mode=rw", uri=True, timeout=0,
                              isolation_level=None)  # fmt: skip
    except sqlite3.Error as exc:
        return SqliteState(path, size, None, wal_bytes, "unknown", f"cannot open it: {exc}")
    try:
        try:
            journal = con.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.Error as exc:  # rollback-journal mode while a writer commits
            return SqliteState(path, size, None, wal_bytes, "held",
                               f"the file is locked for a commit right now ({exc})")  # fmt: skip
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                why = ("another connection holds the write lock (a write transaction is "
                       "open); writers queue on their busy timeout")  # fmt: skip
                return SqliteState(path, size, journal, wal_bytes, "held", why)
            return SqliteState(path, size, journal, wal_bytes, "unknown", f"probe failed: {exc}")
        con.execute("ROLLBACK")
        return SqliteState(path, size, journal, wal_bytes, "free",
                           "no write transaction is open right now")  # fmt: skip
    finally:
        con.close()


def session(database_url: str, pid: int) -> Session:
    """One backend by pid (for the plan shown before a cancel/terminate), or a clear error."""
    from opsctl.db.engine import check_sqlite_exists, check_url, normalise_url

    check_url(database_url)
    if vendor_of(database_url) != "postgresql":
        check_sqlite_exists(normalise_url(database_url))
        raise InvalidInput(
            "SQLite has no server sessions to cancel or terminate; the process holding its "
            "write lock is not visible from the database"
        )
    if pid <= 0:
        raise InvalidInput(f"PID must be a positive number, got {pid}")
    with connection(database_url, autocommit=True) as conn:
        found = _sessions(conn, pid)
    if not found:
        raise InvalidInput(f"no client backend with PID {pid} on this server (already gone?)")
    return found[0]


def describe(s: Session) -> str:
    """One paragraph about a session, for the confirmation."""
    from opsctl.render import elapsed

    what = s.state or "?"
    if s.wait_event_type and s.state == "active":
        what += f", waiting on {s.wait_event_type}/{s.wait_event}"
    lines = [
        f"PID {s.pid} ({s.backend_type}): {s.user or '?'}@{s.database or '?'}, "
        f"application {s.application or '-'!r}, client {s.client or '-'}",
        f"{what} for {elapsed(s.seconds)}"
        + (f", transaction open {elapsed(s.xact_seconds)}" if s.xact_seconds else ""),
    ]
    if s.blocking:
        lines.append(f"it blocks {len(s.blocking)} session(s): {', '.join(map(str, s.blocking))}")
    lines.append(_short(s.query, 300) or "(no statement)")
    return "\n".join(lines)


def _short(text_: str, n: int) -> str:
    flat = " ".join((text_ or "").split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def signal(
    database_url: str, pid: int, action: str, reason: str, actor: str | None = None,
    confirmed: bool = False,
) -> SignalResult:  # fmt: skip
    """Cancel the running statement of (``cancel``) or end (``terminate``) backend ``pid``;
    refused unless ``confirmed``; an audit event with actor and reason when it was sent."""
    from backend.ops import audit

    if action not in ACTIONS:
        raise InvalidInput(f"action must be cancel or terminate, got {action!r}")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a reason is required (it goes to the audit trail)")
    actor = audit.check_actor(actor) or audit.default_actor()
    before = session(database_url, pid)
    if not confirmed:
        raise NotConfirmed(f"refused: {action} PID {pid} needs a confirmation (--yes)")
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    with connection(database_url, autocommit=True) as conn:
        try:
            sent = bool(conn.execute(text(f"SELECT {ACTIONS[action]}(:pid)"), {"pid": pid})
                        .scalar())  # fmt: skip
        except DBAPIError as exc:  # e.g. not allowed to signal another role's backend
            from opsctl.errors import one_line

            raise OpsError(f"could not {action} PID {pid}: {one_line(exc.orig)}") from None
        has_audit_table = inspect(conn).has_table("ops_auditevent")
    if not sent:
        raise OpsError(f"PID {pid} had already ended: nothing was sent")
    result = SignalResult(pid, action, True, reason, actor, before)
    result.audit = _audit(database_url, has_audit_table, result)
    return result


def _audit(database_url: str, has_audit_table: bool, result: SignalResult) -> str:
    """Through the backend's audit trail: its table when this database has one, else the
    audit file (a database that is not the backend's)."""
    from backend.ops import audit

    details = asdict(result.session)
    details["query"] = _short(details["query"], 2000)
    target = f"pid {result.pid}"
    action = f"db.{result.action}"
    if has_audit_table:
        from opsctl.service import open_backend

        open_backend(database_url)
        audit.record(action, target=target, actor=result.actor, reason=result.reason,
                     details=details)  # fmt: skip
        return "ops_auditevent"
    return audit.record_file(action, target=target, actor=result.actor, reason=result.reason,
                             details=details)  # fmt: skip


__all__ = [
    "Activity", "BlockNode", "NotConfirmed", "Session", "SignalResult", "SqliteState",
    "activity", "blocking_tree", "describe", "session", "signal", "sqlite_state",
]  # fmt: skip
