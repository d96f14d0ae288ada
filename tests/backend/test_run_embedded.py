"""`make run`: a busy port is refused before anything changes, and the demo token is the same
on every run (a second start never locks out the first server's clients)."""

from __future__ import annotations

import socket

import pytest

from backend import run_embedded
from tests.backend.factories import make_student


def test_a_busy_port_is_refused_before_anything_changes(monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bind = f"127.0.0.1:{busy.getsockname()[1]}"
        monkeypatch.setenv("GUNICORN_BIND", bind)

        def must_not_run():
            raise AssertionError("prepare() ran: it migrates and shows a token")

        monkeypatch.setattr(run_embedded, "prepare", must_not_run)
        assert run_embedded.port_in_use(bind)
        assert run_embedded.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{bind} is already in use" in err and "GUNICORN_BIND=127.0.0.1:8001" in err
    assert not run_embedded.port_in_use(bind)  # free again once the other server is gone


@pytest.mark.django_db
def test_the_demo_token_is_kept_and_reused(tmp_path, monkeypatch):
    from backend.exams.models import hash_token

    monkeypatch.setenv("OPS_VAR_DIR", str(tmp_path))
    student, _ = make_student()
    first = run_embedded.demo_token(student)
    path = tmp_path / "demo_token"
    assert path.read_text().strip() == first and (path.stat().st_mode & 0o777) == 0o600
    student.refresh_from_db()
    assert student.token_hash == hash_token(first)
    assert run_embedded.demo_token(student) == first  # the same on the next run
    student.refresh_from_db()
    assert student.token_hash == hash_token(first)
    # A kept token that no longer matches (the database was re-seeded) is replaced.
    path.write_text("stale\n")
    fresh = run_embedded.demo_token(student)
    assert fresh != "stale" and path.read_text().strip() == fresh
