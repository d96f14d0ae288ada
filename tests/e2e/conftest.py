from __future__ import annotations

import pytest

from tests.e2e.gunicorn_server import GunicornServer, django_database_url


@pytest.fixture
def live_gunicorn(transactional_db, tmp_path):
    """A real gunicorn on the current test database (committed data: transactional_db)."""
    from django.db import connections

    # Workers open their own connections; ours must not hold locks they wait on.
    for conn in connections.all():
        conn.close()
    # The workers' telemetry goes to the test's own directory, not the repository's var/.
    server = GunicornServer(
        django_database_url(),
        env={"OPS_TELEMETRY_DIR": str(tmp_path / "telemetry")},
        log_path=tmp_path / "gunicorn.log",
    )
    server.start()
    yield server
    server.stop()
