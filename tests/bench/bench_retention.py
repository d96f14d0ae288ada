"""Retention engine vs Django's QuerySet.delete(), and save latency during a purge.

1. Rows per second deleting answer-journal rows: the engine (keyset batches of primary keys)
   against ``QuerySet.delete()`` with a post_delete receiver connected (as real apps have, which
   forces Django to load every row and send a signal per row). Same data shape, same run.
2. Save p99 while a purge runs, next to the same saves with no purge (the goals: 20x the rows
   per second of ``QuerySet.delete()``; save p99 during a purge at most 1.5x idle).
Uses the database in DATABASE_URL (make bench gives it a PostgreSQL database of its own).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")


def _old_journal(n_sessions: int, events_per_session: int, tag: str):
    import random

    from django.utils import timezone

    from backend.exams.models import ExamSession
    from backend.exams.seed import bulk_insert, create_exam, create_students

    now = timezone.now()
    exam = create_exam(f"Old {tag}", now - dt.timedelta(days=61), now - dt.timedelta(days=60),
                       questions=10)  # fmt: skip
    people = create_students(n_sessions, prefix=f"ret{tag}{int(time.time())}",
                             rng=random.Random(1))  # fmt: skip
    sub = now - dt.timedelta(days=60)
    bulk_insert(
        "exams_examsession",
        ("student_id", "exam_id", "status", "started_at", "deadline", "submitted_at"),
        ((sid, exam.id, "submitted", sub, sub, sub) for sid, _, _ in people),
    )
    ids = list(ExamSession.objects.filter(exam=exam).values_list("id", flat=True))
    bulk_insert(
        "exams_answerevent",
        ("session_id", "question", "part", "value", "seq", "received_at"),
        ((s, 1 + i % 10, "", "x", i, sub) for s in ids for i in range(events_per_session)),
    )
    return exam, ids


def _settle() -> None:
    """Make fresh bench rows look like rows past retention do: long since vacuumed and
    analysed by autovacuum. Freshly copied rows would make both contenders pay first-touch
    hint-bit writes and plan on empty statistics, which no 30-day-old row ever costs."""
    from django.db import connection

    with connection.cursor() as cur:
        for table in ("exams_answerevent", "exams_examsession"):
            cur.execute(
                f"VACUUM ANALYZE {table}"
                if connection.vendor == "postgresql"
                else f"ANALYZE {table}"
            )


def engine_vs_queryset() -> dict:
    from django.db.models.signals import post_delete

    from backend.exams.models import AnswerEvent
    from backend.ops import retention

    received = []

    def on_delete(sender, instance, **kwargs):  # what an audit/search-index hook looks like
        received.append(instance.pk)

    # The same data for both: 200,000 journal rows of 4,000 sessions scored 60 days ago.
    _, ids_q = _old_journal(4000, 50, "q")
    _old_journal(4000, 50, "e")
    _settle()
    post_delete.connect(on_delete, sender=AnswerEvent)
    try:
        t0 = time.perf_counter()
        deleted_q, _ = AnswerEvent.objects.filter(session_id__in=ids_q).delete()
        q_seconds = time.perf_counter() - t0
        _settle()  # autovacuum would clear Django's dead rows before the next night's run
        t0 = time.perf_counter()
        report = retention.run(only=["answer_journal"])
        e_seconds = time.perf_counter() - t0
    finally:
        post_delete.disconnect(on_delete, sender=AnswerEvent)
    assert len(received) == deleted_q  # Django really took its per-row path
    e_deleted = report.policies[0].deleted
    return {
        "queryset_delete": {"rows": deleted_q, "seconds": round(q_seconds, 3),
                            "rows_per_second": round(deleted_q / q_seconds)},
        "engine": {"rows": e_deleted, "seconds": round(e_seconds, 3),
                   "batch_size": retention.default_batch_size(),
                   "batches": report.policies[0].batches,
                   "rows_per_second": round(e_deleted / e_seconds)},
        "ratio_engine_to_queryset": round((e_deleted / e_seconds) / (deleted_q / q_seconds), 1),
    }  # fmt: skip


def _save_latencies(keep_going, targets: list) -> list[tuple[float, float]]:
    """Save answers back to back while ``keep_going()``: (wall-clock start, seconds) each."""
    from django.db import connection

    from backend.exams.models import hash_token
    from backend.exams.sessions import save_answer

    out = []
    seq = 0
    while keep_going():
        token, sid = targets[seq % len(targets)]
        seq += 1
        start = time.time()
        t0 = time.perf_counter()
        save_answer(sid, hash_token(token), {"question": 1 + seq % 4, "answer": str(seq),
                                             "seq": seq})  # fmt: skip
        out.append((start, time.perf_counter() - t0))
    connection.close()
    return out


def _p99(values: list[float]) -> float:
    values = sorted(values)
    return round(values[int(0.99 * (len(values) - 1))] * 1000, 2)


def latency_during_purge() -> dict:
    """Save p99 while `opsctl retention run` purges 2,000,000 journal rows in its own process
    (as cron runs it), next to the same saves with no purge. Only saves that started between
    the run's recorded start and finish count as during the purge."""
    import subprocess
    import sys

    from backend.ops.models import RetentionRun
    from tests.bench.bench_save import _prepare

    targets = _prepare()[:50]
    _old_journal(10000, 200, "p")  # 2,000,000 rows to purge while saving
    _settle()
    stop = time.monotonic() + 8
    idle = [lat for _, lat in _save_latencies(lambda: time.monotonic() < stop, targets)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsctl.cli", "retention", "run", "--only", "answer_journal",
         "--json"], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    saves = _save_latencies(lambda: proc.poll() is None, targets)
    out, _ = proc.communicate(timeout=600)
    report = json.loads(out)
    run = RetentionRun.objects.get(pk=report["run_id"])
    window = (run.started_at.timestamp(), run.finished_at.timestamp())
    busy = [lat for start, lat in saves if window[0] <= start <= window[1]]
    deleted = report["policies"][0]["deleted"]
    return {
        "idle": {"saves": len(idle), "p99_ms": _p99(idle)},
        "during_purge": {"saves": len(busy), "p99_ms": _p99(busy), "purged_rows": deleted,
                         "purge_seconds": round(window[1] - window[0], 2),
                         "purge_rows_per_second": round(deleted / (window[1] - window[0]))},
        "ratio_p99_purge_to_idle": round(_p99(busy) / _p99(idle), 2),
    }  # fmt: skip


def main() -> dict:
    import django

    django.setup()
    result = {"delete_speed": engine_vs_queryset(), "save_latency": latency_during_purge()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
