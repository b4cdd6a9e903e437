"""The LRP-optimal person-score threshold (vernier's oLRP on OKS): hand-computed cases, the tie rule, edge cases,
and a brute-force reference that re-runs pycocotools at every threshold (the detections with score >= s)."""

from __future__ import annotations

import copy
import io
import math
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, load, requires_shared

from kpbench.analysis.lrp import (
    DEFAULT_THRESHOLDS,
    LRPResult,
    best_f1_threshold,
    lrp_curve,
    lrp_optimal,
)
from kpbench.analysis.thresholds import sweep_person_thresholds
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate

FIXTURE = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
COCO_SAMPLE_GT = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
AREA = 100.0  # every hand-built GT's area
NOSE_VARIANCE = (COCO17.sigma_array[0] * 2) ** 2


def person(ann_id: int, x: float, crowd: int = 0, labelled: bool = True) -> dict[str, Any]:
    """A GT person with one labelled keypoint (the nose) at (x, 50), or a crowd region (box x..x+100) without."""
    kps = [0.0, 0.0, 0] * 17
    if labelled and not crowd:
        kps[:3] = [x, 50.0, 2]
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": [x - 50, 0.0, 100.0, 100.0], "area": AREA,
            "iscrowd": crowd, "num_keypoints": int(labelled and not crowd), "keypoints": kps}


def det(x: float, score: float, dx: float = 0.0, image_id: int = 1) -> dict[str, Any]:
    """A detection whose 17 keypoints all sit at (x + dx, 50)."""
    return {"image_id": image_id, "category_id": 1, "keypoints": [x + dx, 50.0, 1.0] * 17, "score": score}


def coco(annotations: list[dict[str, Any]], images: int = 1) -> dict[str, Any]:
    return {"images": [{"id": i, "width": 5000, "height": 500} for i in range(1, images + 1)],
            "annotations": annotations, "categories": [copy.deepcopy(PERSON_CATEGORY)]}


def nose_oks(x: float, dx: float) -> float:
    """OKS of a detection at x + dx for a one-keypoint GT at x, term by term as pycocotools computes it (the
    offset as the subtraction gives it: 500.24 - 500 is not the double 0.24)."""
    d = (x + dx) - x
    e = (d**2 + 0.0**2) / NOSE_VARIANCE / (AREA + np.spacing(1)) / 2
    return float(np.exp(-e))


# --- the brute-force reference ---------------------------------------------------------------------------------


def brute_force(gt: dict[str, Any], results: list[dict[str, Any]], thresholds: Any, tau: float = 0.5,
                ) -> list[dict[str, Any]]:
    """At every threshold s: pycocotools' COCOeval (OKS tau, area all, maxDets 20) on the results with score >= s;
    TP = matched and not ignored, FP = unmatched and not ignored, FN = counted GT - TP; the OKS of a TP read from
    COCOeval's own OKS matrix; LRP = (sum (1 - OKS) / (1 - tau) + FP + FN) / (TP + FP + FN)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    num_gt = sum(1 for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0 and a["area"] <= 1e10)
    with redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
    rows = []
    for s in thresholds:
        kept = [dict(r) for r in results if r["score"] >= s]  # loadRes adds keys; it never edits the lists
        tp = fp = 0
        loc = 0.0
        if kept:
            with redirect_stdout(io.StringIO()):
                ev = COCOeval(coco_gt, coco_gt.loadRes(kept), "keypoints")
                ev.params.iouThrs = np.array([tau])
                ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [20]
                ev.evaluate()
            for e in ev.evalImgs:
                if e is None:
                    continue
                columns = {g["id"]: j for j, g in enumerate(ev._gts[e["image_id"], e["category_id"]])}
                for d, (match, ignored) in enumerate(zip(e["dtMatches"][0], e["dtIgnore"][0])):
                    if ignored:
                        continue
                    if match > 0:
                        tp += 1
                        loc += 1 - ev.ious[e["image_id"], e["category_id"]][d, columns[int(match)]]
                    else:
                        fp += 1
        fn = num_gt - tp
        total = tp + fp + fn
        rows.append({"threshold": float(s), "n_tp": tp, "n_fp": fp, "n_fn": fn, "loc_sum": loc,
                     "lrp": (loc / (1 - tau) + fp + fn) / total if total else None})
    return rows


def brute_optimum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of least LRP, the later (larger threshold) on equal LRP."""
    best = rows[0]
    for r in rows[1:]:
        if r["lrp"] <= best["lrp"]:
            best = r
    return best


