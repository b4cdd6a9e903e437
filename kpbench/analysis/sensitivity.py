"""Sensitivity of keypoint AP to occlusion and crowding: AP by the number of visible keypoints and by overlap.

Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation" (ICCV 2017), split the GT
persons into benchmarks and score each one separately. Their bins (coco-analyze, the paper's code,
`analysisAPI/occlusionAndCrowdingSensitivity.py`):

- visible keypoints, for COCO's 17: 1-5, 6-10, 11-15, 16-17 (a GT's labelled keypoints, v > 0; in COCO files that
  is its `num_keypoints`);
- overlap: 0, 1-2, 3+ other GT annotations of the same image whose box IoU with the GT exceeds 0.1 (strictly;
  IoU = intersection / union of the xywh `bbox`es, 0 when the union is 0); 3+ as the paper's figures label it
  (coco-analyze's last group lists 3 ... 8). As in coco-analyze every annotation of the keypoint category in the
  image counts as another person, crowd regions and persons without labelled keypoints included: they crowd the
  image just the same.

A schema with K keypoints other than 17 scales the visible-keypoint bins: the upper ends 5, 10 and 15 become
round(5K/17), round(10K/17), round(15K/17) (halves rounded up), the last bin ends at K, and bins left empty by the
rounding (small K) are dropped. CrowdPose's 14 give 1-4, 5-8, 9-12, 13-14; WholeBody's 133 give 1-39, 40-78,
79-117, 118-133.

Each bin's AP is COCOeval's keypoint AP (OKS .50:.05:.95, AP50, AP75; maxDets 20, area "all"; the schema's
sigmas) with every GT outside the bin ignored, the way COCOeval ignores a GT outside an area range: an ignored
GT is not a miss, and a detection matched to it is ignored, neither TP nor FP (COCOeval matches it to an ignored
GT only when no GT of the bin qualifies). A detection that matches no GT at all is a false positive in EVERY bin:
it belongs to no person, so no bin can claim or disown it, and keeping it everywhere makes each bin's AP read
"this model's AP on a benchmark of only these persons, with its false alarms as they are", which is what
coco-analyze computes (its gtIgnoreIds). GTs COCOeval ignores anyway (crowd, no labelled keypoint, area outside
"all") stay ignored and are counted in no bin. A bin without a GT that counts has COCOeval's AP of -1 (n/a).

The evaluation is `kpbench.evaluation.vectorized.KeypointEvaluator` with its `gt_ignore` (one GT preparation,
one pass per bin), which equals pycocotools bit for bit; in pycocotools the same is num_keypoints = 0 on the GTs
outside the bin (its _prepare overwrites an 'ignore' key with iscrowd, so 'ignore' cannot be used).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KeypointSchema
from kpbench.evaluation.cocofiles import (
    CheckedDetections,
    GroundTruth,
    Results,
    load_ground_truth,
    load_results,
    validate_detection_arrays,
)
from kpbench.evaluation.settings import EvalSettings
from kpbench.evaluation.vectorized import KeypointEvaluator, loadres_areas, results_to_arrays

KEYPOINT_TABLE = "visible keypoints"
OVERLAP_TABLE = "overlap"
COLUMNS: tuple[str, ...] = ("table", "bin", "num_gt", "AP", "AP50", "AP75")
# The paper's bins (coco-analyze): (lo, hi) inclusive; hi None is open-ended.
COCO_KEYPOINT_BINS: tuple[tuple[int, int], ...] = ((1, 5), (6, 10), (11, 15), (16, 17))
OVERLAP_BINS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 2), (3, None))
OVERLAP_IOU = 0.1  # another person overlaps when box IoU > this
_COCO_K = 17

Bin = tuple[int, int | None]


def keypoint_bins(num_keypoints: int) -> tuple[tuple[int, int], ...]:
    """The visible-keypoint bins for K keypoints: the paper's 1-5, 6-10, 11-15, 16-17 for K = 17, else the upper
    ends scaled by K/17 (round half up), the last one K, empty bins dropped."""
    if num_keypoints < 1:
        raise KpbenchError(f"keypoint bins: need at least one keypoint, got {num_keypoints}")
    # round(i * 5K / 17) in integers: floor((10 i K + 17) / 34), so no float decides a bin edge.
    uppers = [(10 * i * num_keypoints + _COCO_K) // (2 * _COCO_K) for i in range(1, len(COCO_KEYPOINT_BINS))]
    bins, lo = [], 1
    for hi in [*uppers, num_keypoints]:
        if hi >= lo:
            bins.append((lo, hi))
            lo = hi + 1
    return tuple(bins)


def bin_label(lo: int, hi: int | None) -> str:
    """"1-5", "0" (one value) or "3+" (open-ended)."""
    if hi is None:
        return f"{lo}+"
    return str(lo) if hi == lo else f"{lo}-{hi}"


def _check_bins(bins: Sequence[Sequence[Any]], name: str) -> list[Bin]:
    out: list[Bin] = []
    for b in bins:
        if len(b) != 2:
            raise KpbenchError(f"{name}: each bin is (lo, hi) with hi None for open-ended, got {b!r}")
        lo, hi = b
        if not isinstance(lo, (int, np.integer)) or (hi is not None and not isinstance(hi, (int, np.integer))):
            raise KpbenchError(f"{name}: bin bounds must be integers, got {b!r}")
        if lo < 0 or (hi is not None and hi < lo):
            raise KpbenchError(f"{name}: a bin needs 0 <= lo <= hi, got {b!r}")
        out.append((int(lo), None if hi is None else int(hi)))
    if not out:
        raise KpbenchError(f"{name}: no bins")
    return out


def visible_keypoint_counts(evaluator: KeypointEvaluator) -> np.ndarray:
    """(G,) labelled (v > 0) keypoints of each GT, in the evaluator's GT order (`gt_ann_ids`)."""
    return np.count_nonzero(evaluator.gt_keypoints[:, :, 2] > 0, axis=1)


