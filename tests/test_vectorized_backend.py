"""The vectorized backend (the default) against pycocotools, the reference: on every fixture in ../shared/data and on
generated data, keypoints and boxes, the stats, the precision/recall/scores arrays and every per-image match
(pycocotools' evalImgs, every category, area range and threshold) are equal (==, never approx)."""

from __future__ import annotations

import copy
import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, EDGE, FCE, SHARED_DATA, XTCOCO, jittered_detections, load, requires_shared

from kpbench.core.arrays import DetectionArrays
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.arrays import detections_from_records, ground_truth_arrays
from kpbench.evaluation.cocoeval import EvalResult, evaluate
from kpbench.evaluation.settings import EvalSettings
from kpbench.evaluation.vectorized import CocoEvaluator

SAMPLE_RESULTS = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
CROWDPOSE = SHARED_DATA / "xtcocoapi_example_crowdpose"


def both(gt: Any, results: Any, iou_type: str = "keypoints", settings: EvalSettings | None = None,
         **kwargs: Any) -> tuple[EvalResult, EvalResult]:
    """(vectorized, pycocotools) through kpbench.evaluate, on copies, kpbench's warnings silenced (both get them)."""
    out = []
    for backend in ("vectorized", "pycocotools"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(evaluate(copy.deepcopy(gt), copy.deepcopy(results), iou_type=iou_type, backend=backend,
                                settings=settings, **kwargs))
    return out[0], out[1]


def assert_equal_evaluations(vec: EvalResult, ref: EvalResult, matches: bool = True) -> None:
    """Stats (names and values), arrays, parameters, counts, notes and every evalImgs entry equal."""
    assert vec.backend == "vectorized" and ref.backend == "pycocotools"
    assert vec.stats == ref.stats
    assert np.array_equal(vec.precision, ref.precision)
    assert np.array_equal(vec.recall, ref.recall)
    assert np.array_equal(vec.scores, ref.scores)
    for name in ("iou_thresholds", "recall_thresholds"):
        assert np.array_equal(getattr(vec.params, name), getattr(ref.params, name))
    for name in ("area_ranges", "area_labels", "max_dets", "image_ids", "category_ids"):
        assert getattr(vec.params, name) == getattr(ref.params, name), name
    assert (vec.num_images, vec.num_gt, vec.num_results) == (ref.num_images, ref.num_gt, ref.num_results)
    assert vec.notes == ref.notes
    assert np.array_equal(vec.result_scores, ref.result_scores)
    if not matches:
        return
    mine, theirs = list(vec.image_evals), list(ref.image_evals)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert (a.image_id, a.category_id, a.area_index) == (b.image_id, b.category_id, b.area_index)
        for name in ("dt_ids", "dt_scores", "dt_matches", "dt_ignore", "gt_ids", "gt_matches", "gt_ignore"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


def assert_same(gt: Any, results: Any, iou_type: str = "keypoints", settings: EvalSettings | None = None,
                **kwargs: Any) -> EvalResult:
    vec, ref = both(gt, results, iou_type, settings, **kwargs)
    assert_equal_evaluations(vec, ref)
    return vec


def box_results(keypoint_results: list[dict], seed: int = 0, zero_width: float = 0.05) -> list[dict]:
    """Box results from keypoint results (each box its keypoints' extent), some of zero width."""
    rng = np.random.default_rng(seed)
    out = []
    for r in keypoint_results:
        x, y = np.asarray(r["keypoints"][0::3]), np.asarray(r["keypoints"][1::3])
        width = 0.0 if rng.random() < zero_width else float(np.ptp(x))
        out.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                    "bbox": [float(x.min()), float(y.min()), width, float(np.ptp(y))]})
    return out


