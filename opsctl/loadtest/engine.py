"""The asyncio engine of `opsctl loadtest` (aiohttp): students arrive on a schedule, save
and submit; latency counts from each request's scheduled time; then every session is read
back and checked for lost acknowledged saves. And the report it produces."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import secrets
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from opsctl.loadtest.plan import (
    ENDPOINTS,
    MAX_LOST_EXAMPLES,
    AnswerKeyT,
    ArrivalPlan,
    LostSave,
    backoff_delay,
    find_lost,
    percentile,
    plan_arrivals,
    value_for,
)
from opsctl.loadtest.provision import Target

# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class EndpointStats:
    endpoint: str
    requests: int  # logical requests that got a final answer (after retries)
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]  # every attempt's HTTP status, e.g. {"200": 950, "503": 3}
    transport_errors: dict[str, int]  # every attempt's network error, by exception name
    retries: int
    failed: int  # gave up: retries exhausted, or the run's time ran out
    client_errors: int  # final 4xx answers (a healthy run has none)


@dataclass
class Verification:
    sessions: int  # sessions the run started
    verified: int  # sessions read back
    unverified: int  # sessions that could not be read back (their saves are not checked)
    acked_saves: int  # saves the server acknowledged with "saved"
    answers_checked: int  # (session, question, part) with at least one acknowledged save
    lost: int
    lost_examples: list[LostSave] = field(default_factory=list)


@dataclass
class GeneratorStats:
    cpu_seconds: float
    cpu_percent: float  # of one core; the asyncio loop can use at most one
    schedule_lag_p99_ms: float  # how late the generator itself woke up for a request
    max_connections: int


@dataclass
class LoadtestReport:
    url: str
    exam_id: int
    students: int
    duration_s: float
    rate: float
    think_s: float
    seconds: float  # wall time of the load phase
    requests: int
    rps: float
    retries: int
    failed: int
    client_errors: int
    stale: int  # saves answered "stale" (a higher seq was already stored)
    endpoints: list[EndpointStats]
    generator: GeneratorStats
    verification: Verification
    error_samples: dict[str, str]  # first body seen per error status, e.g. {"503": "{...}"}
    provisioned: bool  # students were created for this run (not read from a tokens file)

    @property
    def exit_code(self) -> int:
        """0 OK; 1 requests failed after retries, were refused (4xx) or sessions could not be
        read back; 2 an acknowledged save was lost."""
        if self.verification.lost:
            return 2
        if self.failed or self.client_errors or self.verification.unverified:
            return 1
        return 0


@dataclass
class LoadProgress:
    """Where a running load is, for a progress display (told every ``TICK_SECONDS``)."""

    phase: str  # "load", then "verify" while sessions are read back
    elapsed_s: float
    planned_s: float  # last arrival + a student's stay (without the drain)
    students: int
    arrived: int  # students whose start request was sent
    requests: int  # logical requests answered (below 500, after retries)
    errors: int  # attempts answered 5xx or with a network error (retried or not)
    failed: int  # logical requests given up on
    p99_ms: float | None  # over the last ``P99_WINDOW_S`` seconds; None without answers


TICK_SECONDS = 0.5
P99_WINDOW_S = 5.0

# ---------------------------------------------------------------------------------------------
# The engine


class _Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.transport: dict[str, Counter] = defaultdict(Counter)
        self.retries: Counter = Counter()
        self.failed: Counter = Counter()
        self.lag: list[float] = []
        self.arrived = 0
        self.error_samples: dict[str, str] = {}
        self.client_errors: Counter = Counter()
        self.stale = 0
        self.acked = 0


@dataclass
class _Session:
    session_id: int
    token: str


@dataclass
class _Answer:
    status: int
    text: str

    def json(self) -> dict:
        return json.loads(self.text)


class _Engine:
    def __init__(
        self,
        url: str,
        target: Target,
        plan: ArrivalPlan,
        think: float,
        seed: int | None,
        request_timeout: float,
        max_attempts: int,
        max_connections: int,
        drain: float,
        on_tick: Callable[[LoadProgress], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.target = target
        self.plan = plan
        self.think = think
        self.rng = random.Random(seed)
        self.tag = secrets.token_hex(3)
        # Seqs start from the wall clock so a rerun with the same tokens outranks older saves.
        self.seq_base = int(time.time() * 1000) * 1000
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts
        self.max_connections = max_connections
        self.drain = drain
        self.rec = _Recorder()
        self.sessions: list[_Session] = []
        self.acked: dict[AnswerKeyT, int] = {}
        self.stop_at = 0.0
        self.on_tick = on_tick

    def progress(self, phase: str, t0: float, window: list[float]) -> LoadProgress:
        rec = self.rec
        errors = sum(c.total() for c in rec.transport.values())
        errors += sum(n for c in rec.statuses.values() for code, n in c.items() if code[0] == "5")
        return LoadProgress(
            phase=phase,
            elapsed_s=max(0.0, time.monotonic() - t0),
            planned_s=self.plan.arrivals[-1] + self.plan.stay,
            students=len(self.plan.arrivals),
            arrived=rec.arrived,
            requests=sum(len(lat) for lat in rec.latency.values()),
            errors=errors,
            failed=sum(rec.failed.values()),
            p99_ms=round(percentile(sorted(window), 99), 1) if window else None,
        )

    async def _ticker(self, t0: float) -> None:
        """Tell ``on_tick`` where the load is, with the p99 of the last few seconds."""
        seen = dict.fromkeys(ENDPOINTS, 0)
        recent: deque[list[float]] = deque(maxlen=max(1, round(P99_WINDOW_S / TICK_SECONDS)))
        while True:
            await asyncio.sleep(TICK_SECONDS)
            fresh: list[float] = []
            for e in ENDPOINTS:
                lat = self.rec.latency.get(e, [])
                fresh += lat[seen[e] :]
                seen[e] = len(lat)
            recent.append(fresh)
            self.on_tick(self.progress("load", t0, [x for part in recent for x in part]))

    async def _call(
        self, client, endpoint: str, method: str, path: str, token: str, body, intended: float
    ) -> _Answer | None:
        """One logical request with retries; the latency runs from ``intended``."""
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"}
        attempt = 0
        while True:
            try:
                async with client.request(
                    method, self.url + path, headers=headers, json=body
                ) as resp:
                    code, text = resp.status, await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.rec.transport[endpoint][type(exc).__name__] += 1
            else:
                self.rec.statuses[endpoint][str(code)] += 1
                if code < 500:
                    self.rec.latency[endpoint].append((time.monotonic() - intended) * 1000)
                    if code >= 400:
                        self.rec.client_errors[endpoint] += 1
                        self.rec.error_samples.setdefault(str(code), text[:300])
                    return _Answer(code, text)
                self.rec.error_samples.setdefault(str(code), text[:300])
            attempt += 1
            delay = backoff_delay(attempt - 1, self.rng)
            if attempt >= self.max_attempts or time.monotonic() + delay > self.stop_at:
                self.rec.failed[endpoint] += 1
                return None
            self.rec.retries[endpoint] += 1
            await asyncio.sleep(delay)

    async def _sleep_until(self, when: float, busy_until: float) -> None:
        now = time.monotonic()
        if when > now:
            await asyncio.sleep(when - now)
        if when >= busy_until:
            # The student was idle at the scheduled time: any lateness is the generator's own.
            self.rec.lag.append(max(0.0, time.monotonic() - when) * 1000)

    async def _student(self, client, index: int, t0: float) -> None:
        token = self.target.tokens[index]
        rng = random.Random(self.rng.random())
        arrive = t0 + self.plan.arrivals[index]
        leave = arrive + self.plan.stay
        await self._sleep_until(arrive, 0.0)
        self.rec.arrived += 1
        resp = await self._call(
            client,
            "start",
            "POST",
            f"/api/exams/{self.target.exam_id}/sessions/",
            token,
            None,
            arrive,
        )
        if resp is None or resp.status not in (200, 201):
            return
        data = resp.json()
        session_id = int(data["session_id"])
        self.sessions.append(_Session(session_id, token))
        if data.get("status", "in_progress") != "in_progress":
            return
        seq = self.seq_base
        when = arrive + rng.uniform(0.2, 1.0) * self.think
        busy_until = time.monotonic()
        while when < leave:
            await self._sleep_until(when, busy_until)
            question, part = rng.choice(self.target.questions)
            seq += 1
            resp = await self._call(
                client,
                "save",
                "POST",
                f"/api/sessions/{session_id}/answers/",
                token,
                {
                    "question": question,
                    "part": part,
                    "answer": value_for(self.tag, seq),
                    "seq": seq,
                },
                when,
            )
            busy_until = time.monotonic()
            if resp is not None and resp.status == 200:
                body = resp.json()
                if body.get("status") == "saved" and body.get("seq") == seq:
                    key = (session_id, question, part)
                    self.acked[key] = max(self.acked.get(key, 0), seq)
                    self.rec.acked += 1
                else:
                    self.rec.stale += 1
            elif resp is not None and resp.status in (409, 410):
                break  # the session is over (submitted or timed out): nothing more to save
            when += self.think * rng.uniform(0.5, 1.5)
        await self._sleep_until(leave, busy_until)
        await self._call(
            client, "submit", "POST", f"/api/sessions/{session_id}/submit/", token, None, leave
        )

    async def _read_back(self, client, sess: _Session) -> dict[AnswerKeyT, str | None] | None:
        path = f"/api/sessions/{sess.session_id}/results/"
        for _ in range(2):
            resp = await self._call(
                client, "verify", "GET", path, sess.token, None, time.monotonic()
            )
            if resp is None:
                return None
            if resp.status == 200:
                return {
                    (sess.session_id, int(q["question"]), q["part"]): q["answer"]
                    for q in resp.json()["questions"]
                }
            if resp.status != 409:
                return None
            # Still in progress: its submit never got through; submit it now, then read.
            await self._call(
                client,
                "verify",
                "POST",
                f"/api/sessions/{sess.session_id}/submit/",
                sess.token,
                None,
                time.monotonic(),
            )
        return None

    async def run(self, verify_concurrency: int = 16) -> tuple[float, float, Verification]:
        # aiohttp rather than httpx: on this class of machine httpx costs ~2.5 ms of CPU per
        # request against aiohttp's ~0.45 ms, and a generator sharing two cores with the
        # server must not become the bottleneck it is trying to measure.
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            trust_env=False,  # loopback tests must never go through an environment proxy
        ) as client:
            cpu0 = _cpu_seconds()
            t0 = time.monotonic() + 0.05
            self.stop_at = t0 + self.plan.arrivals[-1] + self.plan.stay + self.drain
            tasks = [
                asyncio.create_task(self._student(client, i, t0))
                for i in range(len(self.plan.arrivals))
            ]
            ticker = asyncio.create_task(self._ticker(t0)) if self.on_tick else None
            done, pending = await asyncio.wait(tasks, timeout=self.stop_at - time.monotonic())
            if ticker is not None:
                ticker.cancel()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                self.rec.failed["unfinished_students"] += len(pending)
            for task in done:
                if task.exception() is not None:
                    # An answer the engine could not understand (say, HTML from a proxy):
                    # that student stops, and the run must not pass as clean.
                    self.rec.failed["crashed_students"] += 1
                    self.rec.error_samples.setdefault("exception", repr(task.exception())[:300])
            load_seconds = time.monotonic() - t0
            cpu = _cpu_seconds() - cpu0

            if self.on_tick:
                self.on_tick(self.progress("verify", t0, []))
            # Verification gets its own time budget; retries stop at its end.
            self.stop_at = time.monotonic() + max(30.0, 0.05 * len(self.sessions))
            sem = asyncio.Semaphore(verify_concurrency)

            async def guarded(sess: _Session):
                async with sem:
                    return await self._read_back(client, sess)

            results = await asyncio.gather(
                *(guarded(s) for s in self.sessions), return_exceptions=True
            )
        stored: dict[AnswerKeyT, str | None] = {}
        verified_ids = set()
        for sess, got in zip(self.sessions, results, strict=True):
            if isinstance(got, dict):
                stored.update(got)
                verified_ids.add(sess.session_id)
        checkable = {k: s for k, s in self.acked.items() if k[0] in verified_ids}
        lost = find_lost(self.tag, checkable, stored)
        verification = Verification(
            sessions=len(self.sessions),
            verified=len(verified_ids),
            unverified=len(self.sessions) - len(verified_ids),
            acked_saves=self.rec.acked,
            answers_checked=len(checkable),
            lost=len(lost),
            lost_examples=lost[:MAX_LOST_EXAMPLES],
        )
        return load_seconds, cpu, verification


def _cpu_seconds() -> float:
    # The whole generator process (event loop plus any resolver threads).
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load(
    url: str,
    target: Target,
    duration: float,
    rate: float | None = None,
    think: float = 2.0,
    *,
    seed: int | None = None,
    request_timeout: float = 10.0,
    max_attempts: int = 10,
    max_connections: int = 64,
    drain: float = 30.0,
    on_tick: Callable[[LoadProgress], None] | None = None,
) -> LoadtestReport:
    """Run the load against ``url`` with ``target``'s students and verify every session.
    ``on_tick`` (if given) is told a ``LoadProgress`` every ``TICK_SECONDS`` during the load
    and once when verification starts; it runs on the event loop, so it must be quick."""
    plan = plan_arrivals(len(target.tokens), duration, rate, think)
    # Students share a pool of connections, as they do behind a reverse proxy's upstream
    # keep-alive pool; one connection per student costs gthread workers dearly (measured:
    # save p99 320 ms with 256 connections against 130-150 ms with 32-64 at 190 req/s).
    conns = max(1, min(len(target.tokens), max_connections))
    engine = _Engine(
        url, target, plan, think, seed, request_timeout, max_attempts, conns, drain, on_tick
    )
    load_seconds, cpu, verification = asyncio.run(engine.run())
    rec = engine.rec
    stats = []
    for name in (*ENDPOINTS, "verify"):
        lat = sorted(rec.latency.get(name, []))
        stats.append(
            EndpointStats(
                endpoint=name,
                requests=len(lat),
                rps=round(len(lat) / load_seconds, 1) if name != "verify" else 0.0,
                p50_ms=round(percentile(lat, 50), 2),
                p95_ms=round(percentile(lat, 95), 2),
                p99_ms=round(percentile(lat, 99), 2),
                max_ms=round(lat[-1], 2) if lat else 0.0,
                statuses=dict(sorted(rec.statuses[name].items())),
                transport_errors=dict(sorted(rec.transport[name].items())),
                retries=rec.retries[name],
                failed=rec.failed[name],
                client_errors=rec.client_errors[name],
            )
        )
    load_stats = [s for s in stats if s.endpoint in ENDPOINTS]
    requests = sum(s.requests for s in load_stats)
    return LoadtestReport(
        url=url,
        exam_id=target.exam_id,
        students=len(target.tokens),
        duration_s=duration,
        rate=round(plan.rate, 3),
        think_s=think,
        seconds=round(load_seconds, 2),
        requests=requests,
        rps=round(requests / load_seconds, 1),
        retries=sum(s.retries for s in load_stats),
        failed=sum(s.failed for s in load_stats)
        + rec.failed["unfinished_students"]
        + rec.failed["crashed_students"],
        client_errors=sum(s.client_errors for s in load_stats),
        stale=rec.stale,
        endpoints=stats,
        generator=GeneratorStats(
            cpu_seconds=round(cpu, 2),
            cpu_percent=round(100 * cpu / load_seconds, 1),
            schedule_lag_p99_ms=round(percentile(sorted(rec.lag), 99), 2),
            max_connections=conns,
        ),
        verification=verification,
        error_samples=rec.error_samples,
        provisioned=target.provisioned,
    )
