"""Per-process cache of answer keys: the save hot path validates (question, part) against the
key without a query. Keys are fixed once an exam opens, so a short TTL is only a safety net."""

from __future__ import annotations

import threading
import time

from django.conf import settings

from backend.exams.models import AnswerKey

_lock = threading.Lock()
_cache: dict[int, tuple[float, dict[tuple[int, str], str]]] = {}


def answer_key(exam_id: int) -> dict[tuple[int, str], str]:
    now = time.monotonic()
    hit = _cache.get(exam_id)
    if hit and hit[0] > now:
        return hit[1]
    key = {
        (q, p): v
        for q, p, v in AnswerKey.objects.filter(exam_id=exam_id).values_list(
            "question", "part", "correct_value"
        )
    }
    with _lock:
        _cache[exam_id] = (now + settings.ANSWER_KEY_CACHE_SECONDS, key)
    return key


def forget(exam_id: int | None = None) -> None:
    with _lock:
        if exam_id is None:
            _cache.clear()
        else:
            _cache.pop(exam_id, None)