def box_iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """(n, n) IoU of xywh boxes (n, 4); 0 where the union is 0 (two empty boxes)."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    w = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0.0, None)
    h = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0.0, None)
    inter = w * h
    area = boxes[:, 2] * boxes[:, 3]
    union = area[:, None] + area[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def overlap_counts(evaluator: KeypointEvaluator, iou: float = OVERLAP_IOU) -> np.ndarray:
    """(G,) how many other GT annotations of the same image have box IoU > `iou` with each GT (evaluator order)."""
    counts = np.zeros(len(evaluator.gt_ann_ids), dtype=np.int64)
    image_index = evaluator.gt_image_index  # GTs are grouped by image, so each image is one contiguous run
    starts = np.flatnonzero(np.r_[True, image_index[1:] != image_index[:-1]]) if len(image_index) else []
    ends = [*list(starts[1:]), len(image_index)]
    for start, end in zip(starts, ends):
        if end - start < 2:
            continue
        ious = box_iou_matrix(evaluator.gt_boxes[start:end])
        np.fill_diagonal(ious, 0.0)  # not with itself
        counts[start:end] = np.count_nonzero(ious > iou, axis=1)
    return counts


def _counted_gt(evaluator: KeypointEvaluator) -> np.ndarray:
    """(G,) the GTs COCOeval counts at area "all": not crowd, with labelled keypoints, area within the range."""
    lo, hi = evaluator.area_ranges[evaluator.area_all]
    return ~evaluator.gt_ignore & (evaluator.gt_areas >= lo) & (evaluator.gt_areas <= hi)


def _detections(records: list[dict[str, Any]], num_keypoints: int, category_id: Any
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The keypoint category's results as arrays, with the areas pycocotools' loadRes would give them (read from
    the boxes when the file's first record has one)."""
    areas = loadres_areas(records)
    if areas is not None:
        areas = areas[np.asarray([r.get("category_id") == category_id for r in records], dtype=bool)]
    return (*results_to_arrays(records, num_keypoints, category_id), areas)


