"""The one percentile definition opsctl reports (pure).

Nearest rank: the smallest observed value with at least ``q`` % of the values at or below it.
It is always a latency that really happened (as wrk and HdrHistogram report), never an
interpolation between two requests; ``p100`` is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank ``q``-th percentile (0-100) of an ascending sequence; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])
