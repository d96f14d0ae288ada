"""Retention policies and cut-off maths (pure: no I/O, no Django).

A row (or file) is eligible when its age column is strictly before the cut-off
``now - period``: a row exactly at the cut-off is kept, so two runs a second apart never
disagree about it.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from backend.ops.errors import InvalidInput

# A hundred years: far beyond any retention period, well inside what datetime can subtract.
MAX_DAYS = 36500

KINDS = {"answer_journal", "resolved_alerts", "audit_events", "django_sessions", "telemetry_files"}


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # what to purge and how (see KINDS)
    target: str  # table or directory
    age_column: str
    period: dt.timedelta
    guard: str  # in words: what is never deleted

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        return now - self.period


DEFAULTS: list[dict] = [
    {"name": "answer_journal", "kind": "answer_journal", "target": "exams_answerevent",
     "age_column": "session.submitted_at", "days": 30,
     "guard": "only journal rows of submitted or expired sessions; never an in-progress "
              "session's rows, never Answer rows"},
    {"name": "resolved_alerts", "kind": "resolved_alerts", "target": "ops_resourcealert",
     "age_column": "resolved_at", "days": 90, "guard": "open alerts are never deleted"},
    {"name": "audit_events", "kind": "audit_events", "target": "ops_auditevent",
     "age_column": "created_at", "days": 365, "guard": "none beyond the age"},
    {"name": "django_sessions", "kind": "django_sessions", "target": "django_session",
     "age_column": "expire_date", "days": 0, "guard": "only sessions already expired"},
    {"name": "telemetry_files", "kind": "telemetry_files", "target": "var/telemetry",
     "age_column": "mtime", "days": 7, "guard": "only *.jsonl files, by last write time"},
]  # fmt: skip


def check_days(name: str, days: object) -> float:
    """A policy's ``days``: a real number from 0 to MAX_DAYS. TOML's ``true`` is not a number
    here (Python would read it as 1), nor are ``inf``, ``nan`` or ``1e10``."""
    if isinstance(days, bool) or not isinstance(days, int | float):
        raise InvalidInput(
            f"policy {name!r}: days must be a number of days, not {type(days).__name__} {days!r}"
        )
    if not math.isfinite(days) or not 0 <= days <= MAX_DAYS:
        raise InvalidInput(f"policy {name!r}: days must be between 0 and {MAX_DAYS}, not {days!r}")
    return float(days)


def build(entries: list[dict]) -> list[Policy]:
    policies = []
    for e in entries:
        if e.get("kind") not in KINDS:
            raise InvalidInput(f"policy {e.get('name')!r}: kind must be one of {sorted(KINDS)}")
        days = check_days(e.get("name", "?"), e.get("days", 0))
        policies.append(
            Policy(
                e["name"],
                e["kind"],
                e.get("target", ""),
                e.get("age_column", ""),
                dt.timedelta(days=days),
                e.get("guard", ""),
            )
        )
    return policies


def load_overrides(text: str, base: list[dict]) -> list[dict]:
    """A TOML file overrides policies by name: ``[policies.answer_journal] days = 60``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"policy file is not valid TOML: {exc}") from None
    policies = data.get("policies") or {}
    if not isinstance(policies, dict):
        raise InvalidInput("policy file: [policies] must be a table of [policies.NAME]")
    by_name = {e["name"]: dict(e) for e in base}
    for name, values in policies.items():
        if name not in by_name:
            raise InvalidInput(f"unknown policy {name!r} in policy file; known: {sorted(by_name)}")
        if not isinstance(values, dict):
            raise InvalidInput(f"policy file: [policies.{name}] must be a table (days = N)")
        unknown = set(values) - {"days"}
        if unknown:
            raise InvalidInput(
                f"policy file: [policies.{name}] may set only days, not {sorted(unknown)}"
            )
        check_days(name, values.get("days", by_name[name].get("days", 0)))
        by_name[name].update(values)
    return list(by_name.values())


def read_policy_file(path: str | Path, base: list[dict]) -> list[dict]:
    """``base`` with a policy file's overrides; ``InvalidInput`` when it cannot be used."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read policy file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"policy file {path} is not UTF-8 text") from None
    return load_overrides(text, base)
