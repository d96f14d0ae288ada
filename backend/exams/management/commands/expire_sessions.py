from django.core.management.base import BaseCommand, CommandError

from backend.exams.sessions import expire_overdue_sessions
from backend.ops.locks import LockHeld, job_lock

LOCK = "expire-sessions"


class Command(BaseCommand):
    help = (
        "Score and close sessions whose deadline and grace period have passed (for cron and "
        "the exam-expire-sessions timer). Takes the 'expire-sessions' job lock, so the same "
        "entry can run on every host: one expires, the others exit 0 at once."
    )

    def handle(self, *args, **opts):
        try:
            with job_lock(LOCK):
                n = expire_overdue_sessions()
        except LockHeld as exc:
            self.stdout.write(f"skipped: {exc}")
            return
        except Exception as exc:  # one clear line and exit 1, never a traceback in the log
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"expire_sessions failed: {first}") from exc
        self.stdout.write(f"expired {n} session(s)")
