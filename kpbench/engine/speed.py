"""Inference-speed tables: a pose model (`--model`, Keypoint R-CNN by default) timed per input size and variant,
one table per device. The model is driven only through its PoseModel interface and hooks (kpbench.models.base):
`set_input_size` for the sizes, `record_input_shapes` for the padded shapes, `speed_variant` for channels-last
and compile.

What is timed (also written beside the numbers, see `TIMING_DEFINITION`):

- A *size* is the short side given to the model's own transform: ``min_size=(s,)`` and
  ``max_size=round(s*1333/800)``. Images are not resized before the model, so the transform really works at
  that size; every row records the padded batch shapes that reached the backbone.
- Preprocessing (decode, to tensor, to device) happens once, before timing, and is timed in its own column.
- One model call is ``synchronize -> perf_counter -> model(images) -> synchronize -> perf_counter``: it
  includes the transform (resize, normalise, pad) and the post-processing (NMS, keypoint decoding, rescaling
  to the original image). On CUDA, a pair of CUDA events around the call gives the GPU time as well.
- Per (size, variant): one *cold* call (the first at that size, reported on its own), then ``warmup`` untimed
  calls, then ``iters`` timed calls. Calls cycle through the images; a batch of B takes B consecutive ones.

Variants: the grid ``dtype x batch_size`` (the lists of `--dtype` and `--batch-size`) is the baseline; each of ``--channels-last``,
``--cudnn-benchmark`` and ``--compile`` adds a copy of that grid with only that option on, so each option is
compared against the same baseline. ``--channels-last`` puts the weights and the padded batch entering the
backbone in channels-last memory format. ``--compile`` compiles the backbone (ResNet-50-FPN) with torch.compile;
the RPN and RoI heads, whose NMS is data dependent, stay eager. A variant that does not apply to the device
(cudnn.benchmark on CPU) or to the model (one without that `speed_variant`) gives rows with status "skipped"; a variant that raises gives rows with status
"failed" and the reason in ``error``. Neither stops the table.

Files written (``<out>/<device-slug>-<UTC timestamp>.*``): ``.csv`` (one row per size and variant),
``.json`` (manifest: settings, config file and its sha256, environment, model, images, definition) and
``.md`` (definition, environment and the table).

CSV columns (`SPEED_COLUMNS`, stable; empty cell = not measured / not applicable):

====================  ==============================================================================
timestamp             UTC start of the `kpbench speed` invocation (ISO 8601), same for every row
device                "cpu" or "cuda:N"
device_name           GPU model on CUDA, CPU model on CPU
gpu_count             number of visible CUDA devices
gpu_memory_gib        total memory of the GPU used
compute_capability    of the GPU used, "major.minor"
driver, cuda, cudnn   NVIDIA driver, CUDA runtime of torch, cuDNN version
torch, torchvision    versions
python, kpbench       versions
cpu, torch_threads    CPU model and torch.get_num_threads()
os                    platform.platform()
model                 the model's name (keypointrcnn_resnet50_fpn, yolo11n-pose, a plugin's)
weights               COCO_V1, COCO_LEGACY, none or a checkpoint path (other models: their weights file)
weights_sha256        sha256 of the weights file, when the model loaded one
size, max_size        the transform's min_size (short side) and max_size
variant               readable label, e.g. "fp32-bs1", "fp16-bs4-channels_last"
dtype                 fp32, or fp16 / bf16 through autocast
batch_size            images per model call
channels_last         model weights and backbone input in channels-last memory format
cudnn_benchmark       torch.backends.cudnn.benchmark on
compile               backbone compiled with torch.compile
synthetic             True when the images were random (detections drive post-processing time)
num_images            distinct images cycled through
padded_shapes         distinct N x C x H x W batch shapes that reached the backbone, ";"-separated
box_score_thresh      the model's box score threshold
warmup, iters         untimed and timed calls (the cold call is neither)
cold_ms               the first call at this size and variant
mean_ms .. max_ms     mean, std (sample, ddof=1), median, p90, p99 (linear interpolation), min, max of the
                      timed wall-clock calls; p90 is the single-stream latency (batch 1) MLPerf reports
n                     number of timed calls
iqr_ms                interquartile range (p75 - p25) of the timed calls
iqr_over_median       iqr_ms / median_ms, the spread relative to the typical call
unstable              True when iqr_over_median > 0.10 (torch.utils.benchmark's warning threshold)
gpu_mean_ms           mean CUDA-event time of the timed calls (CUDA only)
gpu_median_ms         median CUDA-event time (CUDA only)
fps                   images per second = batch_size * 1000 / mean_ms
preprocess_ms         mean per image of decode + to tensor + to device (synthetic: to device only)
dets_per_image        mean detections per image over the timed calls
peak_mem_allocated_mib  torch.cuda.max_memory_allocated during this row (CUDA only)
peak_mem_reserved_mib   torch.cuda.max_memory_reserved during this row (CUDA only)
peak_rss_mib          peak resident set size of the process (CPU only), see rss_scope
rss_scope             "row": VmHWM reset before the row via /proc/self/clear_refs; "process": ru_maxrss,
                      the peak over the whole process lifetime (where VmHWM cannot be reset)
accuracy_images       images evaluated for AP (0: --accuracy off)
kp_AP, box_AP         COCO keypoint and box AP on those images, as returned by kpbench.evaluation.cocoeval
status                "ok", "failed" or "skipped"
error                 why a row failed or was skipped
====================  ==============================================================================

torch and torchvision are imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.models.keypointrcnn import default_max_size

if TYPE_CHECKING:
    import torch

    from kpbench.core.config import LoadedConfig, SpeedSettings

MANIFEST_KIND = "kpbench-speed"
MANIFEST_VERSION = 1

ENV_COLUMNS: tuple[str, ...] = (
    "device", "device_name", "gpu_count", "gpu_memory_gib", "compute_capability", "driver", "cuda", "cudnn",
    "torch", "torchvision", "python", "kpbench", "cpu", "torch_threads", "os",
)  # fmt: skip
STAT_COLUMNS: tuple[str, ...] = (
    "mean_ms", "std_ms", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "n", "iqr_ms", "iqr_over_median",
    "unstable",
)  # fmt: skip
STAGE_COLUMNS: tuple[str, ...] = ("stages", "stage_sum_ms", "stage_call_ms", "stage_coverage", "stages_add_up")
WORK_COLUMNS: tuple[str, ...] = ("gflops_per_image", "achieved_tflops", "peak_precision", "peak_tflops", "peak_fraction")
# Calls of the stage pass per row (at most --iters): enough for a mean per stage, few enough to stay cheap.
STAGE_CALLS = 10
# The stage times must add up to the stage pass's call time within this fraction.
STAGE_TOLERANCE = 0.05
# torch.utils.benchmark's rule of thumb: a spread (IQR) above 10% of the median makes a timing worth a second look.
UNSTABLE_IQR_RATIO = 0.10
SPEED_COLUMNS: tuple[str, ...] = (
    "timestamp", *ENV_COLUMNS,
    "model", "weights", "weights_sha256", "size", "max_size", "variant", "scenario", "dtype", "batch_size",
    "channels_last", "cudnn_benchmark", "compile", "fast_postprocess",
    "synthetic", "num_images", "padded_shapes", "box_score_thresh", "warmup", "iters",
    "cold_ms", *STAT_COLUMNS, "gpu_mean_ms", "gpu_median_ms", "fps", "ms_per_image", "preprocess_ms", "decode_ms",
    "to_device_ms", "dets_per_image", *STAGE_COLUMNS, *WORK_COLUMNS,
    "peak_mem_allocated_mib", "peak_mem_reserved_mib", "peak_rss_mib", "rss_scope",
    "accuracy_images", "kp_AP", "box_AP", "status", "error",
)  # fmt: skip
# The columns printed on the terminal and put in the Markdown table.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "variant", "size", "padded_shapes", "cold_ms", "mean_ms", "median_ms", "p90_ms", "gpu_mean_ms", "fps",
    "dets_per_image", "stages", "stages_add_up", "gflops_per_image", "achieved_tflops", "peak_fraction",
    "peak_mem_allocated_mib", "peak_rss_mib", "kp_AP", "box_AP", "status", "error",
)  # fmt: skip

TIMING_DEFINITION = """\
- **Size** = the short side given to the model's own transform: `min_size=(s,)`, `max_size=round(s*1333/800)`.
  Images are not resized beforehand; `padded_shapes` are the batch tensors (N x C x H x W) that reached the
  backbone.
