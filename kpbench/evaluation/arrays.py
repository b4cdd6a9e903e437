"""COCO inputs as arrays: the ground truth an evaluation prepares once, and results records as `DetectionArrays`.

`GroundTruthArrays` holds what COCOeval reads of a GT's annotations, one row per annotation in file order, with
the image and category ids as pycocotools orders them (`p.imgIds` and `p.catIds`, ascending). Annotations of an
image or a category the GT does not list are left out, as pycocotools' `getAnnIds(imgIds, catIds)` leaves them.

Results records convert to `kpbench.core.arrays.DetectionArrays` (row i is result i) and back (the COCO results
dicts a backend that reads dicts needs); `loadres_areas` gives the detection areas pycocotools' loadRes assigns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError


@dataclass(frozen=True)
class GroundTruthArrays:
    """A COCO GT's annotations as arrays (G rows in file order; see the module docstring).

    `iscrowd` is the annotation's iscrowd read for truth (COCOeval's ignore flag) and `crowd` read by int() (its
    repeated matching of crowd regions): they differ only for a fractional iscrowd. `no_keypoints` marks
    num_keypoints == 0 (keypoint GTs only; all False for boxes).
    """

    source: str
    image_ids: np.ndarray  # (I,) int64 ascending, unique
    category_ids: np.ndarray  # (C,) int64 ascending, unique
    ann_ids: np.ndarray  # (G,) int64
    ann_image: np.ndarray  # (G,) index into image_ids
    ann_category: np.ndarray  # (G,) index into category_ids
    boxes: np.ndarray  # (G, 4) float64 xywh
    areas: np.ndarray  # (G,) float64
    iscrowd: np.ndarray  # (G,) bool
    crowd: np.ndarray  # (G,) bool
    no_keypoints: np.ndarray  # (G,) bool
    keypoints: np.ndarray | None = None  # (G, K, 3) float64
    num_annotations: int = 0  # every annotation of the file (pycocotools' len(getAnnIds()))

    def __len__(self) -> int:
        return len(self.ann_ids)

    @property
    def num_keypoints(self) -> int:
        return 0 if self.keypoints is None else int(self.keypoints.shape[1])

    def image_index(self, image_ids: np.ndarray, what: str = "detection") -> np.ndarray:
        """Positions of `image_ids` in `image_ids` (every one must be a GT image, as pycocotools' loadRes asserts)."""
        image_ids = np.asarray(image_ids).reshape(-1)
        if len(self.image_ids) == 0:
            if len(image_ids):
                raise KpbenchError(f"{what}s refer to images, but the ground truth has none")
            return np.zeros(0, dtype=np.int64)
        index = np.searchsorted(self.image_ids, image_ids).clip(0, len(self.image_ids) - 1)
        unknown = self.image_ids[index] != image_ids
        if unknown.any():
            raise KpbenchError(f"{what} image id {image_ids[unknown][0]!r} is not an image of the ground truth "
                               "(pycocotools' loadRes refuses such results)")
        return index.astype(np.int64)

    def category_index(self, category_ids: np.ndarray) -> np.ndarray:
        """Positions of `category_ids` in `category_ids`, -1 for a category the GT does not list."""
        category_ids = np.asarray(category_ids).reshape(-1)
        if len(self.category_ids) == 0:
            return np.full(len(category_ids), -1, dtype=np.int64)
        index = np.searchsorted(self.category_ids, category_ids).clip(0, len(self.category_ids) - 1)
        return np.where(self.category_ids[index] == category_ids, index, -1).astype(np.int64)

    def only_categories(self, category_ids: Sequence[int]) -> GroundTruthArrays:
        """The GT restricted to some categories (p.catIds set to them), its images unchanged."""
        keep_cats = np.unique(np.asarray(list(category_ids), dtype=np.int64))
        rows = np.isin(self.category_ids[self.ann_category], keep_cats)
        return self._rows(rows, self.image_ids, keep_cats)

    def only_images(self, image_ids: Sequence[int] | np.ndarray) -> GroundTruthArrays:
        """The GT restricted to some of its images (p.imgIds set to them), its categories unchanged."""
        keep = np.unique(np.asarray(image_ids, dtype=np.int64))
        rows = np.isin(self.image_ids[self.ann_image], keep)
        return self._rows(rows, keep, self.category_ids)

    def _rows(self, rows: np.ndarray, image_ids: np.ndarray, category_ids: np.ndarray) -> GroundTruthArrays:
        images = self.image_ids[self.ann_image[rows]]
        cats = self.category_ids[self.ann_category[rows]]
        return replace(
            self, image_ids=image_ids, category_ids=category_ids, ann_ids=self.ann_ids[rows],
            ann_image=np.searchsorted(image_ids, images).astype(np.int64),
            ann_category=np.searchsorted(category_ids, cats).astype(np.int64),
            boxes=self.boxes[rows], areas=self.areas[rows], iscrowd=self.iscrowd[rows], crowd=self.crowd[rows],
            no_keypoints=self.no_keypoints[rows], keypoints=None if self.keypoints is None else self.keypoints[rows],
            num_annotations=int(np.count_nonzero(rows)),
        )

    def with_ignored(self, extra: np.ndarray) -> GroundTruthArrays:
        """The same GT with more annotations ignored (as num_keypoints 0 makes a keypoint GT ignored)."""
        return replace(self, no_keypoints=self.no_keypoints | np.asarray(extra, dtype=bool))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values in ascending order: np.unique's result without its cost on the evaluate path (numpy
    2's np.unique imports numpy.ma, 10+ ms of a whole `kpbench evaluate`, to ask whether its input is masked)."""
    ordered = np.sort(np.asarray(values).reshape(-1))
    if len(ordered) < 2:
        return ordered
    distinct = np.empty(len(ordered), dtype=bool)
    distinct[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
    return ordered[distinct]


def in_sorted(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """(N,) whether each value is in `ordered` (ascending, distinct): np.isin by binary search."""
    values = np.asarray(values).reshape(-1)
    if len(ordered) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.searchsorted(ordered, values).clip(0, len(ordered) - 1)
    return ordered[index] == values


def _ids(values: list[Any], what: str) -> np.ndarray:
    """Ids as int64 (a float that equals an integer, as pycocotools finds it, included)."""
    try:
        arr = np.asarray(values)
        if arr.dtype.kind == "f":
            if not np.all(arr == np.round(arr)):
                raise ValueError("not an integer")
        elif arr.dtype.kind not in "iu":
            raise ValueError(f"dtype {arr.dtype}")
        return arr.astype(np.int64).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise KpbenchError(f"{what}: ids must be integers ({exc})") from None


def ground_truth_arrays(
    dataset: dict[str, Any], source: str, num_keypoints: int | None = None,
) -> GroundTruthArrays:
    """The arrays of a parsed COCO GT dict (checked by `kpbench.evaluation.cocofiles`, or at least well formed).
    With `num_keypoints` (a keypoint evaluation) every annotation needs a keypoints list of 3 x that length."""
    try:
        image_ids = np.unique(_ids([img["id"] for img in dataset["images"]], f"{source}: images"))
        category_ids = np.unique(_ids([c["id"] for c in dataset["categories"]], f"{source}: categories"))
        annotations = dataset["annotations"]
        num_annotations = len(annotations)
        ann_images = _ids([a["image_id"] for a in annotations], f"{source}: annotations")
        ann_cats = _ids([a["category_id"] for a in annotations], f"{source}: annotations")
        keep = np.isin(ann_images, image_ids) & np.isin(ann_cats, category_ids)
        if not keep.all():
            annotations = [a for a, k in zip(annotations, keep.tolist()) if k]
            ann_images, ann_cats = ann_images[keep], ann_cats[keep]
        g = len(annotations)
        ann_ids = _ids([a["id"] for a in annotations], f"{source}: annotations")
        boxes = np.asarray([a["bbox"] for a in annotations], dtype=np.float64).reshape(g, 4)
        areas = np.asarray([a["area"] for a in annotations], dtype=np.float64).reshape(g)
        iscrowd = np.fromiter((bool(a["iscrowd"]) for a in annotations), dtype=bool, count=g)
        crowd = np.fromiter((int(a["iscrowd"]) != 0 for a in annotations), dtype=bool, count=g)
        keypoints = None
        no_keypoints = np.zeros(g, dtype=bool)
        if num_keypoints is not None:
            lists = [a["keypoints"] for a in annotations]
            if any(len(kps) != 3 * num_keypoints for kps in lists):
                raise KpbenchError(f"{source}: every annotation needs {3 * num_keypoints} keypoint values")
            keypoints = np.asarray(lists, dtype=np.float64).reshape(g, num_keypoints, 3)
            no_keypoints = np.asarray([a["num_keypoints"] for a in annotations], dtype=np.float64).reshape(g) == 0
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise KpbenchError(f"{source}: not a COCO ground truth (images, annotations, categories): {exc!r}") from None
    return GroundTruthArrays(
        source=source, image_ids=image_ids, category_ids=category_ids, ann_ids=ann_ids,
        ann_image=np.searchsorted(image_ids, ann_images).astype(np.int64),
        ann_category=np.searchsorted(category_ids, ann_cats).astype(np.int64), boxes=boxes, areas=areas,
        iscrowd=iscrowd, crowd=crowd, no_keypoints=no_keypoints, keypoints=keypoints, num_annotations=num_annotations,
    )


def loadres_takes_box(record: dict[str, Any]) -> bool:
    """Whether pycocotools' loadRes, given `record` first, reads the file as box results: it then takes every
    detection's area from its 'bbox' (its exact test: a 'bbox' key whose value is not [])."""
    return "bbox" in record and record["bbox"] != []


def loadres_areas(results: list[dict[str, Any]]) -> np.ndarray | None:
    """The detection areas pycocotools' loadRes assigns when it reads keypoint results as box results (its first
    record has a non-empty 'bbox': every area is then bbox w * h), else None (areas from the keypoints' extent)."""
    if not results or not loadres_takes_box(results[0]):
        return None
    try:
        return np.asarray([float(r["bbox"][2]) * float(r["bbox"][3]) for r in results], dtype=np.float64)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise KpbenchError(f"results: the first result has a 'bbox', so every one needs one (as loadRes reads them): "
                           f"{exc!r}") from None


def detections_from_records(records: list[dict[str, Any]], iou_type: str, num_keypoints: int = 0) -> DetectionArrays:
    """COCO results records as DetectionArrays (row i is record i): keypoints for "keypoints" (N, K, 3), boxes for
    "bbox" (N, 4), and a keypoint result's 'bbox' too when every record has one. Ids that are floats equal to an
    integer (1.0, which pycocotools takes as 1) become integers."""
    n = len(records)
    try:
        image_ids = _ids([r["image_id"] for r in records], "results") if n else np.zeros(0, np.int64)
        category_ids = _ids([r["category_id"] for r in records], "results") if n else np.zeros(0, np.int64)
        scores = np.asarray([r["score"] for r in records], dtype=np.float64).reshape(n)
        keypoints = boxes = None
        if iou_type == "keypoints":
            keypoints = np.asarray([r["keypoints"] for r in records], dtype=np.float64).reshape(n, num_keypoints, 3)
            if n and all(loadres_takes_box(r) for r in records):
                boxes = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4)
        else:
            boxes = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4)
    except (KeyError, TypeError, ValueError) as exc:
        raise KpbenchError(f"results: not COCO {iou_type} results: {exc!r}") from None
    return DetectionArrays(image_ids=image_ids, category_ids=category_ids, scores=scores, boxes=boxes,
                           keypoints=keypoints)


def records_from_detections(detections: DetectionArrays, iou_type: str) -> list[dict[str, Any]]:
    """COCO results dicts of DetectionArrays, torchvision's convention: keypoint results carry the person score and
    no 'bbox' (pycocotools would take the area from it); box results are xywh. Numbers are the arrays' float64
    values, ids Python ints."""
    image_ids = detections.image_ids.tolist()
    category_ids = detections.category_ids.tolist()
    scores = detections.scores.tolist()
    if iou_type == "keypoints":
        if detections.keypoints is None:
            raise KpbenchError("keypoint results: the detections have no keypoints")
        flat = detections.keypoints.reshape(len(detections), detections.keypoints.shape[1] * 3).tolist()
        return [{"image_id": i, "category_id": c, "keypoints": k, "score": s}
                for i, c, k, s in zip(image_ids, category_ids, flat, scores)]
    if detections.boxes is None:
        raise KpbenchError("box results: the detections have no boxes")
    boxes = detections.boxes.tolist()
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image_ids, category_ids, boxes, scores)]


