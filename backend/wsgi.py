"""WSGI entry point. Telemetry is set up here, in each worker process (gunicorn imports this
after forking), before Django loads its middleware so the instrumentation is in place."""

import os

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
django.setup(set_prefix=False)
if settings.TELEMETRY_ENABLED:
    from backend.ops import telemetry

    telemetry.setup()

application = WSGIHandler()
