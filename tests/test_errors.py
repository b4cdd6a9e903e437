"""The error diagnosis (kpbench.analysis.errors, `kpbench analyze`): each error type and correction on hand-built
persons, the exact class boundaries, the two ends (nothing corrected is pycocotools' AP; everything corrected is
the upper bound), and the counts on the real YOLO fixture against a slow reference written here with loops."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, assert_one_line_error, make_run_dir, png_size, pycocotools_eval, requires_shared

from kpbench.analysis.bootstrap import bootstrap_intervals
from kpbench.analysis.errors import (
    COCO_ANALYZE_AREAS,
    COCO_ANALYZE_OKS,
    GOOD,
    INVERSION,
    JITTER,
    MISS,
    NOT_LABELLED,
    SWAP,
    UNCLASSIFIED,
    ErrorMode,
    analyze_errors,
    classify_keypoints,
    correct_keypoints,
    soft_nms_scores,
)
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.oks import paired_keypoint_similarity
from kpbench.evaluation.settings import EvalSettings

FIXTURE = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
SAMPLE_GT = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
K = COCO17.num_keypoints
SIGMAS = COCO17.sigma_array
NAMES = COCO17.keypoint_names
J = {name: j for j, name in enumerate(NAMES)}
AREA = 10000.0  # a "large" person (area > 96²)

# A standing person in a 100 x 200 box (COCO's keypoint order).
TEMPLATE = np.array(
    [[50, 10], [45, 5], [55, 5], [40, 10], [60, 10], [30, 40], [70, 40], [20, 80], [80, 80], [15, 115],
     [85, 115], [38, 120], [62, 120], [38, 160], [62, 160], [38, 195], [62, 195]], dtype=np.float64,
)  # fmt: skip


def distance_for(ks: float, keypoint: int, area: float = AREA, sigma_factor: float = 2.0) -> float:
    """The distance at which the OKS term of `keypoint` is `ks` (analytically; floats round it)."""
    return math.sqrt(-math.log(ks) * (sigma_factor * SIGMAS[keypoint]) ** 2 * 2 * (area + np.spacing(1)))


def gt_person(ann_id: int, image_id: int, xy: np.ndarray, area: float = AREA, visible: Any = None) -> dict[str, Any]:
    v = np.full(K, 2) if visible is None else np.asarray(visible)
    kps = np.concatenate([xy * (v[:, None] > 0), v[:, None]], axis=1)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": int((v > 0).sum()),
            "area": area, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "keypoints": [float(c) if i % 3 != 2 else int(c) for i, c in enumerate(kps.reshape(-1))]}


def detection(image_id: int, xy: np.ndarray, score: float) -> dict[str, Any]:
    kps = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    return {"image_id": image_id, "category_id": 1, "keypoints": kps.reshape(-1).tolist(), "score": score}


def dataset(annotations: list[dict[str, Any]], image_ids: tuple[int, ...] = (1,),
            category: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"images": [{"id": i, "width": 1000, "height": 800} for i in image_ids], "annotations": annotations,
            "categories": [category or PERSON_CATEGORY]}


def similarity(dt_xy: np.ndarray, gt_xy: np.ndarray, area: float = AREA) -> np.ndarray:
    """The library's OKS term (K,) of one detection against one fully labelled person."""
    gt = np.concatenate([gt_xy, np.full((K, 1), 2.0)], axis=1)[None]
    dt = np.concatenate([dt_xy, np.ones((K, 1))], axis=1)[None]
    ks, _ = paired_keypoint_similarity(gt, np.array([[0, 0, 100, 200]]), np.array([area]), dt, SIGMAS)
    return ks[0]


# --- each error type on a hand-built person ---------------------------------------------------------------------

PERSON_A = TEMPLATE + np.array([100, 100])
NEIGHBOUR = TEMPLATE + np.array([400, 100])  # another person of the same image, far enough not to be confused with A


def hand_built_detection() -> np.ndarray:
    """A's detection: left eye jittered (ks 0.7, moved down), wrists swapped left/right, left knee on the
    neighbour's left knee, left ankle far off (a miss); every other keypoint exact."""
    xy = PERSON_A.copy()
    xy[J["left_eye"], 1] += distance_for(0.7, J["left_eye"])
    xy[[J["left_wrist"], J["right_wrist"]]] = PERSON_A[[J["right_wrist"], J["left_wrist"]]]
    xy[J["left_knee"]] = NEIGHBOUR[J["left_knee"]]
    xy[J["left_ankle"], 1] += 60.0
    return xy


def test_each_error_type_on_a_hand_built_person() -> None:
    gt = dataset([gt_person(1, 1, PERSON_A), gt_person(2, 1, NEIGHBOUR)])
    analysis = analyze_errors(gt, [detection(1, hand_built_detection(), 0.9)])
    expected = np.full(K, GOOD)
    expected[J["left_eye"]] = JITTER
    expected[[J["left_wrist"], J["right_wrist"]]] = INVERSION
    expected[J["left_knee"]] = SWAP
    expected[J["left_ankle"]] = MISS
    assert analysis.labels.labels.tolist() == [expected.tolist()]
    assert analysis.pairs.tolist() == [[0, 0]]  # the detection, matched to A (GT index 0)
    assert analysis.labels.ks_matched[0, J["left_eye"]] == pytest.approx(0.7, rel=1e-12)
    assert analysis.labels.ks_best[0, J["left_knee"]] == 1.0 and analysis.labels.ks_best[0, J["right_wrist"]] == 1.0
    total = analysis.counts[-1]
    assert (total["keypoint"], total["n"], total["good"], total["jitter"], total["inversion"], total["swap"],
            total["miss"]) == ("all", 17, 12, 1, 2, 1, 1)
    assert [r["keypoint"] for r in analysis.counts] == [*NAMES, "all"]
    wrist = analysis.counts[J["left_wrist"]]
    assert (wrist["inversion"], wrist["frac_inversion"], analysis.counts[J["nose"]]["frac_good"]) == (1, 1.0, 1.0)
    # The neighbour was detected by nobody: one background false negative, no false positive.
    assert (analysis.summary["num_background_fn"], analysis.summary["num_background_fp"]) == (1, 0)


def test_nose_is_never_an_inversion() -> None:
    """The nose is its own flip partner: references (a) and (b) tie, and the tie goes to the matched person."""
    xy = PERSON_A.copy()
    xy[J["nose"], 0] += distance_for(0.7, J["nose"])
    labels = classify_keypoints(np.concatenate([xy, np.ones((K, 1))], axis=1)[None], np.array([0]),
                                np.concatenate([PERSON_A, np.full((K, 1), 2.0)], axis=1)[None],
                                np.array([[100.0, 100, 100, 200]]), np.array([AREA]), np.array([1]), SIGMAS,
                                np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]))
    assert labels.labels[0, J["nose"]] == JITTER and labels.best_reference[0, J["nose"]] == 0


