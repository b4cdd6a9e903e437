"""Timing helper shared by the benchmark scripts (run them as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_time(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """The fastest of `repeat` calls of `fn` in seconds, and the last call's return value."""
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value  # type: ignore[return-value]


def best_times_interleaved(cases: dict[str, Callable[[], T]], repeat: int) -> dict[str, tuple[float, T]]:
    """The fastest call of each case over `repeat` rounds, the cases taking turns within each round.

    Taking turns spreads slow spells of a noisy machine (and warm-up: thread pools, page cache) over every case,
    instead of charging them to whichever case ran first.
    """
    best: dict[str, tuple[float, T]] = {}
    for _ in range(repeat):
        for name, fn in cases.items():
            start = time.perf_counter()
            value = fn()
            elapsed = time.perf_counter() - start
            if name not in best or elapsed < best[name][0]:
                best[name] = (elapsed, value)
    return best
