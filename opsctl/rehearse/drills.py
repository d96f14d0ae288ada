"""The exam-day drills, run through nginx against a started ``Topology``.

Each drill returns a plain dataclass with an ``ok`` verdict and the figures behind it; the
rehearsal report collects them. Waits poll against generous deadlines (a busy machine is
slow, not wrong); verdicts never depend on how fast something happened, only on what.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx

from opsctl.rehearse.topology import RehearsalError, Topology, opsctl_argv

LOAD_ENDPOINTS = ("start", "save", "submit")
# `backend.ops.locks.LockHeld`'s message, as every job prints it when another host holds it.
LOCK_HELD = "already running"


def _client(base: str, token: str | None = None, keepalive: bool = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Without keep-alive each request is a new connection, which any worker may accept.
    limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(
        base_url=base, headers=headers, timeout=20.0, trust_env=False, limits=limits
    )


# ---------------------------------------------------------------------------------------------
# Paper through nginx


@dataclass
class PaperResult:
    ok: bool
    status: int  # a student in an open session, through nginx
    content_type: str
    bytes: int
    matches_file: bool  # the body is the stored PDF, byte for byte
    direct_status: int  # /protected/papers/<file> requested from outside
    direct_body: str
    before_session_status: int  # a student without an open session
    after_submit_status: int  # the same student after submitting
    refused_body: str


def paper_drill(topo: Topology) -> PaperResult:
    assert topo.seeded is not None
    exam_id, stored = topo.seeded.exam_id, topo.seeded.paper.read_bytes()
    paper = f"/api/exams/{exam_id}/paper.pdf"
    (token,) = topo.take_tokens(1)
    with _client(topo.url, token) as c:
        before = c.get(paper)
        sid = c.post(f"/api/exams/{exam_id}/sessions/").json()["session_id"]
        got = c.get(paper)
        c.post(f"/api/sessions/{sid}/submit/")
        after = c.get(paper)
    with _client(topo.url) as c:
        direct = c.get(f"/protected/papers/{topo.seeded.paper.name}")
    ok = (
        got.status_code == 200
        and got.content == stored
        and got.headers.get("content-type", "").startswith("application/pdf")
        and direct.status_code == 404
        and before.status_code == 403
        and after.status_code == 403
        and "error" in _json(before)
        and "error" in _json(direct)
    )
    return PaperResult(
        ok,
        got.status_code,
        got.headers.get("content-type", ""),
        len(got.content),
        got.content == stored,
        direct.status_code,
        direct.text[:200],
        before.status_code,
        after.status_code,
        before.text[:200],
    )


def _json(resp: httpx.Response) -> dict:
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# ---------------------------------------------------------------------------------------------
# Body limit: nginx's own 413 in the API's shape


@dataclass
class BodyLimitResult:
    ok: bool
    status: int
    body: str


def body_limit_drill(topo: Topology) -> BodyLimitResult:
    """A save bigger than the API's 64 KiB is refused by nginx, in JSON, before any host."""
    with _client(topo.url) as c:
        resp = c.post(
            "/api/sessions/1/answers/",
            content=b'{"answer": "' + b"x" * (65 * 1024) + b'"}',
            headers={"Content-Type": "application/json"},
        )
    ok = resp.status_code == 413 and "error" in _json(resp)
    return BodyLimitResult(ok, resp.status_code, resp.text[:200])


# ---------------------------------------------------------------------------------------------
# Loads


@dataclass
class LoadSummary:
    ok: bool
    students: int
    seconds: float
    rate: float  # student arrivals per second
    requests: int
    rps: float
    save_p50_ms: float
    save_p99_ms: float
    p99_ms: float  # over start, save, submit
    retries: int  # client retries (after nginx's own)
    failed: int
    client_errors: int
    errors_seen: int  # 5xx and network errors the clients saw, before their retries
    # ... of which said no host could be reached: network errors, nginx's 502 and 504. The
    # API's own 503 (database unavailable) is not one: it is the same on every host.
    unreachable_seen: int
    lost: int
    acked_saves: int
    verified_sessions: int
    error_samples: dict = field(default_factory=dict)


