"""The inputs of the error analysis as arrays: the GT persons and the analysed detections (each image's top 20 by
score, COCOeval's cut), with what pycocotools' loadRes makes of them (detection areas), and each image's persons
indexed for loops over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema

if TYPE_CHECKING:
    from kpbench.core.arrays import DetectionArrays
    from kpbench.evaluation.cocofiles import CheckedDetections, GroundTruth, Results


@dataclass
class ErrorInputs:
    """The validated inputs as arrays: GT persons (G) and the analysed detections (N, each image's top 20)."""

    gt: GroundTruth
    schema: KeypointSchema
    gt_ids: np.ndarray  # (G,)
    gt_image: np.ndarray  # (G,)
    gt_keypoints: np.ndarray  # (G, K, 3)
    gt_boxes: np.ndarray  # (G, 4)
    gt_areas: np.ndarray  # (G,)
    gt_counted: np.ndarray  # (G,) not crowd and num_keypoints > 0: what COCOeval does not ignore by itself
    gt_labelled: np.ndarray  # (G,) num_keypoints != 0 (coco-analyze analyses a match only to such a person)
    dt_image: np.ndarray  # (N,) the analysed detections, in `prepare_inputs`' order
    dt_category: np.ndarray  # (N,)
    dt_keypoints: np.ndarray  # (N, K, 3)
    dt_scores: np.ndarray  # (N,)
    # Each analysed detection's 'bbox' (N, 4) and its area (N,) as pycocotools' loadRes reads them when it reads
    # the results as boxes (the first result has a 'bbox'), else None: areas then come from the (corrected)
    # keypoints' extent.
    dt_boxes: np.ndarray | None
    box_areas: np.ndarray | None
    dt_result: np.ndarray  # (N,) each analysed detection's position in the results
    num_results: int
    crowded_images: int  # images with more than maxDets detections

    def counted_in(self, area: tuple[str, float, float]) -> np.ndarray:
        """(G,) the GT persons COCOeval counts in the area range (label, lo, hi): not crowd, labelled, inside."""
        return self.gt_counted & (self.gt_areas >= area[1]) & (self.gt_areas <= area[2])


def top_detections(image: np.ndarray, scores: np.ndarray, max_dets: int) -> np.ndarray:
    """Positions (ascending) of each image's top `max_dets` detections in COCOeval's order: by descending score,
    equal scores in results order (its stable mergesort on -score)."""
    order = np.lexsort((-scores, image))  # lexsort is stable: equal keys keep results order
    sorted_image = image[order]
    first = np.searchsorted(sorted_image, sorted_image, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < max_dets])


def result_arrays(results: Results | CheckedDetections, num_keypoints: int) -> tuple[DetectionArrays, np.ndarray]:
    """Checked keypoint results as arrays (row i is result i) and (N, 4) the 'bbox' of each result that carries
    one pycocotools' loadRes would read (NaN rows for the others). Results records are converted here, at the edge;
    DetectionArrays (a run's detections) are keypoint results without a 'bbox'."""
    from kpbench.evaluation.arrays import detections_from_records, loadres_takes_box
    from kpbench.evaluation.cocofiles import CheckedDetections

    if isinstance(results, CheckedDetections):
        detections = results.detections
        return detections, np.full((len(detections), 4), np.nan)
    records = results.results
    boxes = np.full((len(records), 4), np.nan)
    for i, record in enumerate(records):
        if loadres_takes_box(record) and isinstance(record["bbox"], list) and len(record["bbox"]) == 4:
            boxes[i] = np.asarray(record["bbox"], dtype=np.float64)
    return detections_from_records(records, "keypoints", num_keypoints), boxes


