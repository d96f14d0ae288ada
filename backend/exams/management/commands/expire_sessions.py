from django.core.management.base import BaseCommand

from backend.exams.sessions import expire_overdue_sessions


class Command(BaseCommand):
    help = "Score and close sessions whose deadline and grace period have passed (for cron)."

    def handle(self, *args, **opts):
        n = expire_overdue_sessions()
        self.stdout.write(f"expired {n} session(s)")