def summarize(report) -> LoadSummary:
    eps = {s.endpoint: s for s in report.endpoints}
    load = [eps[n] for n in LOAD_ENDPOINTS if n in eps]
    seen = sum(sum(s.transport_errors.values()) for s in load) + sum(
        v for s in load for code, v in s.statuses.items() if code.startswith("5")
    )
    unreachable = sum(sum(s.transport_errors.values()) for s in load) + sum(
        s.statuses.get(code, 0) for s in load for code in ("502", "504")
    )
    v = report.verification
    ok = (
        v.lost == 0
        and report.failed == 0
        and report.client_errors == 0
        and v.unverified == 0
        and v.sessions == report.students
    )
    return LoadSummary(
        ok,
        report.students,
        report.seconds,
        report.rate,
        report.requests,
        report.rps,
        eps["save"].p50_ms,
        eps["save"].p99_ms,
        max(s.p99_ms for s in load),
        report.retries,
        report.failed,
        report.client_errors,
        seen,
        unreachable,
        v.lost,
        v.acked_saves,
        v.verified,
        dict(report.error_samples),
    )


def run_load(topo: Topology, students: int, duration: float, think: float, seed: int = 1):
    """The open-model exam-day load (`opsctl loadtest`'s engine) through nginx."""
    from opsctl import loadtest as lt

    assert topo.seeded is not None
    target = lt.Target(topo.seeded.exam_id, topo.seeded.questions, topo.take_tokens(students))
    try:
        return lt.run_load(topo.url, target, duration, think=think, seed=seed)
    except lt.LoadtestError as exc:
        raise RehearsalError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Failover: one host killed with kill -9 mid-load, then restarted


@dataclass
class FailoverResult:
    ok: bool
    killed: str
    load: LoadSummary
    nginx_retried: int  # requests nginx replayed on another host (two upstreams in its log)
    rejoined: bool  # the restarted host answered requests through nginx again
    rejoin_seconds: float | None  # from its restart to its first answer through nginx


_UPSTREAM = re.compile(r"upstream=(\S+(?:, \S+)*) ustatus=(\S+(?:, \S+)*)")
_MSEC = re.compile(r" t=(\d+\.\d+) ")


def _upstreams(line: str) -> tuple[list[str], list[str]]:
    m = _UPSTREAM.search(line)
    if not m:
        return [], []
    return m.group(1).split(", "), m.group(2).split(", ")


