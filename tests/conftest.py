"""Test harness: the suite runs twice, once per database.

``make test`` runs pytest with ``DATABASE_URL`` pointing at SQLite (every test), then again
with ``DATABASE_URL`` = ``OPS_TEST_DATABASE_URL`` (PostgreSQL), where only tests that touch a
database are collected: those marked ``django_db`` or using the ``database_url`` /
``live_server_url`` fixtures. When PostgreSQL does not answer, that pass is skipped with one
loud line, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os

import pytest

# Servers the tests start (gunicorn hosts, nginx rehearsals) inherit this; a server outside
# DEBUG refuses the public development key.
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-" + "x" * 40)

# Tests read traces back, so every request is traced (the shipped default samples 10%).
os.environ.setdefault("OPS_TRACE_SAMPLE_RATIO", "1")

# No background thread writes flag evaluation counts into a test database (it would outlive
# the test's transaction); tests that need the counts call flags.flush_usage() themselves.
# (The servers the tests start read this; this process's settings: _fresh_process_caches.)
os.environ.setdefault("FLAGS_USAGE_FLUSH_SECONDS", "0")

DB_FIXTURES = {"database_url", "transactional_db", "db", "django_db_setup", "live_gunicorn"}


def _on_postgres() -> bool:
    return (os.environ.get("DATABASE_URL") or "").startswith(("postgres", "postgresql"))


def pytest_report_header(config):
    from backend.config import database_url, mask_url

    return f"database: {mask_url(database_url())}"


def pytest_sessionstart(session):
    if not _on_postgres():
        return
    import psycopg

    from backend.config import database_url, mask_url

    url = database_url().replace("postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:
        line = f"PostgreSQL at {mask_url(url)} does not answer ({str(exc).strip().splitlines()[0]})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.exit(f"FAILED: {line}; PostgreSQL is required in CI", returncode=3)
        pytest.exit(f"!!! SKIPPED EVERY POSTGRESQL TEST: {line} !!!", returncode=0)


def _touches_db(item) -> bool:
    if item.get_closest_marker("django_db") or item.get_closest_marker("postgres_only"):
        return True
    return bool(DB_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items):
    on_pg = _on_postgres()
    keep, drop = [], []
    for item in items:
        if on_pg:
            ok = _touches_db(item) and not item.get_closest_marker("sqlite_only")
        else:
            ok = not item.get_closest_marker("postgres_only")
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def database_url(transactional_db) -> str:
    """SQLAlchemy URL of the test database (committed data: uses ``transactional_db``)."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or "postgres"
    pw = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgresql+psycopg://{user}{pw}@{host}:{port}/{s['NAME']}"


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches (flags, answer keys, Django's cache) must not leak between tests:
    ids are reused after a rolled-back test."""
    try:  # the settings were read before this file set the environment (pytest-django)
        from django.conf import settings

        settings.FLAGS_USAGE_FLUSH_SECONDS = 0
    except Exception:  # Django not configured for this test
        pass
    yield
    try:
        from django.core.cache import cache

        from backend.exams import answer_keys
        from backend.ops import flags
    except Exception:  # Django not configured for this test
        return
    cache.clear()
    answer_keys.forget()
    flags.clear_cache()
