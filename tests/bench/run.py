"""`make bench`: run every tests/bench/bench_*.py and write one JSON report.

Each benchmark module has a ``main()`` returning a dict of figures (ratios measured side by
side in one run, since these machines are shared and noisy). Each runs in its own process so
one benchmark's Django settings or servers never leak into the next.

    python -m tests.bench.run [NAME ...]     # e.g. `make bench ONLY="save rasch"`
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def discover(only: list[str]) -> list[str]:
    names = sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}")
        names = [n for n in names if n in only]
    return names


def run_one(name: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    code = (
        "import json, sys\n"
        f"from tests.bench import bench_{name} as m\n"
        "r = m.main()\n"
        "open(sys.argv[1], 'w').write(json.dumps(r, default=str))\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, out], cwd=ROOT)
    elapsed = round(time.perf_counter() - t0, 1)
    try:
        if proc.returncode != 0:
            return {"ok": False, "error": f"exit {proc.returncode}", "seconds": elapsed}
        return {"ok": True, "seconds": elapsed, "figures": json.loads(Path(out).read_text())}
    finally:
        Path(out).unlink(missing_ok=True)


def prepare_database() -> None:
    """Create afresh and migrate the benchmarks' own PostgreSQL database, so every run
    starts from the same state (rows left by an earlier run would skew its figures)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "backend/manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, check=True
    )


def main(argv: list[str]) -> int:
    only = [a for arg in argv for a in arg.split()]
    # The servers the benchmarks start refuse to serve with the public development key.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    names = discover(only)
    prepare_database()
    report = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "benchmarks": {},
    }
    for name in names:
        print(f"== bench {name}", flush=True)
        report["benchmarks"][name] = result = run_one(name)
        print(json.dumps(result, indent=2, default=str), flush=True)
    out_dir = Path(os.environ.get("OPS_VAR_DIR") or ROOT / "var") / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    failed = [n for n, r in report["benchmarks"].items() if not r["ok"]]
    print(f"report: {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
