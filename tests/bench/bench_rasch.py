"""Rasch calibration time and peak memory at N = 10,000 and 100,000 students x 55 items.

Peak memory is what tracemalloc sees numpy allocate during the calibration (the response
matrix itself is made before measuring starts).
"""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np

from backend.exams.rasch import calibrate, simulate


def main() -> dict:
    rng = np.random.default_rng(20261124)
    b = rng.standard_normal(55)
    b -= b.mean()
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
            "rmse_vs_truth": round(float(np.sqrt(np.mean((res.difficulty - b) ** 2))), 4),
            "mean_se": round(float(np.sqrt(np.mean(res.difficulty_se**2))), 4),
        }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
