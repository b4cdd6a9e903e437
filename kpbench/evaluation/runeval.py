"""Evaluating a run directory from its detections store, without the model (and without importing torch).

store -> DetectionArrays (image-id order) -> checks on arrays -> COCOeval on arrays (keypoints and bbox) ->
keypoints_results.json + bbox_results.json (image-id order) and metrics.csv/.md/.json -> a summary that compares
with the published AP when the protocol matches it.

The store is read once, as arrays; no per-detection dicts are made until the COCO results files are written. The
evaluations keep what they evaluated (`EvalResult.inputs`), so the analysis after a run (threshold sweeps, the
per-keypoint breakdown) reads neither the store nor the ground truth again.

The protocol and its deviations are also described here, so that the summary and the manifest agree. The
published AP comes from the model's info recorded in the manifest (format-1 run directories, which predate that
record, look their torchvision weights up in `kpbench.core.published`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import to_text_table
from kpbench.core.published import (
    KEYPOINTRCNN_MAX_SIZE,
    KEYPOINTRCNN_MIN_SIZE,
    KEYPOINTRCNN_PUBLISHED_AP,
    keypointrcnn_weights_name,
)
from kpbench.evaluation.backends import DEFAULT_BACKEND
from kpbench.evaluation.cocofiles import IOU_TYPES
from kpbench.runs.arrays import RunArrays, read_run_arrays, read_run_detections
from kpbench.runs.detections import ImageDetections
from kpbench.runs.directory import (
    bbox_results_path,
    detections_path,
    ground_truth_path,
    keypoint_results_path,
    manifest_path,
    read_manifest,
    write_manifest,
)
from kpbench.runs.results import write_coco_results

if TYPE_CHECKING:
    from kpbench.core.schema import KeypointSchema
    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.evaluation.cocofiles import CheckedDetections, GroundTruth, Results

__all__ = ["RunArrays", "describe_protocol", "evaluate_run", "finished_run_arrays", "read_run_detections",
           "summary_text"]

VAL2017_IMAGES = 5000
# The protocol torchvision's published AP was measured with (its detection reference scripts, batch 1 per GPU).
PUBLISHED_PROTOCOL: dict[str, Any] = {
    "split": "val2017",
    "images": "all",
    "num_images": VAL2017_IMAGES,
    "min_size": KEYPOINTRCNN_MIN_SIZE,
    "max_size": KEYPOINTRCNN_MAX_SIZE,
    "box_score_thresh": 0.05,
    "batch_size": 1,
    "dtype": "fp32",
}


def _own_protocol(model: dict[str, Any]) -> bool:
    """Whether a model's info states its own protocol (its `extra["protocol"]`), as the YOLO adapter does."""
    extra = model.get("extra")
    return isinstance(extra, dict) and isinstance(extra.get("protocol"), dict)


def published_numbers(model: dict[str, Any]) -> dict[str, float] | None:
    """The published numbers of a manifest's model record: the model's own (`ModelInfo.published`), else, for a
    format-1 record, torchvision's for the Keypoint R-CNN weights it names (`kpbench.core.published`)."""
    published = model.get("published")
    if isinstance(published, dict):
        return dict(published)
    name = keypointrcnn_weights_name(model)
    return dict(KEYPOINTRCNN_PUBLISHED_AP[name]) if name is not None and "published" not in model else None