- **Model time** (`*_ms`) = `synchronize -> perf_counter -> model(images) -> synchronize -> perf_counter`, in
  `torch.inference_mode()`, under autocast for fp16/bf16. It includes the model's transform (resize,
  normalise, pad) and post-processing (NMS, keypoint decoding, rescaling to the image). It excludes reading,
  decoding and copying images to the device, which is `preprocess_ms` (mean per image; synthetic images: the
  copy to the device only).
- **GPU time** (`gpu_*_ms`, CUDA only) = elapsed time between CUDA events recorded just before and after the call.
- **Calls** per size and variant: one cold call (`cold_ms`, the first at that size), then `warmup` untimed
  calls, then `iters` timed calls; the statistics use the timed calls only. Calls cycle through the images.
- **FPS** = images per second = `batch_size * 1000 / mean_ms`. `dets_per_image` = mean detections per image
  in the timed calls (they drive post-processing time, so synthetic images are flagged).
- **Memory**: CUDA, `max_memory_allocated` / `max_memory_reserved` after `reset_peak_memory_stats()` per row;
  CPU, the process peak RSS (`rss_scope` "row": VmHWM reset per row; "process": lifetime peak ru_maxrss).
- **Spread**: `n` timed calls, `iqr_ms` (p75 - p25) and `iqr_over_median`; `unstable` when that exceeds 10%
  (torch.utils.benchmark's warning). `p90_ms` at batch 1 is the single-stream latency (MLPerf's).
- **Scenarios**: `single-stream` (batch 1), `batch` (a larger --batch-size), `offline` (--offline: the largest
  batch that fits, found by doubling up to --offline-max-batch; its FPS is the offline throughput).
- **Stages** (`stages`, ms per call): measured in a separate pass of up to 10 calls after the timed ones, with the
  device synchronised at every stage boundary, so their syncs do not perturb the headline timing. Keypoint
  R-CNN: `transform` (resize, normalise, pad, and rescaling the outputs), `backbone` (ResNet-50 + FPN), `rpn`,
  `box_head` (box branch and NMS), `keypoint_head`, `keypoint_postprocess` (heatmaps to keypoints). YOLO-pose:
  Ultralytics' own `preprocess`, `inference` and `postprocess`, the rest of its predict call
  (`ultralytics_other`) and the adapter's conversions (`adapter`). `stage_sum_ms` is their sum,
  `stage_call_ms` the pass's mean call time, `stage_coverage` their ratio; `stages_add_up` says the stages add
  up to the model time within 5%. Preprocessing is split into `decode_ms` and `to_device_ms` (per image).
- **Work**: `gflops_per_image` counted by torch.utils.flop_counter on each image once (the actual inputs and
  detections; convolutions and matrix products, 2 FLOPs per multiply-add), `achieved_tflops` = FLOPs per image
  x FPS, and `peak_fraction` of the GPU's dense datasheet peak at `peak_precision` (fp32 rows use the tf32
  peak when cuDNN may use TF32); blank where the peak is unknown, such as on a CPU.
