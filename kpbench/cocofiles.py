"""Loading and validating COCO ground truth and results. Every "bad input" error is raised here.

pycocotools trusts its input: a NaN coordinate, a 50-value keypoint list or an unknown image id either crash
deep inside it or change the numbers silently. We check everything first, with messages that name the file,
the record and the field.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.errors import KpbenchError, KpbenchWarning
from kpbench.schema import KEYPOINT_MAX_DETS, NUM_KEYPOINTS

IOU_TYPES = ("keypoints", "bbox")


@dataclass
class GroundTruth:
    """A validated COCO ground-truth dataset (the parsed JSON) and where it came from."""

    dataset: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.dataset["images"]]


@dataclass
class Results:
    """A validated COCO results list and where it came from."""

    results: list[dict[str, Any]]
    source: str
    notes: list[str] = field(default_factory=list)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or bad JSON is a one-line KpbenchError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise KpbenchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise KpbenchError(f"{path}: is a directory, expected a JSON file") from None
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KpbenchError(f"{path}: not valid JSON ({exc})") from None


def _finite_array(values: list[Any], width: int | None, where: str, name: str, kind: str) -> np.ndarray:
    """Stack per-record numeric lists into a float array; locate the first bad record for the message."""
    try:
        arr = np.asarray(values, dtype=np.float64)
        ok_shape = arr.ndim == (1 if width is None else 2) and (width is None or arr.shape[1] == width)
    except (ValueError, TypeError):
        ok_shape = False
    if not ok_shape:
        for i, v in enumerate(values):
            if width is None:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' must be a number, got {v!r}")
            else:
                if not isinstance(v, list):
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' must be a list, got {type(v).__name__}")
                if len(v) != width:
                    hint = f" (3 x {NUM_KEYPOINTS} keypoints)" if name == "keypoints" else ""
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' has {len(v)} values, expected {width}{hint}")
                if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' holds a non-number")
        raise KpbenchError(f"{where}: '{name}' values are not numeric")  # pragma: no cover - defensive
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise KpbenchError(f"{where}: {kind} {i}: '{name}' holds NaN or infinity")
    return arr


def _require_keys(records: list[Any], keys: tuple[str, ...], where: str, kind: str) -> None:
    required = set(keys)
    # Fast path: one C-level subset test per record; the slow loop below only runs to word the error.
    if all(type(rec) is dict and required <= rec.keys() for rec in records):
        return
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise KpbenchError(f"{where}: {kind} {i} is a {type(rec).__name__}, expected an object")
        missing = [k for k in keys if k not in rec]
        if missing:
            ident = f" (id {rec['id']})" if "id" in rec else ""
            raise KpbenchError(f"{where}: {kind} {i}{ident} has no '{missing[0]}'")


def validate_ground_truth(data: Any, source: str, iou_type: str = "keypoints", copy: bool = True) -> GroundTruth:
    """Check a parsed GT dataset; renumber an annotation id 0 (which pycocotools mis-scores) with a warning.

    With `copy` (the default) the GroundTruth holds copies of the annotation records, so neither the renumbering
    nor pycocotools (which adds keys to them) changes the caller's data. Loaders of files we parsed skip it.
    """
    if iou_type not in IOU_TYPES:
        raise KpbenchError(f"--iou-type: must be keypoints or bbox, got {iou_type!r}")
    if not isinstance(data, dict):
        raise KpbenchError(f"{source}: ground truth must be a JSON object with 'images', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise KpbenchError(f"{source}: ground truth has no '{key}' list")
    _require_keys(data["images"], ("id",), source, "image")
    _require_keys(data["categories"], ("id",), source, "category")
    needed = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
    if iou_type == "keypoints":
        needed += ("keypoints", "num_keypoints")
    annotations = [dict(a) if isinstance(a, dict) else a for a in data["annotations"]] if copy else data["annotations"]
    _require_keys(annotations, needed, source, "annotation")
    if annotations:
        _finite_array([a["bbox"] for a in annotations], 4, source, "bbox", "annotation")
        _finite_array([a["area"] for a in annotations], None, source, "area", "annotation")
        if iou_type == "keypoints":
            _finite_array([a["keypoints"] for a in annotations], 3 * NUM_KEYPOINTS, source, "keypoints", "annotation")
    image_ids = {img["id"] for img in data["images"]}
    for i, ann in enumerate(annotations):
        if ann["image_id"] not in image_ids:
            raise KpbenchError(f"{source}: annotation {i} (id {ann['id']}) refers to image {ann['image_id']}, not in 'images'")
    notes: list[str] = []
    ids = [a["id"] for a in annotations]
    if len(set(ids)) != len(ids):
        raise KpbenchError(f"{source}: annotation ids are not unique (pycocotools would mix their matches up)")
    if 0 in set(ids):
        # pycocotools stores "unmatched" as GT id 0, so a detection matched to GT id 0 counts as unmatched
        # (a false positive) and the GT as missed. We renumber it rather than refuse: the ids are arbitrary.
        new_id = max(i for i in ids if isinstance(i, int)) + 1
        for ann in annotations:
            if ann["id"] == 0:
                ann["id"] = new_id
        msg = (
            f"{source}: annotation id 0 renumbered to {new_id}; pycocotools treats a match to id 0 as no match "
            "and would score it as a false positive plus a miss"
        )
        warnings.warn(msg, KpbenchWarning, stacklevel=3)
    if iou_type == "keypoints":
        for cat in data["categories"]:
            names = cat.get("keypoints")
            if names is not None and len(names) != NUM_KEYPOINTS:
                raise KpbenchError(
                    f"{source}: category {cat['id']} has {len(names)} keypoints, expected {NUM_KEYPOINTS} (COCO persons)"
                )
        unlabelled = sum(1 for a in annotations if not a["iscrowd"] and a["num_keypoints"] == 0)
        if unlabelled:
            notes.append(
                f"{unlabelled} GT person(s) have no labelled keypoints: COCOeval ignores them, and a detection "
                "whose OKS to their doubled box region passes a threshold matches one and is ignored too (neither TP nor FP)"
            )
    dataset = dict(data)
    dataset["annotations"] = annotations
    return GroundTruth(dataset=dataset, source=source, notes=notes)


def load_ground_truth(gt: str | Path | dict[str, Any] | GroundTruth, iou_type: str = "keypoints") -> GroundTruth:
    """Load (from a path) or take (a parsed dict) COCO ground truth, validated."""
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, dict):
        return validate_ground_truth(gt, "ground truth", iou_type)
    return validate_ground_truth(read_json(gt), str(gt), iou_type, copy=False)


def validate_results(
    data: Any, source: str, gt: GroundTruth, iou_type: str = "keypoints", copy: bool = True
) -> Results:
    """Check a parsed results list against its ground truth; with `copy`, the records are copied (see above)."""
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        raise KpbenchError(f"{source}: this is a ground-truth file (it has 'annotations'); expected a results list")
    if not isinstance(data, list):
        raise KpbenchError(f"{source}: results must be a JSON list of detections, got {type(data).__name__}")
    results = [dict(r) if isinstance(r, dict) else r for r in data] if copy else data
    notes: list[str] = []
    if not results:
        notes.append(f"{source}: no detections; every AP and AR is 0")
        return Results(results=results, source=source, notes=notes)
    geometry = "keypoints" if iou_type == "keypoints" else "bbox"
    _require_keys(results, ("image_id", "category_id", "score", geometry), source, "result")
    _finite_array([r["score"] for r in results], None, source, "score", "result")
    if iou_type == "keypoints":
        _finite_array([r["keypoints"] for r in results], 3 * NUM_KEYPOINTS, source, "keypoints", "result")
    else:
        boxes = _finite_array([r["bbox"] for r in results], 4, source, "bbox", "result")
        if (boxes[:, 2:] < 0).any():
            i = int(np.argwhere((boxes[:, 2:] < 0).any(axis=1))[0][0])
            raise KpbenchError(f"{source}: result {i}: 'bbox' has a negative width or height (expected x, y, w, h)")
    image_ids = {img["id"] for img in gt.dataset["images"]}
    category_ids = {cat["id"] for cat in gt.dataset["categories"]}
    result_images = [r["image_id"] for r in results]
    for field_name, values, known in (
        ("image_id", result_images, image_ids),
        ("category_id", [r["category_id"] for r in results], category_ids),
    ):
        unknown = set(values) - known
        if unknown:
            i = next(i for i, v in enumerate(values) if v in unknown)
            raise KpbenchError(
                f"{source}: result {i}: {field_name} {values[i]!r} is not in the ground truth ({gt.source})"
            )
    if iou_type == "keypoints":
        # loadRes picks its branch from the first record: with a non-empty 'bbox' there, every detection's
        # area comes from its box; without, from its keypoints' extent (and any other 'bbox' is overwritten).
        if results[0].get("bbox"):
            missing = next((i for i, r in enumerate(results) if not r.get("bbox")), None)
            if missing is not None:
                raise KpbenchError(
                    f"{source}: result 0 has a 'bbox' but result {missing} has none; pycocotools would crash "
                    "(drop 'bbox' from keypoint results, as torchvision does)"
                )
            msg = (
                f"{source}: keypoint results carry a 'bbox'; pycocotools then takes each detection's area from "
                "the box instead of the keypoints' extent, which changes APm and APl (torchvision's results "
                "carry no bbox)"
            )
            warnings.warn(msg, KpbenchWarning, stacklevel=3)
        crowded = sum(1 for n in Counter(result_images).values() if n > KEYPOINT_MAX_DETS)
        if crowded:
            notes.append(
                f"{crowded} image(s) have more than {KEYPOINT_MAX_DETS} detections; COCO keypoint evaluation keeps "
                f"only the top {KEYPOINT_MAX_DETS} by score per image (maxDets is hard-coded in pycocotools)"
            )
    return Results(results=results, source=source, notes=notes)


def load_results(
    results: str | Path | list[dict[str, Any]] | Results, gt: GroundTruth, iou_type: str = "keypoints"
) -> Results:
    """Load (from a path) or take (a parsed list) COCO results, validated against `gt`."""
    if isinstance(results, Results):
        return results
    if isinstance(results, list):
        return validate_results(results, "results", gt, iou_type)
    return validate_results(read_json(results), str(results), gt, iou_type, copy=False)
