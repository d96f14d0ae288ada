"""Where things live, read from the environment without importing Django.

Shared by ``backend.settings`` and ``opsctl`` so both agree on the default database URL,
the ``var/`` directory and the telemetry directory, and ``opsctl --help`` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use; the message names it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool = False) -> bool:
    """A boolean setting, strictly: 1/0, true/false, yes/no, on/off (any case); unset or
    empty is ``default``. Anything else (``DEBUG=ture``) is a ``ConfigError`` naming the
    variable, never silently off."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_number(name: str, default: float, kind: type = int, minimum: float | None = 0) -> float:
    """A numeric setting: ``kind`` (int or float), finite, at least ``minimum`` (None: any);
    unset or empty is ``default``. A bad value is a ``ConfigError`` naming the variable."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def env_duration_ms(name: str, default: str) -> int:
    """A duration setting in the one grammar (``500ms``, ``2s``, ``1m``), in milliseconds;
    a bare number is seconds. A bad value is a ``ConfigError`` naming the variable."""
    from backend.durations import parse_seconds

    raw = os.environ.get(name)
    text = raw if raw is not None and raw.strip() else default
    try:
        return round(parse_seconds(text) * 1000)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def var_dir() -> Path:
    """The directory for local state: SQLite database, telemetry files, bench reports."""
    return Path(os.environ.get("OPS_VAR_DIR") or REPO_ROOT / "var")


def database_url() -> str:
    """The backend's database URL; a relative SQLite path is taken relative to the repository."""
    url = os.environ.get("DATABASE_URL") or "sqlite:///var/exam.sqlite3"
    return absolute_sqlite_url(url)


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///var/x.db`` -> ``sqlite:////abs/repo/var/x.db``; other URLs unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rel = url[len(prefix) :]
        if rel and rel != ":memory:":
            base = REPO_ROOT
            if rel.startswith("var/") and os.environ.get("OPS_VAR_DIR"):
                base, rel = var_dir(), rel[len("var/") :]
            return prefix + str((base / rel).resolve())
    return url


def telemetry_dir() -> Path:
    return Path(os.environ.get("OPS_TELEMETRY_DIR") or var_dir() / "telemetry")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


# Signs leaderboard cursors. Public, so it may serve only a DEBUG server: backend/wsgi.py
# refuses to serve with it otherwise.
DEV_SECRET_KEY = "django-insecure-dev-key-set-SECRET_KEY-in-production"


def secret_key_file() -> Path:
    return var_dir() / "secret_key"


def secret_key() -> str:
    """SECRET_KEY from the environment, else the key `make run` generated under var/, else
    the public development key (which only DEBUG may serve with)."""
    key = os.environ.get("SECRET_KEY", "").strip()
    if key:
        return key
    try:
        return secret_key_file().read_text().strip() or DEV_SECRET_KEY
    except OSError:
        return DEV_SECRET_KEY


def ensure_secret_key_file() -> Path:
    """The embedded default's key: generated once, readable by its owner only."""
    import secrets

    path = secret_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50) + "\n")
    return path
