"""The speed table: its columns and the definition of what was timed, and the rows of one model (every runtime,
variant and size, and the offline rows), each timed on the model's images.

A row is filled by `ModelTable`; anything that goes wrong in it (a variant the model lacks, a runtime that is not
installed, an export that fails, a size whose inputs cannot fit in memory) gives that row status "skipped" or
"failed" with its reason, and the table goes on.

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
variant               readable label, e.g. "fp32-bs1", "fp16-bs4-channels_last", "fp32-bs1-onnxruntime:cpu"
scenario              single-stream, batch or offline
dtype                 fp32, or fp16 / bf16 (autocast in eager; the engine's precision on TensorRT)
batch_size            images per model call
channels_last         model weights and backbone input in channels-last memory format
cudnn_benchmark       torch.backends.cudnn.benchmark on
compile               the runtime is torch.compile
fast_postprocess      kpbench's exact keypoint post-processing (Keypoint R-CNN)
runtime               eager, compile, onnxruntime:cpu|cuda|tensorrt or tensorrt (kpbench.runtimes)
synthetic             True when the images were random (detections drive post-processing time)
num_images            distinct images cycled through
padded_shapes         distinct N x C x H x W batch shapes that reached the network, ";"-separated
box_score_thresh      the model's box score threshold
warmup, iters         untimed and timed calls (the cold call is neither)
export_s              seconds the ONNX export took (when it was made: see build_cached)
build_s               seconds the engine build took: TensorRT's builder; for compile and ONNX Runtime's
                      TensorRT provider, which build at their first call, that first call
load_s                seconds to set the runtime's session up in this process
build_cached          the export/engine came from the build cache (made by an earlier row or run)
build_key             the first 16 hex digits of the build's cache key (sha256)
rebuilds              engine builds after the first that new input shapes caused during the row
runtime_providers     the providers of the ONNX Runtime session, in priority order
cold_ms               the first call at this size and variant (after the build call, where there is one)
mean_ms .. max_ms     mean, std (sample, ddof=1), median, p90, p99 (linear interpolation), min, max of the
                      timed wall-clock calls; p90 is the single-stream latency (batch 1) MLPerf reports
n                     number of timed calls
iqr_ms                interquartile range (p75 - p25) of the timed calls
iqr_over_median       iqr_ms / median_ms, the spread relative to the typical call
unstable              True when iqr_over_median > 0.10 (torch.utils.benchmark's warning threshold)
gpu_mean_ms           mean CUDA-event time of the timed calls (CUDA only)
gpu_median_ms         median CUDA-event time (CUDA only)
fps                   images per second = batch_size * 1000 / mean_ms
ms_per_image          mean_ms / batch_size
preprocess_ms         mean per image of decode + to tensor + to device (synthetic: to device only)
decode_ms, to_device_ms  its two parts
dets_per_image        mean detections per image over the timed calls
stages ..             the stage split (see TIMING_DEFINITION)
gflops_per_image ..   work done (kpbench.engine.work)
memory_estimate_mib   the lower bound of the row's input buffers that the memory guard checked
peak_mem_allocated_mib  torch.cuda.max_memory_allocated during this row (CUDA, torch runtimes only)
peak_mem_reserved_mib   torch.cuda.max_memory_reserved during this row (CUDA, torch runtimes only)
peak_rss_mib          peak resident set size of the process (CPU only), see rss_scope
rss_scope             "row": VmHWM reset before the row via /proc/self/clear_refs; "process": ru_maxrss,
                      the peak over the whole process lifetime (where VmHWM cannot be reset)
accuracy_images       images evaluated for AP (0: --accuracy off)
kp_AP, box_AP         COCO keypoint and box AP on those images, as returned by kpbench.evaluation.cocoeval
accuracy_reference    the eager row a runtime row is compared with (same size, dtype and batch)
delta_kp_AP, _low, _high, delta_box_AP, _low, _high
                      AP of this row - AP of eager on the same images, and the 95% paired bootstrap interval
bootstrap_replicates  image draws of that bootstrap (--bootstrap)
max_keypoint_dev_px, max_box_dev_px, max_score_dev
                      the largest deviation from eager of the detections both give (paired per image by box IoU)
paired_detections, unpaired_detections  how many detections were paired with eager's, and left unpaired
preprocessing         "same as eager", or how the runtime's preprocessing differs (a static export's square
                      padding; padded shapes that differ from eager's)
status                "ok", "failed" or "skipped"
error                 why a row failed or was skipped
====================  ==============================================================================
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.engine.memory import check_fits, peak_memory, reset_peak_memory
from kpbench.engine.speed_accuracy import RUNTIME_ACCURACY_COLUMNS, SAME_PREPROCESSING
from kpbench.engine.speed_inputs import make_batches
from kpbench.engine.speed_variants import EAGER, Variant, VariantSkipped, apply_variant
from kpbench.engine.timing import (
    STAGE_CALLS,
    flop_pass,
    largest_batch,
    stage_pass,
    summarize_ms,
    time_model,
)

if TYPE_CHECKING:
    import torch

    from kpbench.core.config import SpeedSettings
    from kpbench.runtimes.base import BuildCache

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
BUILD_COLUMNS: tuple[str, ...] = (
    "export_s", "build_s", "load_s", "build_cached", "build_key", "rebuilds", "runtime_providers",
)  # fmt: skip
SPEED_COLUMNS: tuple[str, ...] = (
    "timestamp", *ENV_COLUMNS,
    "model", "weights", "weights_sha256", "size", "max_size", "variant", "scenario", "dtype", "batch_size",
    "channels_last", "cudnn_benchmark", "compile", "fast_postprocess", "runtime",
    "synthetic", "num_images", "padded_shapes", "box_score_thresh", "warmup", "iters", *BUILD_COLUMNS,
    "cold_ms", *STAT_COLUMNS, "gpu_mean_ms", "gpu_median_ms", "fps", "ms_per_image", "preprocess_ms", "decode_ms",
    "to_device_ms", "dets_per_image", *STAGE_COLUMNS, *WORK_COLUMNS, "memory_estimate_mib",
    "peak_mem_allocated_mib", "peak_mem_reserved_mib", "peak_rss_mib", "rss_scope",
    "accuracy_images", "kp_AP", "box_AP", *RUNTIME_ACCURACY_COLUMNS, "status", "error",
)  # fmt: skip
# The columns printed on the terminal and put in the Markdown table.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "variant", "size", "padded_shapes", "cold_ms", "mean_ms", "median_ms", "p90_ms", "gpu_mean_ms", "fps",
    "dets_per_image", "stages", "stages_add_up", "gflops_per_image", "achieved_tflops", "peak_fraction",
    "peak_mem_allocated_mib", "peak_rss_mib", "build_s", "rebuilds", "kp_AP", "box_AP", "delta_kp_AP",
    "delta_kp_AP_low", "delta_kp_AP_high", "max_keypoint_dev_px", "unpaired_detections", "preprocessing", "status",
    "error",
)  # fmt: skip
# Keypoint R-CNN's 800:1333 ratio: the long-side cap of a size (the table's definition of max_size).
DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE = 800, 1333


def default_max_size(size: int) -> int:
    """The long-side cap of a size in the speed table: round(size * 1333 / 800)."""
    return round(size * DEFAULT_MAX_SIZE / DEFAULT_MIN_SIZE)


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
- **Runtimes** (`runtime`): eager (the model as built), compile (torch.compile), onnxruntime:cpu|cuda|tensorrt
  and tensorrt (kpbench.runtimes). Exporting and building an engine is its own step, before the row's calls and
  outside them: `export_s`, `build_s` (TensorRT's builder; the first call for runtimes that build there, which
  is then not the cold call), `load_s`, cached by the weights' digest, runtime, opset, input shapes and
  precision (`build_cached`, `build_key`). `rebuilds` counts the engine builds that new input shapes caused
  during the row. ONNX Runtime and TensorRT have no stage split or FLOP count, and their GPU memory is not
  torch's (blank).
- **Accuracy** (`--accuracy N`): keypoint and box AP on the first N images through the same inference loop and
  evaluator as `kpbench run`; a runtime row also gets `delta_*_AP` = its AP minus eager's at the same size,
  dtype and batch on the same images, with the 95% paired bootstrap interval of `kpbench compare`, the largest
  keypoint, box and score deviations from eager's detections, and `preprocessing`: whether its inputs were
  prepared as eager's (a static export pads to squares where eager pads to rectangles).
- **Memory guard**: before a row allocates anything, its input buffers (the model's resize or letterbox buffers,
  input tensor and first feature map for the largest image, times the batch; `memory_estimate_mib`) are checked
  against 80% of the memory available (MemAvailable or the cgroup limit on a CPU, the free GPU memory on CUDA);
  a size that cannot fit fails with the reason instead of taking the machine's memory.
"""


