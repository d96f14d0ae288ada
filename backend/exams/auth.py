"""Bearer-token authentication for students."""

from __future__ import annotations

from django.http import HttpRequest

from backend.exams.http import ApiError
from backend.exams.models import Student, hash_token


def bearer_token_hash(request: HttpRequest) -> str:
    """The SHA-256 of the request's bearer token, or a 401."""
    return token_hash_from_header(request.headers.get("Authorization", ""))


def token_hash_from_header(header: str) -> str:
    """The SHA-256 of the token in an ``Authorization: Bearer <token>`` value, or a 401."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    if len(token) > 200:
        raise ApiError(401, "unknown token")
    return hash_token(token)


def authenticated_student_id(request: HttpRequest) -> int:
    return student_for_token_hash(bearer_token_hash(request))


def student_for_token_hash(token_hash: str) -> int:
    """The id of the student holding the token, or a 401."""
    student_id = Student.objects.filter(token_hash=token_hash).values_list("id", flat=True).first()
    if student_id is None:
        raise ApiError(401, "unknown token")
    return student_id


def raise_for_foreign_or_unknown(token_hash: str, what: str = "session") -> None:
    """Called when a lookup by (id, token) found nothing: 401 for a bad token, else 404.

    Another student's session is reported exactly like a missing one, so ids leak nothing.
    """
    if not Student.objects.filter(token_hash=token_hash).exists():
        raise ApiError(401, "unknown token")
    raise ApiError(404, f"no such {what} for this student")