"""


@dataclass(frozen=True)
class Variant:
    """One way of running the model: dtype, batch size and optional speed-ups."""

    dtype: str = "fp32"
    batch_size: int = 1
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    fast_postprocess: bool = False
    offline: bool = False  # the offline-throughput row: batch_size is the largest that fits

    @property
    def label(self) -> str:
        """A readable, stable label: "fp32-bs1", "fp16-bs4-channels_last", "fp32-bs16-offline", ..."""
        parts = [self.dtype, f"bs{self.batch_size}"]
        parts += [name for name in (*OPTION_VARIANTS, "offline") if getattr(self, name)]
        return "-".join(parts)

    @property
    def scenario(self) -> str:
        """single-stream (batch 1), batch (a larger batch) or offline (the largest batch that fits)."""
        return "offline" if self.offline else "single-stream" if self.batch_size == 1 else "batch"


# The options that each add a copy of the baseline grid, in label order.
OPTION_VARIANTS = ("channels_last", "cudnn_benchmark", "compile", "fast_postprocess")
# The ones a model provides through its speed_variant hook.
MODEL_VARIANTS = ("channels_last", "compile", "fast_postprocess")


def build_variants(
    dtypes: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    channels_last: bool = False,
    cudnn_benchmark: bool = False,
    compile: bool = False,
    fast_postprocess: bool = False,
) -> list[Variant]:
    """The baseline grid dtypes x batch_sizes, plus one copy of it per enabled option (one option at a time)."""
    grid = [Variant(dtype=d, batch_size=b) for d in dict.fromkeys(dtypes) for b in dict.fromkeys(batch_sizes)]
    variants = list(grid)
    enabled = {"channels_last": channels_last, "cudnn_benchmark": cudnn_benchmark, "compile": compile,
               "fast_postprocess": fast_postprocess}  # fmt: skip
    for name in OPTION_VARIANTS:
        if enabled[name]:
            variants += [dataclasses.replace(v, **{name: True}) for v in grid]
    return variants


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


def _sync(device: torch.device) -> None:
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

    from kpbench.engine.device import autocast

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
        _sync(device)
        t0 = time.perf_counter()
        model(batch())
        _sync(device)
        cold_ms = (time.perf_counter() - t0) * 1e3
        called()
        for _ in range(warmup):
            model(batch())
            called()
        _sync(device)
        for _ in range(iters):
            images_in = batch()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            _sync(device)
            t0 = time.perf_counter()
            if cuda:
                start.record(stream)
            outputs = model(images_in)
            if cuda:
                end.record(stream)
            _sync(device)
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


# ----------------------------------------------------------------------------------------------------------
# Memory


def _read_vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_memory(device: torch.device) -> str | None:
    """Reset the peak-memory counters before a row; returns the RSS scope on CPU ("row" or "process")."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return None
    # Writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "process"
    return "row" if _read_vm_hwm_kib() is not None else "process"


def peak_memory(device: torch.device, rss_scope: str | None) -> dict[str, Any]:
    """Peak memory since `reset_peak_memory`: CUDA allocated/reserved MiB, or the process peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        return {
            "peak_mem_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_mem_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    hwm = _read_vm_hwm_kib() if rss_scope == "row" else None
    if hwm is not None:
        return {"peak_rss_mib": hwm / 1024, "rss_scope": "row"}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    return {"peak_rss_mib": mib, "rss_scope": "process"}


# ----------------------------------------------------------------------------------------------------------
# Images


def select_person_images(gt: dict[str, Any], n: int, category_id: int = COCO17.category_id) -> list[dict[str, Any]]:
    """The first `n` images, by ascending id, with a non-crowd person annotation that has keypoints.

    Deterministic; keypoints are required so that --accuracy has something to score on every chosen image.
    """
    from kpbench.data.coco import images_with_instances

    with_people = images_with_instances(gt, category_id, labelled=True)
    records = sorted((im for im in gt["images"] if im["id"] in with_people), key=lambda im: im["id"])
    return records[:n]


def load_images(
    root: Path, split: str, records: Sequence[dict[str, Any]], device: torch.device, model: Any
) -> tuple[list[Any], dict[str, float]]:
    """Decode images into `model`'s input format (on `device` for a tensor model); returns them and the mean
    preprocessing ms per image: `preprocess_ms`, split into `decode_ms` (read and decode the file) and
    `to_device_ms` (into the model's input format, on its device).

    Each image is loaded twice: the first load (disk cache, decoder set-up) is kept, the second is timed.
    """
    from kpbench.data.coco import image_path, read_image_rgb_uint8
    from kpbench.engine.inference import prepare_images

    paths = [image_path(root, split, r["file_name"]) for r in records]
    images = [prepare_images(model, [read_image_rgb_uint8(p)], device)[0] for p in paths]
    decode, to_device = [], []
    for p in paths:
        _sync(device)
        t0 = time.perf_counter()
        decoded = read_image_rgb_uint8(p)
        t1 = time.perf_counter()
        x = prepare_images(model, [decoded], device)
        _sync(device)
        t2 = time.perf_counter()
        decode.append((t1 - t0) * 1e3)
        to_device.append((t2 - t1) * 1e3)
        del x
    n = len(paths)
    return images, {"preprocess_ms": (sum(decode) + sum(to_device)) / n, "decode_ms": sum(decode) / n,
                    "to_device_ms": sum(to_device) / n}  # fmt: skip


def synthetic_images(
    n: int, seed: int, device: torch.device, hw: tuple[int, int] = (480, 640), model: Any = None
) -> tuple[list[Any], dict[str, float]]:
    """`n` seeded random RGB images of a typical COCO size in `model`'s input format (float on `device` for a
    tensor model or without a model; uint8 numpy otherwise); returns them and the mean to-device ms per image
    (as `preprocess_ms` and `to_device_ms`; nothing is decoded)."""
    import torch

    from kpbench.models.base import input_format

    gen = torch.Generator().manual_seed(seed)
    host = [torch.rand((3, *hw), generator=gen) for _ in range(n)]
    if model is not None and input_format(model) == "numpy":
        # The same random images, quantised as a decoded file would be.
        arrays = [(x * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy() for x in host]
        return arrays, {"preprocess_ms": 0.0, "decode_ms": None, "to_device_ms": 0.0}
    images, times = [], []
    for x in host:
        _sync(device)
        t0 = time.perf_counter()
        images.append(x.to(device))
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    mean = sum(times) / len(times)
    return images, {"preprocess_ms": mean, "decode_ms": None, "to_device_ms": mean}


def make_batches(images: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """Batches of `batch_size` consecutive images (wrapping around), one starting at each image position."""
    n = len(images)
    count = n // math.gcd(n, batch_size)  # after this many batches the cycle repeats
    return [[images[(k * batch_size + j) % n] for j in range(batch_size)] for k in range(count)]


# ----------------------------------------------------------------------------------------------------------
# Variants and rows


class VariantSkipped(Exception):
    """A variant that does not apply to this device."""


@contextlib.contextmanager
def apply_variant(model: Any, variant: Variant, device: torch.device) -> Iterator[None]:
    """Put the model in the variant's state, then restore it: cudnn.benchmark here (a global torch setting),
    channels-last and compile through the model's `speed_variant` hook. A variant the device or the model does
    not offer raises VariantSkipped."""
    import torch

    from kpbench.models.base import model_name

    old_benchmark = torch.backends.cudnn.benchmark
    try:
        with contextlib.ExitStack() as stack:
            if variant.cudnn_benchmark:
                if device.type != "cuda":
                    raise VariantSkipped("cudnn.benchmark applies to CUDA devices only")
                torch.backends.cudnn.benchmark = True
            for name in MODEL_VARIANTS:
                if getattr(variant, name):
                    hook = getattr(model, "speed_variant", None)
                    state = hook(name) if hook is not None else None
                    if state is None:
                        raise VariantSkipped(f"{model_name(model)} has no {name} variant")
                    stack.enter_context(state)
            yield
    finally:
        torch.backends.cudnn.benchmark = old_benchmark


def _error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def format_shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    """Distinct shapes in order of first appearance, "1x3x800x1216;1x3x1216x800"."""
    return ";".join(dict.fromkeys("x".join(str(d) for d in s) for s in shapes))


def environment_columns(env: dict[str, Any]) -> dict[str, Any]:
    """The ENV_COLUMNS of one row, from `capture_environment`'s dict."""
    gpu: dict[str, Any] = {}
    if str(env.get("device", "cpu")).startswith("cuda"):
        index = int(str(env["device"]).split(":")[1])
        gpu = next((g for g in env.get("gpus", []) if g["index"] == index), {})
    return {
        "device": env.get("device"),
        "device_name": env.get("device_name"),
        "gpu_count": env.get("gpu_count", 0),
        "gpu_memory_gib": gpu.get("memory_gib"),
        "compute_capability": gpu.get("compute_capability"),
        "driver": env.get("driver"),
        "cuda": env.get("cuda"),
        "cudnn": env.get("cudnn"),
        "torch": env.get("torch"),
        "torchvision": env.get("torchvision"),
        "python": env.get("python"),
        "kpbench": env.get("kpbench"),
        "cpu": env.get("cpu"),
        "torch_threads": env.get("torch_threads"),
        "os": env.get("os"),
    }