def box_scene(seed: int, categories: int = 3, images: int = 40) -> tuple[dict, list]:
    """Boxes of several categories: crowd regions (some large, holding many detections), GT areas other than w * h,
    GTs and detections of zero size, images without GT, detections on images without GT, detections of another
    category than their GT, scores with one decimal (ties across images and categories) and results in no order."""
    rng = np.random.default_rng(seed)
    image_ids = rng.choice(10_000, images, replace=False)
    cats = [{"id": int(c), "name": f"c{c}"} for c in rng.choice(90, categories, replace=False)]
    anns: list[dict] = []
    results: list[dict] = []
    for n, image_id in enumerate(image_ids.tolist()):
        for _ in range(0 if n % 7 == 0 else rng.poisson(4)):
            cat = cats[rng.integers(categories)]["id"]
            w, h = (rng.uniform(2, 220, 2) * (rng.random() > 0.03)).round(1)
            x, y = rng.uniform(0, 400, 2).round(1)
            crowd = int(rng.random() < 0.08)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": float(round(w * h * rng.uniform(0.4, 1.0), 1)), "iscrowd": crowd})
            for _ in range(rng.poisson(6 if crowd else 2)):
                jitter = rng.normal(0, 0.06 * max(w, h, 1), 4)
                results.append({
                    "image_id": image_id, "category_id": cat if rng.random() < 0.9 else cats[rng.integers(categories)]["id"],
                    "bbox": [round(x + jitter[0], 1), round(y + jitter[1], 1), round(max(0.0, w + jitter[2]), 1),
                             round(max(0.0, h + jitter[3]), 1)],
                    "score": round(float(rng.random()), 1)})
        for _ in range(rng.poisson(1.5)):
            results.append({"image_id": image_id, "category_id": cats[rng.integers(categories)]["id"],
                            "bbox": rng.uniform(0, 300, 4).round(1).tolist(), "score": round(float(rng.random()), 1)})
    rng.shuffle(results)
    return {"images": [{"id": i} for i in image_ids.tolist()], "annotations": anns, "categories": cats}, results


# --- real fixtures ---------------------------------------------------------------------------------------------


@requires_shared
def test_real_val2017_sample_with_yolo_results() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    result = assert_same(gt, load(SAMPLE_RESULTS))
    assert round(100 * result.stats["AP"], 1) == 47.2  # README's number


@requires_shared
def test_real_val2017_sample_jittered_keypoints_and_boxes() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    keypoints = jittered_detections(gt, seed=2)
    assert_same(gt, keypoints)
    rng = np.random.default_rng(5)
    boxes = [{"image_id": a["image_id"], "category_id": 1, "score": round(float(rng.uniform(0.1, 1)), 2),
              "bbox": (np.array(a["bbox"]) + rng.normal(0, 4, 4)).clip(0).round(2).tolist()}
             for a in gt["annotations"]]
    result = assert_same(gt, boxes + box_results(keypoints, seed=1), "bbox")
    assert any(a["iscrowd"] for a in gt["annotations"]) and 0.2 < result.stats["AP"] < 1


@requires_shared
def test_faster_coco_eval_fixture() -> None:
    """Its results carry a 'bbox' on every record: loadRes reads every detection's area from it."""
    result = assert_same(load(FCE / "gt_dataset.json"), load(FCE / "dt_dataset.json"))
    assert result.stats_list() == load(FCE / "expected_stats.json")["published_expected_stats"]
    assert_same(load(FCE / "gt_dataset.json"), box_results(load(FCE / "dt_dataset.json")), "bbox")


@requires_shared
def test_xtcocoapi_coco_fixture() -> None:
    result = assert_same(load(XTCOCO / "example_coco_val.json"), load(XTCOCO / "example_coco_preds.json"))
    assert result.stats_list() == load(XTCOCO / "expected_stats.json")["measured_here"]["pycocotools"]["stats"]


@requires_shared
@pytest.mark.parametrize("name", ["synth", "micro_id0", "micro_perfect", "micro_dtarea_without", "micro_dtarea_with"])
def test_synthetic_edgecase_fixtures(name: str) -> None:
    if name == "synth":
        gt, results = load(EDGE / "synth_gt.json"), load(EDGE / "synth_dt.json")
    else:
        stem, _, which = name.partition("_dtarea_")
        data = load(EDGE / (f"{stem}_dtarea.json" if which else f"{name}.json"))
        gt, results = data["gt"], data[f"dt_{which}_bbox" if which else "dt"]
    assert_same(gt, results)
    assert_same(gt, box_results(results), "bbox")
    if name == "micro_perfect":  # useCats=0: pycocotools honours it for boxes
        assert_same(gt, box_results(results), "bbox", EvalSettings(use_cats=False))


