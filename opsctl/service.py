"""The lazy bridge from opsctl to the Django backend's service functions.

Commands that act through the backend (flags, migrations, retention, rasch, resources, demo)
call ``open_backend()`` first; commands that only read files or talk SQL never import Django.
A database that cannot be used (down, missing, a garbage URL, a mistyped SQLite path, not
migrated) is one ``DatabaseUnavailable`` there, before the command starts its work.
"""

from __future__ import annotations

import contextlib
import os

from opsctl.errors import DatabaseUnavailable, InvalidInput, one_line

_ready = False


def setup_django(database_url: str | None = None) -> None:
    """Configure and start Django once per process, optionally against ``database_url``.

    Does not touch the database (the console starts even when it is down); settings that
    cannot be built from the environment (a garbage URL) are ``DatabaseUnavailable``.
    """
    global _ready
    if _ready:
        return
    from backend import config

    if database_url:
        os.environ["DATABASE_URL"] = database_url
    from opsctl.db.engine import check_url

    check_url(config.database_url())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    try:
        with _without_pool():
            django.setup()
    except config.ConfigError as exc:  # a setting with a value the backend refuses
        raise InvalidInput(f"backend settings: {exc}") from None
    except Exception as exc:  # e.g. dj-database-url refusing the URL
        url = config.mask_url(config.database_url())
        raise DatabaseUnavailable(
            f"cannot use DATABASE_URL {url}: {one_line(exc) or type(exc).__name__}"
        ) from None
    _ready = True


@contextlib.contextmanager
def _without_pool():
    """Build this process's settings without Django's pool, and leave the environment as it was.

    A pool is for the server's request threads; a CLI (and the console's short-lived worker
    threads) is better served by plain connections that close when done. The choice must not
    leak into the servers opsctl starts (rehearse, the benchmarks): a ``DB_POOL=0`` left in
    ``os.environ`` made every gunicorn they started connect to PostgreSQL once per request.
    """
    saved = os.environ.get("DB_POOL")
    os.environ.setdefault("DB_POOL", "0")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DB_POOL", None)
        else:
            os.environ["DB_POOL"] = saved


def open_backend(
    database_url: str | None = None, *, create: bool = False, migrated: bool = True
) -> None:
    """``setup_django`` and a check that the database answers, before a command's work.

    ``create``: a missing SQLite file may be created (``migrate apply``, ``demo seed``);
    otherwise a mistyped path is refused instead of leaving an empty database behind.
    ``migrated``: the backend's tables must exist (not so for the migration commands).
    """
    setup_django(database_url)  # settings only: nothing has connected (or created a file) yet
    from django.db import connection

    if connection.vendor == "sqlite":
        from opsctl.db.engine import check_sqlite_exists

        name = str(connection.settings_dict.get("NAME") or "")
        if name and not name.startswith("file:") and ":memory:" not in name:
            check_sqlite_exists(f"sqlite:///{name}", file_may_be_missing=create)
    _check_connection(migrated)


def _check_connection(migrated: bool) -> None:
    from django.db import DatabaseError, connection

    from backend import config

    url = config.mask_url(config.database_url())
    try:
        connection.ensure_connection()
        if migrated and "ops_featureflag" not in connection.introspection.table_names():
            raise DatabaseUnavailable(
                f"database {url} is not set up (no backend tables): run `opsctl migrate apply`"
            )
    except DatabaseError as exc:
        raise DatabaseUnavailable(
            f"cannot reach database {url}: {one_line(exc) or type(exc).__name__}"
        ) from None