def evaluate_accuracy(
    model: Any,
    paths: Sequence[Path],
    image_ids: Sequence[int],
    gt: dict[str, Any],
    device: torch.device,
    variant: Variant,
    progress: bool = False,
) -> dict[str, float]:
    """Keypoint and box AP of the model (as set up now) on the images at `paths`, in the variant's dtype and batch,
    through the inference loop (kpbench.engine.inference).

    Images are decoded batch by batch; `image_ids` are their COCO ids and `gt` the full annotation dict.
    """
    from kpbench.core.progress import progress_bar
    from kpbench.data.coco import read_image_rgb_uint8, restrict_ground_truth
    from kpbench.engine.inference import BatchResult, inference_on_dataset
    from kpbench.evaluation.cocoeval import evaluate  # lazy: the timing path never needs the evaluation stack
    from kpbench.runs.detections import ImageDetections, to_coco_results

    starts = range(0, len(paths), variant.batch_size)
    bar = progress_bar(starts, desc="accuracy", unit="batch", leave=False, disable=not progress, file=sys.stderr)

    def batches() -> Iterator[tuple[Sequence[int], list[Any]]]:
        for start in bar:
            end = start + variant.batch_size
            yield image_ids[start:end], [read_image_rgb_uint8(p) for p in paths[start:end]]

    dets: list[ImageDetections] = []

    def keep(batch: BatchResult) -> None:
        dets.extend(batch.detections)

    inference_on_dataset(model, batches(), device, keep, dtype=variant.dtype)
    kp_results, box_results = to_coco_results(dets)
    subset = restrict_ground_truth(gt, image_ids)
    out: dict[str, float] = {}
    for key, results, iou_type in (("kp_AP", kp_results, "keypoints"), ("box_AP", box_results, "bbox")):
        # The model's keypoint set scores its keypoints (its sigmas), as `kpbench run` scores them.
        schema = model.schema if iou_type == "keypoints" else None
        out[key] = float(evaluate(subset, results, iou_type=iou_type, schema=schema).stats["AP"])  # no detections: 0
    return out


@dataclass
class SpeedRun:
    """The outcome of `run_speed`: rows, manifest and the files written."""

    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    csv_path: Path | None = None
    manifest_path: Path | None = None
    markdown_path: Path | None = None


def _base_row(
    stamp: str, env_cols: dict[str, Any], settings: SpeedSettings, size: int, variant: Variant, synthetic: bool,
    num_images: int,
) -> dict[str, Any]:
    """A row with the environment and settings filled in and every measurement empty."""
    row: dict[str, Any] = dict.fromkeys(SPEED_COLUMNS)
    row.update(timestamp=stamp, **{k: v for k, v in env_cols.items() if not k.startswith("_")})
    row.update(
        weights=env_cols.get("_weights"), size=size, max_size=default_max_size(size), variant=variant.label,
        scenario=variant.scenario, dtype=variant.dtype, batch_size=variant.batch_size,
        channels_last=variant.channels_last, cudnn_benchmark=variant.cudnn_benchmark, compile=variant.compile,
        fast_postprocess=variant.fast_postprocess, synthetic=synthetic, num_images=num_images,
        box_score_thresh=settings.box_score_thresh, warmup=settings.warmup, iters=settings.iters,
        accuracy_images=0,
    )
    return row


