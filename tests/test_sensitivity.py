"""Sensitivity tables (AP by visible keypoints and by overlap): the bins, hand-computed APs, and equality with
pycocotools run on a GT whose out-of-bin persons get num_keypoints = 0 (its way of ignoring a GT)."""

from __future__ import annotations

import copy
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, load, requires_shared

from kpbench.analysis.sensitivity import (
    KEYPOINT_TABLE,
    OVERLAP_TABLE,
    bin_label,
    bin_masks,
    box_iou_matrix,
    keypoint_bins,
    prepared_inputs,
    sensitivity_tables,
)
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KeypointSchema
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate

FIXTURE = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
COCO_SAMPLE_GT = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
EPS = np.spacing(1)


def person(ann_id: int, box: list[float], labelled: int, image_id: int = 1, crowd: int = 0, k: int = 17,
           ) -> dict[str, Any]:
    """A GT person whose first `labelled` keypoints are labelled, spread over its box."""
    x, y, w, h = box
    kps = []
    for j in range(k):
        if j < labelled:
            kps += [x + w * (j + 1) / (k + 1), y + h * (j + 1) / (k + 1), 2]
        else:
            kps += [0, 0, 0]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": box, "area": w * h * 0.5,
            "iscrowd": crowd, "num_keypoints": labelled, "keypoints": kps}


