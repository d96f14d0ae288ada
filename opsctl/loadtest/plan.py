"""The pure parts of `opsctl loadtest` (no I/O): durations, the arrival plan, backoff,
percentiles, the answer values a simulated save sends and the lost-save check."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from backend.durations import parse_seconds
from backend.ops.errors import OpsError
from opsctl.stats import percentile

ENDPOINTS = ("start", "save", "submit")
MAX_LOST_EXAMPLES = 10
# The share of --duration over which students arrive when --rate is not given; the rest of
# the run is every student's time in the exam, so all of them save for the same length.
DEFAULT_ARRIVAL_SHARE = 0.25


class LoadtestError(OpsError):
    """A problem with the parameters or the target that the operator must fix (exit 3)."""


def parse_duration(text: str) -> float:
    """Seconds in ``text`` by the one duration grammar (``60s``, ``2m``, ``1m30s``, ``500ms``,
    a bare number of seconds); a load needs a positive one."""
    try:
        value = parse_seconds(text)
    except ValueError as exc:
        raise LoadtestError(f"bad duration {text!r}: {exc}") from None
    if value <= 0:
        raise LoadtestError(f"bad duration {text!r}: must be positive")
    return value


@dataclass(frozen=True)
class ArrivalPlan:
    """When each student arrives (offsets in seconds) and how long each stays."""

    rate: float
    arrivals: tuple[float, ...]
    stay: float


def plan_arrivals(students: int, duration: float, rate: float | None, think: float) -> ArrivalPlan:
    """Student ``i`` arrives at ``i / rate`` and stays ``duration - students / rate`` seconds.

    Everyone stays equally long so submits arrive at the same fixed rate as starts, instead of
    one stampede at the end of the run.
    """
    if students < 1:
        raise LoadtestError("--students must be at least 1")
    if think <= 0:
        raise LoadtestError("--think must be positive")
    if rate is None:
        rate = students / (duration * DEFAULT_ARRIVAL_SHARE)
    if rate <= 0 or not math.isfinite(rate):
        raise LoadtestError("--rate must be a positive number of students per second")
    window = (students - 1) / rate
    stay = duration - window
    if stay < think:
        raise LoadtestError(
            f"{students} students arriving at {rate:g}/s take {window:.1f}s to arrive, which "
            f"leaves less than one think time ({think:g}s) of exam in a {duration:g}s run: "
            "raise --rate or --duration"
        )
    return ArrivalPlan(rate, tuple(i / rate for i in range(students)), stay)


def backoff_delay(attempt: int, rng: random.Random, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so retrying
    clients spread out after an outage without any of them retrying at once."""
    step = min(cap, base * (2**attempt))
    return step / 2 + rng.uniform(0, step / 2)


AnswerKeyT = tuple[int, int, str]  # (session_id, question, part)


def value_for(tag: str, seq: int) -> str:
    """The answer text a simulated save sends: unique per run and seq, so a stored value
    says which save it came from."""
    return f"{tag}-{seq}"


def seq_of(tag: str, value: str | None) -> int | None:
    prefix = f"{tag}-"
    if value is None or not value.startswith(prefix):
        return None
    try:
        return int(value[len(prefix) :])
    except ValueError:
        return None


@dataclass(frozen=True)
class LostSave:
    session_id: int
    question: int
    part: str
    acked_seq: int
    stored_seq: int | None


def find_lost(
    tag: str,
    acked: dict[AnswerKeyT, int],
    stored: dict[AnswerKeyT, str | None],
) -> list[LostSave]:
    """Acknowledged saves whose value is not what the server stores.

    ``acked`` maps each (session, question, part) to the highest seq the server acknowledged
    with ``saved``. The stored value must come from that seq or from a later save of this run
    (one whose acknowledgement was lost on the way back and so never counted as acked).
    """
    lost = []
    for key, seq in acked.items():
        stored_seq = seq_of(tag, stored.get(key))
        if stored_seq is None or stored_seq < seq:
            lost.append(LostSave(key[0], key[1], key[2], seq, stored_seq))
    return lost


__all__ = ["percentile"]