def test_unlabelled_keypoints_are_not_classified_and_unlabelled_references_give_zero() -> None:
    """A keypoint the matched GT does not label is left out; a neighbour's unlabelled keypoint is no swap target."""
    visible = np.full(K, 2)
    visible[J["left_knee"]] = 0  # the neighbour's left knee is not labelled: the detection's knee there is a miss
    visible_a = np.full(K, 2)
    visible_a[J["right_ankle"]] = 0
    gt = dataset([gt_person(1, 1, PERSON_A, visible=visible_a), gt_person(2, 1, NEIGHBOUR, visible=visible)])
    analysis = analyze_errors(gt, [detection(1, hand_built_detection(), 0.9)])
    assert analysis.labels.labels[0, J["left_knee"]] == MISS
    assert analysis.labels.labels[0, J["right_ankle"]] == NOT_LABELLED
    assert analysis.counts[-1]["n"] == 16


# --- exact boundaries ---------------------------------------------------------------------------------------------


def keypoint_ks(dx: float, dy: float, keypoint: int, area: float = AREA) -> float:
    """The library's OKS term of a keypoint (dx, dy) from its GT keypoint."""
    gt = np.zeros((1, K, 3))
    gt[0, :, 2] = 2
    dt = np.zeros((1, K, 3))
    dt[0, keypoint, :2] = dx, dy
    return float(paired_keypoint_similarity(gt, np.zeros((1, 4)), np.array([area]), dt, SIGMAS)[0][0, keypoint])


def exact_offset(target: float, keypoint: int) -> tuple[float, float]:
    """An offset (dx, dy) whose OKS term, as the library computes it, is exactly `target`. dy carries 99% of the
    analytic distance and dx the rest, stepped one float at a time: a step of dx then changes ks by well under
    half an ulp, so some dx rounds ks to the target exactly."""
    d = distance_for(target, keypoint)
    dy = 0.99 * d
    dx = math.sqrt(d * d - dy * dy)
    for _ in range(10000):
        value = keypoint_ks(dx, dy, keypoint)
        if value == target:
            return dx, dy
        dx = float(np.nextafter(dx, np.inf if value > target else -np.inf))
    raise AssertionError(f"no offset gives ks exactly {target}")


def just_beyond(dx: float, dy: float, keypoint: int) -> float:
    """The nearest larger dx whose ks is below the one at dx (the next float down from the boundary)."""
    start, x = keypoint_ks(dx, dy, keypoint), dx
    while keypoint_ks(x, dy, keypoint) >= start:
        x = float(np.nextafter(x, np.inf))
    return x


def classify_one(offset: tuple[float, float], keypoint: int, reference: int | None = None,
                 strict_good: bool = False) -> int:
    """The class of one keypoint placed `offset` from the GT keypoint `reference` (default: its own) at the
    origin; every other GT keypoint is over 1000 px away, and the detection's other keypoints are exact."""
    gt_xy = np.full((K, 2), 1000.0) + np.arange(K)[:, None] * 50
    gt_xy[reference if reference is not None else keypoint] = 0.0
    dt_xy = gt_xy.copy()
    dt_xy[keypoint] = offset
    flip = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
    labels = classify_keypoints(np.concatenate([dt_xy, np.ones((K, 1))], axis=1)[None], np.array([0]),
                                np.concatenate([gt_xy, np.full((K, 1), 2.0)], axis=1)[None], np.zeros((1, 4)),
                                np.array([AREA]), np.array([1]), SIGMAS, flip, strict_good=strict_good)
    return int(labels.labels[0, keypoint])


@pytest.mark.parametrize(("target", "default", "coco_analyze"), [
    (0.85, GOOD, UNCLASSIFIED),  # good is ks >= 0.85 here; coco-analyze's > 0.85 and < 0.85 leave 0.85 out
    (0.5, JITTER, JITTER),  # a keypoint at ks 0.5 is localised (jitter), below it a miss
])
def test_class_at_exactly_the_boundary(target: float, default: int, coco_analyze: int) -> None:
    shoulder = J["left_shoulder"]
    dx, dy = exact_offset(target, shoulder)
    assert keypoint_ks(dx, dy, shoulder) == target
    assert classify_one((dx, dy), shoulder) == default
    assert classify_one((dx, dy), shoulder, strict_good=True) == coco_analyze
    farther = (just_beyond(dx, dy, shoulder), dy)  # ks one float below the boundary
    below = JITTER if target == 0.85 else MISS
    assert classify_one(farther, shoulder) == below and classify_one(farther, shoulder, strict_good=True) == below


def test_inversion_at_exactly_half() -> None:
    """The left wrist at ks exactly 0.5 from the right wrist (its own GT wrist far away) is an inversion; one float
    farther, a miss."""
    wrist, partner = J["left_wrist"], J["right_wrist"]
    assert SIGMAS[wrist] == SIGMAS[partner]  # a flipped reference uses keypoint j's sigma: the same here
    dx, dy = exact_offset(0.5, partner)
    assert classify_one((dx, dy), wrist, reference=partner) == INVERSION
    assert classify_one((just_beyond(dx, dy, partner), dy), wrist, reference=partner) == MISS


def test_exact_085_in_the_whole_analysis() -> None:
    """Through analyze_errors: the default counts ks 0.85 as good; coco-analyze mode counts it unclassified (with
    a note) and leaves it where it is."""
    shoulder = J["left_shoulder"]
    gt_xy = TEMPLATE - TEMPLATE[shoulder]  # the left shoulder at the origin
    dt_xy = gt_xy.copy()
    dt_xy[shoulder] = exact_offset(0.85, shoulder)
    gt, res = dataset([gt_person(1, 1, gt_xy)]), [detection(1, dt_xy, 0.9)]
    default, strict = analyze_errors(gt, res), analyze_errors(gt, res, coco_analyze=True)
    assert (default.counts[-1]["good"], default.counts[-1]["jitter"]) == (17, 0)
    assert (strict.counts[-1]["good"], strict.counts[-1]["unclassified"], strict.counts[-1]["jitter"]) == (16, 1, 0)
    assert "unclassified" not in default.counts[-1]
    assert any("exactly 0.85 fall in no class" in n for n in strict.notes)
    jitter_rows = [r for r in strict.ap_gain if r["correction"] == "jitter"]
    assert all(r["AP"] == strict.ap_gain[0]["AP"] for r in jitter_rows if r["area"] == "all")  # nothing moved


# --- corrections land on their targets ---------------------------------------------------------------------------

# Coordinates are hundreds of pixels and offsets a few: moving a keypoint rounds its offset from the GT keypoint
# by ~1e-15 relative, so the recomputed ks equals its target to ~1e-14; 1e-12 leaves room and still fails on any
# wrong formula (σ² instead of (2σ)² misses by 13%).
TOLERANCE = 1e-12