def failover_drill(
    topo: Topology, students: int, duration: float, think: float, rejoin_timeout: float = 90.0
) -> FailoverResult:
    assert topo.nginx is not None
    victim = topo.hosts[-1]
    offset = topo.nginx.log_size()
    events: dict = {}

    def drill() -> None:
        time.sleep(duration / 3)
        victim.kill9()
        events["killed"] = time.monotonic()
        time.sleep(duration / 4)
        try:
            events["restart_offset"] = topo.nginx.log_size()
            events["restarted"] = time.time()
            victim.start()
        except RehearsalError as exc:
            events["restart_error"] = str(exc)

    thread = threading.Thread(target=drill, name="failover-drill")
    thread.start()
    try:
        report = run_load(topo, students, duration, think, seed=7)
    finally:
        thread.join()
    if "restart_error" in events:
        raise RehearsalError(f"the killed host did not restart: {events['restart_error']}")
    load = summarize(report)
    retried = sum(len(_upstreams(ln)[0]) > 1 for ln in topo.nginx.log_lines(offset))

    # Rejoin: after its restart the host must answer through nginx again (nginx retries it
    # once its fail_timeout is over; no reload). The access log says when it first did.
    rejoin = None
    deadline = time.monotonic() + rejoin_timeout
    with _client(topo.url) as c:
        while time.monotonic() < deadline and rejoin is None:
            for line in topo.nginx.log_lines(events["restart_offset"]):
                ups, codes = _upstreams(line)
                stamp = _MSEC.search(line)
                if ups and ups[-1] == victim.address and codes[-1] in ("200", "201") and stamp:
                    rejoin = max(0.0, float(stamp.group(1)) - events["restarted"])
                    break
            else:
                c.get("/api/ping/")  # traffic, in case the load is over
                time.sleep(0.25)
    ok = load.ok and load.unreachable_seen == 0 and rejoin is not None
    return FailoverResult(
        ok,
        victim.name,
        load,
        retried,
        rejoin is not None,
        round(rejoin, 1) if rejoin is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# A flag changed through one host takes effect on another within the cache TTL


@dataclass
class FlagResult:
    ok: bool
    flag: str
    changed_on: str
    observed_on: str
    ttl_seconds: float
    journaled_before: bool  # a save on the other host before the change wrote the journal
    effect_seconds: float | None  # change committed -> first save on the other host without
    after_ttl_saves: int  # saves on the other host once the TTL had passed
    after_ttl_journaled: int  # ... of which wrote the journal anyway (must be 0)


def _flag_ttl(host) -> float:
    return float(host.env.get("FLAGS_CACHE_SECONDS") or 5)


def flag_drill(topo: Topology, timeout: float = 60.0) -> FlagResult:
    """`journal.writes` off through host A (`opsctl flags set` with A's environment); saves
    sent straight to host B stop writing the answer journal. Restored afterwards."""
    assert topo.seeded is not None
    a, b = topo.hosts[0], topo.hosts[1]
    flag = "journal.writes"
    ttl = _flag_ttl(b)
    (token,) = topo.take_tokens(1)
    question, part = topo.seeded.questions[0]
    seq = 0

    # Straight to host B (not through nginx), a new connection per save so that more than
    # one of its workers answers.
    with _client(b.url, token, keepalive=False) as c, topo.connect() as db:
        sid = c.post(f"/api/exams/{topo.seeded.exam_id}/sessions/").json()["session_id"]

        def save_journaled() -> bool:
            nonlocal seq
            seq += 1
            resp = c.post(
                f"/api/sessions/{sid}/answers/",
                json={"question": question, "part": part, "answer": f"f{seq}", "seq": seq},
            )
            if resp.status_code != 200 or _json(resp).get("status") != "saved":
                raise RehearsalError(
                    f"flag drill: a save on host {b.name} answered {resp.status_code} "
                    f"{resp.text[:200]}"
                )
            row = db.execute(
                "SELECT count(*) FROM exams_answerevent WHERE session_id = %s AND seq = %s",
                [sid, seq],
            ).fetchone()
            return row[0] > 0

        before = save_journaled()
        try:
            _set_flag(a, flag, "off")
            changed = time.monotonic()
            effect = None
            deadline = changed + max(timeout, 3 * ttl)
            while time.monotonic() < deadline:
                if not save_journaled():
                    effect = time.monotonic() - changed
                    break
                time.sleep(0.2)
            # Once the TTL has passed, every worker of host B has re-read the flag.
            time.sleep(max(0.0, changed + ttl + 0.5 - time.monotonic()))
            after = [save_journaled() for _ in range(12)]
        finally:
            _set_flag(a, flag, "on")
    ok = before and effect is not None and not any(after)
    return FlagResult(
        ok, flag, a.name, b.name, ttl, before,
        round(effect, 2) if effect is not None else None, len(after), sum(after),
    )  # fmt: skip


def _set_flag(host, flag: str, value: str) -> None:
    proc = host.run(
        opsctl_argv(
            "flags",
            "set",
            flag,
            value,
            "--reason",
            "rehearsal: flag drill",
            "--actor",
            "opsctl-rehearse",
        )
    )
    if proc.returncode != 0:
        raise RehearsalError(
            f"`opsctl flags set {flag} {value}` on host {host.name} failed: "
            f"{proc.stderr.strip()[-300:]}"
        )


# ---------------------------------------------------------------------------------------------
# Scheduled jobs started on every host at the same moment


@dataclass
class JobSpec:
    name: str
    argv: list[str]
    # The first table the job writes once it holds its lock. The drill keeps it locked
    # against writes (reads go on) until the other hosts have come and gone, so the host
    # that won the lock is still inside it when they try: "at the same moment", on a slow
    # machine too, without relying on timing.
    holds: str


def job_specs() -> list[JobSpec]:
    return [
        JobSpec("retention", opsctl_argv("retention", "run", "--json"), "ops_retentionrun"),
        JobSpec("calibration", opsctl_argv("rasch", "auto", "--json"), "exams_calibrationrun"),
        JobSpec(
            "session-expiry",
            [sys.executable, "backend/manage.py", "expire_sessions"],
            "exams_examsession",
        ),
    ]


@dataclass
class JobHostRun:
    host: str
    exit_code: int | None
    ran: bool  # did the work
    skipped: bool  # said another host holds the lock
    output: str


@dataclass
class JobResult:
    ok: bool
    job: str
    ran_on: list[str]
    skipped_on: list[str]
    runs: list[JobHostRun]


def jobs_drill(topo: Topology, timeout: float = 120.0) -> list[JobResult]:
    return [_one_job(topo, spec, timeout) for spec in job_specs()]


def _waiting_on(conn, table: str) -> int:
    row = conn.execute(
        "SELECT count(DISTINCT pid) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
        [table],
    ).fetchone()
    return row[0]


def _one_job(topo: Topology, spec: JobSpec, timeout: float) -> JobResult:
    with topo.connect() as gate:
        gate.execute("BEGIN")
        gate.execute(f"LOCK TABLE {spec.holds} IN EXCLUSIVE MODE")
        procs = {h.name: h.popen(spec.argv) for h in topo.hosts}
        deadline = time.monotonic() + timeout
        # Every host but the lock's winner finishes while the gate is shut.
        while time.monotonic() < deadline:
            if sum(p.poll() is not None for p in procs.values()) >= len(procs) - 1:
                break
            if _waiting_on(gate, spec.holds) >= len(procs):
                break  # every host is inside the job: no lock kept the others out
            time.sleep(0.1)
        gate.execute("COMMIT")
    runs = []
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(5.0, deadline - time.monotonic()))
        except Exception:
            proc.kill()
            out, _ = proc.communicate()
        skipped = LOCK_HELD in out
        runs.append(
            JobHostRun(
                name,
                proc.returncode,
                proc.returncode == 0 and not skipped,
                skipped,
                out.strip()[-400:],
            )
        )
    ran = [r.host for r in runs if r.ran]
    skipped = [r.host for r in runs if r.skipped and r.exit_code == 0]
    ok = len(ran) == 1 and len(skipped) == len(runs) - 1
    return JobResult(ok, spec.name, ran, skipped, runs)


