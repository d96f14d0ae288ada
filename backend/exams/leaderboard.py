"""The leaderboard: keyset pagination with an opaque, signed cursor.

Ranked by scaled score once the exam is calibrated, by raw score before; ties broken by
who submitted first, then by session id, so the order is total and pages never overlap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db.models import Q

from backend.exams.http import ApiError
from backend.exams.models import CalibrationRun, Exam, ExamSession

_SALT = "leaderboard.v1"


@dataclass(frozen=True)
class Page:
    exam_id: int
    ranked_by: str
    entries: list[dict]
    next_cursor: str | None


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "'limit' must be an integer") from None
    if not 1 <= limit <= settings.LEADERBOARD_MAX_LIMIT:
        raise ApiError(400, f"'limit' must be between 1 and {settings.LEADERBOARD_MAX_LIMIT}")
    return limit


@dataclass(frozen=True)
class _Cursor:
    score: float
    when: dt.datetime
    last_id: int
    position: int


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _decode(cursor: str, exam_id: int, ranked_by: str) -> _Cursor:
    """A cursor this server signed, checked field by field: a valid signature over a payload
    of the wrong shape (a leaked key, an old format) is the client's 400, never a 500."""
    try:
        data = signing.loads(cursor, salt=_SALT)
    except signing.BadSignature:
        raise ApiError(400, "invalid cursor: it was altered or belongs to another server") from None
    except (ValueError, UnicodeDecodeError, TypeError):  # signed bytes that are not JSON
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid cursor: malformed payload")
    if data.get("e") != exam_id or data.get("m") != ranked_by:
        raise ApiError(400, "invalid cursor: it belongs to another leaderboard")
    score, when, last_id, position = (data.get(k) for k in ("s", "t", "i", "n"))
    score_ok = _is_int(score) or (ranked_by == "scaled_score" and isinstance(score, float))
    if not (score_ok and _is_int(last_id) and _is_int(position) and last_id >= 0 and position >= 0):
        raise ApiError(400, "invalid cursor: malformed payload")
    try:
        parsed = dt.datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ApiError(400, "invalid cursor: malformed payload")
    return _Cursor(score, parsed, last_id, position)


CACHE_SECONDS = 5


def leaderboard_page(exam_id: int, limit: int, cursor: str | None) -> Page:
    """One page of the ranking. The first page (the one everybody refreshes) is cached for a
    few seconds while the ``leaderboard.cache`` flag is on."""
    from django.core.cache import cache

    from backend.ops import flags

    if cursor is None and flags.is_enabled("leaderboard.cache"):
        key = f"leaderboard:{exam_id}:{limit}"
        page = cache.get(key)
        if page is None:
            page = _page(exam_id, limit, None)
            cache.set(key, page, CACHE_SECONDS)
        return page
    return _page(exam_id, limit, cursor)


def _page(exam_id: int, limit: int, cursor: str | None) -> Page:
    if not Exam.objects.filter(pk=exam_id).exists():
        raise ApiError(404, f"no exam {exam_id}")
    calibrated = CalibrationRun.objects.filter(exam_id=exam_id, is_current=True).exists()
    field = "scaled_score" if calibrated else "raw_score"
    ranked_by = "scaled_score" if calibrated else "raw_score"
    qs = ExamSession.objects.filter(exam_id=exam_id, submitted_at__isnull=False).exclude(
        **{f"{field}__isnull": True}
    )
    position = 0
    if cursor:
        c = _decode(cursor, exam_id, ranked_by)
        score, when, last_id, position = c.score, c.when, c.last_id, c.position
        # The redundant `score <= last` gives the index a range to start from; the OR
        # alone would be a filter over every row ranked above the cursor.
        qs = qs.filter(**{f"{field}__lte": score}).filter(
            Q(**{f"{field}__lt": score})
            | Q(**{field: score, "submitted_at__gt": when})
            | Q(**{field: score, "submitted_at": when, "id__gt": last_id})
        )
    rows = list(
        qs.order_by(f"-{field}", "submitted_at", "id").values(
            "id", "student__name", "raw_score", "max_score", "scaled_score", "submitted_at", field
        )[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [
        {
            "rank": position + i + 1,
            "session_id": r["id"],
            "student": r["student__name"],
            "score": r[field],
            "raw_score": r["raw_score"],
            "max_score": r["max_score"],
            "scaled_score": r["scaled_score"],
            "submitted_at": r["submitted_at"],
        }
        for i, r in enumerate(rows)
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = signing.dumps(
            {
                "e": exam_id,
                "m": ranked_by,
                "s": last[field],
                "t": last["submitted_at"].isoformat(),
                "i": last["id"],
                "n": position + len(rows),
            },
            salt=_SALT,
            compress=True,
        )
    return Page(exam_id, ranked_by, entries, next_cursor)
