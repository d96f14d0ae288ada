"""JSON API plumbing: every error is a 4xx/5xx with ``{"error": "..."}``, never an HTML page."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, http_status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = http_status
        self.message = message
        self.extra = extra


def error_response(http_status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=http_status)


def error_for(exc: Exception) -> JsonResponse | None:
    """The JSON answer for an exception a view raised, or None when it is a server fault (the
    caller re-raises it). Shared by ``api_view`` and the save fast path (save_fastpath.py)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, **exc.extra)
    if isinstance(exc, Http404):
        return error_response(404, str(exc) or "not found")
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and _is_connection_error(exc)
    ):
        # The database is down or restarting: tell clients to retry, don't pretend a 500.
        log.warning("database unavailable: %s", exc)
        resp = error_response(503, "database unavailable, please retry")
        resp["Retry-After"] = "1"
        return resp
    return None


def api_view(*methods: str) -> Callable:
    """Restrict methods, turn ApiError/Http404 into JSON, and a database outage into 503."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                resp = error_response(405, f"method {request.method} not allowed here")
                resp["Allow"] = ", ".join(methods)
                return resp
            try:
                return view(request, *args, **kwargs)
            except Exception as exc:
                resp = error_for(exc)
                if resp is None:
                    raise
                return resp

        wrapper.csrf_exempt = True  # token-authenticated JSON API: no cookies, no CSRF
        return wrapper

    return decorate


def _is_connection_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("connection", "terminating", "server closed", "pool"))


def body_too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    message = f"the body is larger than the {limit // 1024} KiB limit"
    return ApiError(413, message, limit_bytes=limit)


def parse_json_body(request: HttpRequest) -> dict:
    if request.content_type and request.content_type != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        raw = request.body
    except RequestDataTooBig:
        raise body_too_large() from None
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict:
    """A request body that must be one JSON object."""
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    except RecursionError:
        # json's decoder recurses per nesting level: "[[[[..." within the size limit is a
        # client's bad input, not a server fault.
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


def json_handler_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, f"no such endpoint: {request.path}")


def json_handler_500(request: HttpRequest) -> JsonResponse:
    return error_response(500, "internal error; it has been logged")


def json_handler_400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad request")
