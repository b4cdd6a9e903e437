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
