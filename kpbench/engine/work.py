"""Work done per image: FLOPs counted on the actual inputs and detections, the achieved TFLOP/s, and the fraction
of the device's peak.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the operators it has formulas for
(convolutions, matrix products, attention) as 2 FLOPs per multiply-add; element-wise work, RoIAlign, NMS and
interpolation are not counted, so the number is the dense arithmetic the tensor cores can run. The count is
made in a pass of its own (the counter intercepts every operator and would slow the timed calls), once per
distinct batch, so data-dependent parts (the keypoint head runs once per detected person) are counted on the
detections each image really gives.

Peaks (`GPU_PEAK_TFLOPS`) are the dense (no structured sparsity) tensor-core numbers of NVIDIA's datasheets at
boost clock, and the plain fp32 (CUDA-core) rate; a cell is blank where the device is unknown (a CPU) or lacks
that precision (no tf32 or bf16 before Ampere). An fp32 row is compared with the tf32 peak when cuDNN may use
TF32 for convolutions (torch.backends.cudnn.allow_tf32, on by default), since a convolutional model then runs its
FLOPs there; otherwise with the fp32 peak. The row's `peak_precision` says which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

# Dense TFLOP/s per precision, from NVIDIA's product datasheets (boost clock; sparsity figures halved). Names are
# matched as whole words of torch.cuda.get_device_name(), longest first ("H100 PCIe" before "H100").
GPU_PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},  # SXM5 (H100 80GB HBM3)
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "A10G": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0},
    "L40": {"fp32": 90.5, "tf32": 90.5, "fp16": 181.0, "bf16": 181.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "V100": {"fp32": 15.7, "tf32": None, "fp16": 125.0, "bf16": None},
    "T4": {"fp32": 8.1, "tf32": None, "fp16": 65.0, "bf16": None},
}


def peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The device's dense peak TFLOP/s at `precision` (fp32, tf32, fp16, bf16), or None when unknown."""
    if not device_name:
        return None
    for name in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        # A whole word of the name: "L40" is not "L4", "RTX A1000" is not "A100".
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device_name):
            return GPU_PEAK_TFLOPS[name].get(precision)
    return None


def peak_precision(dtype: str, device_type: str) -> str | None:
    """Which peak a row of `dtype` is compared with: fp16/bf16 as such; fp32 as tf32 where cuDNN may use TF32 for
    convolutions (CUDA, torch.backends.cudnn.allow_tf32), else fp32. None off CUDA (no peak known)."""
    if device_type != "cuda":
        return None
    if dtype != "fp32":
        return dtype
    import torch

    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def count_flops(
    call: Callable[[list[Any]], Any], batches: Sequence[list[Any]], on_call: Callable[[], None] | None = None
) -> float | None:
    """FLOPs per image: each batch called once under FlopCounterMode (the caller sets inference mode, autocast
    and the model's state). None when nothing was counted (a model that does not run on torch)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = 0
    counter = FlopCounterMode(display=False)
    with counter:
        for batch in batches:
            call(batch)
            images += len(batch)
            if on_call is not None:
                on_call()
    total = counter.get_total_flops()
    return float(total) / images if total and images else None


def work_columns(
    flops_per_image: float | None, fps: float | None, device_name: str | None, dtype: str, device_type: str
) -> dict[str, Any]:
    """gflops_per_image, achieved_tflops (FLOPs per image x images per second), peak_precision, peak_tflops and
    peak_fraction (blank where a peak is unknown)."""
    out: dict[str, Any] = {"gflops_per_image": None, "achieved_tflops": None, "peak_precision": None,
                           "peak_tflops": None, "peak_fraction": None}  # fmt: skip
    if flops_per_image is None:
        return out
    out["gflops_per_image"] = flops_per_image / 1e9
    if fps:
        out["achieved_tflops"] = flops_per_image * fps / 1e12
    precision = peak_precision(dtype, device_type)
    peak = peak_tflops(device_name, precision) if precision else None
    if precision and peak:
        out.update(peak_precision=precision, peak_tflops=peak)
        if out["achieved_tflops"] is not None:
            out["peak_fraction"] = out["achieved_tflops"] / peak
    return out
