"""Results as a model: `kpbench run --results FILE.json` makes a run directory from COCO keypoint results made
elsewhere, without running anything, so that thresholds, keypoints, draw, compare and html work for any model that
kpbench cannot run.

Each result becomes one cached detection of its image: its keypoints as given (x, y and the third value), its
score, its category; its box is its `bbox` (xywh) when it has one, else the extent of its keypoints; its keypoint
scores are its `keypoint_scores` list when it has one (K numbers), else the keypoints' third values. Their kind is
"probability" when every one lies in [0, 1], else "logit" (the manifest records it; `keypoint_score_kind`
overrides). Within an image the results keep their file order, so the run's AP equals the file's: COCOeval sorts
each image's detections by score with a stable sort, and orders images by id (tested against evaluate(GT, RES)).
One difference is said, not hidden: the run's keypoint results carry no `bbox`, as kpbench's never do, so a file
whose first result has one (pycocotools then takes every area from the boxes) may score other APm/APl.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.io import atomic_write_text, ensure_output_dir, file_digest, json_text, read_json

KINDS = ("probability", "logit")


@dataclass
class ResultsRun:
    """What `run_from_results` made."""

    run_dir: Path
    results: dict[str, Any]  # {iou_type: EvalResult}
    manifest: dict[str, Any]


def _detections_from_results(
    records: list[dict[str, Any]], image_ids: list[int], num_keypoints: int, source: str
) -> tuple[list[Any], np.ndarray]:
    """One ImageDetections per image (image-id order, file order within an image), and all keypoint scores."""
    from kpbench.runs.detections import ImageDetections

    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in image_ids}
    for record in records:
        by_image[int(record["image_id"])].append(record)
    out, all_scores = [], []
    for image_id in image_ids:
        rows = by_image[image_id]
        kps = np.array([r["keypoints"] for r in rows], dtype=np.float64).reshape(-1, num_keypoints, 3)
        scores = np.zeros((len(rows), num_keypoints))
        boxes = np.zeros((len(rows), 4))
        for i, r in enumerate(rows):
            given = r.get("keypoint_scores")
            if given is not None:
                values = np.asarray(given, dtype=np.float64) if isinstance(given, list) else None
                if values is None or values.shape != (num_keypoints,) or not np.isfinite(values).all():
                    raise KpbenchError(f"{source}: a result of image {image_id}: 'keypoint_scores' must be a list of "
                                       f"{num_keypoints} finite numbers")
                scores[i] = values
            else:
                scores[i] = kps[i, :, 2]
            bbox = r.get("bbox")
            if isinstance(bbox, list) and len(bbox) == 4:
                x, y, w, h = (float(v) for v in bbox)
                boxes[i] = [x, y, x + w, y + h]
            else:
                boxes[i] = [kps[i, :, 0].min(), kps[i, :, 1].min(), kps[i, :, 0].max(), kps[i, :, 1].max()]
        out.append(ImageDetections(
            image_id=image_id, boxes=boxes, scores=np.array([float(r["score"]) for r in rows], dtype=np.float64),
            labels=np.array([int(r["category_id"]) for r in rows], dtype=np.int64), keypoints=kps,
            keypoint_scores=scores,
        ))  # fmt: skip
        all_scores.append(scores)
    return out, (np.concatenate(all_scores) if all_scores else np.zeros((0, num_keypoints)))


def run_from_results(
    results_path: str | Path,
    gt_path: str | Path,
    out: str | Path,
    coco_root: str | Path | None = None,
    split: str = "val2017",
    keypoint_score_kind: str | None = None,
    overwrite: bool = False,
) -> ResultsRun:
    """Make a run directory from a COCO keypoint results file and its GT, then evaluate it. The analysis files
    `kpbench run` writes after (threshold sweeps, breakdown, plots) are `kpbench.analyse_run(run_dir, results)`."""
    from kpbench.data.coco import restrict_ground_truth
    from kpbench.evaluation.cocofiles import load_ground_truth, load_results
    from kpbench.evaluation.runeval import evaluate_run
    from kpbench.runs.directory import (
        FORMAT_VERSION,
        clear_run_files,
        ground_truth_path,
        is_run_dir,
        lock_run_dir,
        store_path,
        write_manifest,
    )
    from kpbench.runs.store import create_store, encode_image

    if keypoint_score_kind is not None and keypoint_score_kind not in KINDS:
        raise KpbenchError(f"--keypoint-score-kind: must be probability or logit, got {keypoint_score_kind!r}")
    results_path, gt_path, run_dir = Path(results_path), Path(gt_path), Path(out)
    gt = load_ground_truth(gt_path, "keypoints")
    records = load_results(results_path, gt, "keypoints").results
    schema = gt.schema
    assert schema is not None  # a keypoints GroundTruth always has one
    if records and "bbox" in records[0] and records[0]["bbox"] != []:
        warnings.warn(f"{results_path}: result 0 carries a 'bbox', so pycocotools takes every area from the boxes; "
                      "the run's keypoint results carry none (kpbench's convention), so APm/APl may differ from "
                      "evaluating the file itself", KpbenchWarning, stacklevel=2)
    if is_run_dir(run_dir) and not overwrite:
        raise KpbenchError(f"{run_dir}: already a run directory; use another --out, or pass --overwrite")
    ensure_output_dir(run_dir)
    if overwrite:
        clear_run_files(run_dir)  # and rank shards and analysis files: nothing of the old run is read again
    image_ids = sorted(int(img["id"]) for img in gt.dataset["images"])
    detections, kp_scores = _detections_from_results(records, image_ids, schema.num_keypoints, str(results_path))
    kind = keypoint_score_kind or ("probability" if kp_scores.size == 0 or
                                   ((kp_scores >= 0) & (kp_scores <= 1)).all() else "logit")
    digest = file_digest(results_path)
    raw_gt = read_json(gt_path)
    run_gt = restrict_ground_truth(raw_gt, image_ids)
    box_areas = schema.protocol == "crowdpose" and any("area" not in a for a in run_gt["annotations"])
    if box_areas:
        # CrowdPose has no areas: the box evaluation of the run needs them too, so the run's GT gets the scale the
        # keypoint protocol uses (w * h * 0.53), and the manifest says so.
        from kpbench.evaluation.cocofiles import CROWDPOSE_BOX_AREA_FACTOR

        for ann in run_gt["annotations"]:
            if "area" not in ann:
                ann["area"] = ann["bbox"][2] * ann["bbox"][3] * CROWDPOSE_BOX_AREA_FACTOR
    with lock_run_dir(run_dir):
        atomic_write_text(ground_truth_path(run_dir), json_text(run_gt, indent=None))
        create_store(store_path(run_dir), (encode_image(det) for det in detections))
        manifest = {
            "kpbench_run_version": FORMAT_VERSION,
            "format_version": FORMAT_VERSION,
            "status": "running",
            "command_line": None,
            "coco_root": str(coco_root) if coco_root is not None else None,
            "split": split,
            "annotation_file": {"path": str(gt_path), "sha256": file_digest(gt_path),
                                "images": len(image_ids)},
            "num_images": len(image_ids),
            "image_ids": image_ids,
            "model": {"weights": str(results_path), "source": "results", "checkpoint_path": str(results_path),
                      "checkpoint_sha256": digest, "name": f"results:{results_path.name}",
                      "keypoint_score_kind": kind},
            "model_spec": {"spec": f"results:{results_path}", "kind": "results", "target": str(results_path)},
            "schema": schema.to_json(),
            "keypoint_score_kind": kind,
            "protocol": {"results_file": str(results_path), "results_sha256": digest, "num_results": len(records)},
            "deviations": ["results made elsewhere: kpbench did not run the model, so its protocol is unknown",
                           *([] if any("bbox" in r for r in records) else
                             ["the results carry no boxes: box AP is scored on their keypoints' extents"]),
                           *(["the GT has no areas: the run's ground_truth.json takes w * h * 0.53 (CrowdPose's OKS "
                              "scale), which box AP's area ranges then use too"] if box_areas else [])],
            "published": None,
        }
        write_manifest(run_dir, manifest)
        try:
            results = evaluate_run(run_dir)
        except BaseException as exc:
            manifest.update(status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            write_manifest(run_dir, manifest)
            raise
        manifest = {**read_json(run_dir / "manifest.json"), "status": "complete"}  # with evaluate_run's record
        write_manifest(run_dir, manifest)
    return ResultsRun(run_dir=run_dir, results=results, manifest=manifest)
