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
# torch.utils.benchmark's rule of thumb: a spread (IQR) above 10% of the median makes a timing worth a second look.
UNSTABLE_IQR_RATIO = 0.10
SPEED_COLUMNS: tuple[str, ...] = (
    "timestamp", *ENV_COLUMNS,
    "model", "weights", "weights_sha256", "size", "max_size", "variant", "dtype", "batch_size", "channels_last", "cudnn_benchmark", "compile",
    "synthetic", "num_images", "padded_shapes", "box_score_thresh", "warmup", "iters",
    "cold_ms", *STAT_COLUMNS, "gpu_mean_ms", "gpu_median_ms", "fps", "preprocess_ms", "dets_per_image",
    "peak_mem_allocated_mib", "peak_mem_reserved_mib", "peak_rss_mib", "rss_scope",
    "accuracy_images", "kp_AP", "box_AP", "status", "error",
)  # fmt: skip
# The columns printed on the terminal and put in the Markdown table.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "variant", "size", "padded_shapes", "cold_ms", "mean_ms", "median_ms", "p90_ms", "gpu_mean_ms", "fps",
    "dets_per_image", "peak_mem_allocated_mib", "peak_rss_mib", "kp_AP", "box_AP", "status", "error",
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
"""


@dataclass(frozen=True)
class Variant:
    """One way of running the model: dtype, batch size and optional speed-ups."""

    dtype: str = "fp32"
    batch_size: int = 1
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        """A readable, stable label: "fp32-bs1", "fp16-bs4-channels_last", ..."""
        parts = [self.dtype, f"bs{self.batch_size}"]
        parts += [name for name in ("channels_last", "cudnn_benchmark", "compile") if getattr(self, name)]
        return "-".join(parts)


def build_variants(
    dtypes: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    channels_last: bool = False,
    cudnn_benchmark: bool = False,
    compile: bool = False,
) -> list[Variant]:
    """The baseline grid dtypes x batch_sizes, plus one copy of it per enabled option (one option at a time)."""
    grid = [Variant(dtype=d, batch_size=b) for d in dict.fromkeys(dtypes) for b in dict.fromkeys(batch_sizes)]
    variants = list(grid)
    for name, on in (("channels_last", channels_last), ("cudnn_benchmark", cudnn_benchmark), ("compile", compile)):
        if on:
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

    from kpbench.models.keypointrcnn import autocast

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
) -> tuple[list[Any], float]:
    """Decode images into `model`'s input format (on `device` for a tensor model); returns them and the mean
    preprocessing ms per image.

    Each image is loaded twice: the first load (disk cache, decoder set-up) is kept, the second is timed.
    """
    from kpbench.data.coco import image_path, read_image_rgb_uint8
    from kpbench.engine.inference import prepare_images

    paths = [image_path(root, split, r["file_name"]) for r in records]
    images = [prepare_images(model, [read_image_rgb_uint8(p)], device)[0] for p in paths]
    times = []
    for p in paths:
        _sync(device)
        t0 = time.perf_counter()
        x = prepare_images(model, [read_image_rgb_uint8(p)], device)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        del x
    return images, sum(times) / len(times)


def synthetic_images(
    n: int, seed: int, device: torch.device, hw: tuple[int, int] = (480, 640), model: Any = None
) -> tuple[list[Any], float]:
    """`n` seeded random RGB images of a typical COCO size in `model`'s input format (float on `device` for a
    tensor model or without a model; uint8 numpy otherwise); returns them and the mean to-device ms per image."""
    import torch

    from kpbench.models.base import input_format

    gen = torch.Generator().manual_seed(seed)
    host = [torch.rand((3, *hw), generator=gen) for _ in range(n)]
    if model is not None and input_format(model) == "numpy":
        # The same random images, quantised as a decoded file would be.
        arrays = [(x * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy() for x in host]
        return arrays, 0.0
    images, times = [], []
    for x in host:
        _sync(device)
        t0 = time.perf_counter()
        images.append(x.to(device))
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return images, sum(times) / len(times)


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
            for name in ("channels_last", "compile"):
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
    from tqdm import tqdm

    from kpbench.data.coco import read_image_rgb_uint8, restrict_ground_truth
    from kpbench.engine.inference import BatchResult, inference_on_dataset
    from kpbench.evaluation.cocoeval import evaluate  # lazy: the timing path never needs the evaluation stack
    from kpbench.runs.detections import ImageDetections, to_coco_results

    starts = range(0, len(paths), variant.batch_size)
    bar = tqdm(starts, desc="accuracy", unit="batch", leave=False, disable=not progress, file=sys.stderr)

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
        weights=settings.weights if settings.weights is not None else env_cols.get("_weights"), size=size, max_size=default_max_size(size), variant=variant.label,
        dtype=variant.dtype, batch_size=variant.batch_size, channels_last=variant.channels_last,
        cudnn_benchmark=variant.cudnn_benchmark, compile=variant.compile, synthetic=synthetic,
        num_images=num_images, box_score_thresh=settings.box_score_thresh, warmup=settings.warmup,
        iters=settings.iters, accuracy_images=0,
    )
    return row


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
    from kpbench.models.base import model_info
    from kpbench.models.keypointrcnn import resolve_device, warn_slow_dtype
    from kpbench.models.registry import check_model_options, declared_schema, load_model

    # A size or variant given twice would give two rows with the same key; "coco_v1" is COCO_V1.
    spec, weights = check_model_options(settings.model, settings.weights)
    settings = dataclasses.replace(
        settings, sizes=list(dict.fromkeys(settings.sizes)), dtype=list(dict.fromkeys(settings.dtype)),
        batch_size=list(dict.fromkeys(settings.batch_size)), model=spec.spec, weights=weights,
    )
    if settings.accuracy and settings.synthetic:
        raise KpbenchError("--accuracy: needs real COCO images and annotations, not --synthetic")
    root = None if settings.synthetic else resolve_coco_root(settings.coco_root)  # at once: before torch is imported
    import torch
    from tqdm import tqdm

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
    model = load_model(
        spec, weights=settings.weights, min_size=settings.sizes[0], max_size=default_max_size(settings.sizes[0]),
        box_score_thresh=settings.box_score_thresh, seed=settings.seed,
    )
    info = model_info(model)
    # Models are a dimension of the table: which model, and exactly which weights file.
    env_cols = {**env_cols, "model": info.name or spec.spec, "weights_sha256": info.checkpoint_sha256,
                "_weights": info.weights}
    move = getattr(model, "to", None)
    if move is not None:
        move(device)
    if settings.synthetic:
        images, preprocess_ms = synthetic_images(settings.num_images, settings.seed, device, model=model)
    else:
        images, preprocess_ms = load_images(root, settings.split, records[: settings.num_images], device, model)
    variants = build_variants(
        settings.dtype, settings.batch_size, channels_last=settings.channels_last,
        cudnn_benchmark=settings.cudnn_benchmark, compile=settings.compile,
    )
    for dtype in settings.dtype:
        warn_slow_dtype(device, dtype)

    rows: list[dict[str, Any]] = []
    # The bar counts model calls, so that it moves during a row (a row at size 1024 on a CPU takes minutes).
    calls_per_row = 1 + settings.warmup + settings.iters
    bar = tqdm(total=len(variants) * len(settings.sizes) * calls_per_row, disable=not progress, unit="call",
               file=sys.stderr)
    interrupted = False
    try:
        for variant in variants:
            batches = make_batches(images, variant.batch_size)
            try:
                with apply_variant(model, variant, device):
                    for size in settings.sizes:
                        bar.set_postfix_str(f"{variant.label} size {size}")
                        row = _base_row(stamp, env_cols, settings, size, variant, settings.synthetic, len(images))
                        row_start = bar.n
                        try:
                            row.update(
                                _measure_row(model, batches, device, settings, variant, size, preprocess_ms,
                                             on_call=lambda: bar.update(1))
                            )
                            if settings.accuracy:
                                assert gt is not None
                                row.update(evaluate_accuracy(model, acc_paths, acc_ids, gt, device, variant, progress))
                                row["accuracy_images"] = len(acc_ids)
                            row["status"] = "ok"
                        # Inputs were checked above, so anything raised here (even a KpbenchError from validating
                        # the model's own results, such as NaN keypoints under fp16) belongs to this row.
                        except Exception as exc:  # a failing variant must not stop the table
                            row.update(status="failed", error=_error_text(exc))
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
                        rows.append(row)
                        bar.update(row_start + calls_per_row - bar.n)  # the calls a failed row did not make
                        if log and row["status"] != "ok":
                            log(f"{variant.label} size {size}: {row['status']}: {row['error']}")
            except VariantSkipped as exc:
                _fill_unrun(rows, bar, stamp, env_cols, settings, variant, len(images), "skipped", str(exc))
            except Exception as exc:  # setting the variant up (or restoring) failed
                _fill_unrun(rows, bar, stamp, env_cols, settings, variant, len(images), "failed", _error_text(exc))
    except KeyboardInterrupt:  # Ctrl-C: keep the finished rows (written below, marked incomplete)
        interrupted = True
    finally:
        bar.close()

    manifest = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "created": stamp,
        "settings": settings_dict(settings),
        "config_path": config.path if config else None,
        "config_sha256": config.sha256 if config else None,
        "environment": env,
        "model": info.to_json(),
        "model_spec": spec.to_json(),
        "schema": model.schema.to_json(),
        "images": images_info,
        "variants": [v.label for v in variants],
        # False when Ctrl-C stopped the table: the rows are those finished before it.
        "complete": not interrupted,
        "rows": len(rows),
        "rows_planned": len(variants) * len(settings.sizes),
        "preprocess_ms": preprocess_ms,
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


def _measure_row(
    model: Any, batches: list[list[Any]], device: torch.device, settings: SpeedSettings, variant: Variant,
    size: int, preprocess_ms: float, on_call: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Time one size of one variant (the model already in the variant's state): the measured columns of its row."""
    from kpbench.models.base import record_input_shapes, set_input_size

    set_input_size(model, size, default_max_size(size))
    rss_scope = reset_peak_memory(device)
    with record_input_shapes(model) as shapes:
        timing = time_model(
            model.predict, batches, device, warmup=settings.warmup, iters=settings.iters, dtype=variant.dtype,
            on_call=on_call,
        )
    memory = peak_memory(device, rss_scope)
    stats = timing.stats()
    out: dict[str, Any] = {
        "padded_shapes": format_shapes(shapes) if shapes is not None else None,
        "cold_ms": timing.cold_ms,
        **stats,
        "fps": variant.batch_size * 1000.0 / stats["mean_ms"],
        "preprocess_ms": preprocess_ms,
        "dets_per_image": timing.detections_timed / timing.images_timed,
        **memory,
    }
    if timing.gpu_times_ms:
        gpu = summarize_ms(timing.gpu_times_ms)
        out.update(gpu_mean_ms=gpu["mean_ms"], gpu_median_ms=gpu["median_ms"])
    return out