def describe_protocol(
    config: dict[str, Any], model: dict[str, Any], num_images: int, file_images: int
) -> tuple[dict[str, Any], list[str], dict[str, float] | None]:
    """The protocol a run used, its deviations from the published one, and the published AP of its weights.

    `config` is the run's settings dict, `model` its ModelInfo as a dict, `num_images` the evaluated images and
    `file_images` the images listed in the annotation file. Deviations are short strings; none means the run's
    AP is comparable with the published AP. An image selection (--images, --image-ids, --limit) is a deviation
    only when it leaves out images of the annotation file. The published AP is the model's own record
    (`published_numbers`).
    """
    published_name = keypointrcnn_weights_name(model)
    protocol: dict[str, Any] = {
        "split": config["split"],
        "images": config["images"],
        "limit": config.get("limit"),
        "image_ids_given": config.get("image_ids") is not None,
        "num_images": num_images,
        "annotation_file_images": file_images,
        "min_size": config["min_size"],
        "max_size": config["max_size"],
        "box_score_thresh": config["box_score_thresh"],
        "batch_size": config["batch_size"],
        "dtype": config["dtype"],
        "weights": model.get("weights"),
        "weights_source": model.get("source"),
        "published_weights": published_name,
        "keypoint_results": "box score as the person score, no bbox field (torchvision's convention)",
        "evaluation": "COCOeval: keypoints (OKS, maxDets 20) and bbox (IoU, maxDets 1/10/100)",
    }
    deviations: list[str] = []
    if config["split"] != PUBLISHED_PROTOCOL["split"]:
        deviations.append(f"split {config['split']} (published: val2017)")
    chosen = []
    if config["images"] != "all":
        chosen.append(f"--images {config['images']}")
    if config.get("image_ids") is not None:
        chosen.append("--image-ids")
    if config.get("limit") is not None:
        chosen.append(f"--limit {config['limit']}")
    # A selection that keeps every image (--limit 5000 of 5000, --image-ids naming them all) is no subset.
    if num_images < file_images:
        how = f" ({', '.join(chosen)})" if chosen else ""
        deviations.append(f"image subset: {num_images} of {file_images} images{how}")
    if config["split"] == "val2017" and file_images != VAL2017_IMAGES:
        deviations.append(f"the annotation file lists {file_images} images, not the {VAL2017_IMAGES} of val2017")
    if config["dtype"] != "fp32" and _own_protocol(model):
        deviations.append(f"dtype {config['dtype']} through autocast (published: fp32)")
    if _own_protocol(model):
        # A model that states its own protocol (YOLO-pose: Ultralytics' validation settings) lists its deviations;
        # torchvision's transform sizes and box threshold are not its settings.
        extra = model["extra"]
        protocol = {k: v for k, v in protocol.items() if k not in ("min_size", "max_size", "box_score_thresh")}
        protocol.update({"model": model.get("name"), "model_protocol": dict(extra["protocol"]),
                         "published_protocol": model.get("protocol")})
        if config["batch_size"] != 1:
            deviations.append(f"batch_size {config['batch_size']} (published: 1)")
        deviations += [str(d) for d in extra.get("deviations") or []]
        published = model.get("published")
        return protocol, deviations, dict(published) if isinstance(published, dict) else None
    for key, label in (("min_size", "min_size"), ("max_size", "max_size"), ("box_score_thresh", "box_score_thresh"),
                       ("batch_size", "batch_size")):
        if config[key] != PUBLISHED_PROTOCOL[key]:
            deviations.append(f"{label} {config[key]} (published: {PUBLISHED_PROTOCOL[key]})")
    if config["dtype"] != "fp32":
        deviations.append(f"dtype {config['dtype']} through autocast (published: fp32)")
    # Deviations the model states itself (post-processing added to a model, kpbench.engine.postprocess).
    deviations += [str(d) for d in (model.get("extra") or {}).get("deviations") or []]
    if model.get("source") == "random":
        deviations.append(f"no weights: random initialisation (--weights none, seed {model.get('seed')})")
    elif published_name is None:
        deviations.append(f"weights {model.get('weights')}: not a published torchvision file, no published AP")
    return protocol, deviations, published_numbers(model)


def finished_run_arrays(
    run_dir: str | Path, manifest: dict[str, Any] | None = None, arrays: RunArrays | None = None
) -> RunArrays:
    """The detections of every image the run's manifest lists, as arrays in image-id order: the order `kpbench run`
    writes its results files in, so that result i of each file is row i of `.detections`. `arrays` (the store as
    read already) saves reading it.

    A manifest without image ids, or an image without cached detections, is a KpbenchError; so is a non-finite
    score, box or keypoint (named by its store file and image).
    """
    run_dir = Path(run_dir)
    if manifest is None:
        manifest = read_manifest(run_dir)
    listed = manifest.get("image_ids")
    if not isinstance(listed, list) or not all(type(i) is int for i in listed):
        raise KpbenchError(f"{run_dir}: the manifest lists no 'image_ids' (was the run started by `kpbench run`?)")
    wanted = np.unique(np.asarray(listed, dtype=np.int64))
    found = read_run_arrays(run_dir) if arrays is None else arrays
    cached = np.isin(wanted, found.image_ids)
    if not cached.all():
        raise KpbenchError(
            f"{run_dir}: run incomplete, {int(cached.sum())} of {len(wanted)} images have detections "
            "(re-run the same `kpbench run` command to finish it)"
        )
    found = found.select(wanted)  # the images the manifest lists (the store may hold others: a narrowed rerun)
    check_finite_run_arrays(run_dir, found)
    return found