def prepared_inputs(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays | CheckedDetections,
    schema: KeypointSchema | None = None,
    settings: EvalSettings | None = None,
) -> tuple[KeypointEvaluator, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Checked inputs as a `KeypointEvaluator` and the detection arrays (image_ids, keypoints, scores, areas).
    `results` may be arrays (`DetectionArrays`, checked here, or `CheckedDetections`: keypoint results without a
    'bbox', so their areas are the keypoints' extent), which are never made dicts."""
    gt_data = load_ground_truth(gt, "keypoints", schema)
    schema = gt_data.schema
    assert schema is not None  # a keypoints GroundTruth always has one
    evaluator = KeypointEvaluator(gt_data.dataset, schema.sigma_array, settings, category_id=schema.category_id)
    if isinstance(results, (DetectionArrays, CheckedDetections)):
        checked = (results if isinstance(results, CheckedDetections)
                   else validate_detection_arrays(results, gt_data, "keypoints"))
        dets = checked.detections.take(checked.detections.category_ids == evaluator.category_id)
        assert dets.keypoints is not None  # checked keypoint results
        return evaluator, (dets.image_ids, dets.keypoints, dets.scores, None)
    res = load_results(results, gt_data, "keypoints")
    return evaluator, _detections(res.results, schema.num_keypoints, evaluator.category_id)


def _in_bin(values: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    return (values >= lo) & (values <= hi) if hi is not None else values >= lo


def bin_masks(
    evaluator: KeypointEvaluator,
    kp_bins: Sequence[tuple[int, int | None]] | None = None,
    overlap_bins: Sequence[tuple[int, int | None]] | None = None,
) -> list[tuple[str, str, np.ndarray]]:
    """(table, bin label, (G,) membership over the evaluator's GTs) of every bin, the visible-keypoint table first;
    the default bins where None. Every annotation of the keypoint category is placed, those COCOeval ignores
    included (the evaluation still ignores them)."""
    kp = _check_bins(kp_bins if kp_bins is not None else keypoint_bins(evaluator.num_keypoints), "keypoint bins")
    ov = _check_bins(overlap_bins if overlap_bins is not None else OVERLAP_BINS, "overlap bins")
    masks = []
    for table, values, bins in ((KEYPOINT_TABLE, visible_keypoint_counts(evaluator), kp),
                                (OVERLAP_TABLE, overlap_counts(evaluator), ov)):
        masks += [(table, bin_label(lo, hi), _in_bin(values, lo, hi)) for lo, hi in bins]
    return masks


def sensitivity_tables(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays | CheckedDetections,
    schema: KeypointSchema | None = None,
    settings: EvalSettings | None = None,
    kp_bins: Sequence[tuple[int, int | None]] | None = None,
    overlap_bins: Sequence[tuple[int, int | None]] | None = None,
) -> list[dict[str, Any]]:
    """Keypoint AP per visible-keypoint bin and per overlap bin (see the module docstring for the rules).

    Rows, the visible-keypoint table first, bins in order: {"table": "visible keypoints" | "overlap",
    "bin": "1-5", "num_gt": GTs of the bin that COCOeval counts, "AP", "AP50", "AP75"} (fractions; -1 where the
    bin has no GT, as COCOeval gives). `schema` as `kpbench.evaluate`'s (None: the one the GT names);
    `settings` (EvalSettings) as COCOeval's, None for COCO's keypoint defaults. `kp_bins` and `overlap_bins`
    replace the default bins: (lo, hi) integer pairs, inclusive, hi None for open-ended.
    """
    evaluator, (image_ids, keypoints, scores, areas) = prepared_inputs(gt, results, schema, settings)
    counted = _counted_gt(evaluator)
    rows: list[dict[str, Any]] = []
    for table, label, in_bin in bin_masks(evaluator, kp_bins, overlap_bins):
        r = evaluator.evaluate(image_ids, keypoints, scores, gt_ignore=~in_bin, areas=areas)
        rows.append({"table": table, "bin": label, "num_gt": int(np.count_nonzero(in_bin & counted)),
                     "AP": r.stats["AP"], "AP50": r.stats["AP50"], "AP75": r.stats["AP75"]})
    return rows