def test_corrections_land_on_their_targets() -> None:
    dt_xy = hand_built_detection()
    dt = np.concatenate([dt_xy, np.linspace(0.1, 0.9, K)[:, None]], axis=1)[None]
    gt = np.concatenate([PERSON_A, np.full((K, 1), 2.0)], axis=1)[None]
    neighbour = np.concatenate([NEIGHBOUR, np.full((K, 1), 2.0)], axis=1)[None]
    flip = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
    labels = classify_keypoints(dt, np.array([0]), np.concatenate([gt, neighbour]), np.zeros((2, 4)),
                                np.array([AREA, AREA]), np.array([1, 1]), SIGMAS, flip).labels
    mode = ErrorMode()
    fixed = correct_keypoints(dt, labels, gt, np.array([AREA]), SIGMAS, ["miss", "swap", "inversion", "jitter"], mode)
    ks = similarity(fixed[0, :, :2], PERSON_A)
    assert ks[J["left_eye"]] == pytest.approx(0.85, rel=TOLERANCE)
    assert ks[J["left_ankle"]] == pytest.approx(0.5, rel=TOLERANCE)
    # Inversions and swaps move onto the GT keypoint exactly: ks 1.
    assert ks[[J["left_wrist"], J["right_wrist"], J["left_knee"]]].tolist() == [1.0, 1.0, 1.0]
    # Along the line towards the GT keypoint: the eye and the ankle only moved up, in y.
    assert fixed[0, [J["left_eye"], J["left_ankle"]], 0].tolist() == PERSON_A[[J["left_eye"], J["left_ankle"]], 0].tolist()
    good = labels[0] == GOOD
    assert np.array_equal(fixed[0, good], dt[0, good]) and np.array_equal(fixed[..., 2], dt[..., 2])
    # One fix at a time leaves the other error types alone.
    only_jitter = correct_keypoints(dt, labels, gt, np.array([AREA]), SIGMAS, ["jitter"], mode)
    moved = np.flatnonzero((only_jitter != dt).any(axis=2)[0]).tolist()
    assert moved == [J["left_eye"]]


def test_an_unknown_correction_is_refused() -> None:
    with pytest.raises(KpbenchError, match="unknown keypoint correction"):
        correct_keypoints(np.zeros((1, K, 3)), np.zeros((1, K), np.int8), np.zeros((1, K, 3)), np.ones(1), SIGMAS,
                          ["score"])


# --- a schema without flip pairs ----------------------------------------------------------------------------------


def test_a_schema_without_flip_pairs_has_no_inversions() -> None:
    names = ["head", "neck", "hip", "knee", "foot"]
    category = {"id": 1, "name": "thing", "supercategory": "thing", "keypoints": names, "skeleton": []}
    sigmas = [0.05, 0.06, 0.07, 0.08, 0.09]
    a = np.array([[50.0, 10], [50, 40], [50, 100], [50, 150], [50, 190]])
    b = a + np.array([300, 0])

    def person(ann_id: int, xy: np.ndarray) -> dict[str, Any]:
        return {"id": ann_id, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 5, "area": AREA,
                "bbox": [float(xy[:, 0].min()), float(xy[:, 1].min()), 1.0, 180.0],
                "keypoints": np.concatenate([xy, np.full((5, 1), 2.0)], axis=1).reshape(-1).tolist()}

    dt = a.copy()
    dt[3] = b[3]  # the knee on the other thing's knee
    res = [{"image_id": 1, "category_id": 1, "keypoints": np.concatenate([dt, np.ones((5, 1))], 1).reshape(-1).tolist(),
            "score": 0.8}]
    analysis = analyze_errors(dataset([person(1, a), person(2, b)], category=category), res, sigmas=sigmas)
    assert analysis.error_types == ("good", "jitter", "swap", "miss")
    assert analysis.counts[-1] == {"keypoint": "all", "n": 5, "good": 4, "jitter": 0, "swap": 1, "miss": 0,
                                   "frac_good": 0.8, "frac_jitter": 0.0, "frac_swap": 0.2, "frac_miss": 0.0}
    assert "inversion" not in {r["correction"] for r in analysis.ap_gain}
    assert any("has no flip pairs: inversions are not measured" in n for n in analysis.notes)


# --- the two ends ---------------------------------------------------------------------------------------------


def baseline_rows(analysis: Any) -> dict[str, dict[str, float]]:
    return {r["area"]: r for r in analysis.ap_gain if r["how"] == "baseline"}


def assert_uncorrected_is_pycocotools(gt: Any, res: Any) -> None:
    analysis = analyze_errors(gt, res)
    stats = evaluate(gt, res).stats
    assert analysis.baseline == stats  # bit for bit: the re-evaluation of the uncorrected arrays
    rows = baseline_rows(analysis)
    assert (rows["all"]["AP"], rows["all"]["AP50"], rows["all"]["AP75"], rows["medium"]["AP"], rows["large"]["AP"]) == (
        stats["AP"], stats["AP50"], stats["AP75"], stats["APm"], stats["APl"])
    curves = analysis.pr_curves["curves"]["original"]
    assert np.mean(curves["mean OKS 0.50:0.95"]) == pytest.approx(stats["AP"], rel=1e-12)
    coco = analyze_errors(gt, res, coco_analyze=True)
    settings = EvalSettings(area_ranges=COCO_ANALYZE_AREAS, iou_thresholds=COCO_ANALYZE_OKS)
    assert coco.baseline == evaluate(gt, res, settings=settings).stats


@requires_shared
def test_uncorrected_is_pycocotools_on_the_real_fixture() -> None:
    assert_uncorrected_is_pycocotools(SAMPLE_GT, FIXTURE)


def test_uncorrected_is_pycocotools_on_synthetic_data() -> None:
    gt, res = make_synthetic_coco(num_images=60, crowd_fraction=0.05, detections_per_person=9.0, seed=4)
    assert_uncorrected_is_pycocotools(gt, res)


@pytest.mark.parametrize("coco_analyze", [False, True])
def test_vectorized_and_pycocotools_re_evaluations_agree(coco_analyze: bool) -> None:
    """The two implementations of the re-evaluation give the same analysis, every number ==."""
    gt, res = make_synthetic_coco(num_images=40, crowd_fraction=0.05, seed=7)
    fast = analyze_errors(gt, res, coco_analyze=coco_analyze).to_json()
    slow = analyze_errors(gt, res, coco_analyze=coco_analyze, evaluator="pycocotools").to_json()
    for payload in (fast, slow):
        del payload["summary"]["evaluator"], payload["notes"]
    assert fast == slow
    assert sum(r["gain_AP"] != 0 for r in fast["ap_gain"] if r["gain_AP"] is not None) > 10  # corrections do work