def detection(ann: dict[str, Any], score: float, shift: float = 0.0, image_id: int | None = None) -> dict[str, Any]:
    """A detection on `ann`'s labelled keypoints (shifted by `shift` px), its other keypoints at its box centre."""
    x, y, w, h = ann["bbox"]
    kps = []
    for j in range(len(ann["keypoints"]) // 3):
        gx, gy, v = ann["keypoints"][3 * j:3 * j + 3]
        kps += [gx + shift, gy + shift, 1.0] if v else [x + w / 2, y + h / 2, 1.0]
    return {"image_id": ann["image_id"] if image_id is None else image_id, "category_id": 1, "keypoints": kps,
            "score": score}


def far_away(score: float, image_id: int = 1, k: int = 17) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": 1, "keypoints": [5000.0, 5000.0, 1.0] * k, "score": score}


def coco(annotations: list[dict[str, Any]], images: int = 1, category: dict | None = None) -> dict[str, Any]:
    return {"images": [{"id": i, "width": 2000, "height": 2000} for i in range(1, images + 1)],
            "annotations": annotations, "categories": [category or copy.deepcopy(PERSON_CATEGORY)]}


def reference_rows(gt: dict[str, Any], results: list[dict[str, Any]], schema: KeypointSchema | None = None,
                   ) -> list[dict[str, Any]]:
    """pycocotools (kpbench.evaluate's reference path) once per bin, on a GT copy whose persons outside the bin have
    num_keypoints 0 (ignored by pycocotools' _prepare, their OKS unchanged)."""
    evaluator, _ = prepared_inputs(gt, results, schema)
    counted = {a["id"] for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0}
    rows = []
    for table, label, in_bin in bin_masks(evaluator):
        members = set(evaluator.gt_ann_ids[in_bin].tolist())
        modified = copy.deepcopy(gt)
        for a in modified["annotations"]:
            if a["id"] not in members:
                a["num_keypoints"] = 0
        stats = evaluate(modified, results, schema=schema).stats
        rows.append({"table": table, "bin": label, "num_gt": len(members & counted),
                     "AP": stats["AP"], "AP50": stats["AP50"], "AP75": stats["AP75"]})
    return rows


# --- the bins ----------------------------------------------------------------------------------------------------


def test_keypoint_bins_are_the_papers_for_17_and_scaled_for_other_counts() -> None:
    assert keypoint_bins(17) == ((1, 5), (6, 10), (11, 15), (16, 17))
    # round(5K/17), round(10K/17), round(15K/17), K: 14 -> 4.1, 8.2, 12.4; 133 -> 39.1, 78.2, 117.4
    assert keypoint_bins(14) == ((1, 4), (5, 8), (9, 12), (13, 14))
    assert keypoint_bins(133) == ((1, 39), (40, 78), (79, 117), (118, 133))
    # 5 -> 1.47, 2.94, 4.41; 2 -> 0.59, 1.18, 1.76 (empty bins dropped); 1 -> one bin
    assert keypoint_bins(5) == ((1, 1), (2, 3), (4, 4), (5, 5))
    assert keypoint_bins(2) == ((1, 1), (2, 2))
    assert keypoint_bins(1) == ((1, 1),)
    # 34 -> 10, 20, 30 exactly (no rounding)
    assert keypoint_bins(34) == ((1, 10), (11, 20), (21, 30), (31, 34))
    with pytest.raises(KpbenchError, match="at least one keypoint"):
        keypoint_bins(0)


def test_bin_labels() -> None:
    assert [bin_label(lo, hi) for lo, hi in ((1, 5), (16, 17), (0, 0), (3, None))] == ["1-5", "16-17", "0", "3+"]


def test_box_iou_matrix_exact_values() -> None:
    boxes = np.array([[0, 0, 100, 200], [0, 0, 100, 20], [50, 0, 100, 200], [10, 10, 0, 0], [10, 10, 0, 0]], float)
    ious = box_iou_matrix(boxes)
    assert ious[0, 1] == ious[1, 0] == 0.1  # 2000 / 20000, a box inside the other
    assert ious[0, 2] == 10000 / 30000  # half overlap: 50*200 / (2*20000 - 10000)
    assert ious[3, 4] == 0.0  # two empty boxes: union 0
    assert np.array_equal(np.diag(ious)[:3], [1.0, 1.0, 1.0])


def crowded_gt() -> dict[str, Any]:
    """One image whose persons' bins are known by construction (the labelled count and the overlaps)."""
    anns = [
        person(1, [0, 0, 100, 200], 17),  # overlaps 4 (IoU 0.101) -> 1
        person(2, [300, 0, 100, 200], 3),  # 3's box inside, IoU exactly 0.1: not an overlap -> 0
        person(3, [300, 0, 100, 20], 8),  # -> 0
        person(4, [0, 0, 100, 20.2], 12),  # IoU 2020 / 20000 = 0.101 with 1 -> 1
        person(5, [600, 0, 100, 100], 14),  # the crowd region's box -> 1
        person(6, [600, 0, 100, 100], 0, crowd=1),  # a crowd region (ignored) still crowds person 5
        person(7, [800, 0, 50, 50], 0),  # no labelled keypoint: binned nowhere by keypoints, ignored
        *[person(i, [1000, 0, 100, 100], 6) for i in range(8, 12)],  # four on one box: 3 others each -> 3+
    ]
    return coco(anns)


def test_bin_membership_by_construction() -> None:
    gt = crowded_gt()
    evaluator, _ = prepared_inputs(gt, [])
    members = {(table, label): sorted(evaluator.gt_ann_ids[mask].tolist()) for table, label, mask in bin_masks(evaluator)}
    assert members == {
        (KEYPOINT_TABLE, "1-5"): [2],
        (KEYPOINT_TABLE, "6-10"): [3, 8, 9, 10, 11],
        (KEYPOINT_TABLE, "11-15"): [4, 5],
        (KEYPOINT_TABLE, "16-17"): [1],
        (OVERLAP_TABLE, "0"): [2, 3, 7],
        (OVERLAP_TABLE, "1-2"): [1, 4, 5, 6],
        (OVERLAP_TABLE, "3+"): [8, 9, 10, 11],
    }


def test_crowded_image_equals_pycocotools_per_bin() -> None:
    gt = crowded_gt()
    anns = {a["id"]: a for a in gt["annotations"]}
    results = [detection(anns[1], 0.9), detection(anns[2], 0.5, shift=3.0), detection(anns[3], 0.7, shift=1.0),
               detection(anns[4], 0.4), detection(anns[5], 0.8, shift=2.0), detection(anns[8], 0.3),
               detection(anns[9], 0.65, shift=4.0), far_away(0.95), far_away(0.2)]
    rows = sensitivity_tables(gt, results)
    assert rows == reference_rows(gt, results)
    # GTs that count (crowd 6 and unlabelled 7 do not): 1, 5, 2, 1 by keypoints; 2, 3, 4 by overlap
    assert [r["num_gt"] for r in rows] == [1, 5, 2, 1, 2, 3, 4]


def test_hand_computed_ap_and_empty_bins() -> None:
    a = person(1, [0, 0, 100, 200], 17)
    b = person(2, [400, 0, 100, 200], 4)
    gt = coco([a, b])
    # dA perfect on A (0.9), an unmatched detection (0.8), dB perfect on B (0.6); OKS 1 at every threshold.
    results = [detection(a, 0.9), far_away(0.8), detection(b, 0.6)]
    rows = {(r["table"], r["bin"]): r for r in sensitivity_tables(gt, results)}
    ones = np.ones((10, 101))
    # Bin 16-17 (A; B ignored, so dB is ignored): TP then FP, precision 1/(1+eps), 1/(2+eps), recall 1, 1:
    # every recall threshold reads the first point, 1/(1+eps) (COCOeval's eps in tp / (tp + fp + eps)).
    assert rows[(KEYPOINT_TABLE, "16-17")] == {
        "table": KEYPOINT_TABLE, "bin": "16-17", "num_gt": 1, "AP": float(np.mean(ones / (1 + EPS))),
        "AP50": float(np.mean(ones[0] / (1 + EPS))), "AP75": float(np.mean(ones[0] / (1 + EPS)))}
    # Bin 1-5 (B; dA matches the ignored A: ignored): the unmatched detection is an FP here too, then dB:
    # precision 0, 1/(2+eps) = 0.5 exactly, recall 0, 1: the envelope is 0.5 everywhere.
    assert rows[(KEYPOINT_TABLE, "1-5")] == {"table": KEYPOINT_TABLE, "bin": "1-5", "num_gt": 1, "AP": 0.5,
                                             "AP50": 0.5, "AP75": 0.5}
    # Overlap 0 (both): TP, FP, TP: recall .5, .5, 1, precision 1/(1+eps), .5, 2/(3+eps); recall thresholds
    # 0 ... 0.50 (51 of them) read 1/(1+eps), 0.51 ... 1 (50) read 2/(3+eps).
    per_threshold = np.r_[np.full(51, 1 / (1 + EPS)), np.full(50, 2 / (3 + EPS))]
    assert rows[(OVERLAP_TABLE, "0")]["AP"] == float(np.mean(np.tile(per_threshold, (10, 1))))
    assert rows[(OVERLAP_TABLE, "0")]["AP50"] == float(np.mean(per_threshold))
    # No GT overlaps another: COCOeval's -1 in both overlap bins, with their GT count 0; 6-10 and 11-15 too.
    for key in ((OVERLAP_TABLE, "1-2"), (OVERLAP_TABLE, "3+"), (KEYPOINT_TABLE, "6-10"), (KEYPOINT_TABLE, "11-15")):
        assert (rows[key]["num_gt"], rows[key]["AP"], rows[key]["AP50"], rows[key]["AP75"]) == (0, -1.0, -1.0, -1.0)
    assert list(rows) == [(KEYPOINT_TABLE, b) for b in ("1-5", "6-10", "11-15", "16-17")] + [
        (OVERLAP_TABLE, b) for b in ("0", "1-2", "3+")]
    assert sensitivity_tables(gt, results) == reference_rows(gt, results)


def test_custom_bins_and_their_checks() -> None:
    a, b = person(1, [0, 0, 100, 200], 17), person(2, [400, 0, 100, 200], 4)
    gt = coco([a, b])
    results = [detection(a, 0.9), far_away(0.8), detection(b, 0.6)]
    rows = sensitivity_tables(gt, results, kp_bins=[(1, 10), (11, None)], overlap_bins=[(0, None)])
    assert [(r["table"], r["bin"], r["num_gt"]) for r in rows] == [
        (KEYPOINT_TABLE, "1-10", 1), (KEYPOINT_TABLE, "11+", 1), (OVERLAP_TABLE, "0+", 2)]
    assert rows[1]["AP"] == sensitivity_tables(gt, results)[3]["AP"]  # 11+ holds A alone, as 16-17 does
    assert rows[2]["AP"] == evaluate(gt, results).stats["AP"]  # every GT: the plain AP
    for bad, match in (([(5, 1)], "lo <= hi"), ([(1,)], r"\(lo, hi\)"), ([(1.5, 3)], "integers"), ([], "no bins")):
        with pytest.raises(KpbenchError, match=match):
            sensitivity_tables(gt, results, kp_bins=bad)


def test_other_keypoint_count_scales_the_bins() -> None:
    k = 5
    schema = KeypointSchema("five", tuple(f"k{i}" for i in range(k)), (), (0.05, 0.06, 0.07, 0.08, 0.09))
    category = {"id": 1, "name": "thing", "keypoints": list(schema.keypoint_names), "skeleton": []}
    anns = [person(i + 1, [200.0 * i, 0, 100, 150], labelled, k=k) for i, labelled in enumerate((1, 2, 3, 4, 5, 5))]
    anns.append(person(7, [0, 0, 100, 150 * 0.95], 3, k=k))  # overlaps person 1
    gt = coco(anns, category=category)
    results = [detection(a, 0.9 - 0.1 * i, shift=float(i)) for i, a in enumerate(anns)]
    results += [far_away(0.55, k=k), far_away(0.05, k=k)]
    rows = sensitivity_tables(gt, results, schema=schema)
    assert [r["bin"] for r in rows] == ["1", "2-3", "4", "5", "0", "1-2", "3+"]
    assert [r["num_gt"] for r in rows] == [1, 3, 1, 2, 5, 2, 0]
    assert rows == reference_rows(gt, results, schema)


def test_synthetic_workload_equals_pycocotools() -> None:
    gt, results = make_synthetic_coco(num_images=12, persons_per_image=4.0, labelled_fraction=0.8,
                                      crowd_fraction=0.05, seed=3)
    rows = sensitivity_tables(gt, results)
    assert rows == reference_rows(gt, results)
    assert all(r["AP"] > 0 for r in rows if r["num_gt"])  # the workload reaches every bin it has GTs in
    assert sum(r["num_gt"] for r in rows if r["table"] == KEYPOINT_TABLE) == sum(
        1 for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0)


def independent_bin_counts(gt: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The per-bin counts of COCOeval-counted GTs, by plain Python over the annotations (num_keypoints, and IoU of
    each pair of boxes of an image)."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    overlaps = {a["id"]: 0 for a in gt["annotations"]}
    for anns in by_image.values():
        for p, q in combinations(anns, 2):
            (x1, y1, w1, h1), (x2, y2, w2, h2) = p["bbox"], q["bbox"]
            iw = max(0.0, min(x1 + w1, x2 + w2) - max(x1, x2))
            ih = max(0.0, min(y1 + h1, y2 + h2) - max(y1, y2))
            union = w1 * h1 + w2 * h2 - iw * ih
            if union > 0 and iw * ih / union > 0.1:
                overlaps[p["id"]] += 1
                overlaps[q["id"]] += 1
    counts: dict[tuple[str, str], int] = {}
    for a in gt["annotations"]:
        if a["iscrowd"] or a["num_keypoints"] == 0:
            continue
        n = a["num_keypoints"]
        kp = "1-5" if n <= 5 else "6-10" if n <= 10 else "11-15" if n <= 15 else "16-17"
        o = overlaps[a["id"]]
        ov = "0" if o == 0 else "1-2" if o <= 2 else "3+"
        for key in ((KEYPOINT_TABLE, kp), (OVERLAP_TABLE, ov)):
            counts[key] = counts.get(key, 0) + 1
    return counts


@requires_shared
def test_real_yolo_fixture_bins_and_pycocotools() -> None:
    gt, results = load(COCO_SAMPLE_GT), load(FIXTURE)
    rows = sensitivity_tables(COCO_SAMPLE_GT, FIXTURE)
    counts = {(r["table"], r["bin"]): r["num_gt"] for r in rows}
    assert counts == {
        (KEYPOINT_TABLE, "1-5"): 9, (KEYPOINT_TABLE, "6-10"): 22, (KEYPOINT_TABLE, "11-15"): 30,
        (KEYPOINT_TABLE, "16-17"): 9, (OVERLAP_TABLE, "0"): 49, (OVERLAP_TABLE, "1-2"): 17, (OVERLAP_TABLE, "3+"): 4,
    }
    assert counts == independent_bin_counts(gt)
    assert rows == reference_rows(gt, results)
    # The paper's finding, on this sample: fewer visible keypoints and more crowding cost AP.
    ap = {(r["table"], r["bin"]): r["AP"] for r in rows}
    assert ap[(KEYPOINT_TABLE, "1-5")] < ap[(KEYPOINT_TABLE, "6-10")] < ap[(KEYPOINT_TABLE, "11-15")]
    assert ap[(OVERLAP_TABLE, "0")] > ap[(OVERLAP_TABLE, "1-2")] > ap[(OVERLAP_TABLE, "3+")]