DEFAULT_WEIGHTS_WORDS = ("default", "")


def model_options(models: str | Sequence[str] | None, weights: str | Sequence[str] | None) -> list[tuple[Any, str | None]]:
    """(resolved spec, canonical weights) per `--model`, checked cheaply before anything heavy. `weights` is one
    value for a single model, or one per model in the same order (None: each model's default)."""
    from kpbench.models.registry import check_model_options

    specs = [models] if isinstance(models, str) or models is None else list(models)
    if not specs:
        raise KpbenchError("--model: give at least one model")
    if weights is None or isinstance(weights, str):
        if weights is not None and len(specs) > 1:
            raise KpbenchError(f"--weights {weights}: with {len(specs)} models, give one --weights per --model (in "
                               "order), or none for each model's default")
        per_model: list[str | None] = [weights] * len(specs)
    else:
        per_model = list(weights)
        if len(per_model) != len(specs):
            raise KpbenchError(f"--weights: {len(per_model)} given for {len(specs)} models; give one per --model")
    # "default" (or "") keeps one model's own default weights when the others are named.
    per_model = [None if w is not None and w.strip().lower() in DEFAULT_WEIGHTS_WORDS else w for w in per_model]
    checked = [check_model_options(m, w) for m, w in zip(specs, per_model)]
    keys = [(str(getattr(spec, "spec", spec)), w) for spec, w in checked]
    if len(set(keys)) != len(keys):
        raise KpbenchError(f"--model: {', '.join(specs)}: a model is given twice with the same weights")
    return checked


def run_speed(
    settings: SpeedSettings,
    *,
    config: LoadedConfig | None = None,
    progress: bool = True,
    write: bool = True,
    log: Callable[[str], None] | None = None,
) -> SpeedRun:
    """Time the model over settings.sizes x variants and (if `write`) write the CSV, manifest and Markdown files.

    User mistakes (no COCO root, too few images, --accuracy with --synthetic, an --out it cannot write into)
    raise KpbenchError before any timing; a variant that fails gives rows with status "failed" instead of
    stopping. When no row succeeded, the files are still written and `NoRowSucceeded` (a KpbenchError) is raised.
    """
    from kpbench.core.config import settings_dict
    from kpbench.core.environment import capture_environment
    from kpbench.core.io import ensure_output_dir
    from kpbench.data.coco import annotation_path, image_path, load_annotations, resolve_coco_root
    from kpbench.engine.device import resolve_device, warn_slow_dtype
    from kpbench.models.base import model_info
    from kpbench.models.registry import declared_schema, given_model_options, load_model

    # A size or variant given twice would give two rows with the same key; "coco_v1" is COCO_V1.
    models = model_options(settings.model, settings.weights)
    spec = models[0][0]
    single = len(models) == 1
    settings = dataclasses.replace(
        settings, sizes=list(dict.fromkeys(settings.sizes)), dtype=list(dict.fromkeys(settings.dtype)),
        batch_size=list(dict.fromkeys(settings.batch_size)),
        model=spec.spec if single else [m.spec for m, _ in models],
        weights=models[0][1] if single else [w for _, w in models],
    )
    if settings.accuracy and settings.synthetic:
        raise KpbenchError("--accuracy: needs real COCO images and annotations, not --synthetic")
    root = None if settings.synthetic else resolve_coco_root(settings.coco_root)  # at once: before torch is imported
    import torch

    from kpbench.core.progress import progress_bar

    started = datetime.now(timezone.utc)
    stamp = started.isoformat(timespec="seconds").replace("+00:00", "Z")
    device = resolve_device(settings.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # empty_cache and anything else that uses the current device

    # Images first: a bad COCO root should fail before the model is built.
    gt: dict[str, Any] | None = None
    images_info: dict[str, Any]
    acc_paths: list[Path] = []
    acc_ids: list[int] = []
    records: list[dict[str, Any]] = []
    if settings.synthetic:
        images_info = {"source": "synthetic", "count": settings.num_images, "shape_hw": [480, 640],
                       "seed": settings.seed}  # fmt: skip
    else:
        assert root is not None
        ann = annotation_path(root, settings.split)
        gt = load_annotations(root, settings.split)
        wanted = max(settings.num_images, settings.accuracy)
        # Images with an instance of the model's category (a person for Keypoint R-CNN).
        schema = declared_schema(spec)
        records = select_person_images(gt, wanted, schema.category_id if schema is not None else COCO17.category_id)
        if len(records) < wanted:
            option = "--num-images" if settings.num_images >= settings.accuracy else "--accuracy"
            raise KpbenchError(
                f"{option} {wanted}: {ann} has only {len(records)} images with a keypoint-annotated person"
            )
        # Accuracy images are decoded batch by batch when evaluated, so --accuracy 5000 does not hold 5000
        # decoded images in memory.
        acc_paths = [image_path(root, settings.split, r["file_name"]) for r in records[: settings.accuracy]]
        acc_ids = [r["id"] for r in records[: settings.accuracy]]
        missing = [p for p in acc_paths if not p.is_file()]
        if missing:
            raise KpbenchError(f"--accuracy {settings.accuracy}: {missing[0]}: image file not found ({len(missing)} missing)")
        timed = [image_path(root, settings.split, r["file_name"]) for r in records[: settings.num_images]]
        missing = [p for p in timed if not p.is_file()]
        if missing:  # the images are decoded once the model is built (into its input format): check them now
            raise KpbenchError(f"--num-images {settings.num_images}: {missing[0]}: image file not found "
                               f"({len(missing)} missing)")
        images_info = {
            "source": "coco", "coco_root": str(root), "split": settings.split, "annotations": str(ann),
            "image_ids": [r["id"] for r in records[: settings.num_images]], "accuracy_image_ids": acc_ids,
            "selection": "ascending image id, >=1 non-crowd person annotation with keypoints",
        }  # fmt: skip

    if write:  # an unwritable --out must fail now, not after the whole table has been timed
        ensure_output_dir(settings.out, "--out")

    env = capture_environment(device)
    env_cols = environment_columns(env)
    # Every model is built before any timing: a model that cannot load fails the command, not its rows.
    loaded = []
    for model_spec, model_weights in models:
        # Sizes are set per row (set_input_size); of the other run options, only those the user gave are passed
        # (the model's own defaults apply to the rest), and one the model does not honour is refused.
        options = given_model_options(settings)
        if "seed" not in model_spec.honoured():
            options.pop("seed", None)  # it seeds the synthetic images too: not a model option alone
        model = load_model(model_spec, weights=model_weights, **options)
        loaded.append((model_spec, model, model_info(model)))
    variants = build_variants(
        settings.dtype, settings.batch_size, channels_last=settings.channels_last,
        cudnn_benchmark=settings.cudnn_benchmark, compile=settings.compile,
        fast_postprocess=settings.fast_postprocess,
    )
    for dtype in settings.dtype:
        warn_slow_dtype(device, dtype)

    rows: list[dict[str, Any]] = []
    # The bar counts model calls, so that it moves during a row (a row at size 1024 on a CPU takes minutes).
    rows_per_model = (len(variants) + (len(settings.dtype) if settings.offline else 0)) * len(settings.sizes)
    planned_calls = sum(row_calls(settings, v.batch_size) for v in variants) + (
        len(settings.dtype) * row_calls(settings, 1) if settings.offline else 0)
    bar = progress_bar(total=len(loaded) * len(settings.sizes) * planned_calls, disable=not progress, unit="call",
               file=sys.stderr)
    interrupted = False
    try:
        for model_spec, model, info in loaded:
            # Models are a dimension of the table: which model, and exactly which weights file.
            model_cols = {**env_cols, "model": info.name or model_spec.spec, "weights_sha256": info.checkpoint_sha256,
                          "_weights": info.weights}  # fmt: skip
            move = getattr(model, "to", None)
            if move is not None:
                move(device)
            if settings.synthetic:
                images, preprocess = synthetic_images(settings.num_images, settings.seed, device, model=model)
            else:
                images, preprocess = load_images(root, settings.split, records[: settings.num_images], device, model)
            table = _ModelTable(model, images, preprocess, device, settings, stamp, model_cols, bar, log,
                                label=f"{model_cols['model']} " if len(loaded) > 1 else "")
            for variant in variants:
                table.variant_rows(variant, rows, gt, acc_paths, acc_ids, progress)
            if settings.offline:
                for dtype in settings.dtype:
                    table.offline_rows(dtype, rows)
    except KeyboardInterrupt:  # Ctrl-C: keep the finished rows (written below, marked incomplete)
        interrupted = True
    finally:
        bar.close()

    infos = [info.to_json() for _, _, info in loaded]
    manifest = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "created": stamp,
        "settings": settings_dict(settings),
        "config_path": config.path if config else None,
        "config_sha256": config.sha256 if config else None,
        "environment": env,
        "model": infos[0],
        "model_spec": spec.to_json(),
        "schema": loaded[0][1].schema.to_json(),
        # Every model of the table (one entry per --model), in row order.
        "models": [{"spec": m.to_json(), "info": i, "schema": model.schema.to_json()}
                   for (m, model, _), i in zip(loaded, infos)],
        "images": images_info,
        "variants": [v.label for v in variants],
        # False when Ctrl-C stopped the table: the rows are those finished before it.
        "complete": not interrupted,
        "rows": len(rows),
        "rows_planned": len(loaded) * rows_per_model,
        "timing_definition": TIMING_DEFINITION,
        "columns": list(SPEED_COLUMNS),
    }
    result = SpeedRun(rows=rows, manifest=manifest)
    if write and (rows or not interrupted):
        write_speed_files(settings.out, result, device_name=str(env.get("device_name") or device.type), started=started)
    if interrupted:
        raise SpeedInterrupted(result)
    if rows and not any(row["status"] == "ok" for row in rows):
        raise NoRowSucceeded(result)
    return result


