"""Independent pieces of array work spread over a few threads.

numpy releases the GIL inside its loops, so blocks of array arithmetic (the number parser's blocks of keypoint
lists, OKS blocks of detection-GT pairs) run side by side on several cores while the Python between them takes
turns. The pieces must write disjoint outputs; their order of completion never changes a value, only the time.

`KPBENCH_THREADS` sets the number of threads (1: everything on the calling thread); by default it is the CPUs
this process may use, at most 4 (beyond that the Python between the numpy calls is the limit).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_DEFAULT_THREADS = 4


def thread_count() -> int:
    """Threads for array work: KPBENCH_THREADS when it is a positive integer, else the usable CPUs, at most 4."""
    try:
        asked = int(os.environ.get("KPBENCH_THREADS", "").strip())
    except ValueError:
        asked = 0
    if asked > 0:
        return asked
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (no affinity API: macOS, Windows)
        usable = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, usable))


def parallel_map(function: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """[function(item) for item in items], the calls spread over `threads` threads (`thread_count()` by default),
    the calling thread among them; items are taken in order as threads free up. An exception from a call is
    raised here (the first item's, when several fail), after every thread has stopped."""
    count = len(items)
    threads = min(thread_count() if threads is None else threads, count)
    if threads <= 1:
        return [function(item) for item in items]
    results: list[R | None] = [None] * count
    errors: dict[int, BaseException] = {}
    taken = itertools.count()  # next() on it is atomic under the GIL: each index goes to one thread

    def work() -> None:
        for i in iter(taken.__next__, None):
            if i >= count or errors:
                return
            try:
                results[i] = function(items[i])
            except BaseException as exc:  # re-raised by the caller, below
                errors[i] = exc
                return

    helpers = [threading.Thread(target=work, name="kpbench-array-work", daemon=True) for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    try:
        work()
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[min(errors)]
    return results  # type: ignore[return-value]


def shares(count: int, min_share: int) -> list[slice]:
    """`count` items cut into contiguous shares, one per thread (`thread_count()`), each of `min_share` items at
    least (a single share below that: starting a thread would cost more than it saves)."""
    parts = max(1, min(thread_count(), count // max(1, min_share)))
    bounds = [count * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]