def finished_run_detections(run_dir: str | Path, manifest: dict[str, Any] | None = None) -> list[ImageDetections]:
    """`finished_run_arrays` as one ImageDetections per image (image-id order), for code that reads a run image by
    image (drawing, the error analysis)."""
    return list(finished_run_arrays(run_dir, manifest).images())


def load_run_ground_truth(run_dir: str | Path, iou_types: Sequence[str] = IOU_TYPES) -> dict[str, GroundTruth]:
    """The run's ground_truth.json, parsed once and validated for each iou type ({iou_type: GroundTruth}, each
    with its own annotation records, since pycocotools adds keys to them); a KpbenchError when it is missing."""
    from kpbench.evaluation.cocofiles import read_json, validate_ground_truth

    path = ground_truth_path(run_dir)
    if not path.exists():
        raise KpbenchError(f"{path}: missing from the run directory (re-run the same `kpbench run` command to restore it)")
    data = read_json(path)
    schema = run_schema(run_dir)
    return {iou_type: validate_ground_truth(data, str(path), iou_type, schema=schema) for iou_type in iou_types}


def run_schema(run_dir: str | Path) -> KeypointSchema | None:
    """The keypoint schema a run directory's manifest records (format 2), or None: a version-1 run (no schema
    recorded) is COCO persons, which its ground truth's category names."""
    from kpbench.runs.directory import manifest_path, run_format

    if not manifest_path(run_dir).is_file():
        return None
    manifest = read_manifest(run_dir)  # read once: the schema comes from the same parse
    return run_format(manifest).schema if "schema" in manifest else None


def check_finite_run_arrays(run_dir: str | Path, arrays: RunArrays) -> None:
    """Every score, box and keypoint that goes into the results files is finite; otherwise a KpbenchError naming
    the store file, the image id, the detection and its position in the rebuilt results (JSON has no NaN, and
    COCOeval would score it silently wrong)."""
    det = arrays.detections
    n = len(det)
    if n == 0:
        return
    bad = np.zeros(n, dtype=bool)
    first: dict[str, np.ndarray] = {}
    for name, values in (("keypoints", det.keypoints), ("score", det.scores), ("bbox", arrays.boxes_xyxy)):
        if values is None:
            continue
        not_finite = ~np.isfinite(np.asarray(values, dtype=np.float64).reshape(n, -1)).all(axis=1)
        first[name] = not_finite
        bad |= not_finite
    if not bad.any():
        return
    position = int(np.argmax(bad))
    image = int(np.searchsorted(np.cumsum(arrays.counts), position, side="right"))
    image_id = int(arrays.image_ids[image])
    j = position - int(np.sum(arrays.counts[:image]))
    name = next(name for name, flags in first.items() if flags[position])
    try:
        cache = arrays.file_of(image_id)  # the file whose record was read (a shard's wins over the store's)
    except KeyError:  # arrays made without their files
        cache = detections_path(run_dir)
    raise KpbenchError(
        f"{cache}: image {image_id}, detection {j} (result {position} of the rebuilt results): "
        f"'{name}' holds NaN or infinity; the cache is damaged or the model gave non-finite outputs "
        "(redo the run with `kpbench run ... --overwrite`)"
    )


def rebuilt_source(run_dir: str | Path) -> str:
    """How the checks name results rebuilt from a run's store."""
    return f"results rebuilt from {detections_path(run_dir)}"


def run_checked_detections(
    run_dir: str | Path, arrays: RunArrays, gt: dict[str, GroundTruth]
) -> dict[str, CheckedDetections]:
    """The run's detections checked as any results file is, for each iou type of `gt` ({iou_type: GroundTruth},
    from load_run_ground_truth): result i is row i of `arrays.detections`."""
    from kpbench.evaluation.cocofiles import validate_detection_arrays

    source = rebuilt_source(run_dir)
    return {t: validate_detection_arrays(arrays.detections, g, t, source) for t, g in gt.items()}


