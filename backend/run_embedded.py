"""`make run`: the product on its embedded default, nothing else installed.

Refuses at once when the port is taken, then migrates the SQLite database under var/, seeds a
demo on first run, shows the demo student's token (kept under var/demo_token, the same on
every run), and serves the backend under gunicorn on 127.0.0.1:8000 until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
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
    token = demo_token(student)
    from django.utils import timezone

    now = timezone.now()
    open_exam = Exam.objects.filter(starts_at__lte=now, ends_at__gt=now).order_by("id").first()
    return student.external_id, token, open_exam.id if open_exam else None


def demo_token(student) -> str:
    """The demo student's token, kept under var/ (mode 600) so every `make run` shows the same
    one: tokens are stored hashed, and issuing a new one would lock out a client (or a server
    already running) that holds the old one."""
    from backend.exams.models import hash_token

    path = config.var_dir() / "demo_token"
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if token and hash_token(token) == student.token_hash:
        return token
    token = student.set_token()
    student.save(update_fields=["token_hash"])
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def port_in_use(bind: str) -> bool:
    host, _, port = bind.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError:
            return True
    return False


def main() -> int:
    os.environ.setdefault("PAPER_DELIVERY", "direct")  # no nginx in front on a laptop
    bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
    os.environ["GUNICORN_BIND"] = bind
    # Before anything else (migrations, seeding, the token): a server already running here
    # keeps working, and this one says how to run beside it.
    if port_in_use(bind):
        print(
            f"make run: {bind} is already in use (another `make run`?). Stop it, or serve on "
            "another port: GUNICORN_BIND=127.0.0.1:8001 make run",
            file=sys.stderr,
        )
        return 1
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
