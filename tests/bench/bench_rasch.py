"""Rasch calibration time and peak memory at N = 10,000 and 100,000 students x 55 items, and
the cost of scattered skipped answers: the same 100,000 x 55 responses calibrated complete and
with 5% of answers missing at random, side by side in one run (issue #20: at most 5x).

Peak memory is what tracemalloc sees numpy allocate during the calibration (the response
matrix itself is made before measuring starts). BLAS runs on one thread unless
OPENBLAS_NUM_THREADS says otherwise: on a shared two-core machine its spinning threads make
matrix products' times erratic, and both cases are measured the same way.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import time
import tracemalloc

import numpy as np

from backend.exams.rasch import calibrate, simulate


def _rmse(est: np.ndarray, true: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean((est - true) ** 2))), 4)


def _sizes(rng, b) -> dict:
    out = {}
    for n in (10_000, 100_000):
        x, _ = simulate(n, b, rng)
        x[: n // 4, 45:] = np.nan  # a quarter did not reach the last ten items
        tracemalloc.start()
        t0 = time.perf_counter()
        res = calibrate(x)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[f"n{n}"] = {
            "seconds": round(seconds, 3),
            "peak_mb": round(peak / 1e6, 1),
            "input_mb": round(x.nbytes / 1e6, 1),
            "iterations": res.iterations,
            "converged": res.converged,
            "rmse_vs_truth": _rmse(res.difficulty, b),
            "mean_se": round(float(np.sqrt(np.mean(res.difficulty_se**2))), 4),
        }
    return out


def _skipped(rng, b, rounds: int = 3) -> dict:
    """Complete vs 5% missing at random, alternated ``rounds`` times; best time of each."""
    x, _ = simulate(100_000, b, rng)
    missing = x.copy()
    missing[rng.random(x.shape) < 0.05] = np.nan
    times: dict[str, list[float]] = {"complete": [], "missing_5pct": []}
    results = {}
    for _ in range(rounds):
        for name, data in (("complete", x), ("missing_5pct", missing)):
            t0 = time.perf_counter()
            results[name] = calibrate(data)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, res in results.items():
        out[name] = {
            "seconds": round(min(times[name]), 3),
            "seconds_all": [round(t, 3) for t in times[name]],
            "iterations": res.iterations,
            "converged": res.converged,
            "rmse_vs_truth": _rmse(res.difficulty, b),
            "mean_se": round(float(np.sqrt(np.mean(res.difficulty_se**2))), 4),
            "andersen_p": None if res.andersen.p is None else round(res.andersen.p, 4),
        }
    out["missing_over_complete"] = round(
        out["missing_5pct"]["seconds"] / out["complete"]["seconds"], 2
    )
    present = ~np.isnan(missing)
    packed = np.packbits(present, axis=1)
    out["distinct_answer_patterns"] = len(np.unique(packed, axis=0))
    return out


def main() -> dict:
    rng = np.random.default_rng(20261124)
    b = rng.standard_normal(55)
    b -= b.mean()
    out = _sizes(rng, b)
    out["skipped_100000x55"] = _skipped(rng, b)
    out["blas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