def prepare_inputs(gt: GroundTruth, results: Results | CheckedDetections, coco_analyze_order: bool = False
                   ) -> ErrorInputs:
    """The inputs as arrays, each image's top 20 detections in results order, or with `coco_analyze_order` in
    the order coco-analyze's run_analysis.py hands them to loadRes: images by first appearance, each image's
    detections by descending score (stable). The order within an image breaks ties between equal corrected
    scores; the first result decides whether loadRes reads the results as boxes."""
    schema = gt.schema
    if schema is None:  # load_ground_truth for keypoints always sets one
        raise KpbenchError(f"{gt.source}: no keypoint schema")
    if schema.protocol != "coco":
        raise KpbenchError(f"the {schema.name} schema's own protocol ({schema.protocol}) is not COCOeval's: the "
                           "error analysis follows COCOeval's keypoint matching only")
    categories = gt.dataset["categories"]
    if len(categories) != 1:
        raise KpbenchError(f"{gt.source}: {len(categories)} categories; the error analysis scores one keypoint "
                           "category (evaluate each category's GT on its own)")
    k = schema.num_keypoints
    anns = gt.dataset["annotations"]
    gt_keypoints = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), k, 3)
    detections, boxes = result_arrays(results, k)
    scores, image = detections.scores, detections.image_ids
    kept = top_detections(image, scores, KEYPOINT_MAX_DETS)
    counts = np.bincount(np.unique(image, return_inverse=True)[1]) if len(image) else np.zeros(0, np.int64)
    if coco_analyze_order and len(kept):
        images, first_seen = np.unique(image, return_index=True)
        first = first_seen[np.searchsorted(images, image[kept])]
        kept = kept[np.lexsort((kept, -scores[kept], first))]
    # loadRes reads every result as a box when the first it is given carries a 'bbox': each then needs one.
    first_result = (kept[0] if coco_analyze_order else 0) if len(kept) else None
    dt_boxes = None
    if first_result is not None and not np.isnan(boxes[first_result]).any():
        dt_boxes = boxes[kept]
        missing = np.isnan(dt_boxes).any(axis=1)
        if missing.any():
            raise KpbenchError(f"{results.source}: result {int(kept[np.argmax(missing)])} has no 'bbox' but the "
                               f"first result given to pycocotools' loadRes (result {int(first_result)}) has one; "
                               "it would crash (give every result a 'bbox', or none)")
    assert detections.keypoints is not None  # keypoint results
    return ErrorInputs(
        gt=gt,
        schema=schema,
        gt_ids=np.asarray([a["id"] for a in anns], dtype=np.int64),
        gt_image=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        gt_keypoints=gt_keypoints,
        gt_boxes=np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4),
        gt_areas=np.asarray([a["area"] for a in anns], dtype=np.float64),
        # pycocotools' _prepare: ignore = iscrowd, then for keypoints num_keypoints == 0 or ignore.
        gt_counted=np.asarray([not a["iscrowd"] and a["num_keypoints"] != 0 for a in anns], dtype=bool),
        gt_labelled=np.asarray([a["num_keypoints"] != 0 for a in anns], dtype=bool),
        dt_image=image[kept],
        dt_category=detections.category_ids[kept],
        dt_keypoints=detections.keypoints[kept].reshape(len(kept), k, 3),
        dt_scores=scores[kept],
        dt_boxes=dt_boxes,
        box_areas=None if dt_boxes is None else dt_boxes[:, 2] * dt_boxes[:, 3],
        dt_result=kept,
        num_results=len(detections),
        crowded_images=int((counts > KEYPOINT_MAX_DETS).sum()),
    )


class ImageIndex:
    """Each image's GT persons (a subset of them, by mask), as slots: slot s of a query is the s-th GT of its
    image, so that a loop over slots (at most the largest number of persons per image) is vectorised over all
    queries and keypoints."""

    def __init__(self, gt_image: np.ndarray, mask: np.ndarray | None = None) -> None:
        members = np.flatnonzero(mask) if mask is not None else np.arange(len(gt_image))
        self.order = members[np.argsort(gt_image[members], kind="stable")]
        self.sorted_image = gt_image[self.order]

    def slots(self, query_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) into `order` for each query's image."""
        start = np.searchsorted(self.sorted_image, query_image, side="left")
        end = np.searchsorted(self.sorted_image, query_image, side="right")
        return start, end - start


def flip_index(schema: KeypointSchema) -> np.ndarray | None:
    """flip(j) for every keypoint (a keypoint without a partner is its own), or None without flip pairs."""
    if not schema.flip_pairs:
        return None
    flip = np.arange(schema.num_keypoints)
    for a, b in schema.flip_pairs:
        flip[a], flip[b] = b, a
    return flip


def keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """[x0, y0, x1 - x0, y1 - y0] of each detection's keypoints (all K): the box whose w·h is pycocotools'
    loadRes area of keypoint results."""
    x, y = keypoints[..., 0], keypoints[..., 1]
    x0, y0 = x.min(axis=1), y.min(axis=1)
    return np.stack([x0, y0, x.max(axis=1) - x0, y.max(axis=1) - y0], axis=1)


def original_areas(data: ErrorInputs) -> np.ndarray:
    """The analysed detections' areas as pycocotools' loadRes sets them from the original results: their boxes'
    w·h when it reads them as boxes, else their keypoints' extent."""
    if data.box_areas is not None:
        return data.box_areas
    boxes = keypoint_boxes(data.dt_keypoints)
    return boxes[:, 2] * boxes[:, 3]
