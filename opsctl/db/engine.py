"""One way from a database URL to a SQLAlchemy engine and connection, for every opsctl
command that talks SQL without Django (explain, db, vacuum, queries --source pg).

- ``normalise_url``: ``postgres://`` and ``postgresql://`` use psycopg 3 (the driver the
  backend ships; SQLAlchemy's default would be psycopg2, which is not installed), a relative
  SQLite path is taken from the repository, as the backend does.
- ``make_engine``: refuses a URL SQLAlchemy cannot use, and a SQLite file that does not exist
  (SQLite would create an empty one and every answer would be "no problems found").
- ``connect``: a connection, or ``DatabaseUnavailable`` with the driver's first line and the
  URL with its password masked.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from opsctl.errors import DatabaseUnavailable, one_line

CONNECT_TIMEOUT_S = 5


def normalise_url(url: str) -> str:
    from backend.config import absolute_sqlite_url

    url = (url or "").strip()
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return absolute_sqlite_url(url)


def vendor_of(url: str) -> str:
    """``postgresql``, ``sqlite`` or the scheme as given (no driver needed)."""
    scheme = (url or "").split(":", 1)[0].split("+", 1)[0].lower()
    return "postgresql" if scheme in {"postgres", "postgresql"} else scheme


SCHEMES = {"sqlite", "postgres", "postgresql", "pgsql"}


def check_url(url: str) -> None:
    """Refuse anything but a SQLite or PostgreSQL URL, saying what one looks like."""
    from backend.config import mask_url

    scheme = (url or "").split("://", 1)[0].split("+", 1)[0].lower() if "://" in (url or "") else ""
    if scheme not in SCHEMES:
        raise DatabaseUnavailable(
            f"not a SQLite or PostgreSQL URL: {mask_url(url or '')!r} (use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB)"
        )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other URLs and for ``:memory:``)."""
    url = normalise_url(url)
    if not url.startswith("sqlite:"):
        return None
    rest = url.split(":", 1)[1].lstrip("/")
    if not rest or rest.startswith(":memory:") or "mode=memory" in rest:
        return None
    return Path("/" + rest.split("?", 1)[0])


def check_sqlite_exists(url: str, file_may_be_missing: bool = False) -> None:
    """Refuse a SQLite URL whose file is missing, before anything creates it empty; with
    ``file_may_be_missing`` (commands that create a database) only its directory must exist."""
    from backend.config import mask_url

    path = sqlite_path(url)
    if path is None or path.is_file():
        return
    if not path.parent.is_dir():
        where = "its directory does not exist"
    elif file_may_be_missing:
        return
    else:
        where = "no such file"
    raise DatabaseUnavailable(
        f"no SQLite database at {path} ({where}; check --database-url / DATABASE_URL "
        f"{mask_url(url)})"
    )


def make_engine(url: str):
    """An engine for ``url`` (see the module doc), or ``DatabaseUnavailable``."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from backend.config import mask_url

    check_url(url)
    normalised = normalise_url(url)
    check_sqlite_exists(normalised)
    try:
        pg = vendor_of(normalised) == "postgresql"
        args = {"connect_timeout": CONNECT_TIMEOUT_S} if pg else {}
        return create_engine(normalised, connect_args=args)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise DatabaseUnavailable(f"bad database URL {mask_url(url)}: {one_line(exc)}") from None


def connect(engine):
    """A connection from ``engine``, or ``DatabaseUnavailable``."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def unavailable(engine, exc: BaseException) -> DatabaseUnavailable:
    """``exc`` (a driver error on ``engine``) as the one-line error operators see."""
    from backend.config import mask_url

    cause = getattr(exc, "orig", None) or exc
    where = mask_url(engine.url.render_as_string(hide_password=True))
    return DatabaseUnavailable(f"cannot reach {where}: {one_line(cause) or type(cause).__name__}")


@contextmanager
def connection(url: str, autocommit: bool = False):
    """``with connection(url) as conn:`` an engine and a connection, both closed after."""
    engine = make_engine(url)
    try:
        conn = connect(engine)
        try:
            if autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn
        finally:
            conn.close()
    finally:
        engine.dispose()
