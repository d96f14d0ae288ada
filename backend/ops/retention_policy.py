"""Retention policies and cut-off maths (pure: no I/O, no Django).

A row (or file) is eligible when its age column is strictly before the cut-off
``now - period``: a row exactly at the cut-off is kept, so two runs a second apart never
disagree about it.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass

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


def build(entries: list[dict]) -> list[Policy]:
    policies = []
    for e in entries:
        if e.get("kind") not in KINDS:
            raise ValueError(f"policy {e.get('name')!r}: kind must be one of {sorted(KINDS)}")
        days = e.get("days", 0)
        if not isinstance(days, int | float) or days < 0:
            raise ValueError(f"policy {e['name']!r}: days must be a number >= 0")
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
    data = tomllib.loads(text)
    by_name = {e["name"]: dict(e) for e in base}
    for name, values in (data.get("policies") or {}).items():
        if name not in by_name:
            raise ValueError(f"unknown policy {name!r} in policy file; known: {sorted(by_name)}")
        by_name[name].update(values)
    return list(by_name.values())
