"""Auto-save served straight from WSGI: POST /api/sessions/<id>/answers/.

The save is the hot path (every student, every few seconds). Through Django it paid for two
URL resolutions, five middleware layers, the OpenTelemetry middleware's attribute collection
(for every request, sampled or not), a WSGIRequest and a JsonResponse: about 0.8 ms of CPU
per save, more than the save itself. This WSGI wrapper answers that one route and hands
everything else to Django.

It is a second face of the same service, not a second implementation: ``sessions.save_answer``
does the work; the token, the body and every error go through the same functions the Django
view uses (``auth.token_hash_from_header``, ``http.parse_json_object``, ``http.error_for``);
the response headers are SecurityMiddleware's own; and the telemetry is the Django
instrumentation's spans and metrics (backend/ops/request_telemetry.py).
tests/backend/test_save_fastpath.py checks that both paths answer byte for byte the same.
``SAVE_FASTPATH=0`` switches it off.

One deliberate difference: Django's request signals do not run, so the thread keeps its
database connection from one save to the next (``_release_connection_if_due`` says when it
goes back to the pool).
"""

from __future__ import annotations

import contextlib
import functools
import http
import json
import logging
import re
import time

from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.http import parse_header_parameters

from backend.exams import sessions
from backend.exams.auth import token_hash_from_header
from backend.exams.http import (
    ApiError,
    body_too_large,
    error_for,
    error_response,
    parse_json_object,
)

log = logging.getLogger("django.request")

_PATH = re.compile(r"/api/sessions/([0-9]+)/answers/\Z")
#: How long a thread keeps its database connection between saves (see _release_connection_if_due).
HOLD_SECONDS = 30.0


class SaveFastPath:
    """WSGI application: the save route here, every other request to ``app`` (Django)."""

    def __init__(self, app):
        from django.urls import resolve

        from backend.exams import api

        self.app = app
        # Serve only what Django itself would route to the save view, under its route name.
        match = resolve("/api/sessions/1/answers/")
        if match.func is not api.answer_save:
            raise ImproperlyConfigured("the save fast path no longer matches the URLconf")
        self.route = match.route
        self._headers: dict[bool, list[tuple[str, str]]] = {}

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        match = _PATH.match(environ.get("PATH_INFO", ""))
        if match is None:
            return self.app(environ, start_response)
        return self._save(environ, start_response, int(match.group(1)))

    def _save(self, environ, start_response, session_id: int):
        rec, scope = None, contextlib.nullcontext()
        if settings.TELEMETRY_ENABLED:
            from backend.ops.request_telemetry import ServerRequest
            from backend.ops.telemetry import request_scope

            rec, scope = ServerRequest.begin(environ, self.route), request_scope(self.route)
        fault: BaseException | None = None
        status, body, extra = 500, b"", []
        try:
            try:
                with scope:  # the route and statement counts the DB spans carry
                    status, body, extra = self._answer(environ, session_id)
            except Exception as exc:
                resp = error_for(exc)
                if resp is None:
                    fault = exc
                    log.error("Internal Server Error: %s", environ.get("PATH_INFO"),
                              exc_info=exc, extra={"status_code": 500})  # fmt: skip
                    resp = error_response(500, "internal error; it has been logged")
                status, body = resp.status_code, resp.content
                extra = [(k, v) for k, v in resp.items() if k.lower() != "content-type"]
        finally:
            if rec is not None:
                rec.end(status, fault)
            _release_connection_if_due()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *extra,
            *self._security_headers(environ),
        ]
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        return [body]

    def _answer(self, environ, session_id: int) -> tuple[int, bytes, list]:
        """Status, body and extra headers of a save, in the Django view's order of checks:
        host, token, content type, size, JSON, then the service."""
        _check_host(environ)
        token_hash = token_hash_from_header(environ.get("HTTP_AUTHORIZATION", ""))
        content_type, _ = parse_header_parameters(environ.get("CONTENT_TYPE", ""))
        if content_type and content_type != "application/json":
            raise ApiError(415, "send the body as application/json")
        result = sessions.save_answer(session_id, token_hash, parse_json_object(_body(environ)))
        payload = {"status": result.status, "seq": result.seq}
        return 200, json.dumps(payload, cls=DjangoJSONEncoder).encode(), []

    def _security_headers(self, environ) -> list[tuple[str, str]]:
        """The headers SecurityMiddleware adds to a JSON response, asked of it once per
        scheme (HSTS depends on it)."""
        _, secure = _facts(_facts_key(environ))
        if secure not in self._headers:
            from django.middleware.security import SecurityMiddleware

            request = HttpRequest()
            request.is_secure = lambda: secure  # type: ignore[method-assign]
            response = HttpResponse(content_type="application/json")
            SecurityMiddleware(lambda r: response).process_response(request, response)
            self._headers[secure] = [
                (k, v) for k, v in response.items() if k.lower() != "content-type"
            ]
        return self._headers[secure]