def _fill_unrun(
    rows: list[dict[str, Any]], bar: Any, stamp: str, env_cols: dict[str, Any], settings: SpeedSettings,
    variant: Variant, num_images: int, status: str, error: str,
) -> None:
    """Rows for the sizes a variant did not run (all of them when it was skipped or failed to set up)."""
    done = {r["size"] for r in rows if r["variant"] == variant.label}
    for size in settings.sizes:
        if size in done:
            continue
        row = _base_row(stamp, env_cols, settings, size, variant, settings.synthetic, num_images)
        row.update(status=status, error=error)
        rows.append(row)
        bar.update(1 + settings.warmup + settings.iters)


# ----------------------------------------------------------------------------------------------------------
# Files and the terminal


def terminal_summary(result: SpeedRun) -> str:
    """What `kpbench speed` prints: one header line, then the main columns of every row."""
    from kpbench.core.io import to_text_table

    env = result.manifest["environment"]
    settings = result.manifest["settings"]
    cuda = str(env.get("device", "")).startswith("cuda")
    columns = ["variant", "size", "padded_shapes", "cold_ms", "median_ms", "p90_ms", "iqr_over_median", "fps",
               "dets_per_image"]
    columns += ["peak_mem_allocated_mib"] if cuda else ["peak_rss_mib"]
    columns += ["kp_AP", "box_AP"] if settings["accuracy"] else []
    columns += ["status"]
    source = "SYNTHETIC images" if settings["synthetic"] else f"{settings['num_images']} COCO images"
    header = (f"{env.get('device_name')} ({env.get('device')}), {source}, warmup {settings['warmup']}, "
              f"iters {settings['iters']}")
    text = header + "\n" + to_text_table(result.rows, columns, precision=2)
    unstable = [f"{r['variant']} {r['size']}" for r in result.rows if r.get("unstable")]
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