def error_text(exc: BaseException) -> str:
    """An exception as one line: "Type: first line of the message"."""
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




@dataclass
class SpeedRun:
    """The outcome of `run_speed`: rows, manifest and the files written."""

    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    csv_path: Path | None = None
    manifest_path: Path | None = None
    markdown_path: Path | None = None


@dataclass
class AccuracyImages:
    """The images `--accuracy` scores: their files, COCO ids and the full annotation dict."""

    paths: list[Path]
    image_ids: list[int]
    gt: dict[str, Any]


def base_row(
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
        fast_postprocess=variant.fast_postprocess, runtime=variant.runtime, synthetic=synthetic,
        num_images=num_images, box_score_thresh=settings.box_score_thresh, warmup=settings.warmup,
        iters=settings.iters, accuracy_images=0,
    )
    return row


def row_calls(settings: SpeedSettings, batch_size: int) -> int:
    """Model calls one row makes: cold, warm-up and timed calls, the stage pass and the FLOP pass."""
    stage = min(settings.iters, STAGE_CALLS) if settings.stages else 0
    flop = math.ceil(settings.num_images / batch_size) if settings.flops else 0
    return 1 + settings.warmup + settings.iters + stage + flop


class ModelTable:
    """The rows of one model: every runtime, variant and size, and the offline rows, timed on its images."""

    def __init__(
        self, model: Any, images: list[Any], preprocess: dict[str, float], device: torch.device,
        settings: SpeedSettings, stamp: str, model_cols: dict[str, Any], bar: Any,
        log: Callable[[str], None] | None, label: str = "", *, accuracy: AccuracyImages | None = None,
        image_hws: Sequence[tuple[int, int]] = (), cache: BuildCache | None = None, progress: bool = False,
    ) -> None:
        self.label = label  # what names the model in a warning, when the table has several
        self.model, self.images, self.preprocess, self.device = model, images, preprocess, device
        self.settings, self.stamp, self.model_cols, self.bar, self.log = settings, stamp, model_cols, bar, log
        self.accuracy, self.image_hws, self.cache, self.progress = accuracy, list(image_hws), cache, progress
        self.builds: list[dict[str, Any]] = []  # every runtime build of the table, for the manifest
        # Eager's accuracy pass per (size, dtype, batch): what runtime rows are compared with.
        self._references: dict[tuple[int, str, int], dict[str, Any]] = {}
        self._runtimes: dict[str, Any] = {}

    def _row(self, size: int, variant: Variant) -> dict[str, Any]:
        return base_row(self.stamp, self.model_cols, self.settings, size, variant, self.settings.synthetic,
                        len(self.images))

    def _measured(
        self, rows: list[dict[str, Any]], size: int, variant: Variant, measure: Callable[[dict[str, Any]], None]
    ) -> None:
        """One row: `measure` fills it in; anything it raises marks the row failed and the table goes on."""
        import torch

        from kpbench.runtimes.base import RuntimeUnavailable

        row = self._row(size, variant)
        row_start = self.bar.n
        planned = row_calls(self.settings, 1 if variant.offline else variant.batch_size)
        try:
            measure(row)
            row["status"] = "ok"
        except (VariantSkipped, RuntimeUnavailable) as exc:  # decided before the row's first call
            row.update(status="skipped", error=str(exc))
        # Inputs were checked before, so anything raised here (even a KpbenchError from validating the model's own
        # results, such as NaN keypoints under fp16) belongs to this row.
        except Exception as exc:  # a failing variant must not stop the table
            row.update(status="failed", error=error_text(exc))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        self.bar.update(row_start + planned - self.bar.n)  # the calls a failed row did not make
        if self.log and row["status"] != "ok":
            self.log(f"{self.label}{variant.label} size {size}: {row['status']}: {row['error']}")

    def variant_rows(self, variant: Variant, rows: list[dict[str, Any]]) -> None:
        """The rows of one variant, one per size (skipped or failed rows when the variant cannot be set up)."""
        if variant.runtime != EAGER:
            self.runtime_rows(variant, rows)
            return
        batches = make_batches(self.images, variant.batch_size)

        def measure(row: dict[str, Any], size: int) -> None:
            row.update(self.measure(self.model, batches, variant, size))
            if self.accuracy is not None:
                measured = self._accuracy_pass(self.model, variant)
                if variant == Variant(dtype=variant.dtype, batch_size=variant.batch_size):  # the plain baseline
                    self._references[(size, variant.dtype, variant.batch_size)] = measured
                row.update(kp_AP=measured["kp_AP"], box_AP=measured["box_AP"],
                           accuracy_images=len(self.accuracy.image_ids))

        first = len(rows)
        try:
            with apply_variant(self.model, variant, self.device):
                for size in self.settings.sizes:
                    self.bar.set_postfix_str(f"{self.model_cols['model']} {variant.label} size {size}")
                    self._measured(rows, size, variant, lambda row, size=size: measure(row, size))
        except VariantSkipped as exc:
            self._fill_unrun(rows, first, variant, "skipped", str(exc))
        except Exception as exc:  # setting the variant up (or restoring) failed
            self._fill_unrun(rows, first, variant, "failed", error_text(exc))

    def _runtime(self, label: str) -> Any:
        from kpbench.runtimes.base import get_runtime

        if label not in self._runtimes:
            self._runtimes[label] = get_runtime(label)
        return self._runtimes[label]

    def runtime_rows(self, variant: Variant, rows: list[dict[str, Any]]) -> None:
        """The rows of a variant on a runtime other than eager: per size, the build (export, engine; timed and
        cached), the model on the runtime, then the row's calls, accuracy and distance from eager."""
        from kpbench.models.base import set_input_size
        from kpbench.runtimes.base import ExportRequest, RuntimeUnavailable

        runtime = self._runtime(variant.runtime)
        try:
            runtime.check(self.model, self.device)
            unavailable = None
        except RuntimeUnavailable as exc:
            unavailable = str(exc)
        batches = make_batches(self.images, variant.batch_size)

        def measure(row: dict[str, Any], size: int) -> None:
            if unavailable is not None:
                raise RuntimeUnavailable(unavailable)
            request = ExportRequest(size=size, max_size=default_max_size(size), batch_size=variant.batch_size,
                                    precision=variant.dtype, opset=self.settings.opset,
                                    dynamic=self.settings.export_shapes == "dynamic")  # fmt: skip
            reason = runtime.refuses(self.model, request, self.device)
            if reason:
                raise RuntimeUnavailable(reason)
            set_input_size(self.model, size, default_max_size(size))
            # The guard runs on the eager model's footprint before the export allocates anything at this size.
            estimate = check_fits(self.model, self.image_hws, variant.batch_size, self.device, f"size {size}")
            # Eager's pass first, while the model is still eager (compile swaps its backbone while loaded).
            reference = self._reference(size, variant) if self.accuracy is not None else None
            with self._on_runtime(runtime, request, row) as on_runtime:
                row.update(self.measure(on_runtime, batches, variant, size, estimate=estimate, built=True))
                row["rebuilds"] = on_runtime.rebuilds
                if self.accuracy is not None:
                    measured = self._accuracy_pass(on_runtime, variant)
                    measured["preprocessing"] = on_runtime.record.facts.get("preprocessing")
                    row.update(kp_AP=measured["kp_AP"], box_AP=measured["box_AP"],
                               accuracy_images=len(self.accuracy.image_ids))
                    row.update(self._against_eager(reference, measured, size, variant))
                    row["rebuilds"] = on_runtime.rebuilds
            note = row.pop("preprocessing_note", None)
            if self.accuracy is None:  # without an accuracy pass, the timed images' padded shapes tell
                row["preprocessing"] = self._shape_note(rows, row, note)

        for size in self.settings.sizes:
            self.bar.set_postfix_str(f"{self.model_cols['model']} {variant.label} size {size}")
            self._measured(rows, size, variant, lambda row, size=size: measure(row, size))

    @contextlib.contextmanager
    def _on_runtime(self, runtime: Any, request: Any, row: dict[str, Any]) -> Any:
        """Build (or reuse) and load the model on `runtime` for `request`; the row gets the build's columns, the
        manifest its record; closed after the row (compile leaves the model eager again)."""
        from kpbench.runtimes.base import BuildCache

        cache = self.cache if self.cache is not None else BuildCache()
        try:
            record = runtime.build(self.model, request, cache)
            on_runtime = runtime.load(self.model, record, self.device)
            move = getattr(on_runtime, "to", None)
            if move is not None:
                move(self.device)
            record = on_runtime.record
            build_s = record.build_s
            if getattr(runtime, "builds_at_first_call", False):  # this call is the build: time it as such
                build_s = self._first_call(on_runtime, request)
            on_runtime.mark_built()
            row.update(export_s=record.export_s, build_s=build_s, load_s=record.load_s, build_cached=record.cached,
                       build_key=record.cache_key[:16] if record.cache_key else None,
                       runtime_providers=";".join(record.facts.get("session_providers", [])) or None,
                       preprocessing_note=record.facts.get("preprocessing"))
            self.builds.append({"model": self.model_cols.get("model"), "size": request.size,
                                "variant": row["variant"], **record.to_json(), "build_s": build_s})
            yield on_runtime
        finally:
            close = getattr(runtime, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _shape_note(rows: Sequence[dict[str, Any]], row: dict[str, Any], export_note: str | None) -> str | None:
        """The export's own note, and whether the timed images' padded shapes differ from the eager row's of the
        same model, size, dtype and batch ("same as eager" when they match and the export has no note)."""
        eager = next((r for r in rows if r.get("runtime") == EAGER and r.get("model") == row.get("model")
                      and r.get("weights") == row.get("weights") and r.get("size") == row["size"]
                      and r.get("variant") == Variant(dtype=row["dtype"], batch_size=row["batch_size"]).label
                      and r.get("status") == "ok"), None)  # fmt: skip
        notes = [export_note] if export_note else []
        if eager is not None and eager.get("padded_shapes") and row.get("padded_shapes"):
            if eager["padded_shapes"] != row["padded_shapes"]:
                notes.append(f"padded shapes {row['padded_shapes']} where eager gave {eager['padded_shapes']}")
            elif not notes:
                return SAME_PREPROCESSING
        return "; ".join(notes) or None

    def _first_call(self, model: Any, request: Any) -> float:
        """Seconds of one call on the first batch (the build of a runtime that builds at its first call)."""
        import time

        import torch

        from kpbench.engine.device import autocast
        from kpbench.engine.timing import sync

        batch = make_batches(self.images, request.batch_size)[0]
        with torch.inference_mode(), autocast(self.device, request.precision):
            sync(self.device)
            t0 = time.perf_counter()
            model.predict(batch)
            sync(self.device)
        return time.perf_counter() - t0

    def _accuracy_pass(self, model: Any, variant: Variant) -> dict[str, Any]:
        from kpbench.engine.speed_accuracy import accuracy_pass

        assert self.accuracy is not None
        return accuracy_pass(model, self.accuracy.paths, self.accuracy.image_ids, self.accuracy.gt, self.device,
                             variant, self.progress)

    def _reference(self, size: int, variant: Variant) -> dict[str, Any]:
        """Eager's accuracy pass at the same size, dtype and batch: the eager row's, or run now, untimed, when the
        table has no such row."""
        from kpbench.models.base import set_input_size

        key = (size, variant.dtype, variant.batch_size)
        reference = self._references.get(key)
        if reference is None:
            eager = Variant(dtype=variant.dtype, batch_size=variant.batch_size)
            set_input_size(self.model, size, default_max_size(size))
            reference = self._references[key] = self._accuracy_pass(self.model, eager)
        return reference

    def _against_eager(
        self, reference: dict[str, Any], measured: dict[str, Any], size: int, variant: Variant
    ) -> dict[str, Any]:
        """A runtime row's distance from eager's pass on the same images (kpbench.analysis.runtime_accuracy)."""
        from kpbench.engine.speed_accuracy import compare_with_eager

        label = f"eager {Variant(dtype=variant.dtype, batch_size=variant.batch_size).label} size {size}"
        return compare_with_eager(reference, measured, self.settings.bootstrap, self.settings.seed, label)

    def offline_rows(self, dtype: str, rows: list[dict[str, Any]]) -> None:
        """The offline-throughput rows of `dtype`: per size, the largest batch that fits (doubling from 1 up to
        --offline-max-batch, one call each, and no batch whose inputs the memory guard refuses), then timed like
        any row."""
        from kpbench.engine.memory import InputTooLarge
        from kpbench.models.base import set_input_size

        for size in self.settings.sizes:
            self.bar.set_postfix_str(f"{self.model_cols['model']} {dtype} offline size {size}")
            try:
                set_input_size(self.model, size, default_max_size(size))
                check_fits(self.model, self.image_hws, 1, self.device, f"size {size}")
                limit = self.settings.offline_max_batch
                while limit > 1:  # the guard caps the doubling before any call allocates
                    try:
                        check_fits(self.model, self.image_hws, limit, self.device, f"size {size}")
                        break
                    except InputTooLarge:
                        limit //= 2
                batch_size = largest_batch(self.model, self.images, self.device, dtype, limit)
            except Exception as exc:  # no input size, or not even batch 1 runs: the row says why
                self._unrun_row(rows, size, Variant(dtype=dtype, batch_size=1, offline=True), "failed",
                                error_text(exc))
                continue
            variant = Variant(dtype=dtype, batch_size=batch_size, offline=True)
            batches = make_batches(self.images, batch_size)
            self._measured(rows, size, variant,
                           lambda row, b=batches, v=variant, s=size: row.update(self.measure(self.model, b, v, s)))

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

    def measure(
        self, model: Any, batches: list[list[Any]], variant: Variant, size: int, *, estimate: int | None = None,
        built: bool = False,
    ) -> dict[str, Any]:
        """Time one size of one variant (`model` already in the variant's state, or on its runtime when `built`):
        the measured columns of its row; then the stage pass and the FLOP pass, each after the timed calls so that
        neither perturbs them. The memory guard runs first (unless the caller ran it: `estimate`)."""
        from kpbench.engine.work import work_columns
        from kpbench.models.base import record_input_shapes, set_input_size

        device, settings = self.device, self.settings
        set_input_size(model, size, default_max_size(size))
        if not built:
            estimate = check_fits(model, self.image_hws, variant.batch_size, device, f"size {size}")
        rss_scope = reset_peak_memory(device)
        with record_input_shapes(model) as shapes:
            timing = time_model(
                model.predict, batches, device, warmup=settings.warmup, iters=settings.iters, dtype=variant.dtype,
                on_call=lambda: self.bar.update(1),
            )
        memory = peak_memory(device, rss_scope)
        if variant.runtime not in (EAGER, "compile") and device.type == "cuda":
            memory = {}  # torch's allocator does not see ONNX Runtime's or TensorRT's memory
        stats = timing.stats()
        fps = variant.batch_size * 1000.0 / stats["mean_ms"]
        out: dict[str, Any] = {
            "padded_shapes": format_shapes(shapes) if shapes else None,
            "cold_ms": timing.cold_ms,
            **stats,
            "fps": fps,
            "ms_per_image": stats["mean_ms"] / variant.batch_size,
            **self.preprocess,
            "dets_per_image": timing.detections_timed / timing.images_timed,
            "memory_estimate_mib": estimate / 2**20 if estimate is not None else None,
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