@requires_shared
def test_crowdpose_fixture_equals_expected_on_both() -> None:
    gt, results = load(CROWDPOSE / "example_crowdpose_val.json"), load(CROWDPOSE / "example_crowdpose_preds.json")
    vec, ref = both(gt, results)
    assert_equal_evaluations(vec, ref)
    assert vec.stats_list() == load(CROWDPOSE / "expected_stats.json")["stats"]


# --- generated data --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generated_keypoints(seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=50, crowd_fraction=0.06, detections_per_person=4.0,
                                      score_decimals=1 + seed % 2, seed=seed)
    result = assert_same(gt, results)
    assert 0.2 < result.stats["AP"] < 0.95


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_generated_boxes_several_categories_and_crowds(seed: int) -> None:
    gt, results = box_scene(seed)
    result = assert_same(gt, results, "bbox")
    assert result.precision.shape[2] == 3 and result.stats["AP"] > 0.1
    crowd = {a["id"] for a in gt["annotations"] if a["iscrowd"]}
    assert any(len(set(e.dt_matches.ravel().tolist()) & crowd) for e in result.image_evals)  # crowd matches


@pytest.mark.parametrize("settings", [
    EvalSettings(use_cats=False),
    EvalSettings(max_dets=(1, 3, 5)),
    EvalSettings(iou_thresholds=(0.1, 0.5, 1.0)),
    EvalSettings(area_ranges=(("all", 0.0, 1e10), ("tiny", 0.0, 100.0), ("mid", 100.0, 4000.0))),
], ids=["use-cats-0", "max-dets", "thresholds", "areas"])
def test_generated_boxes_with_cocoeval_parameters(settings: EvalSettings) -> None:
    gt, results = box_scene(7)
    assert_same(gt, results, "bbox", settings)