def run_results(
    run_dir: str | Path, detections: Sequence[ImageDetections], gt: dict[str, GroundTruth]
) -> dict[str, Results]:
    """The run's COCO results as checked dicts (image-id order: result i is detection i of `detections`), for each
    iou type of `gt`: for code that reads results records (the error analysis). The evaluation itself works on
    arrays (`run_checked_detections`)."""
    from kpbench.evaluation.cocofiles import validate_results
    from kpbench.runs.detections import to_coco_results

    keypoint_results, bbox_results = to_coco_results(detections)
    by_type = {"keypoints": keypoint_results, "bbox": bbox_results}
    return {t: validate_results(by_type[t], rebuilt_source(run_dir), g, t) for t, g in gt.items()}


def detection_stamps(run_dir: str | Path) -> list[list[Any]]:
    """[name, size, mtime_ns, inode] of each detections file of the run (the store and any shards): taken before
    the detections are read, so that a store rewritten while they are (a resume) never matches what was read."""
    from kpbench.runs.directory import detection_files

    return [_stamp(p) for p in detection_files(run_dir)]


def _stamp(path: Path) -> list[Any]:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns, st.st_ino]


def results_files_record(run_dir: str | Path, image_ids: np.ndarray, detections: list[list[Any]]) -> dict[str, Any]:
    """What the COCO results files were written from, and what they were: the images written (count and CRC-32 of
    their ids), the `detection_stamps` taken before the detections were read, and [name, size, mtime_ns, inode] of
    each results file, for `results_files_current`."""
    import zlib

    ids = np.ascontiguousarray(image_ids, dtype=np.int64)
    return {"images": [len(ids), zlib.crc32(ids.tobytes())], "detections": detections,
            "results": [_stamp(keypoint_results_path(run_dir)), _stamp(bbox_results_path(run_dir))]}


def results_files_current(
    run_dir: str | Path, manifest: dict[str, Any], image_ids: np.ndarray, detections: list[list[Any]]
) -> bool:
    """Whether the run's COCO results files are the ones written from its store as it is now: the manifest's
    `results_files` record (written with them) equals the images, the detections files as read (`detections`, the
    stamps taken before reading them) and the results files' size, modification time and inode, so neither the
    store (a resumed or merged run rewrites it) nor a results file (edited, replaced, deleted) has changed since.
    Then evaluating the run again need not rewrite them: they would get the same bytes (the encoder is
    deterministic), and at 500,000 detections writing them is half of `kpbench evaluate RUN_DIR`."""
    record = manifest.get("results_files")
    if not isinstance(record, dict):
        return False
    try:
        return record == results_files_record(run_dir, image_ids, detections)
    except OSError:  # a results file is missing
        return False


def evaluate_run(
    run_dir: str | Path,
    backend: str = DEFAULT_BACKEND,
    write: bool = True,
    on_write: Callable[[Path], None] | None = None,
    arrays: RunArrays | None = None,
    on_keep: Callable[[Path], None] | None = None,
) -> dict[str, EvalResult]:
    """Evaluate a finished run from its store; returns {"keypoints": EvalResult, "bbox": EvalResult}.

    The store is read once as arrays (or `arrays`, as the run holds them already), checked and evaluated before
    anything is written. With `write` (the default) it then writes the run's keypoints_results.json and
    bbox_results.json (unless they are up to date: `results_files_current`; `on_keep` is called with each one
    kept), metrics.csv/.md/.json, and records the stats in the manifest; `on_write` is called with each path
    written. Reads only the run directory (manifest, store, ground_truth.json); the model is not needed. Each result
    keeps its inputs (`EvalResult.inputs`: the GT and the detections, keypoint scores included).
    """
    from kpbench.evaluation.cocoeval import check_backend, evaluate, metrics_json, write_metrics

    run_dir = Path(run_dir)
    check_backend(backend)
    started = time.perf_counter()
    manifest = read_manifest(run_dir)
    stamps = detection_stamps(run_dir)  # before reading (or as the run holds them: just written)
    ra = finished_run_arrays(run_dir, manifest, arrays)
    gt = load_run_ground_truth(run_dir)
    checked = run_checked_detections(run_dir, ra, gt)
    results = {
        iou_type: evaluate(gt[iou_type], checked[iou_type], iou_type=iou_type, backend=backend)
        for iou_type in IOU_TYPES
    }
    written: list[Path] = []
    if write:
        files = [keypoint_results_path(run_dir), bbox_results_path(run_dir)]
        if results_files_current(run_dir, manifest, ra.image_ids, stamps):
            for path in files:
                if on_keep is not None:
                    on_keep(path)
            record = manifest["results_files"]
        else:
            write_coco_results(files[0], ra.detections, "keypoints")
            write_coco_results(files[1], ra.detections, "bbox")
            written += files
            record = results_files_record(run_dir, ra.image_ids, stamps)
        written += write_metrics(run_dir, results)
        manifest = read_manifest(run_dir)
        manifest["results_files"] = record
        manifest["evaluation"] = {
            "backend": backend,
            "seconds": round(time.perf_counter() - started, 3),
            "num_detections": len(ra.detections),
            "stats": metrics_json(results),
            "notes": sorted({note for r in results.values() for note in r.notes}),
        }
        write_manifest(run_dir, manifest)
        written.append(manifest_path(run_dir))
    if on_write is not None:
        for path in written:
            on_write(path)
    return results


