"""Shared timing helper for the benchmark scripts (run them from the repository root)."""

import time


def ms_per_call(step, calls, warmup=20):
    """Milliseconds per call of ``step()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return 1e3 * (time.perf_counter() - start) / calls