def keypoint_extents(keypoints: np.ndarray) -> np.ndarray:
    """(N, 4) min x, max x, min y, max y of each row's K keypoints (labelled or not; NaN propagates, as np.min's
    does). Blocks of rows are transposed first, so that each min and max runs across contiguous rows rather than
    along a short strided axis (three times faster)."""
    n = len(keypoints)
    out = np.empty((n, 4))
    for lo in range(0, n, 4096):
        xy = np.ascontiguousarray(keypoints[lo:lo + 4096, :, :2].transpose(2, 1, 0))  # (2, K, rows)
        out[lo:lo + 4096, 0] = xy[0].min(axis=0)
        out[lo:lo + 4096, 1] = xy[0].max(axis=0)
        out[lo:lo + 4096, 2] = xy[1].min(axis=0)
        out[lo:lo + 4096, 3] = xy[1].max(axis=0)
    return out


def keypoint_extent_areas(keypoints: np.ndarray, extents: np.ndarray | None = None) -> np.ndarray:
    """(N,) the area pycocotools' loadRes gives keypoint results without a 'bbox': the extent of all K keypoints
    (labelled or not), (max x - min x) * (max y - min y). `extents`: keypoint_extents(keypoints), if at hand."""
    if len(keypoints) == 0:
        return np.zeros(0)
    extents = keypoint_extents(keypoints) if extents is None else extents
    with np.errstate(invalid="ignore", over="ignore"):
        return (extents[:, 1] - extents[:, 0]) * (extents[:, 3] - extents[:, 2])


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) w * h of xywh boxes, as loadRes computes a box result's area."""
    with np.errstate(over="ignore"):
        return boxes[:, 2] * boxes[:, 3]
