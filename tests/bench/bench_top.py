"""Idle CPU of `opsctl top` at the default 2 s refresh, in a real terminal (tmux), on a
seeded SQLite demo: percent of one core, sampled with psutil over 20 seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil


def main() -> dict:
    opsctl = str(Path(sys.executable).with_name("opsctl"))
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/top.sqlite3"
        subprocess.run([opsctl, "demo", "seed", "--students", "300", "--database-url", db],
                       check=True, capture_output=True)  # fmt: skip
        session = f"bench-top-{uuid.uuid4().hex[:6]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                        f"env DATABASE_URL={db} OPS_TELEMETRY_DIR={tmp} {opsctl} top"],
                       check=True)  # fmt: skip
        try:
            time.sleep(5)  # start-up is not idle
            pane_pid = int(subprocess.run(
                ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
            root = psutil.Process(pane_pid)
            procs = [root, *root.children(recursive=True)]
            top = max(procs, key=lambda p: p.memory_info().rss)
            t0 = sum(top.cpu_times()[:2])
            w0 = time.monotonic()
            time.sleep(20)
            used = sum(top.cpu_times()[:2]) - t0
            wall = time.monotonic() - w0
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    result = {"seconds": round(wall, 1), "cpu_percent_of_one_core": round(100 * used / wall, 2),
              "refresh_seconds": 2}  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