def test_correcting_everything_gives_the_upper_bound() -> None:
    """Image 1: persons A and B and A's neighbour C; image 2: D. A's detection has a jitter (ks 0.7), inverted
    wrists and a knee on C's; B's has 12 jittered keypoints (ks 0.7) and 5 exact, and scores above A's; a
    background detection scores highest; C and D are detected by nobody.

    Fully corrected, A's keypoints are at ks 1 but one at 0.85 (OKS 0.99) and B's at 0.85 (12) and 1 (5): OKS
    (12 * 0.85 + 5) / 17 = 0.894, every keypoint >= 0.85. Rescored, A ranks first; the background detection is
    removed and C and D are ignored, leaving 2 GT. At OKS 0.50 ... 0.85 (8 thresholds) both match: precision 1 at
    every recall, AP 1. At 0.90 and 0.95 only A does: precision 1 up to recall 0.5, 0 beyond, so 51 of the 101
    recall points. AP = (8 * 101 + 2 * 51) / 1010 = 910/1010 exactly (sums of ones), AP50 = AP75 = 1.
    """
    a, c, b, d = TEMPLATE + np.array([100, 100]), TEMPLATE + np.array([400, 100]), TEMPLATE + np.array([100, 450]), TEMPLATE + np.array([100, 100])
    dt_a = a.copy()
    dt_a[J["left_eye"], 1] += distance_for(0.7, J["left_eye"])
    dt_a[[J["left_wrist"], J["right_wrist"]]] = a[[J["right_wrist"], J["left_wrist"]]]
    dt_a[J["left_knee"]] = c[J["left_knee"]]
    dt_b = b.copy()
    jittered = [J[n] for n in NAMES[5:]]  # shoulders to ankles
    dt_b[jittered, 1] += [distance_for(0.7, j) for j in jittered]
    background = TEMPLATE * 0.3 + [800, 600]
    gt = dataset([gt_person(1, 1, a), gt_person(2, 1, c), gt_person(3, 1, b), gt_person(4, 2, d)], image_ids=(1, 2))
    res = [detection(1, dt_a, 0.5), detection(1, dt_b, 0.9), detection(1, background, 0.95)]
    analysis = analyze_errors(gt, res)
    total = analysis.counts[-1]
    assert (total["good"], total["jitter"], total["inversion"], total["swap"], total["miss"]) == (13 + 5, 1 + 12, 2, 1, 0)
    labels = analysis.labels.labels
    assert sorted(analysis.pairs[:, 0].tolist()) == [0, 1]
    assert (analysis.summary["num_background_fp"], analysis.summary["num_background_fn"]) == (1, 2)
    upper = {r["area"]: r for r in analysis.ap_gain if r["how"] == "cumulative" and r["correction"] == "background_fn"}
    assert (upper["all"]["AP"], upper["all"]["AP50"], upper["all"]["AP75"]) == (910 / 1010, 1.0, 1.0)
    assert (upper["large"]["AP"], upper["medium"]["AP"]) == (910 / 1010, -1.0)  # every person is large
    # Why: after every correction, each remaining detection's keypoints are all >= 0.85 with its GT.
    for (p_dt, p_gt), row in zip(analysis.pairs.tolist(), labels):
        gt_xy = [a, c, b, d][p_gt]
        fixed = correct_keypoints(np.asarray(res[p_dt]["keypoints"]).reshape(1, K, 3), row[None],
                                  np.concatenate([gt_xy, np.full((K, 1), 2.0)], 1)[None], np.array([AREA]), SIGMAS,
                                  ["miss", "swap", "inversion", "jitter"])
        assert (similarity(fixed[0, :, :2], gt_xy) >= 0.85 * (1 - TOLERANCE)).all()


# --- coco-analyze mode: each of its rules on hand-built persons ------------------------------------------------

# coco-analyze's Params.sigmas, as it writes them.
COCO_ANALYZE_SIGMAS = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087,
                                .087, .089, .089])
FLIP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


# COCOeval's precision after one true positive and no false one: tp / (tp + fp + eps).
ONE_TP = 1 / (1 + np.spacing(1))


def mean_of(*runs: tuple[float, int]) -> float:
    """np.mean of `count` copies of each value, as COCOeval averages its interpolated precisions."""
    return float(np.mean(np.concatenate([np.full(count, value) for value, count in runs])))


def by_oks(analysis: Any, how: str, correction: str, area: str) -> list[float]:
    """The AP at each OKS threshold of one step and area range."""
    return next(r["AP"] for r in analysis.ap_by_oks["rows"]
                if (r["how"], r["correction"], r["area"]) == (how, correction, area))


def gain_row(analysis: Any, how: str, correction: str, area: str) -> dict[str, Any]:
    return next(r for r in analysis.ap_gain if (r["how"], r["correction"], r["area"]) == (how, correction, area))


def test_coco_analyze_sigmas_are_its_literals() -> None:
    """ks, the corrections and soft-NMS use coco-analyze's .026, .025, ...; pycocotools' .26/10 differs in 5."""
    assert ErrorMode(coco_analyze=True).analysis_sigmas(SIGMAS).tolist() == COCO_ANALYZE_SIGMAS.tolist()
    assert int((SIGMAS != COCO_ANALYZE_SIGMAS).sum()) == 5
    assert ErrorMode().analysis_sigmas(SIGMAS).tolist() == SIGMAS.tolist()


def test_coco_analyze_breaks_a_flip_and_other_person_tie_as_a_swap() -> None:
    """The detection's left wrist lies on the matched person's right wrist and, exactly there too, on the
    neighbour's left wrist (ks 1 both). kpbench gives the tie to the flip (an inversion); coco-analyze's argmax
    meets the other persons unflipped before the matched person flipped (a swap)."""
    neighbour = NEIGHBOUR.copy()
    neighbour[J["left_wrist"]] = PERSON_A[J["right_wrist"]]
    dt = PERSON_A.copy()
    dt[J["left_wrist"]] = PERSON_A[J["right_wrist"]]
    gt, res = dataset([gt_person(1, 1, PERSON_A), gt_person(2, 1, neighbour)]), [detection(1, dt, 0.9)]
    assert analyze_errors(gt, res).labels.labels[0, J["left_wrist"]] == INVERSION
    coco = analyze_errors(gt, res, coco_analyze=True)
    assert coco.labels.labels[0, J["left_wrist"]] == SWAP and coco.counts[J["left_wrist"]]["swap"] == 1


