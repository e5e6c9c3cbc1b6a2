"""Shared timing helpers for the benchmark scripts (run them from the repository root)."""

import time


def ms_per_call(step, calls, warmup=20):
    """Milliseconds per call of ``step()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return 1e3 * (time.perf_counter() - start) / calls


def interleaved_ms(steps, calls, rounds=5, warmup=20):
    """Milliseconds per call of each ``steps[name]()``: the fastest of interleaved rounds.

    Every round times ``calls`` calls of each function in turn, so a slow spell of the
    machine (other processes, frequency changes) hits all of them alike, and the fastest
    round of each function is the one least disturbed.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            times[name].append(1e3 * (time.perf_counter() - start) / calls)
    return {name: min(t) for name, t in times.items()}