def assert_matches_brute_force(gt: dict[str, Any], results: list[dict[str, Any]], thresholds: Any,
                               tau: float = 0.5) -> LRPResult:
    candidates = sorted({r["score"] for r in results}) if thresholds == "scores" else (
        list(DEFAULT_THRESHOLDS) if thresholds is None else thresholds)
    reference = brute_force(gt, results, candidates, tau)
    curve = lrp_curve(gt, results, tau=tau, thresholds=thresholds)
    assert [r["threshold"] for r in curve] == [r["threshold"] for r in reference]
    for ours, ref in zip(curve, reference):
        assert (ours["n_tp"], ours["n_fp"], ours["n_fn"]) == (ref["n_tp"], ref["n_fp"], ref["n_fn"])
        assert ours["lrp"] == pytest.approx(ref["lrp"], abs=1e-12, rel=0)
    result = lrp_optimal(gt, results, tau=tau, thresholds=thresholds)
    best = brute_optimum(reference)
    assert (result.n_tp, result.n_fp, result.n_fn) == (best["n_tp"], best["n_fp"], best["n_fn"])
    assert result.threshold == (best["threshold"] if best["n_tp"] else None)
    assert result.olrp == pytest.approx(best["lrp"], abs=1e-12, rel=0)
    if best["n_tp"]:
        assert result.loc == pytest.approx(best["loc_sum"] / best["n_tp"] / (1 - tau), abs=1e-12, rel=0)
        assert result.fp == best["n_fp"] / (best["n_tp"] + best["n_fp"])
        assert result.fn == best["n_fn"] / (best["n_tp"] + best["n_fn"])
    return result


# --- hand-computed -------------------------------------------------------------------------------------------------


def hand_case() -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """Three persons G1..G3 (nose at x = 100, 300, 500), a crowd region (box 650..750) and six detections."""
    gt = coco([person(1, 100), person(2, 300), person(3, 500), person(4, 700, crowd=1)])
    results = [
        det(100, 0.9),  # perfect on G1: TP, OKS 1
        det(2000, 0.8),  # far from everyone: FP
        det(300, 0.7),  # perfect on G2: TP, OKS 1
        det(700, 0.6),  # inside the crowd region (box distance 0, OKS 1): ignored
        det(100, 0.5),  # G1 again, already taken: FP
        det(500, 0.4, dx=0.24),  # G3, 0.24 px off: TP with OKS o ~ 0.899
    ]
    return gt, results, nose_oks(500, 0.24)


def test_hand_computed_lrp_curve_and_optimum() -> None:
    gt, results, o = hand_case()
    assert 0.89 < o < 0.9
    rows = {r["threshold"]: r for r in lrp_curve(gt, results)}
    # s <= 0.40, all kept: TP 3 (loc 0 + 0 + (1 - o)), FP 2, FN 0: ((1 - o) / 0.5 + 2 + 0) / 5 = 0.4404...
    assert rows[0.40]["lrp"] == ((1 - o) / 0.5 + 2 + 0) / 5
    assert rows[0.40]["lrp"] == rows[0.0]["lrp"]
    assert (rows[0.40]["n_tp"], rows[0.40]["n_fp"], rows[0.40]["n_fn"]) == (3, 2, 0)
    # 0.40 < s <= 0.50: TP 2, FP 2, FN 1: (0 + 2 + 1) / 5 = 0.6
    assert rows[0.41]["lrp"] == rows[0.50]["lrp"] == 3 / 5
    # 0.50 < s <= 0.70 (the crowd match is neither): TP 2, FP 1, FN 1: 2 / 4
    assert rows[0.51]["lrp"] == rows[0.60]["lrp"] == rows[0.70]["lrp"] == 0.5
    # 0.70 < s <= 0.80: TP 1, FP 1, FN 2: 3 / 4; 0.80 < s <= 0.90: TP 1, FP 0, FN 2: 2 / 3; above: FN 3: 1
    assert rows[0.71]["lrp"] == rows[0.80]["lrp"] == 3 / 4
    assert rows[0.81]["lrp"] == rows[0.90]["lrp"] == 2 / 3
    assert rows[0.91]["lrp"] == rows[1.0]["lrp"] == 1.0
    # F1 on the same counts: 2 TP / (2 TP + FP + FN), 6 / 8 at 0.40
    assert rows[0.40]["f1"] == 6 / 8 and rows[1.0]["f1"] == 0.0
    # The minimum, 0.4404..., holds on 0.00 ... 0.40; the larger wins: s* = 0.40, which keeps the 0.4 detection
    # (score >= s, and 40 / 100 is the same double as 0.4).
    result = lrp_optimal(gt, results)
    assert result == LRPResult(threshold=0.4, olrp=((1 - o) / 0.5 + 2) / 5, loc=((1 - o) / 3) / 0.5, fp=2 / 5,
                               fn=0 / 3, n_tp=3, n_fp=2, n_fn=0, tau=0.5, num_gt=3)
    # The components add up as TPAMI's eq. 10 says: oLRP = (N_TP loc + N_FP + N_FN) / (N_TP + N_FP + N_FN)
    assert result.olrp == pytest.approx((3 * result.loc + 2 + 0) / 5, abs=1e-15)
    # Every distinct score: the same optimum, at the score 0.4 itself
    assert lrp_optimal(gt, results, thresholds="scores") == result
    assert_matches_brute_force(gt, results, None)
    assert_matches_brute_force(gt, results, "scores")


