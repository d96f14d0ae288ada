"""`opsctl top` in a real terminal (tmux): it starts, switches panes, and quits cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_for(session: str, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared; screen was:\n{screen}")


def start_top(tmp_path, spans: bool = False) -> tuple[str, Path]:
    """`opsctl top` on a seeded SQLite database in an 80x24 tmux session; with ``spans``,
    two minutes of generated telemetry (tests/bench/spangen.py) in its folder."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (make test installs it)")
    db = tmp_path / "top.sqlite3"
    telemetry = tmp_path / "telemetry"
    telemetry.mkdir()
    if spans:
        from tests.bench import spangen

        now = time.time()
        spangen.fill(telemetry, now - 120, now, 50)
    env = f"DATABASE_URL=sqlite:///{db} OPS_TELEMETRY_DIR={telemetry} NO_COLOR=1"
    opsctl = str(Path(sys.executable).with_name("opsctl"))
    subprocess.run(
        [opsctl, "demo", "seed", "--students", "20", "--database-url", f"sqlite:///{db}"],
        check=True, capture_output=True,
    )  # fmt: skip
    session = f"top-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-code"
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24",
         f"env {env} {opsctl} top --refresh 1; echo $? > {done}; sleep 30")  # fmt: skip
    return session, done


def quit_cleanly(session: str, done: Path) -> None:
    tmux("send-keys", "-t", session, "q")
    deadline = time.monotonic() + 15
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done.exists() and done.read_text().strip() == "0"


@pytest.mark.sqlite_only
def test_top_in_tmux(tmp_path):
    session, done = start_top(tmp_path)
    try:
        # Every tab is on screen at 80 columns, and the footer's last key is whole.
        screen = wait_for(session, "q Quit")
        assert "1 Over" in screen and "8 Jobs" in screen and "? Help" in screen
        tmux("send-keys", "-t", session, "7")
        wait_for(session, "journal.writes")
        tmux("send-keys", "-t", session, "6")
        wait_for(session, "answer_journal")
        # The pane with the longest footer: still whole at 80 columns.
        tmux("send-keys", "-t", session, "9")
        screen = wait_for(session, "blocking tree")
        assert screen.rstrip().splitlines()[-1].rstrip().endswith("q Quit")
        quit_cleanly(session, done)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.sqlite_only
def test_drill_down_in_tmux(tmp_path):
    """Enter on a route -> its traces -> the waterfall -> the span's query -> e: its plan
    -> y: copied; escape walks back; q exits 0."""
    session, done = start_top(tmp_path, spans=True)
    try:
        wait_for(session, "api/sessions/<int:session_id>/answers/")
        tmux("send-keys", "-t", session, "Enter")
        wait_for(session, "(esc shows all)")  # the Traces pane, one route's traces
        tmux("send-keys", "-t", session, "Enter")
        wait_for(session, "enter query · e explain")  # the waterfall
        screen = wait_for(session, "fingerprint ")
        assert "SELECT a.id, a.value FROM exams_answer" in screen
        tmux("send-keys", "-t", session, "Enter")
        wait_for(session, "e explain · y copy · escape back")  # the whole statement
        tmux("send-keys", "-t", session, "e")
        screen = wait_for(session, "sqlite plan")
        assert "plan of" in screen
        tmux("send-keys", "-t", session, "y")
        wait_for(session, "copied")
        for _ in range(3):
            tmux("send-keys", "-t", session, "Escape")
        wait_for(session, "(esc shows all)")
        quit_cleanly(session, done)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