def _release_connection_if_due() -> None:
    """Keep this thread's database connection for its next save, unless it failed or has been
    held for HOLD_SECONDS.

    Django's request signals hand the connection back to the pool after every request and
    take one again on the next: on the save, that lending cost more CPU than the statement
    (about a quarter of the fast path). A gthread worker's threads are long-lived and each
    holds at most one connection either way, so the pool (DB_POOL_MAX >= threads) is never
    drained by this. A connection that saw a database error goes back at once (the pool
    discards a broken one), and any other after HOLD_SECONDS, so the pool's lifetime limits
    and a restarted PostgreSQL still reach it. A Django request on the same thread starts by
    handing it back as usual."""
    conn = connection
    if conn.connection is None or conn.in_atomic_block:  # a test's transaction, never a save's
        return
    # close_at is the connection's start plus CONN_MAX_AGE, which is 0 here (the pool forbids
    # persistent connections): the time it was taken.
    held_since = conn.close_at if conn.close_at is not None else 0.0
    if conn.errors_occurred or time.monotonic() - held_since >= HOLD_SECONDS:
        conn.close()


def _body(environ) -> bytes:
    """The request body as Django reads it: Content-Length bytes (none without it), refused
    over DATA_UPLOAD_MAX_MEMORY_SIZE before anything is read."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        raise body_too_large()
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _request(environ) -> HttpRequest:
    """A bare HttpRequest over the environ (no body read), so Django itself answers what its
    middleware asks of every request: the host against ALLOWED_HOSTS, and whether it is
    secure (SECURE_PROXY_SSL_HEADER)."""
    request = HttpRequest()
    request.META = environ
    return request


# The environ keys Django's get_host() and is_secure() read. Their answers depend on these
# values and on settings only, and building a request to ask cost a tenth of the save's CPU:
# each answer is kept per combination (a bounded cache; a client varying Host only evicts).
_HOST_KEYS = ("HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_HOST", "SERVER_NAME",
              "SERVER_PORT", "wsgi.url_scheme")  # fmt: skip


def _facts_key(environ) -> tuple:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return (*(environ.get(k) for k in _HOST_KEYS), environ.get(proxy[0]) if proxy else None)


@functools.lru_cache(maxsize=256)
def _facts(key: tuple) -> tuple[str | None, bool]:
    """(the DisallowedHost message or None, is_secure) for one ``_facts_key``."""
    *host, forwarded_proto = key
    environ = {k: v for k, v in zip(_HOST_KEYS, host, strict=True) if v is not None}
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy and forwarded_proto is not None:
        environ[proxy[0]] = forwarded_proto
    request = _request(environ)
    try:
        request.get_host()
        refused = None
    except DisallowedHost as exc:
        refused = str(exc)
    return refused, request.is_secure()


@receiver(setting_changed)
def _settings_changed(**kwargs) -> None:
    _facts.cache_clear()


def _check_host(environ) -> None:
    """ALLOWED_HOSTS, as CommonMiddleware checks it on every request; a bad host is Django's
    400, logged where Django logs it."""
    refused, _ = _facts(_facts_key(environ))
    if refused is not None:
        logging.getLogger("django.security.DisallowedHost").error(refused)
        raise ApiError(400, "bad request") from None


def wrap(app):
    """``app`` behind the save fast path, unless SAVE_FASTPATH is off."""
    return SaveFastPath(app) if settings.SAVE_FASTPATH else app
