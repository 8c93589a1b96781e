"""What the model benchmarks share: the median time of one network call."""
from __future__ import annotations

import statistics
import time

import numpy as np


def median_infer_ms(backend, batch: np.ndarray, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``backend.infer(batch)`` over ``repeats`` calls, after ``warmup`` calls that
    compile and fill caches."""
    for _ in range(warmup):
        backend.infer(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend.infer(batch)
        times.append(1000.0 * (time.perf_counter() - started))
    return statistics.median(times)
