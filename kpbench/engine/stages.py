"""Stage clocks for the speed table's stage split: where a model call spends its time.

A stage clock is what a model's ``speed_stages(device)`` hook yields (see kpbench.models.base). It adds each
stage's time, in milliseconds, as the model reports or as hooks at the stage boundaries measure it, and
`take()` returns the sums since the last `take()` and starts again. Boundaries synchronise the device, so a
stage is the work done between two boundaries, not the time the host took to queue it; that perturbs the
pipelining of a CUDA model, which is why `kpbench speed` measures the split in a pass of its own, after the
headline timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class StageClock:
    """Sums of milliseconds per stage name, in the order the stages first appear."""

    def __init__(self, sync: Callable[[], None] | None = None, timer: Callable[[], float] = time.perf_counter) -> None:
        self._sync = sync or (lambda: None)
        self._timer = timer  # seconds; a test passes its own
        self._ms: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def now(self) -> float:
        """Synchronise the device, then read the clock (seconds)."""
        self._sync()
        return self._timer()

    def add(self, stage: str, ms: float) -> None:
        """Add `ms` to `stage` (a model's own measurement, such as Ultralytics' per-stage speed)."""
        self._ms[stage] = self._ms.get(stage, 0.0) + float(ms)

    def start(self, stage: str) -> None:
        """A stage begins (synchronised)."""
        self._open[stage] = self.now()

    def stop(self, stage: str) -> float:
        """The stage `start`ed last under this name ends; returns its milliseconds (also added to the sum)."""
        ms = (self.now() - self._open.pop(stage)) * 1e3
        self.add(stage, ms)
        return ms

    def take(self) -> dict[str, float]:
        """The sums since the last take (ms per stage), and reset."""
        out, self._ms = self._ms, {}
        return out


def device_sync(device: Any) -> Callable[[], None]:
    """A function that waits for `device`'s queued work (CUDA), or does nothing (CPU)."""
    if getattr(device, "type", str(device)) == "cuda" or str(device).startswith("cuda"):
        import torch

        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def format_stages(stages: dict[str, float]) -> str:
    """"transform=1.20;backbone=30.05;..." (ms, two decimals): the CSV's `stages` cell."""
    return ";".join(f"{name}={ms:.2f}" for name, ms in stages.items())


def parse_stages(text: Any) -> dict[str, float]:
    """The inverse of `format_stages`; an empty or missing cell gives {}."""
    if not isinstance(text, str) or not text.strip():
        return {}
    out = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out
