"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_us(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Best mean time of ``calls`` calls over ``repeats`` batches (after one warm-up). [us]

    The best batch, not the mean: on a shared machine the other batches measure the
    neighbours.
    """
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6