class NoRowSucceeded(KpbenchError):
    """Every row of `run_speed` failed or was skipped (`--sizes 100000`, say): a table of errors is no speed table,
    so the command fails, after writing it. `result` holds the rows."""

    def __init__(self, result: SpeedRun) -> None:
        self.result = result
        first = result.rows[0]
        where = f"; the rows were written to {result.csv_path}" if result.csv_path else ""
        super().__init__(
            f"no row succeeded: all {len(result.rows)} failed or were skipped (first: {first['variant']} size "
            f"{first['size']}: {first['error']}){where}"
        )


class SpeedInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_speed`: `result` holds the rows finished before it (and the paths they were written to,
    with the manifest's "complete" false). `str()` is the one line to print."""

    def __init__(self, result: SpeedRun) -> None:
        self.result = result
        m = result.manifest
        where = f"written to {result.csv_path}" if result.csv_path else "nothing written"
        super().__init__(f"interrupted: {m['rows']} of {m['rows_planned']} rows finished ({where})")


class _ModelTable:
    """The rows of one model: every variant and size, and the offline rows, timed on its images."""

    def __init__(
        self, model: Any, images: list[Any], preprocess: dict[str, float], device: torch.device,
        settings: SpeedSettings, stamp: str, model_cols: dict[str, Any], bar: Any,
        log: Callable[[str], None] | None, label: str = "",
    ) -> None:
        self.label = label  # what names the model in a warning, when the table has several
        self.model, self.images, self.preprocess, self.device = model, images, preprocess, device
        self.settings, self.stamp, self.model_cols, self.bar, self.log = settings, stamp, model_cols, bar, log

    def _row(self, size: int, variant: Variant) -> dict[str, Any]:
        return _base_row(self.stamp, self.model_cols, self.settings, size, variant, self.settings.synthetic,
                         len(self.images))

    def _measured(
        self, rows: list[dict[str, Any]], size: int, variant: Variant, measure: Callable[[dict[str, Any]], None]
    ) -> None:
        """One row: `measure` fills it in; anything it raises marks the row failed and the table goes on."""
        import torch

        row = self._row(size, variant)
        row_start = self.bar.n
        planned = row_calls(self.settings, 1 if variant.offline else variant.batch_size)
        try:
            measure(row)
            row["status"] = "ok"
        # Inputs were checked before, so anything raised here (even a KpbenchError from validating the model's own
        # results, such as NaN keypoints under fp16) belongs to this row.
        except Exception as exc:  # a failing variant must not stop the table
            row.update(status="failed", error=_error_text(exc))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        self.bar.update(row_start + planned - self.bar.n)  # the calls a failed row did not make
        if self.log and row["status"] != "ok":
            self.log(f"{self.label}{variant.label} size {size}: {row['status']}: {row['error']}")

    def variant_rows(
        self, variant: Variant, rows: list[dict[str, Any]], gt: dict[str, Any] | None, acc_paths: Sequence[Path],
        acc_ids: Sequence[int], progress: bool,
    ) -> None:
        """The rows of one variant, one per size (skipped or failed rows when the variant cannot be set up)."""
        batches = make_batches(self.images, variant.batch_size)

        def measure(row: dict[str, Any], size: int) -> None:
            row.update(self.measure(batches, variant, size))
            if self.settings.accuracy:
                assert gt is not None
                row.update(evaluate_accuracy(self.model, acc_paths, acc_ids, gt, self.device, variant, progress))
                row["accuracy_images"] = len(acc_ids)

        first = len(rows)
        try:
            with apply_variant(self.model, variant, self.device):
                for size in self.settings.sizes:
                    self.bar.set_postfix_str(f"{self.model_cols['model']} {variant.label} size {size}")
                    self._measured(rows, size, variant, lambda row, size=size: measure(row, size))
        except VariantSkipped as exc:
            self._fill_unrun(rows, first, variant, "skipped", str(exc))
        except Exception as exc:  # setting the variant up (or restoring) failed
            self._fill_unrun(rows, first, variant, "failed", _error_text(exc))

    def offline_rows(self, dtype: str, rows: list[dict[str, Any]]) -> None:
        """The offline-throughput rows of `dtype`: per size, the largest batch that fits (doubling from 1 up to
        --offline-max-batch, one call each), then timed like any row."""
        from kpbench.models.base import set_input_size

        for size in self.settings.sizes:
            self.bar.set_postfix_str(f"{self.model_cols['model']} {dtype} offline size {size}")
            try:
                set_input_size(self.model, size, default_max_size(size))
                batch_size = largest_batch(self.model, self.images, self.device, dtype,
                                           self.settings.offline_max_batch)  # fmt: skip
            except Exception as exc:  # no input size, or not even batch 1 runs: the row says why
                self._unrun_row(rows, size, Variant(dtype=dtype, batch_size=1, offline=True), "failed",
                                _error_text(exc))
                continue
            variant = Variant(dtype=dtype, batch_size=batch_size, offline=True)
            batches = make_batches(self.images, batch_size)
            self._measured(rows, size, variant,
                           lambda row, b=batches, v=variant, s=size: row.update(self.measure(b, v, s)))

    def _fill_unrun(self, rows: list[dict[str, Any]], first: int, variant: Variant, status: str, error: str) -> None:
        """Rows for the sizes a variant did not run (all of them when it was skipped or failed to set up)."""
        done = {r["size"] for r in rows[first:]}
        for size in self.settings.sizes:
            if size not in done:
                self._unrun_row(rows, size, variant, status, error)

    def _unrun_row(self, rows: list[dict[str, Any]], size: int, variant: Variant, status: str, error: str) -> None:
        """A row that made no call (skipped, or failed before its first), with the progress bar moved past it."""
        row = self._row(size, variant)
        row.update(status=status, error=error)
        rows.append(row)
        self.bar.update(row_calls(self.settings, variant.batch_size))

    def measure(self, batches: list[list[Any]], variant: Variant, size: int) -> dict[str, Any]:
        """Time one size of one variant (the model already in the variant's state): the measured columns of its
        row; then the stage pass and the FLOP pass, each after the timed calls so that neither perturbs them."""
        from kpbench.engine.work import work_columns
        from kpbench.models.base import record_input_shapes, set_input_size

        model, device, settings = self.model, self.device, self.settings
        set_input_size(model, size, default_max_size(size))
        rss_scope = reset_peak_memory(device)
        with record_input_shapes(model) as shapes:
            timing = time_model(
                model.predict, batches, device, warmup=settings.warmup, iters=settings.iters, dtype=variant.dtype,
                on_call=lambda: self.bar.update(1),
            )
        memory = peak_memory(device, rss_scope)
        stats = timing.stats()
        fps = variant.batch_size * 1000.0 / stats["mean_ms"]
        out: dict[str, Any] = {
            "padded_shapes": format_shapes(shapes) if shapes is not None else None,
            "cold_ms": timing.cold_ms,
            **stats,
            "fps": fps,
            "ms_per_image": stats["mean_ms"] / variant.batch_size,
            **self.preprocess,
            "dets_per_image": timing.detections_timed / timing.images_timed,
            **memory,
        }
        if timing.gpu_times_ms:
            gpu = summarize_ms(timing.gpu_times_ms)
            out.update(gpu_mean_ms=gpu["mean_ms"], gpu_median_ms=gpu["median_ms"])
        step = lambda: self.bar.update(1)  # noqa: E731
        if settings.stages:
            out.update(stage_pass(model, batches, device, variant.dtype, min(settings.iters, STAGE_CALLS), step))
        if settings.flops:
            per_image = flop_pass(model, batches, device, variant.dtype, len(self.images), step)
            out.update(work_columns(per_image, fps, self.model_cols.get("device_name"), variant.dtype, device.type))
        return out


def row_calls(settings: SpeedSettings, batch_size: int) -> int:
    """Model calls one row makes: cold, warm-up and timed calls, the stage pass and the FLOP pass."""
    stage = min(settings.iters, STAGE_CALLS) if settings.stages else 0
    flop = math.ceil(settings.num_images / batch_size) if settings.flops else 0
    return 1 + settings.warmup + settings.iters + stage + flop


def stage_pass(
    model: Any, batches: Sequence[list[Any]], device: torch.device, dtype: str, calls: int,
    on_call: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The stage split of a model with a `speed_stages` hook, over `calls` calls (its own pass, after the timing):
    the STAGE_COLUMNS of a row (empty for a model without the hook)."""
    import torch

    from kpbench.engine.device import autocast
    from kpbench.engine.stages import format_stages

    hook = getattr(model, "speed_stages", None)
    if hook is None or calls < 1:
        return {}
    sums: dict[str, float] = {}
    call_ms = 0.0
    with torch.inference_mode(), autocast(device, dtype), hook(device) as clock:
        clock.take()
        for i in range(calls):
            _sync(device)
            t0 = time.perf_counter()
            model.predict(batches[i % len(batches)])
            _sync(device)
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

    from kpbench.engine.device import autocast
    from kpbench.engine.work import count_flops

    batch_size = len(batches[0])
    distinct = batches[: max(1, math.ceil(num_images / batch_size))]
    with torch.inference_mode(), autocast(device, dtype):
        return count_flops(model.predict, distinct, on_call)


def _out_of_memory(exc: BaseException) -> bool:
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

    from kpbench.engine.device import autocast

    fits = 0
    batch = 1
    while batch <= max_batch:
        try:
            with torch.inference_mode(), autocast(device, dtype):
                model.predict(make_batches(images, batch)[0])
                _sync(device)
        except Exception as exc:
            if not _out_of_memory(exc) or fits == 0:
                raise
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        fits = batch
        batch *= 2
    return fits


# ----------------------------------------------------------------------------------------------------------
# Files and the terminal


def terminal_summary(result: SpeedRun) -> str:
    """What `kpbench speed` prints: one header line, then the main columns of every row."""
    from kpbench.core.io import to_text_table

    env = result.manifest["environment"]
    settings = result.manifest["settings"]
    cuda = str(env.get("device", "")).startswith("cuda")
    several = len({r.get("model") for r in result.rows}) > 1
    # One model with two weights (COCO_V1 and COCO_LEGACY, say): the weights tell its rows apart.
    weights_differ = len({(r.get("model"), r.get("weights")) for r in result.rows}) > len({r.get("model") for r in result.rows})
    columns = [*(("model",) if several or weights_differ else ()), *(("weights",) if weights_differ else ()), "variant", "size", "padded_shapes", "cold_ms", "median_ms", "p90_ms",
               "iqr_over_median", "fps", "dets_per_image"]
    columns += ["stages_add_up", "gflops_per_image"] + (["peak_fraction"] if cuda else [])
    columns += ["peak_mem_allocated_mib"] if cuda else ["peak_rss_mib"]
    columns += ["kp_AP", "box_AP"] if settings["accuracy"] else []
    columns += ["status"]
    source = "SYNTHETIC images" if settings["synthetic"] else f"{settings['num_images']} COCO images"
    header = (f"{env.get('device_name')} ({env.get('device')}), {source}, warmup {settings['warmup']}, "
              f"iters {settings['iters']}")
    text = header + "\n" + to_text_table(result.rows, columns, precision=2)
    unstable = [f"{r['model'] + ' ' if several else ''}{r['variant']} {r['size']}" for r in result.rows
                if r.get("unstable")]
    if unstable:
        text += (f"unstable (IQR above {UNSTABLE_IQR_RATIO:.0%} of the median): {', '.join(unstable)}; time more "
                 "iterations (--iters) or on a quieter machine\n")
    return text


def speed_markdown(result: SpeedRun) -> str:
    """The Markdown file: what was timed, environment, settings and the table."""
    from kpbench.core.io import to_markdown

    m = result.manifest
    env = m["environment"]
    lines = [
        f"# kpbench speed: {env.get('device_name')}",
        "",
        f"Created {m['created']} by kpbench {env.get('kpbench')}; weights `{m['settings']['weights']}`, "
        f"images: {m['images']['source']}" + (" (**synthetic: random images**)" if m["images"]["source"] == "synthetic" else "")
        + ".",
        "",
        "## What was timed",
        "",
        TIMING_DEFINITION,
        "## Environment",
        "",
    ]
    env_rows = [{"key": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v} for k, v in env.items()
                if k != "argv"]  # fmt: skip
    lines += [to_markdown(env_rows, ["key", "value"]), "## Settings", ""]
    settings_rows = [{"key": k, "value": json.dumps(v) if isinstance(v, list) else v} for k, v in m["settings"].items()]
    if m.get("config_path"):
        settings_rows.append({"key": "config", "value": f"{m['config_path']} (sha256 {m['config_sha256']})"})
    lines += [to_markdown(settings_rows, ["key", "value"]), "## Results", ""]
    lines.append(to_markdown(result.rows, SUMMARY_COLUMNS, precision=2))
    return "\n".join(lines)


def write_speed_files(
    out_dir: str | Path, result: SpeedRun, *, device_name: str, started: datetime | None = None
) -> SpeedRun:
    """Write <out>/<device-slug>-<timestamp>.csv, .json and .md atomically; fills the paths into `result`."""
    from kpbench.core.environment import device_slug
    from kpbench.core.io import atomic_write_files, json_text, to_csv

    out = Path(out_dir)
    stamp = (started or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{device_slug(device_name)}-{stamp}"
    n = 1
    while any((out / f"{stem}{ext}").exists() for ext in (".csv", ".json", ".md")):
        n += 1  # two runs in the same second on the same device must not overwrite each other
        stem = f"{device_slug(device_name)}-{stamp}-{n}"
    result.csv_path, result.manifest_path, result.markdown_path = (out / f"{stem}{e}" for e in (".csv", ".json", ".md"))
    result.manifest["files"] = {"csv": result.csv_path.name, "markdown": result.markdown_path.name}
    atomic_write_files({
        result.csv_path: to_csv(result.rows, SPEED_COLUMNS),
        result.manifest_path: json_text(_json_safe(result.manifest)),
        result.markdown_path: speed_markdown(result),
    })
    return result


def _json_safe(obj: Any) -> Any:
    """NaN/inf become None (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
