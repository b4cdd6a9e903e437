"""`kpbench speed`: inference-speed tables, one per device, over models x runtimes x variants x sizes.

The model is driven only through its PoseModel interface and hooks (kpbench.models.base): `set_input_size` for the
sizes, `record_input_shapes` for the padded shapes, `speed_variant` for channels-last and fast post-processing,
`speed_stages` for the stage split, `input_footprint` for the memory guard, and the runtime hooks of
kpbench.runtimes (`export_onnx`, `onnx_model`) for ONNX Runtime and TensorRT.

The speed code is split by role:

- `kpbench.engine.speed` (here): `run_speed`, the command's library call: checks, images, models, the loop over
  models, runtimes and variants, the manifest;
- `kpbench.engine.speed_variants`: the variants and the grid;
- `kpbench.engine.speed_inputs`: the images and batches;
- `kpbench.engine.timing`: the clock (cold, warm-up and timed calls, statistics, stage and FLOP passes, largest
  batch);
- `kpbench.engine.memory`: peak memory and the guard against sizes that cannot fit;
- `kpbench.engine.speed_table`: the columns, the definition of what was timed, and the rows of one model;
- `kpbench.engine.speed_accuracy`: `--accuracy` and the distance of a runtime from eager;
- `kpbench.engine.speed_files`: the CSV, manifest and Markdown files, and the terminal summary;
- `kpbench.runtimes`: one file per runtime (eager, compile, onnxruntime, tensorrt) behind one protocol.

torch and torchvision are imported inside functions, so importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.engine.memory import peak_memory, reset_peak_memory
from kpbench.engine.speed_files import speed_markdown, terminal_summary, write_speed_files
from kpbench.engine.speed_inputs import load_images, make_batches, select_person_images, synthetic_images
from kpbench.engine.speed_table import (
    MANIFEST_KIND,
    MANIFEST_VERSION,
    SPEED_COLUMNS,
    SUMMARY_COLUMNS,
    TIMING_DEFINITION,
    AccuracyImages,
    ModelTable,
    SpeedRun,
    default_max_size,
    environment_columns,
    format_shapes,
    row_calls,
)
from kpbench.engine.speed_variants import OPTION_VARIANTS, Variant, VariantSkipped, apply_variant, build_variants
from kpbench.engine.timing import (
    STAGE_CALLS,
    STAGE_TOLERANCE,
    UNSTABLE_IQR_RATIO,
    TimingResult,
    flop_pass,
    largest_batch,
    stage_pass,
    summarize_ms,
    time_model,
)

if TYPE_CHECKING:
    from kpbench.core.config import LoadedConfig, SpeedSettings

# The public names of the speed code, importable from here as before the split.
__all__ = [
    "MANIFEST_KIND", "MANIFEST_VERSION", "OPTION_VARIANTS", "SPEED_COLUMNS", "STAGE_CALLS", "STAGE_TOLERANCE",
    "SUMMARY_COLUMNS", "TIMING_DEFINITION", "UNSTABLE_IQR_RATIO", "AccuracyImages", "ModelTable", "NoRowSucceeded",
    "SpeedInterrupted", "SpeedRun", "TimingResult", "Variant", "VariantSkipped", "apply_variant", "build_variants",
    "default_max_size", "environment_columns", "flop_pass", "format_shapes", "largest_batch", "load_images",
    "make_batches", "model_options", "peak_memory", "reset_peak_memory", "row_calls", "run_speed",
    "select_person_images", "speed_markdown", "stage_pass", "summarize_ms", "synthetic_images", "terminal_summary",
    "time_model", "write_speed_files",
]  # fmt: skip


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


def _normalized(settings: SpeedSettings, models: list[tuple[Any, str | None]]) -> SpeedSettings:
    """Settings with lists de-duplicated (a size given twice would give two rows with the same key), the model
    specs and weights canonical, and --compile folded into the runtimes."""
    from kpbench.runtimes.base import parse_runtimes

    spec = models[0][0]
    single = len(models) == 1
    runtimes = [r.label for r in parse_runtimes(settings.runtime)]
    if settings.compile and "compile" not in runtimes:
        runtimes.append("compile")
    return dataclasses.replace(
        settings, sizes=list(dict.fromkeys(settings.sizes)), dtype=list(dict.fromkeys(settings.dtype)),
        batch_size=list(dict.fromkeys(settings.batch_size)), runtime=runtimes, compile="compile" in runtimes,
        model=spec.spec if single else [m.spec for m, _ in models],
        weights=models[0][1] if single else [w for _, w in models],
    )


@dataclasses.dataclass
class _Images:
    """The images of a table: where they come from (the manifest's record), the records of COCO images, what
    --accuracy scores, and every image's (height, width) for the memory guard."""

    info: dict[str, Any]
    records: list[dict[str, Any]]
    accuracy: AccuracyImages | None
    hws: list[tuple[int, int]]


def _select_images(settings: SpeedSettings, root: Path | None, spec: Any) -> _Images:
    """The COCO images to time and score (checked: enough of them, every file present), or the synthetic ones."""
    from kpbench.data.coco import annotation_path, image_path, load_annotations
    from kpbench.engine.speed_inputs import SYNTHETIC_HW
    from kpbench.models.registry import declared_schema

    if settings.synthetic:
        info = {"source": "synthetic", "count": settings.num_images, "shape_hw": list(SYNTHETIC_HW),
                "seed": settings.seed}  # fmt: skip
        return _Images(info, [], None, [SYNTHETIC_HW])
    assert root is not None
    ann = annotation_path(root, settings.split)
    gt = load_annotations(root, settings.split)
    wanted = max(settings.num_images, settings.accuracy)
    # Images with an instance of the model's category (a person for Keypoint R-CNN).
    schema = declared_schema(spec)
    records = select_person_images(gt, wanted, schema.category_id if schema is not None else COCO17.category_id)
    if len(records) < wanted:
        option = "--num-images" if settings.num_images >= settings.accuracy else "--accuracy"
        raise KpbenchError(f"{option} {wanted}: {ann} has only {len(records)} images with a keypoint-annotated person")
    # Accuracy images are decoded batch by batch when evaluated, so --accuracy 5000 does not hold 5000 decoded
    # images in memory.
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
    info = {
        "source": "coco", "coco_root": str(root), "split": settings.split, "annotations": str(ann),
        "image_ids": [r["id"] for r in records[: settings.num_images]], "accuracy_image_ids": acc_ids,
        "selection": "ascending image id, >=1 non-crowd person annotation with keypoints",
    }  # fmt: skip
    accuracy = AccuracyImages(acc_paths, acc_ids, gt) if settings.accuracy else None
    used = records[: max(settings.num_images, settings.accuracy)]
    hws = [(int(r["height"]), int(r["width"])) for r in used if r.get("height") and r.get("width")]
    return _Images(info, records, accuracy, hws)


def _manifest(
    settings: SpeedSettings, config: LoadedConfig | None, stamp: str, env: dict[str, Any], spec: Any,
    loaded: Sequence[tuple[Any, Any, Any]], images_info: dict[str, Any], variants: Sequence[Variant],
    builds: list[dict[str, Any]], cache: Any, rows: list[dict[str, Any]], rows_planned: int, interrupted: bool,
) -> dict[str, Any]:
    """The JSON manifest beside the table: settings, config, environment, models, images, variants, runtimes and
    every build, and whether the table is complete."""
    from kpbench.core.config import settings_dict

    infos = [info.to_json() for _, _, info in loaded]
    return {
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
        "runtimes": list(settings.runtime),
        # Every export and engine build of the table: runtime, cache key and its fields, files, timings, facts.
        "builds": builds,
        "runtime_cache": str(cache.root),
        # False when Ctrl-C stopped the table: the rows are those finished before it.
        "complete": not interrupted,
        "rows": len(rows),
        "rows_planned": rows_planned,
        "timing_definition": TIMING_DEFINITION,
        "columns": list(SPEED_COLUMNS),
    }


def _load_models(models: Sequence[tuple[Any, str | None]], settings: SpeedSettings) -> list[tuple[Any, Any, Any]]:
    """(spec, model, info) of every model, each built before any timing: a model that cannot load fails the
    command, not its rows. Sizes are set per row (set_input_size); of the other run options, only those the user
    gave are passed (the model's own defaults apply to the rest), and one the model does not honour is refused."""
    from kpbench.models.base import model_info
    from kpbench.models.registry import given_model_options, load_model

    loaded = []
    for model_spec, model_weights in models:
        options = given_model_options(settings)
        if "seed" not in model_spec.honoured():
            options.pop("seed", None)  # it seeds the synthetic images too: not a model option alone
        model = load_model(model_spec, weights=model_weights, **options)
        loaded.append((model_spec, model, model_info(model)))
    return loaded


def _planned(settings: SpeedSettings, variants: Sequence[Variant]) -> tuple[int, int]:
    """(rows, model calls) of one model's table: every variant and, with --offline, each dtype's offline row, at
    every size."""
    offline = len(settings.dtype) if settings.offline else 0
    calls = sum(row_calls(settings, v.batch_size) for v in variants) + offline * row_calls(settings, 1)
    return (len(variants) + offline) * len(settings.sizes), calls * len(settings.sizes)


def _model_table(
    model_spec: Any, model: Any, info: Any, settings: SpeedSettings, root: Path | None, images: _Images,
    device: Any, env_cols: dict[str, Any], stamp: str, bar: Any, log: Callable[[str], None] | None, cache: Any,
    progress: bool, *, several: bool,
) -> ModelTable:
    """The table of one model: its columns (which model, and exactly which weights file: models are a dimension
    of the table), the model on the device, and its images decoded into its input format."""
    model_cols = {**env_cols, "model": info.name or model_spec.spec, "weights_sha256": info.checkpoint_sha256,
                  "_weights": info.weights}  # fmt: skip
    move = getattr(model, "to", None)
    if move is not None:
        move(device)
    if settings.synthetic:
        timed, preprocess = synthetic_images(settings.num_images, settings.seed, device, model=model)
    else:
        timed, preprocess = load_images(root, settings.split, images.records[: settings.num_images], device, model)
    return ModelTable(model, timed, preprocess, device, settings, stamp, model_cols, bar, log,
                      label=f"{model_cols['model']} " if several else "", accuracy=images.accuracy,
                      image_hws=images.hws, cache=cache, progress=progress)  # fmt: skip


def run_speed(
    settings: SpeedSettings,
    *,
    config: LoadedConfig | None = None,
    progress: bool = True,
    write: bool = True,
    log: Callable[[str], None] | None = None,
) -> SpeedRun:
    """Time the models over settings.sizes x runtimes x variants and (if `write`) write the CSV, manifest and
    Markdown files.

    User mistakes (no COCO root, too few images, --accuracy with --synthetic, an unknown runtime, an --out it
    cannot write into) raise KpbenchError before any timing; a variant or runtime that fails or cannot run here
    gives rows with status "failed" or "skipped" instead of stopping. When no row succeeded, the files are still
    written and `NoRowSucceeded` (a KpbenchError) is raised.
    """
    from kpbench.core.environment import capture_environment
    from kpbench.core.io import ensure_output_dir
    from kpbench.data.coco import resolve_coco_root
    from kpbench.engine.device import resolve_device, warn_slow_dtype
    from kpbench.engine.topdown import check_speed_request
    from kpbench.runtimes.base import BuildCache, check_device

    if check_speed_request(settings) is not None:  # top-down rows: kpbench.engine.topdown_speed (their own table)
        raise KpbenchError("--person-boxes: time a top-down model with kpbench.engine.topdown_speed.run_topdown_speed")
    models = model_options(settings.model, settings.weights)
    settings = _normalized(settings, models)
    spec = models[0][0]
    if settings.accuracy and settings.synthetic:
        raise KpbenchError("--accuracy: needs real COCO images and annotations, not --synthetic")
    root = None if settings.synthetic else resolve_coco_root(settings.coco_root)  # at once: before torch is imported
    import torch

    from kpbench.core.progress import progress_bar

    started = datetime.now(timezone.utc)
    stamp = started.isoformat(timespec="seconds").replace("+00:00", "Z")
    device = resolve_device(settings.device)
    check_device(settings.runtime, device.type)  # tensorrt on a CPU: one error line, before images and models
    if device.type == "cuda":
        torch.cuda.set_device(device)  # empty_cache and anything else that uses the current device

    # Images first: a bad COCO root should fail before the model is built.
    images = _select_images(settings, root, spec)
    if write:  # an unwritable --out must fail now, not after the whole table has been timed
        ensure_output_dir(settings.out, "--out")

    env = capture_environment(device)
    env_cols = environment_columns(env)
    loaded = _load_models(models, settings)
    variants = build_variants(
        settings.dtype, settings.batch_size, runtimes=settings.runtime, channels_last=settings.channels_last,
        cudnn_benchmark=settings.cudnn_benchmark, fast_postprocess=settings.fast_postprocess,
    )
    for dtype in settings.dtype:
        warn_slow_dtype(device, dtype)

    rows: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    rows_per_model, calls_per_model = _planned(settings, variants)
    # The bar counts model calls, so that it moves during a row (a row at size 1024 on a CPU takes minutes).
    bar = progress_bar(total=len(loaded) * calls_per_model, disable=not progress, unit="call", file=sys.stderr)
    cache = BuildCache(settings.runtime_cache)
    interrupted = False
    try:
        for model_spec, model, info in loaded:
            table = _model_table(model_spec, model, info, settings, root, images, device, env_cols, stamp, bar, log,
                                 cache, progress, several=len(loaded) > 1)  # fmt: skip
            try:
                for variant in variants:
                    table.variant_rows(variant, rows)
                if settings.offline:
                    for dtype in settings.dtype:
                        table.offline_rows(dtype, rows)
            finally:
                builds += table.builds
    except KeyboardInterrupt:  # Ctrl-C: keep the finished rows (written below, marked incomplete)
        interrupted = True
    finally:
        bar.close()
        cache.close()

    manifest = _manifest(settings, config, stamp, env, spec, loaded, images.info, variants, builds, cache, rows,
                         len(loaded) * rows_per_model, interrupted)
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
