"""Save throughput and latency under gunicorn, next to a trivial JSON view on the same stack.

The load comes from a separate process on loopback (wrk, a fixed number of connections).
Phases alternate ping / save / ping / save so both see the same machine conditions; the
figure to quote is save / ping (throughput and p99).
Uses the database in DATABASE_URL (make bench gives it a PostgreSQL database of its own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
PHASE_SECONDS = int(os.environ.get("BENCH_PHASE_SECONDS", "8"))
STUDENTS = 400


# wrk (a C load generator) drives the load: a Python generator on these 2 cores saturates
# long before gunicorn does. The Lua script cycles through real sessions, increasing seq.
_WRK_LUA = r"""
local targets = {}
local i = 0
local seq = 0
init = function(args)
  for line in io.lines(args[1]) do
    local token, sid = line:match("([^ ]+) (%d+)")
    table.insert(targets, {token, sid})
  end
  i = math.random(#targets)
end
request = function()
  i = i % #targets + 1
  seq = seq + 1
  local t = targets[i]
  if args_kind == "ping" then
    return wrk.format("GET", "/api/ping/")
  end
  local q = 1 + (seq % 40) + math.floor((seq % 40) / 4)
  if q % 5 == 0 then q = q + 1 end
  local body = string.format('{"question": %d, "part": "", "answer": "%d", "seq": %d}', q, seq, seq)
  return wrk.format("POST", "/api/sessions/" .. t[2] .. "/answers/",
    {["Authorization"] = "Bearer " .. t[1], ["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "seconds": %f, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_timeout": %d, "p50_ms": %f, "p95_ms": %f, "p99_ms": %f, "max_ms": %f}\n',
    summary.requests, summary.duration / 1e6, summary.errors.status, summary.errors.connect,
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def _wrk() -> str:
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does this)")
    return path


def _phase(url: str, kind: str, targets_file: Path, script: Path) -> dict:
    # Each phase gets its own script copy with the kind baked in (wrk threads don't share
    # globals set from the command line).
    phase_script = script.with_name(f"{kind}.lua")
    phase_script.write_text(f'args_kind = "{kind}"\n' + script.read_text())
    proc = subprocess.run(
        [
            _wrk(),
            "-t2",
            f"-c{CLIENTS}",
            f"-d{PHASE_SECONDS}s",
            "-s",
            str(phase_script),
            url,
            "--",
            str(targets_file),
        ],
        capture_output=True,
        text=True,
        timeout=PHASE_SECONDS + 60,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    res = json.loads(line[len("WRKJSON ") :])
    res["rps"] = round(res["requests"] / res["seconds"], 1)
    return res


def _summary(runs: list[dict]) -> dict:
    n = sum(r["requests"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    return {
        "requests": n,
        "rps": round(n / secs, 1),
        # wrk reports percentiles per run; the worse of the two runs is the honest figure.
        "p50_ms": round(max(r["p50_ms"] for r in runs), 2),
        "p95_ms": round(max(r["p95_ms"] for r in runs), 2),
        "p99_ms": round(max(r["p99_ms"] for r in runs), 2),
        "max_ms": round(max(r["max_ms"] for r in runs), 2),
        "non_2xx": sum(r["errors_status"] for r in runs),
        "socket_errors": sum(r["errors_connect"] + r["errors_timeout"] for r in runs),
    }


def _prepare() -> list:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import datetime as dt

    import django

    django.setup()
    from django.utils import timezone

    from backend.exams.seed import create_exam, create_students
    from backend.exams.sessions import start_session

    now = timezone.now()
    exam = create_exam("Bench", now - dt.timedelta(minutes=5), now + dt.timedelta(hours=3))
    people = create_students(STUDENTS, prefix=f"bench{int(time.time())}")
    return [(tok, start_session(sid, exam.id).session_id) for sid, _, tok in people]


def main() -> dict:
    from backend.config import database_url, mask_url
    from tests.e2e.gunicorn_server import GunicornServer

    targets = _prepare()
    from django.db import connections

    connections.close_all()
    with tempfile.TemporaryDirectory() as tmp:
        targets_file = Path(tmp) / "targets.txt"
        targets_file.write_text("".join(f"{tok} {sid}\n" for tok, sid in targets))
        script = Path(tmp) / "save.lua"
        script.write_text(_WRK_LUA)
        server = GunicornServer(database_url(), workers=None, threads=None)
        with server:
            _phase(server.url, "ping", targets_file, script)  # warm-up: workers, pool, caches
            runs = {"ping": [], "save": []}
            for _ in range(2):
                runs["ping"].append(_phase(server.url, "ping", targets_file, script))
                runs["save"].append(_phase(server.url, "save", targets_file, script))
    ping, save = _summary(runs["ping"]), _summary(runs["save"])
    result = {
        "database": mask_url(database_url()).split("@")[-1],
        "clients": CLIENTS,
        "phase_seconds": PHASE_SECONDS,
        "ping": ping,
        "save": save,
        "ratio_save_to_ping_rps": round(save["rps"] / ping["rps"], 3),
        "ratio_save_to_ping_p99": round(save["p99_ms"] / ping["p99_ms"], 3),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
