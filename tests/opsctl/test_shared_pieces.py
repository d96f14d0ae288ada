"""The shared pieces opsctl and the backend use instead of their own copies: one duration
grammar, one percentile, one database-URL path (pure; no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from backend.durations import parse_duration, parse_seconds, parse_since
from opsctl.db.engine import check_url, normalise_url, sqlite_path, vendor_of
from opsctl.errors import DatabaseUnavailable
from opsctl.stats import percentile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("1m30s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800),
     ("1w", 604800), ("1.5h", 5400), ("90", 90), ("0.25", 0.25), (" 2s ", 2), ("1H", 3600),
     ("0s", 0)],
)  # fmt: skip
def test_one_grammar_for_every_duration(text, seconds):
    assert parse_seconds(text) == pytest.approx(seconds)
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", " ", "soon", "10x", "s", "-5", "-5s", "nan", "inf", "1e10", "5s junk", "5 s",
             "1m-30s", "3651d", "99999999999"],
)  # fmt: skip
def test_durations_refused_with_a_reason(text):
    with pytest.raises(ValueError, match="duration"):
        parse_seconds(text)


def test_since_takes_a_duration_or_an_iso_time():
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    assert parse_since("1m30s", now) == now - dt.timedelta(seconds=90)
    assert parse_since("2026-11-30T10:00", now) == dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="not a time"):
        parse_since("yesterday", now)


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([1.0, 2.0], 50) == 1.0  # an observed value, never 1.5
    assert percentile([], 99) == 0.0


def test_loadtest_and_telemetry_use_the_one_percentile():
    from opsctl import loadtest, telemetry

    assert loadtest.percentile is percentile
    assert telemetry.percentile is percentile


@pytest.mark.parametrize(
    ("url", "normalised"),
    [("postgres://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
     ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
     ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
     ("sqlite:////abs/x.db", "sqlite:////abs/x.db")],
)  # fmt: skip
def test_urls_are_normalised_once(url, normalised):
    assert normalise_url(url) == normalised
    assert vendor_of(url) in {"postgresql", "sqlite"}


def test_relative_sqlite_paths_are_from_the_repository():
    from backend.config import REPO_ROOT

    assert sqlite_path("sqlite:///var/x.sqlite3").is_absolute()
    assert str(sqlite_path("sqlite:///data/x.sqlite3")).startswith(str(REPO_ROOT))
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://u@h/d") is None


@pytest.mark.parametrize(
    "url", ["", "garbage://x", "mysql://u@h/d", "not a url", "/var/x.sqlite3", "sqlite:"]
)
def test_only_sqlite_and_postgresql_urls(url):
    with pytest.raises(DatabaseUnavailable, match="not a SQLite or PostgreSQL URL"):
        check_url(url)


def test_a_password_never_appears_in_the_error():
    with pytest.raises(DatabaseUnavailable) as caught:
        check_url("mysql://admin:hunter2@db/x")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


# Declared elsewhere on purpose: retention's lock timeout defaults to its setting; rehearse's
# --database-url names a server to create a scratch database on, not a database to use.
OWN_DECLARATIONS = {("--lock-timeout", "commands/retention.py"),
                    ("--database-url", "commands/rehearse.py")}  # fmt: skip


@pytest.mark.parametrize(
    "option", ["--database-url", "--telemetry-dir", "--lock-timeout", "--actor", "--yes"]
)
def test_shared_options_are_declared_once(option):
    import re
    from pathlib import Path

    import opsctl

    root = Path(opsctl.__file__).parent
    # A declaration: the option's name inside a typer.Option(...) call.
    pattern = re.compile(r"typer\.Option\((?:[^()]|\([^()]*\))*?" + re.escape(f'"{option}"'))
    declared = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if pattern.search(p.read_text()) and p.name != "options.py"
        and (option, str(p.relative_to(root))) not in OWN_DECLARATIONS
    )  # fmt: skip
    assert declared == [], f"{option} declared outside opsctl/options.py: {declared}"
