"""A real Prometheus (the Debian package) on a free port, holding data backfilled with
`promtool tsdb create-blocks-from openmetrics`: exactly known counters and histograms for
the metric names the dashboards query."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEP = 15  # seconds between samples
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1)
# Per second: (route, status) -> requests; each second's requests fall 50% / 30% / 20% in
# the first three buckets (so p50 = 5 ms, p95 in (10, 25] ms).
RATES = {
    ("api/sessions/<int:session_id>/answers/", "200"): 10.0,
    ("api/sessions/<int:session_id>/answers/", "500"): 0.1,
    ("api/leaderboard/", "200"): 2.0,
}
SHARES = (0.5, 0.3, 0.2, 0.0, 0.0)
# SQL: fingerprint -> (calls/s, seconds per call)
SQL = {"0ea7a938eae128df": (20.0, 0.002), "e47b69fb2ad7eb4f": (5.0, 0.02)}
ROUTE = "api/sessions/<int:session_id>/answers/"


def _histogram(name: str, series: dict, rate_of, seconds_of, start: int, end: int) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    for labels, _ in series.items():
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        for t in range(start, end + 1, STEP):
            n = rate_of(labels) * (t - start)
            acc = 0.0
            for le, share in zip(BUCKETS, SHARES, strict=True):
                acc += share * n
                lines.append(f'{name}_bucket{{{lab},le="{le}"}} {acc:.3f} {t}')
            lines.append(f'{name}_bucket{{{lab},le="+Inf"}} {n:.3f} {t}')
            lines.append(f"{name}_count{{{lab}}} {n:.3f} {t}")
            lines.append(f"{name}_sum{{{lab}}} {n * seconds_of(labels):.6f} {t}")
    return lines


def openmetrics(start: int, end: int) -> str:
    http = {(("http_route", r), ("http_response_status_code", s)): v for (r, s), v in RATES.items()}
    db = {(("db_query_fingerprint", fp), ("http_route", ROUTE)): v for fp, v in SQL.items()}
    lines = _histogram("http_server_request_duration_seconds", http, http.get,
                       lambda _: 0.007, start, end)  # fmt: skip
    lines += _histogram("db_client_operation_duration_seconds", db, lambda k: db[k][0],
                        lambda k: db[k][1], start, end)  # fmt: skip
    return "\n".join(lines) + "\n# EOF\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """``with Prometheus(tmp, minutes=30) as p: p.url, p.end`` (the last sample's time)."""

    def __init__(self, tmp: Path, minutes: int = 30):
        self.tmp = Path(tmp)
        self.end = int(time.time()) // STEP * STEP
        self.start = self.end - minutes * 60
        self.proc = None
        self.url = ""

    def __enter__(self) -> Prometheus:
        subprocess.run([str(ROOT / "scripts/ensure-debs.sh"), "prometheus"], check=True)
        data = self.tmp / "data"
        source = self.tmp / "backfill.om"
        source.write_text(openmetrics(self.start, self.end))
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source),
                        str(data)], check=True, capture_output=True)  # fmt: skip
        config = self.tmp / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.tsdb.retention.time=30d"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("prometheus did not start")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