# ---------------------------------------------------------------------------------------------
# Telemetry from every host, where opsctl reads it


@dataclass
class TelemetryResult:
    ok: bool
    directory: str
    hosts: int
    instances: int  # distinct service.instance.id `opsctl traces stats` counted (max per route)
    requests: int  # server spans counted by `opsctl traces stats`
    trace_id: str  # sent by the client in `traceparent`, through nginx
    trace_continued: bool  # the backend's server span joined that trace (`opsctl traces show`)


def telemetry_check(topo: Topology, timeout: float = 60.0) -> TelemetryResult:
    """`opsctl traces stats --json` over the directory every host exports to (standing in
    for a Collector's file exporter) counts requests from every host; a client's
    `traceparent` crosses nginx and the backend continues that trace."""
    import secrets

    trace_id = secrets.token_hex(16)
    with _client(topo.url) as c:
        c.get("/api/ping/", headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    where = ["--telemetry-dir", str(topo.telemetry_dir)]
    deadline = time.monotonic() + timeout
    instances = requests = 0
    continued = False
    while True:
        proc = topo.hosts[0].run(opsctl_argv("traces", "stats", "--json", "--since", "1h", *where))
        if proc.returncode == 0:
            rows = json.loads(proc.stdout or "[]")
            requests = sum(r.get("requests", 0) for r in rows)
            instances = max((r.get("instances", 0) for r in rows), default=0)
        if not continued:
            proc = topo.hosts[0].run(opsctl_argv("traces", "show", trace_id, "--json", *where))
            if proc.returncode == 0:
                continued = any(n.get("kind") == "server" for n in json.loads(proc.stdout))
        if (instances >= len(topo.hosts) and continued) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return TelemetryResult(
        instances >= len(topo.hosts) and continued,
        str(topo.telemetry_dir),
        len(topo.hosts),
        instances,
        requests,
        trace_id,
        continued,
    )


def as_dict(result) -> dict:
    return asdict(result)
