"""`make run`: the product on its embedded default, nothing else installed.

Migrates the SQLite database under var/, seeds a demo on first run, issues a fresh demo
token (tokens are stored hashed, so the old one cannot be shown again), and serves the
backend under gunicorn on 127.0.0.1:8000 until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from backend import config


def prepare() -> tuple[str, str, int | None]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from backend.exams.models import Exam, Student
    from backend.exams.seed import seed_demo

    config.var_dir().mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0, interactive=False)
    if not Student.objects.exists():
        report = seed_demo(students=int(os.environ.get("DEMO_STUDENTS", "300")))
        print(f"seeded {report.students} students and {len(report.exams)} exams")
    student = Student.objects.order_by("id").first()
    token = student.set_token()
    student.save(update_fields=["token_hash"])
    from django.utils import timezone

    now = timezone.now()
    open_exam = Exam.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("id").first()
    return student.external_id, token, open_exam.id if open_exam else None


def main() -> int:
    os.environ.setdefault("PAPER_DELIVERY", "direct")  # no nginx in front on a laptop
    bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
    os.environ["GUNICORN_BIND"] = bind
    config.ensure_secret_key_file()
    ext, token, exam_id = prepare()
    url = f"http://{bind}"
    print()
    print(f"  exam backend: {url}   (database: {config.mask_url(config.database_url())})")
    print(f"  demo student: {ext}")
    print(f"  demo token:   {token}")
    if exam_id:
        print(
            f"  try: curl -s -X POST -H 'Authorization: Bearer {token}' "
            f"{url}/api/exams/{exam_id}/sessions/"
        )
    print(f"  telemetry:    {config.telemetry_dir()}")
    print("  operators:    in another terminal run `.venv/bin/opsctl top`")
    print("  stop:         Ctrl-C")
    print(flush=True)
    conf = os.path.join(os.path.dirname(__file__), "gunicorn.conf.py")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", conf])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # gunicorn got the same SIGINT from the terminal; give it time to finish requests.
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
        print("\nstopped.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