def stats_table(results: dict[str, EvalResult]) -> str:
    """A plain-text table: one row per iou type, stats in percent with one decimal (COCO's -1, "no GT", as n/a)."""
    from kpbench.evaluation.cocoeval import PERCENT_NOTE, percent

    lines = []
    for iou_type, result in results.items():
        row = {"": iou_type, **{name: percent(value) for name, value in result.stats.items()}}
        lines.append(to_text_table([row]))
    return "\n".join(lines) + f"({PERCENT_NOTE})\n"


def summary_text(manifest: dict[str, Any], results: dict[str, EvalResult], run_dir: str | Path | None = None) -> str:
    """What `kpbench run` prints at the end: the stats, then the published AP comparison when the protocol
    matches, else the list of deviations that make the numbers incomparable."""
    deviations: Sequence[str] = manifest.get("deviations") or []
    published = manifest.get("published")
    weights = (manifest.get("protocol") or {}).get("published_weights") or (manifest.get("model") or {}).get("weights")
    num_images = len(manifest.get("image_ids", []))
    where = f"run {run_dir}" if run_dir is not None else "run"
    lines = [
        f"{where}: {num_images} images, weights {weights}, "
        f"device {(manifest.get('environment') or {}).get('device', '?')}",
        stats_table(results).rstrip("\n"),
        "",
    ]
    from kpbench.evaluation.person_boxes import person_box_line

    top_down = person_box_line(manifest)  # which protocol and person boxes the numbers come from
    if top_down:
        lines[1:1] = [top_down]
    kp_ap = results["keypoints"].stats["AP"] if "keypoints" in results else None
    box_ap = results["bbox"].stats["AP"] if "bbox" in results else None
    if published and not deviations:
        source = (manifest.get("protocol") or {}).get("published_protocol") or "torchvision's published AP"
        lines.append(f"Published protocol matched; comparison with the published AP for {weights} ({source}):")
        for label, ours, theirs in (("keypoint AP", kp_ap, published.get("kp_AP")),
                                    ("box AP", box_ap, published.get("box_AP"))):
            if ours is None or theirs is None:
                continue
            lines.append(f"  {label:<12} {100 * ours:5.1f}  published {theirs:5.1f}  difference {100 * ours - theirs:+.1f}")
    else:
        if published:
            shown = (f"kp {published.get('kp_AP')}, box {published.get('box_AP')}" if "box_AP" in published
                     else ", ".join(f"{k} {v}" for k, v in published.items()))
            lines.append(f"Not comparable with the published AP of {weights} ({shown}): the run deviates from the "
                         "protocol:")
        else:
            lines.append("No published AP to compare with; deviations from the published protocol:")
        lines.extend(f"  - {d}" for d in deviations)
    return "\n".join(lines) + "\n"


def summarize_run(run_dir: str | Path, results: dict[str, EvalResult]) -> str:
    """`summary_text` for a run directory (reads its manifest)."""
    return summary_text(read_manifest(run_dir), results, run_dir)
