"""The pool fails fast while the database is unreachable, and only then (backend/pgpool)."""

from __future__ import annotations

import pytest

from backend.pgpool import base as pgpool


class FakePool:
    def __init__(self):
        self.stats = {"pool_available": 0, "connections_errors": 0}

    def get_stats(self):
        return dict(self.stats)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(pgpool.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(pgpool, "_down_until", {})
    monkeypatch.setattr(pgpool, "_errors_seen", {})
    return now


def test_a_busy_pool_keeps_waiting(clock):
    pool = FakePool()  # every connection in use, none failing: a wait that timed out
    pgpool.failed(pool)
    assert not pgpool.refuse(pool)


def test_an_unreachable_database_is_refused_at_once_then_one_request_tries(clock):
    pool = FakePool()
    pool.stats["connections_errors"] = 3  # the pool's connects failed during the wait
    pgpool.failed(pool)
    assert pgpool.refuse(pool) and pgpool.refuse(pool)
    clock[0] += pgpool.FAIL_FAST_SECONDS
    assert not pgpool.refuse(pool)  # the window is over: this one waits...
    assert pgpool.refuse(pool)  # ...and the others are still refused meanwhile
    pool.stats["connections_errors"] = 5  # it failed too
    pgpool.failed(pool)
    assert pgpool.refuse(pool)


def test_a_connection_that_came_back_ends_the_refusals(clock):
    pool = FakePool()
    pool.stats["connections_errors"] = 1
    pgpool.failed(pool)
    assert pgpool.refuse(pool)
    pool.stats["pool_available"] = 1
    assert not pgpool.refuse(pool) and not pgpool.refuse(pool)
    # Errors counted before are not counted again: a later busy timeout waits.
    pool.stats["pool_available"] = 0
    pgpool.failed(pool)
    assert not pgpool.refuse(pool)


@pytest.mark.postgres_only
def test_the_backend_is_djangos_postgresql_with_its_pool():
    from django.db import connections

    connection = connections["default"]
    assert connection.vendor == "postgresql"
    assert isinstance(connection, pgpool.DatabaseWrapper)
    assert connection.settings_dict["OPTIONS"].get("pool")