def test_coco_analyze_corrections_move_right_of_the_gt_keypoint() -> None:
    """coco-analyze moves a corrected keypoint to (g_x + r, g_y), r = sqrt(-ln(k) · 2 · area · σ²): ks lands at
    k^(1/4), k = 0.85 (jitter), 0.5 (miss), or the ks of a swap or inversion with its wrong reference (here
    0.7 with the neighbour's knee; 1 for the swapped wrists, nudged to 1 - eps: r is tiny but not 0)."""
    dt_xy = hand_built_detection()
    dt_xy[J["left_knee"], 1] += distance_for(0.7, J["left_knee"])  # ks 0.7 from the neighbour's knee
    dt = np.concatenate([dt_xy, np.full((K, 1), 0.5)], axis=1)[None]
    gt = np.concatenate([PERSON_A, np.full((K, 1), 2.0)], axis=1)[None]
    neighbour = np.concatenate([NEIGHBOUR, np.full((K, 1), 2.0)], axis=1)[None]
    labels = classify_keypoints(dt, np.array([0]), np.concatenate([gt, neighbour]), np.zeros((2, 4)),
                                np.array([AREA, AREA]), np.array([1, 1]), COCO_ANALYZE_SIGMAS, FLIP,
                                strict_good=True, others_before_flip=True)
    assert labels.labels[0, J["left_knee"]] == SWAP and labels.ks_best[0, J["left_knee"]] == pytest.approx(0.7)
    fixed = correct_keypoints(dt, labels.labels, gt, np.array([AREA]), COCO_ANALYZE_SIGMAS,
                              ["miss", "swap", "inversion", "jitter"], ErrorMode(coco_analyze=True), labels.ks_best)
    ks = similarity(fixed[0, :, :2], PERSON_A)
    assert ks[J["left_eye"]] == pytest.approx(0.85**0.25, rel=TOLERANCE)
    assert ks[J["left_ankle"]] == pytest.approx(0.5**0.25, rel=TOLERANCE)
    assert ks[J["left_knee"]] == pytest.approx(0.7**0.25, rel=TOLERANCE)
    assert ks[[J["left_wrist"], J["right_wrist"]]] == pytest.approx([1.0, 1.0], abs=TOLERANCE)
    moved = [J[n] for n in ("left_eye", "left_ankle", "left_knee", "left_wrist", "right_wrist")]
    assert fixed[0, moved, 1].tolist() == PERSON_A[moved, 1].tolist()  # on the GT keypoint's row ...
    assert (fixed[0, moved, 0] > PERSON_A[moved, 0]).all()  # ... to its right
    good = labels.labels[0] == GOOD
    assert np.array_equal(fixed[0, good], dt[0, good]) and np.array_equal(fixed[..., 2], dt[..., 2])
    with pytest.raises(KpbenchError, match="need each keypoint's best ks"):
        correct_keypoints(dt, labels.labels, gt, np.array([AREA]), COCO_ANALYZE_SIGMAS, ["swap"],
                          ErrorMode(coco_analyze=True))


def test_coco_analyze_analyses_a_match_to_a_person_its_range_ignores() -> None:
    """A small person (area 900 < 32²) is ignored in coco-analyze's "all", but a detection matched to it at OKS
    0.1 is analysed (its matches include those to ignored persons)."""
    small = TEMPLATE * 0.15 + np.array([100, 100])
    gt, res = dataset([gt_person(1, 1, small, area=900.0)]), [detection(1, small, 0.9)]
    coco = analyze_errors(gt, res, coco_analyze=True)
    assert coco.pairs.tolist() == [[0, 0]] and coco.counts[-1]["n"] == 17 and coco.counts[-1]["good"] == 17


def test_coco_analyze_matches_each_area_range_on_its_own() -> None:
    """A medium person M (area 5000) and over it a large annotation L (area 20000) whose keypoints lie halfway
    between M's and the detection's, each of which is at ks 0.72 from M's. In "all" the detection matches L
    (OKS 0.72^(1/16) = 0.98: good keypoints, nothing to correct); in "medium" L is ignored and it matches M, its
    keypoints are swaps to L, corrected to ks 0.98^(1/4) from M: medium AP goes from 0.5 (matched at OKS 0.5 to
    0.7) to 1 (in COCOeval's precision of one true positive)."""
    medium_area, large_area = 5000.0, 20000.0
    m = TEMPLATE * 0.5 + np.array([100, 100])
    offset = np.array([[0.0, distance_for(0.72, j, medium_area)] for j in range(K)])
    gt = dataset([gt_person(1, 1, m, area=medium_area), gt_person(2, 1, m + offset / 2, area=large_area)])
    coco = analyze_errors(gt, [detection(1, m + offset, 0.9)], coco_analyze=True)
    assert coco.pairs.tolist() == [[0, 1]] and coco.counts[-1]["good"] == 17  # area "all": L
    assert gain_row(coco, "baseline", "none", "medium")["AP"] == mean_of((ONE_TP, 505), (0.0, 505))
    assert by_oks(coco, "baseline", "none", "medium") == [mean_of((ONE_TP, 101))] * 5 + [0.0] * 5
    assert gain_row(coco, "alone", "swap", "medium")["AP"] == mean_of((ONE_TP, 1010))
    assert gain_row(coco, "cumulative", "jitter", "medium")["AP"] == mean_of((ONE_TP, 1010))
    assert gain_row(coco, "alone", "swap", "large")["gain_AP"] == 0.0  # nothing corrected against L


def test_coco_analyze_rescores_with_the_range_s_persons_then_soft_nms() -> None:
    """Image 1: a large person G, detected exactly (score 0.8) and with every keypoint at ks 0.9 (score 0.9).
    Image 2: a small person S (area 900), detected exactly. The optimal score of area "all" is the best OKS with
    the persons the range counts (S is not one: 0), then soft-NMS: the exact detection (1.0) is kept first and
    the other's 0.9 is multiplied by exp(-OKS² / 0.5), OKS between the two detections (all 17 keypoints, (2σ)²
    with coco-analyze's sigmas, the mean of their keypoint-extent areas)."""
    g = PERSON_A
    small = TEMPLATE * 0.15 + np.array([500, 100])
    shifted = g + np.array([[0.0, distance_for(0.9, j)] for j in range(K)])
    gt = dataset([gt_person(1, 1, g), gt_person(2, 2, small, area=900.0)], image_ids=(1, 2))
    res = [detection(1, g, 0.8), detection(1, shifted, 0.9), detection(2, small, 0.7)]
    coco = analyze_errors(gt, res, coco_analyze=True)
    assert coco.detections.tolist() == [1, 0, 2]  # coco-analyze's order: by image, by descending score
    extent = [float(np.ptp(xy[:, 0]) * np.ptp(xy[:, 1])) for xy in (g, shifted)]
    e = ((shifted - g) ** 2).sum(axis=1) / (COCO_ANALYZE_SIGMAS * 2) ** 2 / (0.5 * (extent[0] + extent[1])
                                                                            + np.spacing(1)) / 2
    pair_oks = float(np.mean(np.exp(-e)))
    expected = [0.9 * math.exp(-pair_oks**2 / 0.5), 1.0, 0.0]
    assert coco.optimal_scores["alone", "all"].tolist() == pytest.approx(expected, rel=1e-12)
    assert coco.optimal_scores["alone", "medium"].tolist() == [0.0, 0.0, 0.0]  # G is large, S small
    # kpbench's rule: the best OKS with every counted person of the image, no suppression.
    assert analyze_errors(gt, res).optimal_scores["alone", "all"].tolist() == pytest.approx([1.0, 0.9, 1.0],
                                                                                            rel=1e-12)


