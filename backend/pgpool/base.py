"""Django's PostgreSQL backend, with the pool failing fast while the database is down.

With Django's pool, a request that needs a connection waits up to DB_POOL_TIMEOUT (10 s) for
one. That wait is right when every connection is busy: one is handed back in milliseconds.
While PostgreSQL is down or restarting it is wasted: no connection is coming, and each
request holds a worker thread for the whole timeout (per statement that asks), so requests
queue behind them and the outage lasts longer for students than for the database. Measured
in the PostgreSQL-restart drill: saves took 2-4 s to get their 503 with a 1 s timeout, and
the queue behind them made clients time out after 10 s.

So: when a request's wait for a connection fails and the pool's own attempts to connect
have been failing (the database is unreachable, not merely busy), the next requests are
refused at once for FAIL_FAST_SECONDS, unless a connection has come back meanwhile (the pool
keeps reconnecting in the background). After that window one request waits again while the
others are still refused. Refusals are the OperationalError Django raises for a failed
connect: the API answers 503 "database unavailable, please retry", which clients retry.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base

#: How long requests are refused at once after a wait found the database unreachable.
FAIL_FAST_SECONDS = 1.0

_down_until: dict[int, float] = {}  # id(pool) -> monotonic time the refusals end
_errors_seen: dict[int, int] = {}  # id(pool) -> its failed connection attempts, last counted


def refuse(pool) -> bool:
    """Whether a request should be refused without waiting: the database was unreachable
    moments ago and no idle connection has come back since. When the window ends, one
    request waits again (the others are still refused) until it gets a connection or fails."""
    until = _down_until.get(id(pool))
    if until is None:
        return False
    if pool.get_stats().get("pool_available", 0) > 0:  # a connection came back
        _down_until.pop(id(pool), None)
        return False
    now = time.monotonic()
    if now < until:
        return True
    _down_until[id(pool)] = now + FAIL_FAST_SECONDS  # this one waits; the rest do not
    return False


def failed(pool) -> None:
    """A wait for a connection failed. If the pool's attempts to connect have been failing
    since the last look, the database is unreachable (not merely busy): refuse at once for
    a while."""
    errors = pool.get_stats().get("connections_errors", 0)
    if errors > _errors_seen.get(id(pool), 0):
        _down_until[id(pool)] = time.monotonic() + FAIL_FAST_SECONDS
    _errors_seen[id(pool)] = errors


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        if refuse(pool):
            raise self.Database.OperationalError(
                "database unreachable moments ago and no connection has come back; not waiting"
            )
        try:
            connection = super().get_new_connection(conn_params)
        except self.Database.OperationalError:  # psycopg_pool's PoolTimeout is one
            failed(pool)
            raise
        _down_until.pop(id(pool), None)
        return connection
