"""Telemetry costs, measured side by side in one run.

1. Save throughput under gunicorn + the bench database with telemetry off, on at 100%
   sampling, and on at 10% (rounds interleaved so each sees the same machine), and the CPU
   the gunicorn workers spent per save in each (the service's own cost, which the load
   generator and the database sharing these cores do not blur).
2. Reading: `opsctl traces stats` over a file of one million spans (spans per second).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import orjson

from tests.bench.bench_save import _WRK_LUA, _phase, _prepare, _summary

CONFIGS = {
    "off": {"OPS_TELEMETRY": "0"},
    "on_100pct": {"OPS_TELEMETRY": "1", "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "on_10pct": {
        "OPS_TELEMETRY": "1",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
}


def save_throughput() -> dict:
    from django.db import connections

    from backend.config import database_url
    from tests.e2e.gunicorn_server import GunicornServer

    targets = _prepare()
    connections.close_all()
    runs: dict[str, list] = {k: [] for k in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        targets_file = Path(tmp) / "targets.txt"
        targets_file.write_text("".join(f"{tok} {sid}\n" for tok, sid in targets))
        script = Path(tmp) / "save.lua"
        script.write_text(_WRK_LUA)
        for _round in range(2):
            for name, env in CONFIGS.items():
                # No worker recycling: a recycled worker's CPU clock starts again at zero.
                env = {**env, "OPS_TELEMETRY_DIR": str(Path(tmp) / "telemetry"),
                       "GUNICORN_MAX_REQUESTS": "0"}  # fmt: skip
                server = GunicornServer(database_url(), workers=None, threads=None, env=env)
                with server:
                    _phase(server.url, "save", targets_file, script)  # warm-up
                    cpu0 = _server_cpu(server)
                    res = _phase(server.url, "save", targets_file, script)
                    res["server_cpu"] = _server_cpu(server) - cpu0
                    runs[name].append(res)
    out = {name: _summary(r) for name, r in runs.items()}
    for name, r in runs.items():
        # CPU the gunicorn workers spent per save: what telemetry costs the service itself,
        # free of the load generator's and the database's share of these 2 cores.
        out[name]["server_cpu_us_per_save"] = round(
            sum(x["server_cpu"] for x in r) / sum(x["requests"] for x in r) * 1e6
        )
    base = out["off"]
    for name in ("on_100pct", "on_10pct"):
        out[f"ratio_rps_{name}_to_off"] = round(out[name]["rps"] / base["rps"], 3)
        out[f"ratio_server_cpu_{name}_to_off"] = round(
            out[name]["server_cpu_us_per_save"] / base["server_cpu_us_per_save"], 3
        )
    return out


def _server_cpu(server) -> float:
    """User + system seconds of gunicorn's master and workers so far."""
    import psutil

    master = psutil.Process(server.proc.pid)
    total = 0.0
    for p in [master, *master.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _write_spans(path: Path, n_spans: int, per_line: int = 500) -> None:
    now_ns = int(time.time() * 1e9)
    routes = ["api/sessions/<int:session_id>/answers/", "api/exams/", "api/leaderboard/"]
    with open(path, "wb") as fh:
        for line in range(n_spans // per_line):
            spans = []
            for i in range(per_line):
                k = line * per_line + i
                start = now_ns - (k % 600) * 1_000_000_000
                spans.append({
                    "traceId": f"{k:032x}", "spanId": f"{k:016x}", "name": "POST x",
                    "kind": 2 if i % 4 == 0 else 3, "startTimeUnixNano": str(start),
                    "endTimeUnixNano": str(start + 1_000_000 + (k % 97) * 100_000),
                    "attributes": [
                        {"key": "http.route", "value": {"stringValue": routes[k % 3]}},
                        {"key": "http.response.status_code", "value": {"intValue": "200"}},
                    ],
                })  # fmt: skip
            doc = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
            fh.write(orjson.dumps(doc) + b"\n")


def read_speed(n_spans: int = 1_000_000) -> dict:
    from opsctl import telemetry

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write_spans(d / "traces-bench-1-2026112400.jsonl", n_spans)
        size = (d / "traces-bench-1-2026112400.jsonl").stat().st_size
        stats = telemetry.ReadStats()
        t0 = time.perf_counter()
        rows = telemetry.route_stats(d, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), stats)
        seconds = time.perf_counter() - t0
    return {
        "spans": stats.spans,
        "file_mb": round(size / 1e6, 1),
        "seconds": round(seconds, 2),
        "spans_per_second": round(stats.spans / seconds),
        "routes": len(rows),
    }


def main() -> dict:
    result = {"read": read_speed(), "save": save_throughput()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