def test_stricter_tau_turns_the_loose_match_into_a_false_positive() -> None:
    gt, results, _ = hand_case()
    # At tau 0.95 the 0.899 match fails: G3 is missed and its detection is an FP; the perfect TPs stay.
    rows = {r["threshold"]: r for r in lrp_curve(gt, results, tau=0.95)}
    assert (rows[0.0]["n_tp"], rows[0.0]["n_fp"], rows[0.0]["n_fn"]) == (2, 3, 1)
    assert rows[0.0]["lrp"] == (0 / 0.05 + 3 + 1) / 6
    result = lrp_optimal(gt, results, tau=0.95)
    # Best: 0.50 < s <= 0.70, TP 2, FP 1, FN 1: 2 / 4 (0.80 < s <= 0.90 gives 2 / 3)
    assert (result.threshold, result.olrp, result.loc, result.n_tp, result.n_fp, result.n_fn) == (0.7, 0.5, 0.0, 2, 1, 1)
    assert_matches_brute_force(gt, results, None, tau=0.95)


def test_tie_goes_to_the_larger_threshold_and_f1_to_the_lower() -> None:
    # Two GTs; TP (0.9), FP (0.8), FP (0.7), TP (0.6), all TPs perfect:
    # (0.8, 0.9]: TP 1 FP 0 FN 1 -> 1/2; (0.7, 0.8]: 1, 1, 1 -> 2/3; (0.6, 0.7]: 1, 2, 1 -> 3/4; <= 0.6: 2, 2, 0 -> 2/4
    gt = coco([person(1, 100), person(2, 300)])
    results = [det(100, 0.9), det(2000, 0.8), det(2000, 0.7), det(300, 0.6)]
    rows = {r["threshold"]: r for r in lrp_curve(gt, results)}
    assert rows[0.6]["lrp"] == rows[0.9]["lrp"] == 0.5  # (0 + 0 + 1) / 2 and (0 + 2 + 0) / 4: the same double
    result = lrp_optimal(gt, results)
    assert result == LRPResult(0.9, 0.5, 0.0, 0.0, 0.5, 1, 0, 1, 0.5, 2)
    assert lrp_optimal(gt, results, thresholds=[0.1, 0.6, 0.9, 0.95]).threshold == 0.9
    assert lrp_optimal(gt, results, thresholds=[0.1, 0.6]).threshold == 0.6  # one TP set: the larger of the two
    # F1 ties too (2 / 3 at both: 2 / (2 + 0 + 1) and 4 / (4 + 2 + 0)); kpbench thresholds takes the LOWER: 0.00
    best = best_f1_threshold(evaluate(gt, results))
    assert best is not None
    assert (best["threshold"], best["f1_50"], best["tp_50"], best["fp_50"], best["fn_50"]) == (0.0, 2 / 3, 2, 2, 0)
    assert_matches_brute_force(gt, results, None)


# --- edge cases ----------------------------------------------------------------------------------------------------


def test_no_detections() -> None:
    gt = coco([person(1, 100), person(2, 300), person(3, 500, crowd=1)])
    # LRP = (0 + 0 + 2) / 2 = 1 at every threshold; no TP: no threshold, no loc; nothing kept: FP rate 0
    assert lrp_optimal(gt, []) == LRPResult(None, 1.0, None, 0.0, 1.0, 0, 0, 2, 0.5, 2)
    assert lrp_optimal(gt, [], thresholds="scores") == LRPResult(None, 1.0, None, 0.0, 1.0, 0, 0, 2, 0.5, 2)
    assert [r["lrp"] for r in lrp_curve(gt, [])] == [1.0] * 101


def test_only_false_positives() -> None:
    gt = coco([person(1, 100)])
    results = [det(2000, 0.5), det(3000, 0.3)]
    # LRP = (FP + 1) / (FP + 1) = 1 everywhere; the largest threshold, 1.00, keeps nothing
    assert lrp_optimal(gt, results) == LRPResult(None, 1.0, None, 0.0, 1.0, 0, 0, 1, 0.5, 1)
    # Among the scores the largest, 0.5, keeps one FP: FP rate undefined without a TP
    assert lrp_optimal(gt, results, thresholds="scores") == LRPResult(None, 1.0, None, None, 1.0, 0, 1, 1, 0.5, 1)


