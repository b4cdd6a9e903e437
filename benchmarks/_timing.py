"""Helpers shared by the benchmark scripts (run them as `python benchmarks/<name>.py`): best-of timing, and
the val2017-scale synthetic workload written as files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def synthetic_workload_files(directory: Path, images: int) -> tuple[dict[str, Any], list[dict[str, Any]], Path, Path]:
    """The synthetic val2017-scale workload (`kpbench.data.synthetic`, 4 detections per person, seed 0): the GT,
    the results, and the two written as gt.json and results.json in `directory`."""
    from kpbench.data.synthetic import make_synthetic_coco

    gt, results = make_synthetic_coco(num_images=images, detections_per_person=4.0, seed=0)
    gt_path, res_path = directory / "gt.json", directory / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt, results, gt_path, res_path
