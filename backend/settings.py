"""Django settings, all read from the environment (12-factor).

DATABASE_URL   sqlite:///var/exam.sqlite3 (default, embedded) or postgresql://...
SECRET_KEY     signs leaderboard cursors; required to serve outside DEBUG
DEBUG          "1"/"true" to enable
ALLOWED_HOSTS  comma-separated
"""

from __future__ import annotations

import os

import dj_database_url

from backend import config

BASE_DIR = config.REPO_ROOT
VAR_DIR = config.var_dir()


DEBUG = config.env_bool("DEBUG", False)
# From the environment, or the key `make run` keeps under var/; the public development key
# otherwise, which backend/wsgi.py refuses to serve with outside DEBUG.
SECRET_KEY = config.secret_key()

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "backend.exams",
    "backend.ops",
]

MIDDLEWARE = [
    "backend.ops.telemetry.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"
TEMPLATES: list = []

DATABASE_URL = config.database_url()
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # WAL lets readers run beside the single writer; IMMEDIATE takes the write lock at BEGIN
        # so concurrent saves queue on busy_timeout instead of failing on lock upgrade.
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": config.env_number("SQLITE_BUSY_TIMEOUT", 20, float),
    }
    # A file (not :memory:) so a real gunicorn in e2e tests can open it; per process so
    # concurrent test runs on one machine never share a database.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test_exam_{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["OPTIONS"] = {"connect_timeout": 5}
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{os.getpid()}"}
    if config.env_bool("DB_POOL", True):
        # Django's own psycopg pool: no per-request connect cost under gunicorn threads;
        # its backend here differs in one thing: it fails fast while the database is down.
        _db["ENGINE"] = "backend.pgpool"
        _db["OPTIONS"]["pool"] = {
            "min_size": config.env_number("DB_POOL_MIN", 1, minimum=1),
            "max_size": config.env_number("DB_POOL_MAX", 10, minimum=1),
            "timeout": config.env_number("DB_POOL_TIMEOUT", 10, float),
        }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "exam-backend",
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

MEDIA_ROOT = str(VAR_DIR / "media")
MEDIA_URL = "/media/"
# In production nginx serves the paper from this internal location (X-Accel-Redirect).
PAPER_ACCEL_PREFIX = os.environ.get("PAPER_ACCEL_PREFIX", "/protected/")
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024

# Exam rules
EXAM_SUBMIT_GRACE_SECONDS = config.env_number("EXAM_SUBMIT_GRACE_SECONDS", 30)
EXAM_MAX_ANSWER_LENGTH = 500
ANSWER_KEY_CACHE_SECONDS = 60
LEADERBOARD_MAX_LIMIT = 100

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

PAPER_DELIVERY = os.environ.get("PAPER_DELIVERY") or ("direct" if DEBUG else "accel")

# Rasch calibration (backend/exams/rasch.py documents the scale)
RASCH_MIN_SESSIONS = config.env_number("RASCH_MIN_SESSIONS", 10, minimum=1)
RASCH_SCALE_MEAN = config.env_number("RASCH_SCALE_MEAN", 500, float, minimum=None)
RASCH_SCALE_SD = config.env_number("RASCH_SCALE_SD", 100, float, minimum=1)

# Auto-save served straight from WSGI (backend/exams/save_fastpath.py); 0 sends it through
# Django's full request stack like every other route.
SAVE_FASTPATH = config.env_bool("SAVE_FASTPATH", True)
# PostgreSQL: the save's statement is prepared once per pooled connection (sessions.py says
# why); 0 for a transaction-mode pooler (PgBouncer) in front of PostgreSQL.
SAVE_PREPARED = config.env_bool("SAVE_PREPARED", True)

# Feature flags are re-read from the database at most this often per process.
FLAGS_CACHE_SECONDS = config.env_number("FLAGS_CACHE_SECONDS", 5, float)
# Each process adds its flag evaluation counts to the database this often (0: never).
FLAGS_USAGE_FLUSH_SECONDS = config.env_number("FLAGS_USAGE_FLUSH_SECONDS", 30, float)

# Telemetry (backend/ops/telemetry.py). OPS_TELEMETRY=0 turns the exporters off entirely;
# the `telemetry.tracing` flag switches spans off at run time.
TELEMETRY_ENABLED = config.env_bool("OPS_TELEMETRY", True)
TELEMETRY_TRACING = config.env_bool("OPS_TRACING", True)
TELEMETRY_N_PLUS_ONE = config.env_number("OPS_N_PLUS_ONE_THRESHOLD", 10, minimum=1)
SERVICE_VERSION = "0.1.0"

# Retention (backend/ops/retention.py; policies default to backend/ops/retention_policy.py)
# Keys per purge batch; unset, 20000 on PostgreSQL (a batch's row locks are on rows no save
# touches, so a bigger batch costs students nothing) and 2000 on SQLite (a batch holds the
# single write lock that every save waits for).
RETENTION_BATCH_SIZE = config.env_number("RETENTION_BATCH_SIZE", 0) or None
RETENTION_LOCK_TIMEOUT_MS = config.env_number("RETENTION_LOCK_TIMEOUT_MS", 2000)
RETENTION_PAUSE_SECONDS = config.env_number("RETENTION_PAUSE_SECONDS", 0, float)
# The purge goes gently (batches of RETENTION_BUSY_BATCH_SIZE keys, resting as long as each
# took) while at least RETENTION_BUSY_CLIENTS other connections used the database in the
# last second (PostgreSQL); at full speed otherwise.
RETENTION_BUSY_CLIENTS = config.env_number("RETENTION_BUSY_CLIENTS", 1)
RETENTION_BUSY_BATCH_SIZE = config.env_number("RETENTION_BUSY_BATCH_SIZE", 2000, minimum=1)
RETENTION_OVERDUE_HOURS = config.env_number("RETENTION_OVERDUE_HOURS", 48, float)

# Resource alerts (backend/ops/resources.py): percent thresholds, per-probe overrides,
# and how long a probe must stay over a threshold before an alert opens.
RESOURCE_WARN = config.env_number("RESOURCE_WARN", 85, float)
RESOURCE_CRIT = config.env_number("RESOURCE_CRIT", 95, float)
RESOURCE_THRESHOLDS: dict[str, dict[str, float]] = {"cpu": {"warn": 90, "crit": 98}}
RESOURCE_DAMPING_SECONDS = config.env_number("RESOURCE_DAMPING_SECONDS", 120, float)
LOG_DIR = os.environ.get("LOG_DIR") or str(VAR_DIR / "log")
