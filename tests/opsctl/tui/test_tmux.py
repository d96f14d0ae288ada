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


@pytest.mark.sqlite_only
def test_top_in_tmux(tmp_path):
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (make test installs it)")
    db = tmp_path / "top.sqlite3"
    env = f"DATABASE_URL=sqlite:///{db} OPS_TELEMETRY_DIR={tmp_path} NO_COLOR=1"
    opsctl = str(Path(sys.executable).with_name("opsctl"))
    subprocess.run(
        [opsctl, "demo", "seed", "--students", "20", "--database-url", f"sqlite:///{db}"],
        check=True, capture_output=True,
    )  # fmt: skip
    session = f"top-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-code"
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24",
         f"env {env} {opsctl} top --refresh 1; echo $? > {done}; sleep 30")  # fmt: skip
    try:
        wait_for(session, "Overview")
        tmux("send-keys", "-t", session, "7")
        wait_for(session, "journal.writes")
        tmux("send-keys", "-t", session, "6")
        wait_for(session, "answer_journal")
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists() and done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