def test_soft_nms_keeps_the_list_order_between_equal_scores() -> None:
    """Two identical detections with equal starting scores: the first in the image's list (ordered by the
    original score) is kept, the other multiplied by exp(-1 / 0.5); a detection far away is not touched."""
    xy = np.concatenate([PERSON_A, np.ones((K, 1))], axis=1)
    far = np.concatenate([PERSON_A + 5000, np.ones((K, 1))], axis=1)
    kept = soft_nms_scores(np.array([1, 1, 1]), np.array([0.2, 0.6, 0.4]), np.array([0.5, 0.5, 0.5]),
                           np.stack([xy, xy, far]), COCO_ANALYZE_SIGMAS)
    assert kept.tolist() == [0.5 * math.exp(-1 / 0.5), 0.5, 0.5]


def test_coco_analyze_background_is_per_oks_threshold() -> None:
    """Persons g1 and g2; d1 on g1 exactly (score 0.5), d2 with every keypoint at ks 0.62 from g2's (score 0.9),
    d3 on nobody (0.95). A background false positive at OKS t is a detection unmatched at t: d3 everywhere, d2
    above 0.6. Removed, precision is 1 at every threshold: AP 1 up to 0.6 (both persons found), 51/101 above
    (half of them; one true positive's precision is 1/(1 + eps) in COCOeval). On top of that the persons missed
    at t (g2 above 0.6) are ignored: AP 1 everywhere, and the gain is measured from the background_fp step."""
    g1, g2 = PERSON_A, PERSON_A + np.array([0.0, 300.0])
    d2 = g2 + np.array([[0.0, distance_for(0.62, j)] for j in range(K)])
    gt = dataset([gt_person(1, 1, g1), gt_person(2, 1, g2)])
    res = [detection(1, g1, 0.5), detection(1, d2, 0.9), detection(1, TEMPLATE * 0.3 + [800, 600], 0.95)]
    coco = analyze_errors(gt, res, coco_analyze=True)
    assert coco.detections.tolist() == [2, 1, 0]
    fp, fn = coco.background_sets["alone", "all"]
    assert fp.tolist() == [[True, False, False]] * 3 + [[True, True, False]] * 7
    assert fn.tolist() == [[False, False]] * 3 + [[False, True]] * 7
    half = mean_of((ONE_TP, 51), (0.0, 50))
    assert by_oks(coco, "alone", "background_fp", "all") == [1.0] * 3 + [half] * 7
    fp_row, fn_row = gain_row(coco, "alone", "background_fp", "all"), gain_row(coco, "alone", "background_fn", "all")
    assert fp_row["AP"] == mean_of((1.0, 303), (ONE_TP, 357), (0.0, 350))
    assert by_oks(coco, "alone", "background_fn", "all") == [1.0] * 3 + [mean_of((ONE_TP, 101))] * 7
    assert fn_row["AP"] == mean_of((1.0, 303), (ONE_TP, 707)) and fn_row["gain_AP"] == fn_row["AP"] - fp_row["AP"]
    assert [r for r in coco.background if r["how"] == "alone" and r["area"] == "all"][3] == {
        "how": "alone", "area": "all", "oks": 0.65, "fp": 2, "fn": 1}


def test_coco_analyze_keeps_the_original_detection_areas() -> None:
    """pycocotools' loadRes sets a detection's area once, from the original keypoints. d1 (score 0.9) has
    jittered keypoints (ks 0.6) and a missed ankle 200 px off, so a keypoint extent in "large"; corrected alone,
    the miss lands near the ankle and the extent would be 'medium', but it keeps its large area. Unmatched
    above OKS 0.6, it is then a false positive of "large" ranked above d2 (exact on g2, score 0.8), not an
    ignored detection: AP 25.5/101 at those thresholds, not 51/101."""
    g1 = TEMPLATE * 0.7 + np.array([100, 100])
    g2 = g1 + np.array([400.0, 0.0])
    d1 = g1 + np.array([[0.0, distance_for(0.6, j)] for j in range(K)])
    d1[J["left_ankle"], 1] += 200.0
    gt = dataset([gt_person(1, 1, g1), gt_person(2, 1, g2)])
    coco = analyze_errors(gt, [detection(1, d1, 0.9), detection(1, g2, 0.8)], coco_analyze=True)
    assert coco.labels.labels[0, J["left_ankle"]] == MISS
    corrected = by_oks(coco, "alone", "miss", "large")
    assert corrected[:3] == [1.0] * 3 and corrected[3:] == [mean_of((0.5, 51), (0.0, 50))] * 7


# --- the real fixture: counts against a slow reference -----------------------------------------------------------

# YOLO11n-pose on the 35-image val2017 sample (tests/fixtures/README.md), kpbench's default mode: per keypoint
# (good, jitter, inversion, swap, miss), checked against `slow_reference_labels` below.
YOLO_COUNTS = (
    (23, 12, 0, 0, 6), (18, 12, 0, 1, 6), (17, 11, 1, 0, 4), (19, 5, 0, 0, 3), (23, 10, 0, 0, 4),
    (44, 7, 1, 3, 3), (42, 7, 1, 2, 6), (24, 14, 0, 1, 7), (22, 12, 2, 0, 9), (17, 14, 1, 1, 9),
    (19, 7, 2, 0, 11), (29, 14, 3, 0, 7), (31, 16, 2, 0, 3), (21, 7, 3, 0, 2), (20, 4, 3, 0, 4),
    (17, 7, 2, 0, 4), (12, 7, 5, 0, 3),
)  # fmt: skip
YOLO_TOTAL = (398, 166, 26, 8, 91)


