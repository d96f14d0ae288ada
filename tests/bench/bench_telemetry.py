"""Telemetry costs, measured side by side in one run.

1. Save throughput under gunicorn + the bench database with telemetry off, on at 100%
   sampling, and on at 10% (rounds interleaved so each sees the same machine).
2. Reading: `opsctl traces stats` over a file of one million spans (spans per second).
"""

from __future__ import annotations

import datetime as dt
import json
import os
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
                env = {**env, "OPS_TELEMETRY_DIR": str(Path(tmp) / "telemetry")}
                server = GunicornServer(
                    database_url(), workers=(os.cpu_count() or 2) * 2, threads=4, env=env
                )
                with server:
                    _phase(server.url, "save", targets_file, script)  # warm-up
                    runs[name].append(_phase(server.url, "save", targets_file, script))
    out = {name: _summary(r) for name, r in runs.items()}
    base = out["off"]["rps"]
    out["ratio_rps_on_100pct_to_off"] = round(out["on_100pct"]["rps"] / base, 3)
    out["ratio_rps_on_10pct_to_off"] = round(out["on_10pct"]["rps"] / base, 3)
    return out


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