@pytest.mark.parametrize("settings", [
    EvalSettings(max_dets=(5, 10)),
    EvalSettings(iou_thresholds=(0.3, 0.5, 0.75)),
    EvalSettings(area_ranges=(("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10))),
], ids=["max-dets", "thresholds", "areas"])
def test_generated_keypoints_with_cocoeval_parameters(settings: EvalSettings) -> None:
    gt, results = make_synthetic_coco(num_images=40, crowd_fraction=0.05, detections_per_person=5.0, seed=8)
    assert_same(gt, results, settings=settings)


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_several_keypoint_categories_images_without_gt_and_unordered_results(iou_type: str) -> None:
    """Two categories of one keypoint set, GT persons of area 0, images without annotations or results, results
    shuffled, one-decimal scores (ties), zero-width boxes."""
    rng = np.random.default_rng(4)
    gt, results = make_synthetic_coco(num_images=30, seed=4, score_decimals=1, crowd_fraction=0.05)
    gt["categories"].append(dict(PERSON_CATEGORY, id=3, name="other"))
    gt["images"] += [{"id": 1000 + i, "width": 640, "height": 480} for i in range(3)]
    for ann in gt["annotations"]:
        ann["category_id"] = 3 if rng.random() < 0.3 else 1
        ann["area"] = 0.0 if rng.random() < 0.05 else ann["area"]
    results = [dict(r, category_id=int(rng.choice([1, 3], p=[0.7, 0.3]))) for r in results if r["image_id"] % 7]
    rng.shuffle(results)
    if iou_type == "bbox":
        results = box_results(results, seed=4)
    result = assert_same(gt, results, iou_type)
    assert result.params.category_ids == [1, 3]


def test_empty_results_and_images_without_gt() -> None:
    gt, results = make_synthetic_coco(num_images=8, seed=6)
    for iou_type, res in (("keypoints", []), ("bbox", [])):
        result = assert_same(gt, res, iou_type)
        assert result.stats["AP"] == 0.0 and any("no detections" in n for n in result.notes)
    empty_gt = {**gt, "annotations": []}
    result = assert_same(empty_gt, results)
    assert result.stats["AP"] == -1.0 and (result.precision == -1).all()


def test_gt_id_zero_and_gts_without_keypoints() -> None:
    """GT id 0 is renumbered (with a warning) on both; GTs without labelled keypoints are ignored and their near
    detections too (bare pycocotools' own handling of id 0 is in tests/test_vectorized_eval.py)."""
    gt, results = make_synthetic_coco(num_images=20, labelled_fraction=0.5, seed=9)
    gt["annotations"][0]["id"] = 0
    result = assert_same(gt, results)
    ids = {int(i) for e in result.image_evals for i in e.gt_ids}
    assert 0 not in ids and max(a["id"] for a in gt["annotations"]) + 1 in ids
    unlabelled = {a["id"] for a in gt["annotations"] if a["num_keypoints"] == 0 and a["id"]}
    assert unlabelled and any(e.gt_ignore[np.isin(e.gt_ids, list(unlabelled))].all() and len(e.gt_ids)
                              for e in result.image_evals)


# --- arrays in, the same numbers out ---------------------------------------------------------------------------


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_detection_arrays_give_the_numbers_of_the_records(iou_type: str) -> None:
    gt, results = make_synthetic_coco(num_images=25, crowd_fraction=0.05, seed=12)
    if iou_type == "bbox":
        results = box_results(results, seed=12)
    detections = detections_from_records(results, iou_type, 17)
    assert isinstance(detections, DetectionArrays)
    from_arrays = evaluate(gt, detections, iou_type=iou_type)
    from_records = evaluate(gt, results, iou_type=iou_type)
    assert from_arrays.stats == from_records.stats and from_arrays.notes == from_records.notes
    assert np.array_equal(from_arrays.precision, from_records.precision)
    for backend in ("pycocotools", "hotcoco"):
        other = evaluate(gt, detections, iou_type=iou_type, backend=backend)
        assert other.stats == from_arrays.stats and np.array_equal(other.precision, from_arrays.precision)


def test_box_iou_is_pycocotools_mask_iou_with_crowd() -> None:
    """The IoU of every (detection, GT) pair equals pycocotools' maskUtils.iou with iscrowd (for a crowd GT the
    intersection over the detection's area), bit for bit, on boxes that overlap, nest, touch, miss and are empty."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    gt_boxes = np.column_stack([rng.uniform(0, 100, (40, 2)).round(1), rng.uniform(0, 60, (40, 2)).round(1)])
    gt_boxes[:3, 2] = 0.0  # empty
    dt_boxes = np.vstack([gt_boxes + rng.normal(0, 5, gt_boxes.shape).round(1), gt_boxes[:5],
                          gt_boxes[5:10] * [1, 1, 0.5, 0.5], rng.uniform(0, 150, (20, 4))])
    dt_boxes[:, 2:] = np.abs(dt_boxes[:, 2:])
    crowd = (np.arange(len(gt_boxes)) % 4 == 0)
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b.tolist(), "area": float(b[2] * b[3]),
         "iscrowd": int(c)} for i, (b, c) in enumerate(zip(gt_boxes, crowd))]}
    evaluator = CocoEvaluator(ground_truth_arrays(gt, "gt"), "bbox")
    det = np.repeat(np.arange(len(dt_boxes)), len(gt_boxes))
    pos = np.tile(np.arange(len(gt_boxes)), len(dt_boxes))
    ours = evaluator._pair_iou(dt_boxes, det, pos).reshape(len(dt_boxes), len(gt_boxes))
    theirs = mask_utils.iou(dt_boxes.tolist(), evaluator.gt_boxes.tolist(), evaluator._gt_crowd.astype(int).tolist())
    assert np.array_equal(ours, theirs)
    assert (theirs[:, evaluator._gt_crowd] > 0).any() and (theirs == 0).any() and (theirs == 1).any()


def test_matches_need_no_second_evaluation() -> None:
    """The sweeps and the breakdown read the default backend's match arrays: no evalImgs entries are built."""
    from kpbench.analysis.breakdown import keypoint_breakdown
    from kpbench.analysis.thresholds import sweep_person_thresholds

    gt, results = make_synthetic_coco(num_images=20, seed=2)
    vec, ref = both(gt, results)
    assert sweep_person_thresholds(vec) == sweep_person_thresholds(ref)
    assert keypoint_breakdown(vec) == keypoint_breakdown(ref, gt, results)
    assert vec.image_evals._items is None  # type: ignore[union-attr]  # never built


def test_pycocotools_run_for_reference_is_silent() -> None:
    gt, results = make_synthetic_coco(num_images=3, seed=1)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        both(gt, results)
    assert buffer.getvalue() == ""


@pytest.mark.parametrize("npig", [1, 3, 7, 10, 49, 100, 101, 333, 1000, 4999])
def test_precision_at_recalls_from_true_positives_is_cocoeval_accumulate(npig: int) -> None:
    """The accumulation reads only the true positives: equal to pycocotools' full-length arrays (its accumulate,
    written out) for random TP/FP/ignored sequences, including every recall threshold that x * npig lands on."""
    from kpbench.evaluation.vectorized import _RECALL_THRESHOLDS, _precision_at_recalls

    rng = np.random.default_rng(npig)
    for trial in range(20):
        nd = int(rng.integers(0, 3 * npig + 5))
        kind = rng.choice(3, nd, p=[0.3, 0.5, 0.2])  # 0 TP, 1 FP, 2 ignored
        if trial % 5 == 0:
            kind[:] = 1  # no TP at all
        tps = kind[: nd] == 0
        tps[np.flatnonzero(tps)[npig:]] = False  # at most npig true positives
        fps = kind == 1
        scores = np.sort(rng.random(nd))[::-1]
        tp_sum, fp_sum = np.cumsum(tps).astype(float), np.cumsum(fps).astype(float)
        rc, pr = tp_sum / npig, tp_sum / (fp_sum + tp_sum + np.spacing(1))
        q, ss = np.zeros(101), np.zeros(101)
        pr = pr.tolist()
        for i in range(nd - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        inds = np.searchsorted(rc, _RECALL_THRESHOLDS, side="left")
        for ri, pi in enumerate(inds):
            if pi >= nd:
                break
            q[ri], ss[ri] = pr[pi], scores[pi]
        tp_positions = np.flatnonzero(tps)
        ours = _precision_at_recalls(tp_positions, np.cumsum(tps | fps)[tp_positions], npig, nd, scores,
                                     _RECALL_THRESHOLDS)
        assert np.array_equal(ours[0], q) and np.array_equal(ours[1], ss)
        assert ours[2] == (rc[-1] if nd else 0)


def test_matches_added_to_an_evaluation_without_them_keep_its_backend_and_numbers() -> None:
    """An evaluation without per-image matches (hotcoco's) gets the default backend's matches for a sweep, with a
    note; its stats, arrays and backend name stay its own (the matches give the same numbers)."""
    import dataclasses

    from kpbench.evaluation.cocoeval import with_matches

    gt, results = make_synthetic_coco(num_images=6, seed=3)
    full = evaluate(gt, results)
    given = dataclasses.replace(full, backend="hotcoco", image_evals=None, matches=None)
    again, notes = with_matches(given, "the threshold sweep")
    assert again.backend == "hotcoco" and again.stats is given.stats and again.precision is given.precision
    assert again.matches is not None and len(again.image_evals) == len(full.image_evals)
    for mine, theirs in zip(again.image_evals, full.image_evals, strict=True):
        assert (mine.image_id, mine.area_index) == (theirs.image_id, theirs.area_index)
        assert np.array_equal(mine.dt_ids, theirs.dt_ids) and np.array_equal(mine.dt_matches, theirs.dt_matches)
    assert len(notes) == 1 and "hotcoco" in notes[0]
