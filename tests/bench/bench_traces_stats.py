"""`opsctl traces stats --since 15m` on a folder of 10 M spans of which 1.5 M are in the window,
against the same command on a folder holding just those 1.5 M (rounds interleaved, one run).
Goal: at most 3x. Also the reader before issue #16 (opsctl/telemetry.py at 736b761) on both,
for the before/after figures.

The folders are generated once (tests/bench/spangen.py, pre-encoded lines) and cached under
var/bench/traces-fixture/: 100 minutes at 1,667 spans/s from two writers in the backend's
hourly files, ending 40 minutes into an hour (so the last hour's files hold 40 minutes, of which
the window is 15). The data's times are fixed, so the window is given as an ISO time: the
same command as `--since 15m` at the moment the data ends."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.bench import spangen

ROOT = Path(__file__).resolve().parents[2]
RATE = 1667  # spans/s: 1.5 M in 15 minutes
TOTAL_MINUTES = 100  # 10 M spans
WINDOW_MINUTES = 15
OLD_COMMIT = "736b761"  # the one-shot reader before this work


def fixture() -> tuple[Path, Path, float]:
    base = Path(os.environ.get("OPS_VAR_DIR") or ROOT / "var") / "bench" / "traces-fixture"
    meta = base / "meta.json"
    want = {"rate": RATE, "minutes": TOTAL_MINUTES, "window": WINDOW_MINUTES, "version": 1}
    if meta.exists():
        got = json.loads(meta.read_text())
        if {k: got.get(k) for k in want} == want:
            return base / "big", base / "small", got["end"]
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    hour = (int(time.time()) // 3600 - 3) * 3600
    end = hour + 40 * 60  # 40 minutes into an hour, some hours ago
    t0 = time.perf_counter()
    big = spangen.fill(base / "big", end - TOTAL_MINUTES * 60, end, RATE)
    small = spangen.fill(base / "small", end - WINDOW_MINUTES * 60, end, RATE)
    took = round(time.perf_counter() - t0, 1)
    meta.write_text(json.dumps({**want, "end": end, "spans_big": big, "spans_small": small,
                                "generated_seconds": took}))  # fmt: skip
    return base / "big", base / "small", end


def run_stats(directory: Path, since: str) -> tuple[float, list]:
    opsctl = str(Path(sys.executable).with_name("opsctl"))
    t0 = time.perf_counter()
    out = subprocess.run(
        [opsctl, "traces", "stats", "--since", since, "--telemetry-dir", str(directory), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - t0, json.loads(out.stdout)


def run_old(directory: Path, since: str) -> float | None:
    """The reader as it was before (its module from git, run in its own process)."""
    try:
        source = subprocess.run(["git", "show", f"{OLD_COMMIT}:opsctl/telemetry.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    old = Path(os.environ.get("TMPDIR", "/tmp")) / "opsctl_telemetry_before.py"
    old.write_text(source)
    code = (
        "import sys, time, datetime as dt, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('before', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['before'] = m\n"
        "spec.loader.exec_module(m)\n"
        "from pathlib import Path\n"
        "t = time.perf_counter()\n"
        "m.route_stats(Path(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3]))\n"
        "print(time.perf_counter() - t)\n"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(old), str(directory), since], check=True,
                   capture_output=True, cwd=ROOT)  # fmt: skip
    return time.perf_counter() - t0


def main() -> dict:
    big, small, end = fixture()
    since = dt.datetime.fromtimestamp(end - WINDOW_MINUTES * 60, dt.UTC).isoformat()
    times: dict[str, list[float]] = {"big": [], "small": []}
    answers = {}
    for _ in range(2):
        for name, d in (("small", small), ("big", big)):
            seconds, rows = run_stats(d, since)
            times[name].append(seconds)
            answers[name] = sum(r["requests"] for r in rows)
    best = {k: min(v) for k, v in times.items()}
    before = {name: run_old(d, since) for name, d in (("small", small), ("big", big))}
    result = {
        "spans_total_big": json.loads((big.parent / "meta.json").read_text())["spans_big"],
        "window": f"{WINDOW_MINUTES}m",
        "seconds_small_1_5M": round(best["small"], 2),
        "seconds_big_10M": round(best["big"], 2),
        "ratio_big_over_small": round(best["big"] / best["small"], 2),
        "goal_ratio": 3.0,
        "requests_in_window": answers,  # the same data, generated twice (within a few)
        "rounds": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    if before["small"] and before["big"]:
        result["before_seconds_small_1_5M"] = round(before["small"], 2)
        result["before_seconds_big_10M"] = round(before["big"], 2)
        result["before_ratio_big_over_small"] = round(before["big"] / before["small"], 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
