"""CrowdPose's protocol follows its reference, xtcocotools' keypoints_crowd evaluation, in leaving out the results
whose keypoint scores are all 0 (xtcocotools' COCOeval `_prepare`: `k = np.count_nonzero(d[2::3] > 0)`, `if k == 0:
continue`, for every keypoint iouType but the WholeBody parts, which have their own fields)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from kpdata import SHARED_DATA, load, requires_shared

from kpbench.analysis.keypoint_ap import keypoint_ap
from kpbench.core.arrays import DetectionArrays
from kpbench.core.schema import CROWDPOSE14
from kpbench.evaluation.arrays import detections_from_records
from kpbench.evaluation.cocoeval import evaluate

CROWDPOSE = SHARED_DATA / "xtcocoapi_example_crowdpose"
NOTE = ("3 result(s) with every keypoint score at 0 left out, as xtcocotools' keypoints_crowd evaluation "
        "(CrowdPose's reference) leaves them out")


def _perfect_with_zero_score_persons(gt: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every GT person predicted exactly (keypoint scores 1), and three confident persons whose keypoint scores are
    all 0, each a copy of a GT person moved 40 px right (a false positive wherever it is counted)."""
    perfect = []
    for ann in gt["annotations"]:
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, 2] = 1.0
        perfect.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "keypoints": kps.reshape(-1).tolist(), "score": 0.6})
    zeros = []
    for ann in gt["annotations"][:3]:
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, 0] += 40
        kps[:, 2] = 0.0
        zeros.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                      "keypoints": kps.reshape(-1).tolist(), "score": 0.99})
    return perfect, zeros


@requires_shared
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools"])
def test_results_with_every_keypoint_score_at_0_are_left_out(backend: str) -> None:
    """Before: the three zero-score persons were scored as false positives above every true detection, and AP
    dropped. Now the stats are exactly those without them, with a note, as xtcocotools gives them."""
    gt = load(CROWDPOSE / "example_crowdpose_val.json")
    perfect, zeros = _perfect_with_zero_score_persons(gt)
    alone = evaluate(copy.deepcopy(gt), copy.deepcopy(perfect), backend=backend)
    with_zeros = evaluate(copy.deepcopy(gt), copy.deepcopy(perfect + zeros), backend=backend)
    assert alone.schema is CROWDPOSE14
    assert with_zeros.stats == alone.stats
    assert with_zeros.num_results == len(perfect)
    assert NOTE in with_zeros.notes
    assert not any("pycocotools scores them like any other result" in n for n in with_zeros.notes)
    # A keypoint score above 0 is not the rule's: such a person counts, as a false positive above the others.
    faint = [{**r, "keypoints": [v if i % 3 != 2 else 0.01 for i, v in enumerate(r["keypoints"])]} for r in zeros]
    counted = evaluate(copy.deepcopy(gt), copy.deepcopy(perfect + faint), backend=backend)
    assert counted.stats["AP"] < alone.stats["AP"]


@requires_shared
def test_the_rule_holds_for_arrays_and_for_ap_per_keypoint() -> None:
    gt = load(CROWDPOSE / "example_crowdpose_val.json")
    perfect, zeros = _perfect_with_zero_score_persons(gt)
    arrays = detections_from_records(perfect + zeros, "keypoints", CROWDPOSE14.num_keypoints)
    assert isinstance(arrays, DetectionArrays)
    alone = evaluate(copy.deepcopy(gt), copy.deepcopy(perfect))
    from_arrays = evaluate(copy.deepcopy(gt), arrays)
    assert from_arrays.stats == alone.stats and NOTE in from_arrays.notes
    # AP per keypoint group follows the protocol's rule too: its whole-set AP is CrowdPose's AP.
    parts = keypoint_ap(copy.deepcopy(gt), copy.deepcopy(perfect + zeros))
    assert parts.rows() == keypoint_ap(copy.deepcopy(gt), copy.deepcopy(perfect)).rows()
    assert parts["all"].stats["AP"] == alone.stats["AP"] and NOTE in parts.notes
    assert keypoint_ap(copy.deepcopy(gt), arrays).rows() == parts.rows()


@requires_shared
def test_the_fixture_still_equals_xtcocotools() -> None:
    expected = load(CROWDPOSE / "expected_stats.json")["stats"]
    result = evaluate(CROWDPOSE / "example_crowdpose_val.json", CROWDPOSE / "example_crowdpose_preds.json")
    assert result.stats_list() == expected
    assert not any("every keypoint score at 0" in n for n in result.notes)  # the fixture has none
