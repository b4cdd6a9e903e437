"""The default backend's fast paths give what their slow paths give, exactly (issue 24).

- Matching: units where no detection qualifies for two GTs are matched in closed form
  (`vectorized._match_one_candidate`); the others by COCOeval's scan. Forcing every unit through the scan must not
  change one array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, jittered_detections, load, requires_shared
from test_vectorized_backend import box_results, box_scene

from kpbench.core.schema import COCO17
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation import vectorized
from kpbench.evaluation.arrays import detections_from_records, ground_truth_arrays
from kpbench.evaluation.settings import EvalSettings
from kpbench.evaluation.vectorized import CocoEvaluator, VectorizedResult

# --- matching in closed form ------------------------------------------------------------------------------------


def evaluate_arrays(gt: dict, results: list[dict], iou_type: str, settings: EvalSettings | None = None
                    ) -> VectorizedResult:
    k = COCO17.num_keypoints if iou_type == "keypoints" else None
    detections = detections_from_records(results, iou_type, k or 0)
    evaluator = CocoEvaluator(ground_truth_arrays(gt, "gt", k), iou_type,
                              COCO17.sigma_array if iou_type == "keypoints" else None, settings)
    geometry = detections.keypoints if iou_type == "keypoints" else detections.boxes
    return evaluator.evaluate(detections.image_ids, detections.category_ids, detections.scores, geometry)


def assert_same_result(a: VectorizedResult, b: VectorizedResult) -> None:
    assert a.stats == b.stats
    for name in ("precision", "recall", "scores", "dt_matches", "dt_ignore", "gt_matches", "dt_kept"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("dt_index", "dt_unit", "dt_rank", "dt_scores", "dt_gt", "dt_ignore", "gt_ids", "gt_unit",
                 "gt_ignore", "gt_dt"):
        assert np.array_equal(getattr(a.matches, name), getattr(b.matches, name)), name


def with_and_without_closed_form(monkeypatch: pytest.MonkeyPatch, gt: dict, results: list[dict], iou_type: str,
                                 settings: EvalSettings | None = None, scans: bool = True
                                 ) -> tuple[VectorizedResult, VectorizedResult]:
    """The evaluation as it runs (some units in closed form; with `scans`, some by the scan too), and with every
    unit scanned."""
    scan_counts: list[tuple[int, int]] = []
    choose = vectorized._units_to_scan

    def counting(*args: Any) -> np.ndarray:
        scanned = choose(*args)
        scan_counts.append((int(scanned.sum()), len(scanned)))
        return scanned

    monkeypatch.setattr(vectorized, "_units_to_scan", counting)
    fast = evaluate_arrays(gt, results, iou_type, settings)
    scanned, units = scan_counts[-1]
    assert scanned < units and (scanned > 0) == scans
    monkeypatch.setattr(vectorized, "_units_to_scan", lambda sim, *rest: np.ones(rest[-2], dtype=bool))
    return fast, evaluate_arrays(gt, results, iou_type, settings)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_matching_is_the_scan_keypoints(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.08, detections_per_person=5.0,
                                      score_decimals=1 + seed % 2, seed=seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, "keypoints"))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_closed_form_matching_is_the_scan_boxes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Several categories, crowd regions holding many detections, zero-size boxes, score ties (few detections
    qualify for two GTs here: in one scene, none)."""
    gt, results = box_scene(seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, "bbox", scans=seed == 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_matching_is_the_scan_crowded_boxes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.1, detections_per_person=8.0, seed=seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, box_results(results, seed), "bbox"))


@pytest.mark.parametrize("settings", [
    EvalSettings(use_cats=False),
    EvalSettings(iou_thresholds=(0.1, 0.5, 1.0)),
    EvalSettings(max_dets=(1, 3, 5), area_ranges=(("all", 0.0, 1e10), ("tiny", 0.0, 100.0))),
], ids=["use-cats-0", "thresholds", "max-dets-areas"])
def test_closed_form_matching_is_the_scan_with_parameters(monkeypatch: pytest.MonkeyPatch,
                                                          settings: EvalSettings) -> None:
    gt, results = make_synthetic_coco(num_images=40, crowd_fraction=0.1, detections_per_person=4.0, seed=7)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, box_results(results), "bbox", settings))


@requires_shared
@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_closed_form_matching_is_the_scan_on_the_real_sample(monkeypatch: pytest.MonkeyPatch, iou_type: str) -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = jittered_detections(gt, seed=0)
    if iou_type == "bbox":
        results = box_results(results)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, iou_type))
