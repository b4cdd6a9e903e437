"""The vectorised OKS against pycocotools' computeOks, to 1e-12."""

from __future__ import annotations

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, EDGE, FCE, XTCOCO, load, pycocotools_eval, requires_shared

from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.oks import (
    compute_oks,
    compute_oks_for_annotations,
    keypoint_similarity,
    paired_keypoint_similarity,
)


def assert_oks_matches(gt: dict, results: list) -> int:
    """Compare every per-image OKS matrix COCOeval computed with ours; returns how many were compared."""
    ev = pycocotools_eval(gt, results)
    compared = 0
    for (image_id, category_id), ious in ev.ious.items():
        if len(ious) == 0:
            continue
        gts = ev._gts[image_id, category_id]
        dts = ev._dts[image_id, category_id]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order][:20]
        ours = compute_oks_for_annotations(gts, dts)
        assert ours.shape == ious.shape
        np.testing.assert_allclose(ours, ious, rtol=0, atol=1e-12)
        compared += 1
    return compared


@requires_shared
@pytest.mark.parametrize(
    "gt_path,dt_path",
    [
        (FCE / "gt_dataset.json", FCE / "dt_dataset.json"),
        (XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json"),
        (EDGE / "synth_gt.json", EDGE / "synth_dt.json"),
    ],
)
def test_oks_matches_pycocotools_on_real_fixtures(gt_path, dt_path) -> None:
    assert assert_oks_matches(load(gt_path), load(dt_path)) > 0


@requires_shared
def test_oks_real_sample_with_crowd_and_unlabelled() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    rng = np.random.default_rng(0)
    results = []
    for ann in gt["annotations"]:  # one detection near every GT, crowd and unlabelled ones included
        x, y, w, h = ann["bbox"]
        pts = np.column_stack([rng.uniform(x - w, x + 2 * w, 17), rng.uniform(y - h, y + 2 * h, 17), np.ones(17)])
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": pts.reshape(-1).tolist(),
                        "score": float(rng.uniform())})
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert assert_oks_matches(gt, results) > 20


def test_oks_random_data() -> None:
    gt, results = make_synthetic_coco(num_images=40, seed=7, labelled_fraction=0.5)
    assert assert_oks_matches(gt, results) > 20


def test_unlabelled_gt_uses_enlarged_box() -> None:
    # A GT with no labelled keypoints, box (100, 100, 50, 50): the enlarged region is [50, 200] x [50, 200].
    gt_kps = [0.0] * 51
    inside = [v for _ in range(17) for v in (150.0, 150.0, 1.0)]
    outside = [v for _ in range(17) for v in (210.0, 150.0, 1.0)]  # 10 px right of the region
    oks = compute_oks([gt_kps], [[100, 100, 50, 50]], [1000.0], [inside, outside])
    assert oks[0, 0] == 1.0
    sigmas = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87,
                       0.87, 0.89, 0.89]) / 10.0
    expected = np.mean(np.exp(-(10.0**2) / (2 * sigmas) ** 2 / (1000.0 + np.spacing(1)) / 2))
    assert oks[1, 0] == pytest.approx(expected, abs=1e-15)


def test_only_labelled_keypoints_count() -> None:
    gt = np.zeros((17, 3))
    gt[:2] = [[10, 10, 2], [20, 20, 1]]
    dt = np.zeros((17, 3))
    dt[:2] = [[10, 10, 1], [20, 20, 1]]
    dt[2:, :2] = 1e6  # far away, but those GT keypoints are not labelled
    assert compute_oks([gt.reshape(-1)], [[0, 0, 30, 30]], [500.0], [dt.reshape(-1)])[0, 0] == 1.0
    similarity, counts = keypoint_similarity([gt.reshape(-1)], [[0, 0, 30, 30]], [500.0], [dt.reshape(-1)])
    assert similarity.shape == (1, 1, 17) and counts[0, 0].sum() == 2


def test_empty_inputs() -> None:
    assert compute_oks(np.zeros((0, 51)), np.zeros((0, 4)), np.zeros(0), np.zeros((3, 51))).shape == (3, 0)


def test_paired_similarity_is_the_grid_diagonal() -> None:
    gt, results = make_synthetic_coco(num_images=10, seed=2, labelled_fraction=0.5)
    gts = gt["annotations"][:12]  # labelled and unlabelled persons
    dts = results[:12]
    assert any(g["num_keypoints"] == 0 for g in gts) and any(g["num_keypoints"] > 0 for g in gts)
    args = ([g["keypoints"] for g in gts], [g["bbox"] for g in gts], [g["area"] for g in gts])
    grid, grid_counts = keypoint_similarity(*args, [d["keypoints"] for d in dts])
    pairs, counts = paired_keypoint_similarity(*args, [d["keypoints"] for d in dts])
    index = np.arange(12)
    assert pairs.shape == (12, 17)
    assert np.array_equal(pairs, grid[index, index]) and np.array_equal(counts, grid_counts[index, index])
    assert pairs.min() < 0.5 < pairs.max() <= 1  # spread out, not a constant
    with pytest.raises(ValueError, match="align one to one"):
        paired_keypoint_similarity(*args, [d["keypoints"] for d in dts[:3]])
