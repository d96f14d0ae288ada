"""`opsctl loadtest`: an exam-day rehearsal against a running backend.

Simulated students arrive at a fixed rate (an open model: arrivals never wait for the server),
start a session, auto-save answers with increasing ``seq`` at think-time intervals and submit
at the end. Every latency is measured from the moment the request was *scheduled*, not from
when the student got round to sending it, so a slow server cannot hide its queue behind a
generator that politely waits (coordinated omission). Network errors and 5xx are retried with
exponential backoff and jitter, as a real exam client does.

Afterwards a verification pass reads back every session and counts acknowledged saves whose
value is not the stored one: ``lost`` must be 0.

Modules: ``plan`` (pure: durations, arrivals, backoff, percentiles, the lost-save check),
``provision`` (students and tokens through the backend's seeding function; Django only
there), ``engine`` (the asyncio/aiohttp engine and the report). ``loadtest`` below is the one
service function the command calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opsctl.loadtest.engine import (
    EndpointStats,
    GeneratorStats,
    LoadProgress,
    LoadtestReport,
    Verification,
    run_load,
)
from opsctl.loadtest.plan import (
    ArrivalPlan,
    LoadtestError,
    LostSave,
    backoff_delay,
    find_lost,
    parse_duration,
    percentile,
    plan_arrivals,
    seq_of,
    value_for,
)
from opsctl.loadtest.provision import Target, provision, read_tokens_file, resolve_target

__all__ = [
    "ArrivalPlan",
    "EndpointStats",
    "GeneratorStats",
    "LoadProgress",
    "LoadtestError",
    "LoadtestReport",
    "LostSave",
    "Target",
    "Verification",
    "backoff_delay",
    "find_lost",
    "loadtest",
    "parse_duration",
    "percentile",
    "plan_arrivals",
    "provision",
    "read_tokens_file",
    "resolve_target",
    "run_load",
    "seq_of",
    "value_for",
]


def loadtest(
    url: str,
    students: int,
    duration: str | float,
    rate: float | None = None,
    think: str | float = 2.0,
    exam_id: int | None = None,
    tokens_file: Path | None = None,
    database_url: str | None = None,
    seed: int | None = None,
    connections: int = 64,
    progress: Callable[[str], None] | None = None,
    on_tick: Callable[[LoadProgress], None] | None = None,
) -> LoadtestReport:
    """The one service function behind `opsctl loadtest`: resolve students (provision them or
    read a tokens file), run the load, verify, report. ``progress`` gets one line when the
    load starts; ``on_tick`` a ``LoadProgress`` twice a second while it runs."""
    if not url.startswith(("http://", "https://")):
        raise LoadtestError(f"URL must start with http:// or https://, got {url!r}")
    duration_s = parse_duration(duration) if isinstance(duration, str) else float(duration)
    think_s = parse_duration(think) if isinstance(think, str) else float(think)
    plan_arrivals(students, duration_s, rate, think_s)  # fail fast, before provisioning
    target = resolve_target(students, duration_s, exam_id, tokens_file, database_url)
    if progress:
        progress(f"{students} students on exam {target.exam_id}, {duration_s:g}s against {url}")
    return run_load(
        url,
        target,
        duration_s,
        rate,
        think_s,
        seed=seed,
        max_connections=connections,
        on_tick=on_tick,
    )
