"""The clock of the speed table: timing a model's calls (cold, warm-up, timed), their statistics, the stage pass
and the FLOP pass (each after the timed calls, so neither perturbs them), and the largest batch that fits.

torch is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch.utils.benchmark's rule of thumb: a spread (IQR) above 10% of the median makes a timing worth a second look.
UNSTABLE_IQR_RATIO = 0.10

STAGE_CALLS = 10
# The stage times must add up to the stage pass's call time within this fraction.
STAGE_TOLERANCE = 0.05


@dataclass
class TimingResult:
    """Raw timings of one size and variant."""

    cold_ms: float
    times_ms: list[float]
    gpu_times_ms: list[float] | None
    calls: int  # model calls made: 1 cold + warmup + iters
    images_timed: int  # images in the timed calls
    detections_timed: int  # detections in the timed calls

    def stats(self) -> dict[str, float]:
        """mean, std (ddof=1), median, p90, p99, min, max of the timed calls, in ms."""
        return summarize_ms(self.times_ms)


def summarize_ms(times_ms: Sequence[float]) -> dict[str, float]:
    """The STAT_COLUMNS of a list of timings in ms (std is the sample std; 0 for a single timing)."""
    import numpy as np

    a = np.asarray(times_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings")
    q1, q3 = np.percentile(a, [25, 75])
    iqr = float(q3 - q1)
    median = float(np.median(a))
    ratio = iqr / median if median > 0 else 0.0
    return {
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "n": int(a.size),
        "iqr_ms": iqr,
        "iqr_over_median": ratio,
        "unstable": bool(ratio > UNSTABLE_IQR_RATIO),
    }


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_detections(outputs: Any) -> int:
    # Predictions count from their shapes, host-side metadata, so this does not wait on the device (and it runs
    # after the clock stops).
    return sum(len(o) for o in outputs)


def time_model(
    model: Callable[[list[Any]], Any],
    batches: Sequence[list[Any]],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    dtype: str = "fp32",
    on_call: Callable[[], None] | None = None,
) -> TimingResult:
    """Time `model(batch)` (a PoseModel's `predict`): one cold call, `warmup` untimed calls, then `iters` timed
    calls; `model` returns one Predictions per image. `on_call` is called after each of them (outside the
    clock), so that a progress bar moves during a long row.

    Calls cycle through `batches` (lists of images in the model's input format, already on `device`). Each timed call is
    synchronize -> perf_counter -> model -> synchronize -> perf_counter; on CUDA, CUDA events around the call
    give the GPU time too. Runs in inference mode, under autocast for fp16/bf16.
    """
    import torch

    from kpbench.models.keypointrcnn import autocast  # the generic autocast helper

    if not batches:
        raise ValueError("no batches to time")
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    cuda = device.type == "cuda"
    # The model's kernels run on the current stream of its own device; the events must be recorded there too
    # (Event.record() without a stream would use the current device's, which need not be `device`).
    stream = torch.cuda.current_stream(device) if cuda else None
    times: list[float] = []
    gpu_times: list[float] | None = [] if cuda else None
    images = detections = 0
    calls = 0

    def batch() -> list[Any]:
        return batches[calls % len(batches)]

    def called() -> None:
        nonlocal calls
        calls += 1
        if on_call is not None:
            on_call()

    with torch.inference_mode(), autocast(device, dtype):
        sync(device)
        t0 = time.perf_counter()
        model(batch())
        sync(device)
        cold_ms = (time.perf_counter() - t0) * 1e3
        called()
        for _ in range(warmup):
            model(batch())
            called()
        sync(device)
        for _ in range(iters):
            images_in = batch()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync(device)
            t0 = time.perf_counter()
            if cuda:
                start.record(stream)
            outputs = model(images_in)
            if cuda:
                end.record(stream)
            sync(device)
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1e3)
            if gpu_times is not None:
                gpu_times.append(float(start.elapsed_time(end)))
            images += len(images_in)
            detections += _count_detections(outputs)
            called()
    return TimingResult(
        cold_ms=cold_ms, times_ms=times, gpu_times_ms=gpu_times, calls=calls, images_timed=images,
        detections_timed=detections,
    )


def stage_pass(
    model: Any, batches: Sequence[list[Any]], device: torch.device, dtype: str, calls: int,
    on_call: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The stage split of a model with a `speed_stages` hook, over `calls` calls (its own pass, after the timing):
    the STAGE_COLUMNS of a row (empty for a model without the hook)."""
    import torch

    from kpbench.engine.stages import format_stages
    from kpbench.models.keypointrcnn import autocast  # the generic autocast helper

    hook = getattr(model, "speed_stages", None)
    if hook is None or calls < 1:
        return {}
    sums: dict[str, float] = {}
    call_ms = 0.0
    with torch.inference_mode(), autocast(device, dtype), hook(device) as clock:
        clock.take()
        for i in range(calls):
            sync(device)
            t0 = time.perf_counter()
            model.predict(batches[i % len(batches)])
            sync(device)
            call_ms += (time.perf_counter() - t0) * 1e3
            for name, ms in clock.take().items():
                sums[name] = sums.get(name, 0.0) + ms
            if on_call is not None:
                on_call()
    stages = {name: ms / calls for name, ms in sums.items()}
    total = sum(stages.values())
    call = call_ms / calls
    coverage = total / call if call > 0 else None
    return {
        "stages": format_stages(stages), "stage_sum_ms": total, "stage_call_ms": call, "stage_coverage": coverage,
        "stages_add_up": coverage is not None and abs(coverage - 1.0) <= STAGE_TOLERANCE,
    }  # fmt: skip


def flop_pass(
    model: Any, batches: Sequence[list[Any]], device: torch.device, dtype: str, num_images: int,
    on_call: Callable[[], None] | None = None,
) -> float | None:
    """FLOPs per image over the batches that hold each image once (kpbench.engine.work.count_flops)."""
    import torch

    from kpbench.engine.work import count_flops
    from kpbench.models.keypointrcnn import autocast  # the generic autocast helper

    batch_size = len(batches[0])
    distinct = batches[: max(1, math.ceil(num_images / batch_size))]
    with torch.inference_mode(), autocast(device, dtype):
        return count_flops(model.predict, distinct, on_call)


def out_of_memory(exc: BaseException) -> bool:
    import torch

    # Only running out: CUDA's "an illegal memory access" is a broken context, not a batch too large.
    text = str(exc).lower()
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def largest_batch(model: Any, images: Sequence[Any], device: torch.device, dtype: str, max_batch: int) -> int:
    """The largest batch size in 1, 2, 4, ... <= max_batch whose call runs without running out of memory (one
    call each, at the model's current input size). Raises what batch 1 raises."""
    import torch

    from kpbench.engine.speed_inputs import make_batches
    from kpbench.models.keypointrcnn import autocast  # the generic autocast helper

    fits = 0
    batch = 1
    while batch <= max_batch:
        try:
            with torch.inference_mode(), autocast(device, dtype):
                model.predict(make_batches(images, batch)[0])
                sync(device)
        except Exception as exc:
            if not out_of_memory(exc) or fits == 0:
                raise
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        fits = batch
        batch *= 2
    return fits

