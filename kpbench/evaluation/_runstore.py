"""A private stand-in for the run store's array interface (`kpbench.runs`: `read_run_arrays`, `write_coco_results`),
with the same signatures, over the JSON-lines detections cache. The run store's own module replaces it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.io import write_json
from kpbench.runs.detections import ImageDetections, iter_cache
from kpbench.runs.directory import detections_path, shard_paths


@dataclass
class RunArrays:
    """Every cached image of a run, as arrays: images by ascending id, detections in that order."""

    image_ids: np.ndarray  # (M,) int64 ascending
    counts: np.ndarray  # (M,) detections per image
    detections: DetectionArrays  # (N,) image-id order, each image's detections in the model's order
    boxes_xyxy: np.ndarray  # (N, 4) the model's boxes
    input_shapes: list[tuple[int, ...] | None]  # (M,) the padded batch shape each image went through


def read_run_detections(run_dir: str | Path) -> dict[int, ImageDetections]:
    """Every cached image of a run by id: the merged cache, then any rank shards left by an interrupted
    distributed run (a torn last line is skipped)."""
    run_dir = Path(run_dir)
    found: dict[int, ImageDetections] = {}
    for path in (p for p in (detections_path(run_dir), *shard_paths(run_dir)) if p.exists()):
        for det in iter_cache(path):
            found[det.image_id] = det
    return found


def arrays_of(images: list[ImageDetections], num_keypoints: int) -> RunArrays:
    """RunArrays of per-image detections, in the given (image-id) order."""
    n = sum(len(d) for d in images)
    if n:
        scores = np.concatenate([d.scores for d in images])
        xyxy = np.concatenate([d.boxes for d in images]).reshape(n, 4)
        keypoints = np.concatenate([d.keypoints for d in images]).reshape(n, -1, 3)
        keypoint_scores = np.concatenate([d.keypoint_scores for d in images]).reshape(n, keypoints.shape[1])
        labels = np.concatenate([d.labels for d in images]).astype(np.int64)
    else:
        scores, xyxy, labels = np.zeros(0), np.zeros((0, 4)), np.zeros(0, np.int64)
        keypoints, keypoint_scores = np.zeros((0, num_keypoints, 3)), np.zeros((0, num_keypoints))
    counts = np.asarray([len(d) for d in images], dtype=np.int64)
    image_ids = np.asarray([d.image_id for d in images], dtype=np.int64)
    # COCO box results are xywh from the model's xyxy, computed in float64 as the results files hold them.
    boxes = np.column_stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]])
    detections = DetectionArrays(
        image_ids=np.repeat(image_ids, counts), category_ids=labels, scores=scores, boxes=boxes.reshape(n, 4),
        keypoints=keypoints, keypoint_scores=keypoint_scores,
    )
    return RunArrays(image_ids, counts, detections, xyxy, [d.input_shape for d in images])


def read_run_arrays(run_dir: str | Path) -> RunArrays:
    """Every cached image of a run as arrays (see `read_run_detections`)."""
    found = read_run_detections(run_dir)
    from kpbench.runs.detections import _run_keypoint_count

    return arrays_of([found[i] for i in sorted(found)], _run_keypoint_count(Path(run_dir)))


def write_coco_results(path: str | Path, detections: DetectionArrays, iou_type: str, chunk: int = 20_000) -> None:
    """Write COCO keypoint or box results of the detections (kpbench's results files: keypoint results with the
    person score and no 'bbox', box results xywh), atomically: the bytes `write_json(path, records, indent=None)`
    writes, made `chunk` records at a time so that no more dicts than that exist at once."""
    from kpbench.core.errors import KpbenchError
    from kpbench.evaluation.arrays import records_from_detections

    path = Path(path)
    if len(detections) <= chunk:
        write_json(path, records_from_detections(detections, iou_type), indent=None)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write("[")
            for start in range(0, len(detections), chunk):
                part = records_from_detections(detections.take(np.arange(start, min(start + chunk, len(detections)))),
                                               iou_type)
                fh.write((", " if start else "") + json.dumps(part, allow_nan=False)[1:-1])
            fh.write("]\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