def test_no_ground_truth_that_counts() -> None:
    results = [det(100, 0.9), det(300, 0.4)]
    # No annotation, or only a crowd region and an unlabelled person: LRP is undefined (vernier: None)
    for anns in ([], [person(1, 100, crowd=1), person(2, 300, labelled=False)]):
        assert lrp_optimal(coco(anns), results) == LRPResult(None, None, None, None, None, 0, 2 - len(anns), 0, 0.5, 0)
        assert all(r["lrp"] is None and r["loc"] is None for r in lrp_curve(coco(anns), results))


def test_bad_arguments() -> None:
    gt = coco([person(1, 100)])
    for tau in (1.0, -0.1, math.nan):
        with pytest.raises(KpbenchError, match="tau"):
            lrp_optimal(gt, [], tau=tau)
    for thresholds, match in (([], "empty"), ([0.5, math.inf], "finite"), ("score", "'scores'")):
        with pytest.raises(KpbenchError, match=match):
            lrp_optimal(gt, [det(100, 0.9)], thresholds=thresholds)
    with pytest.raises(KpbenchError, match="not in the ground truth"):
        lrp_optimal(gt, [det(100, 0.9, image_id=7)])


# --- against the brute force ---------------------------------------------------------------------------------------


def test_synthetic_workload_equals_brute_force() -> None:
    # ~25 detections per image (past COCO's 20), crowd regions, unlabelled persons, scores with ties (2 decimals)
    gt, results = make_synthetic_coco(num_images=10, persons_per_image=3, detections_per_person=8,
                                      crowd_fraction=0.1, seed=5)
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() > 20 and any(a["iscrowd"] for a in gt["annotations"])  # what the workload exercises
    assert any(a["num_keypoints"] == 0 and not a["iscrowd"] for a in gt["annotations"])
    assert_matches_brute_force(gt, results, "scores")
    assert_matches_brute_force(gt, results, None)
    assert_matches_brute_force(gt, results, [0.05, 0.3, 0.55, 0.8], tau=0.75)


@requires_shared
def test_real_yolo_fixture_equals_brute_force() -> None:
    gt, results = load(COCO_SAMPLE_GT), load(FIXTURE)
    grid = assert_matches_brute_force(gt, results, None)
    # Every distinct score from 0.05 up (109 of the 478), and every 25th below, where pycocotools re-runs cost most
    # (almost every detection kept) and LRP is far from its minimum.
    scores = sorted({r["score"] for r in results})
    sampled = [s for i, s in enumerate(scores) if s >= 0.05 or i % 25 == 0]
    checked = assert_matches_brute_force(gt, results, sampled)
    assert lrp_optimal(gt, results, thresholds="scores") == checked  # the optimum over all 478 is a sampled one
    every = {r["threshold"]: r for r in lrp_curve(gt, results, thresholds="scores")}
    assert len(every) == 478 and [every[t] for t in sampled] == lrp_curve(gt, results, thresholds=sampled)
    # Both reach the same detections (the same LRP); the grid's s* is the largest grid value that keeps them
    assert (grid.n_tp, grid.n_fp, grid.n_fn, grid.num_gt) == (checked.n_tp, checked.n_fp, checked.n_fn, 70)
    assert (grid.n_tp, grid.n_fp, grid.n_fn) == (47, 6, 23)
    assert grid.olrp == checked.olrp
    assert (grid.threshold, checked.threshold) == (0.46, 0.46541)


@requires_shared
def test_curve_counts_equal_the_threshold_sweep() -> None:
    # Two implementations of the same counts: lrp_curve's TP/FP/FN and F1 at OKS 0.5 against
    # sweep_person_thresholds' tp_50/fp_50/fn_50/f1_50, at every grid threshold; and the best-F1 row.
    result = evaluate(COCO_SAMPLE_GT, FIXTURE)
    sweep = sweep_person_thresholds(result, list(DEFAULT_THRESHOLDS))
    curve = lrp_curve(COCO_SAMPLE_GT, FIXTURE)
    assert [(r["n_tp"], r["n_fp"], r["n_fn"], r["f1"]) for r in curve] == [
        (r["tp_50"], r["fp_50"], r["fn_50"], r["f1_50"]) for r in sweep]
    best = best_f1_threshold(result)
    assert best is not None and best == next(r for r in sweep if r["best_f1"])
    f1s = [r["f1"] for r in curve]
    assert best["threshold"] == curve[f1s.index(max(f1s))]["threshold"] == 0.34  # the lowest of the best F1
    # The same operating point as the LRP optimum, read at its other end: 47 TP, 6 FP, 23 FN
    assert (best["tp_50"], best["fp_50"], best["fn_50"]) == (47, 6, 23)
