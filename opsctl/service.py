"""The lazy bridge from opsctl to the Django backend's service functions.

Commands that act through the backend (flags, migrations, retention, rasch, demo) call
``setup_django()`` first; commands that only read files or talk SQL never import Django.
"""

from __future__ import annotations

import os

_ready = False


def setup_django(database_url: str | None = None) -> None:
    """Configure and start Django once per process, optionally against ``database_url``."""
    global _ready
    if _ready:
        return
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    # A pool is for the server's request threads; a CLI (and the console's short-lived worker
    # threads) is better served by plain connections that close when done.
    os.environ.setdefault("DB_POOL", "0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    _ready = True