def slow_reference_labels(gt: dict[str, Any], results: list[dict[str, Any]]) -> dict[tuple[int, int], list[str]]:
    """The classification with plain loops: bare pycocotools' matching at OKS 0.1 (area all, maxDets 20), then for
    each matched detection and each keypoint labelled in its GT, math.exp over the four references."""
    ev = pycocotools_eval(gt, results, settings=EvalSettings(iou_thresholds=(0.1,)))
    anns = {a["id"]: a for a in gt["annotations"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    flip = list(range(K))
    for left, right in COCO17.flip_pairs:
        flip[left], flip[right] = right, left
    eps = float(np.spacing(1))

    def ks(d: list[float], ref: dict[str, Any], j: int, ref_j: int) -> float:
        x, y, v = ref["keypoints"][3 * ref_j: 3 * ref_j + 3]
        if v <= 0:
            return 0.0
        e = ((d[3 * j] - x) ** 2 + (d[3 * j + 1] - y) ** 2) / (SIGMAS[j] * 2) ** 2 / (ref["area"] + eps) / 2
        return math.exp(-e)

    out = {}
    for e in ev.evalImgs[: len(ev.params.imgIds)]:  # area "all" comes first
        if e is None:
            continue
        for dt_id, gt_id, ignored in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            if gt_id == 0 or ignored:
                continue
            g, d = anns[int(gt_id)], results[dt_id - 1]["keypoints"]
            labels = []
            for j in range(K):
                if g["keypoints"][3 * j + 2] <= 0:
                    continue
                own, flipped = ks(d, g, j, j), ks(d, g, j, flip[j])
                other = max([ks(d, o, j, r) for o in by_image[g["image_id"]] if o["id"] != g["id"]
                             for r in (j, flip[j])], default=-1.0)
                best = max(own, flipped, other)
                if best < 0.5:
                    labels.append("miss")
                elif own >= flipped and own >= other:
                    labels.append("good" if own >= 0.85 else "jitter")
                elif flipped >= other:
                    labels.append("inversion")
                else:
                    labels.append("swap")
            out[dt_id - 1, int(gt_id)] = labels
    return out


@requires_shared
def test_counts_on_the_real_fixture() -> None:
    gt, results = json.loads(SAMPLE_GT.read_text()), json.loads(FIXTURE.read_text())
    analysis = analyze_errors(SAMPLE_GT, FIXTURE)
    types = ("good", "jitter", "inversion", "swap", "miss")
    assert [tuple(r[t] for t in types) for r in analysis.counts[:-1]] == list(YOLO_COUNTS)
    assert tuple(analysis.counts[-1][t] for t in types) == YOLO_TOTAL and analysis.counts[-1]["n"] == 689
    assert (analysis.summary["num_matched"], analysis.summary["num_analysed"], analysis.summary["num_background_fp"],
            analysis.summary["num_background_fn"]) == (64, 499, 400, 6)

    reference = slow_reference_labels(gt, results)
    assert len(reference) == len(analysis.pairs)
    # The analysis indexes the top-20 detections; map them back to results positions as pycocotools numbers them.
    order = np.lexsort((-np.asarray([r["score"] for r in results]), [r["image_id"] for r in results]))
    ranks = np.empty(len(order), np.int64)
    image_of = np.asarray([r["image_id"] for r in results])[order]
    ranks[order] = np.arange(len(order)) - np.searchsorted(image_of, image_of)
    analysed = np.flatnonzero(ranks < 20)
    gt_ids = [a["id"] for a in gt["annotations"]]
    names = ("good", "jitter", "inversion", "swap", "miss")
    ours = {}
    for (dt, g), row in zip(analysis.pairs.tolist(), analysis.labels.labels):
        ours[int(analysed[dt]), gt_ids[g]] = [names[c] for c in row if c != NOT_LABELLED]
    assert ours == reference
    counted = [0] * 5
    for labels in reference.values():
        for name in labels:
            counted[names.index(name)] += 1
    assert tuple(counted) == YOLO_TOTAL


# --- the command line ---------------------------------------------------------------------------------------------


@requires_shared
def test_cli_analyze_files(tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("analyze", SAMPLE_GT, FIXTURE, "--format", "json", "--out", tmp_path,
                             "--bootstrap", "5", "--bootstrap-seed", "3")
    assert code == 0, err
    payload = json.loads(out)
    from kpbench.analysis.diagnose import diagnose

    analysis = diagnose(SAMPLE_GT, FIXTURE, bootstrap=5, seed=3)
    assert payload == json.loads(json.dumps(analysis.to_json()))
    assert payload["intervals"] == bootstrap_intervals(evaluate(SAMPLE_GT, FIXTURE), 5, 3)
    assert json.loads((tmp_path / "analyze.json").read_text()) == payload
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["analyze.json", "errors_ap_gain.csv", "errors_ap_gain.json", "errors_ap_gain.md",
                       "errors_keypoints.csv", "errors_keypoints.json", "errors_keypoints.md", "errors_pr_curves.png",
                       "keypoint_ap.csv", "keypoint_ap.json", "keypoint_ap.md", "score_threshold.csv", "score_threshold.json", "score_threshold.md", "sensitivity.csv",
                       "sensitivity.json", "sensitivity.md"]
    assert png_size(tmp_path / "errors_pr_curves.png") == (1500, 516)
    assert f"wrote {tmp_path / 'analyze.json'}" in err
    csv_lines = (tmp_path / "errors_keypoints.csv").read_text().splitlines()
    assert csv_lines[0] == ("keypoint,n,good,jitter,inversion,swap,miss,frac_good,frac_jitter,frac_inversion,"
                            "frac_swap,frac_miss")
    assert csv_lines[-1].startswith("all,689,398,166,26,8,91,")
    code, out, _ = run_cli("analyze", "--gt", SAMPLE_GT, "--results", FIXTURE, "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "how,correction,area,AP,gain_AP,AP50,gain_AP50,AP75,gain_AP75"
    assert out.splitlines()[1] == ",".join(["baseline", "none", "all", repr(analysis.baseline["AP"]), "0.0",
                                            repr(analysis.baseline["AP50"]), "0.0", repr(analysis.baseline["AP75"]),
                                            "0.0"])
    code, out, _ = run_cli("analyze", SAMPLE_GT, FIXTURE, "--coco-analyze", "--format", "markdown")
    assert code == 0 and "Keypoint errors (coco-analyze mode" in out
    assert "| keypoint | n | good | jitter | inversion | swap | miss | unclassified |" in out


def test_cli_analyze_run_directory(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    code, out, err = run_cli("analyze", run)
    assert code == 0, err
    assert "Keypoint errors (kpbench mode; fractions in percent):" in out and "AP gained by each correction" in out
    assert (run / "analyze.json").is_file() and (run / "errors_pr_curves.png").is_file()
    payload = json.loads((run / "analyze.json").read_text())
    from kpbench.analysis.diagnose import diagnose_run

    assert payload == json.loads(json.dumps(diagnose_run(run).to_json()))
    assert payload["baseline"] == evaluate(run / "ground_truth.json", run / "keypoints_results.json").stats


def test_cli_analyze_errors_are_one_line(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    gt, res = run / "ground_truth.json", run / "keypoints_results.json"
    assert_one_line_error(run_cli("analyze", run, "--schema", "coco17"),
                          "error: --schema and --sigmas are for GT_JSON RESULTS_JSON")
    assert_one_line_error(run_cli("analyze", gt, res, "--format", "xml"), "error: --format: must be one of")
    assert_one_line_error(run_cli("analyze", gt, res, "--table", "both"), "error: --table: must be one of")
    assert_one_line_error(run_cli("analyze", gt, res, "--bootstrap", "0"), "error: --bootstrap: needs at least 1")
    assert_one_line_error(run_cli("analyze", gt, tmp_path / "nope.json"), f"{tmp_path / 'nope.json'}")
    assert_one_line_error(run_cli("analyze", tmp_path / "nope"), "run directory not found")
    assert_one_line_error(run_cli("analyze", "--gt", gt), "--gt and --results go together")
    assert_one_line_error(run_cli("analyze", gt, res, "--sigmas", "0.1,0.2"), "2 sigmas were given")
    code, out, _ = run_cli("analyze", "--help")
    assert code == 0 and "kpbench analyze RUN_DIR" in out and "--coco-analyze" in out


# --- edge cases and hooks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("evaluator", ["vectorized", "pycocotools"])
def test_no_detections_and_no_persons(evaluator: str) -> None:
    gt, res = make_synthetic_coco(num_images=5, seed=1)
    empty = analyze_errors(gt, [], evaluator=evaluator)
    counted = sum(1 for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0)
    assert (empty.summary["num_background_fn"], empty.summary["num_matched"]) == (counted, 0)
    rows = [r for r in empty.ap_gain if r["area"] == "all"]
    assert {(r["AP"], r["gain_AP"]) for r in rows if r["correction"] != "background_fn"} == {(0.0, 0.0)}
    # Every person is a background false negative: ignored, they leave no GT (COCO's -1) and no gain to state.
    assert [(r["AP"], r["gain_AP"]) for r in rows if r["correction"] == "background_fn"] == [(-1.0, None)] * 2
    assert empty.counts[-1]["n"] == 0 and empty.counts[-1]["frac_good"] is None
    nobody = analyze_errors({**gt, "annotations": []}, res, evaluator=evaluator)
    assert nobody.summary["num_background_fp"] == len(res)
    assert {(r["AP"], r["gain_AP"]) for r in nobody.ap_gain} == {(-1.0, None)}  # COCO's "no GT"
    assert nobody.pr_curves["curves"]["original"]["OKS 0.50"] == []


def test_inputs_it_does_not_analyse() -> None:
    from kpbench.core.errors import KpbenchError

    gt, res = make_synthetic_coco(num_images=3, seed=1)
    two = {**gt, "categories": [PERSON_CATEGORY, {**PERSON_CATEGORY, "id": 2, "name": "other"}]}
    with pytest.raises(KpbenchError, match="2 categories; the error analysis scores one keypoint category"):
        analyze_errors(two, res)
    with pytest.raises(KpbenchError, match="evaluator: must be one of vectorized, pycocotools"):
        analyze_errors(gt, res, evaluator="hotcoco")
    with pytest.raises(KpbenchError, match="give a schema or sigmas, not both"):
        analyze_errors(gt, res, schema=COCO17, sigmas=list(SIGMAS))


def test_other_analyses_add_sections(tmp_path: Path) -> None:
    """The hook for other analyses (sensitivity tables, an LRP-optimal threshold): a section in `extra` is
    written into analyze.json under its name."""
    from kpbench.analysis.errors import write_error_files

    gt, res = make_synthetic_coco(num_images=5, seed=2)
    analysis = analyze_errors(gt, res)
    analysis.extra["sensitivity"] = {"rows": [{"factor": "occlusion", "AP": 0.5}]}
    write_error_files(tmp_path, analysis, plot=False)
    payload = json.loads((tmp_path / "analyze.json").read_text())
    assert payload["sensitivity"] == {"rows": [{"factor": "occlusion", "AP": 0.5}]}
    assert payload["mode"] == "kpbench" and payload["settings"]["area_ranges"][0] == ["all", 0.0, 1e10]


# --- a run directory is analysed on arrays: its store read once, no results records made ----------------------


@requires_shared
@pytest.mark.parametrize("coco_analyze", [False, True])
def test_a_run_directory_is_analysed_on_arrays_with_the_numbers_of_its_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coco_analyze: bool
) -> None:
    """Before: analyze_run_errors rebuilt the run's results as dicts (to_coco_results, validate_results). Now the
    store's arrays are checked and analysed as they are, with every number of the results file's analysis."""
    import kpbench.evaluation.arrays as arrays_module
    import kpbench.evaluation.cocofiles as cocofiles
    import kpbench.runs.detections as store
    from kpbench.analysis.diagnose import diagnose, diagnose_run
    from kpbench.engine.from_results import run_from_results

    run = run_from_results(FIXTURE, SAMPLE_GT, tmp_path / "run").run_dir
    from_file = diagnose(run / "ground_truth.json", run / "keypoints_results.json", coco_analyze=coco_analyze)

    def no_dicts(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run's detections were made into results records")

    monkeypatch.setattr(store, "to_coco_results", no_dicts)
    monkeypatch.setattr(cocofiles, "validate_results", no_dicts)
    monkeypatch.setattr(arrays_module, "records_from_detections", no_dicts)
    from_run = diagnose_run(run, coco_analyze=coco_analyze)
    assert isinstance(from_run.inputs[1], cocofiles.CheckedDetections)
    source = f"results rebuilt from {run / 'detections.jsonl'}"
    ours, theirs = from_run.to_json(), from_file.to_json()
    assert ours["notes"] == [n.replace(str(run / "keypoints_results.json"), source) for n in theirs["notes"]]
    assert {k: v for k, v in ours.items() if k != "notes"} == {k: v for k, v in theirs.items() if k != "notes"}
    assert (from_run.summary["num_results"], from_run.summary["num_analysed"]) == (639, 499)
    assert np.array_equal(from_run.pairs, from_file.pairs)


def test_detection_arrays_are_analysed_as_their_records_by_both_evaluators() -> None:
    """DetectionArrays (keypoint results without a 'bbox') give the numbers of the records they stand for, with the
    vectorized evaluator and with pycocotools (which alone gets records, made from the arrays)."""
    from kpbench.evaluation.arrays import detections_from_records

    gt, res = make_synthetic_coco(num_images=12, seed=5)
    res = [{k: v for k, v in r.items() if k != "bbox"} for r in res]
    expected = analyze_errors(gt, res).to_json()
    arrays = detections_from_records(res, "keypoints", K)
    for evaluator in ("vectorized", "pycocotools"):
        got = analyze_errors(gt, arrays, evaluator=evaluator).to_json()
        assert {k: v for k, v in got.items() if k not in ("notes", "summary")} == \
            {k: v for k, v in expected.items() if k not in ("notes", "summary")}
