"""The vectorized keypoint COCOeval against pycocotools: stats, precision/recall/scores arrays and matches, equal
bit for bit (==, never approx)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, EDGE, XTCOCO, jittered_detections, load, pycocotools_eval, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.settings import EvalSettings, summarize
from kpbench.evaluation.vectorized import KeypointEvaluator, loadres_areas, results_to_arrays

SIGMAS = COCO17.sigma_array
K = COCO17.num_keypoints


def ours(gt: dict, results: list, settings: EvalSettings | None = None, gt_ignore: Any = None,
         areas: Any = None) -> tuple[KeypointEvaluator, Any]:
    evaluator = KeypointEvaluator(gt, SIGMAS, settings)
    return evaluator, evaluator.evaluate(*results_to_arrays(results, K), gt_ignore=gt_ignore, areas=areas)


def assert_same_as_pycocotools(gt: dict, results: list, settings: EvalSettings | None = None,
                               gt_ignore: Any = None, reference_gt: dict | None = None) -> Any:
    """Ours on (gt, results) equals pycocotools on (reference_gt or gt, results): stats, arrays and the area-all
    matches of every image. Returns our result."""
    evaluator, result = ours(gt, results, settings, gt_ignore, loadres_areas(results))
    ev = pycocotools_eval(reference_gt or gt, results, settings=settings)
    assert np.array_equal(result.precision, ev.eval["precision"])
    assert np.array_equal(result.recall, ev.eval["recall"])
    assert np.array_equal(result.scores, ev.eval["scores"])
    p = ev.params
    if settings is None or settings.is_default():
        assert list(result.stats.values()) == [float(s) for s in ev.stats]
    else:
        expected = summarize(ev.eval["precision"], ev.eval["recall"], list(p.iouThrs), list(p.areaRngLbl),
                             list(p.maxDets), "keypoints")
        assert result.stats == expected
    assert_same_matches(evaluator, result, ev, len(results))
    return result


def assert_same_matches(evaluator: KeypointEvaluator, result: Any, ev: Any, num_results: int) -> None:
    """dt_matches, dt_ignore and gt_matches against evalImgs' dtMatches, dtIgnore and gtMatches (area "all")."""
    area = list(ev.params.areaRngLbl).index("all") if "all" in ev.params.areaRngLbl else 0
    num_images = len(ev.params.imgIds)
    gt_index = {int(a): i for i, a in enumerate(evaluator.gt_ann_ids)}
    ids = np.concatenate([evaluator.gt_ann_ids, [0]])  # index -1 reads as COCOeval's 0
    seen = np.zeros(num_results, dtype=bool)
    for e in ev.evalImgs[area * num_images:(area + 1) * num_images]:
        if e is None:
            continue
        dt = np.asarray(e["dtIds"], dtype=np.int64) - 1  # loadRes numbers results from 1
        seen[dt] = True
        assert np.array_equal(ids[result.dt_matches[:, dt]], e["dtMatches"])
        assert np.array_equal(result.dt_ignore[:, dt], e["dtIgnore"])
        gts = [gt_index[g] for g in e["gtIds"]]
        assert np.array_equal(result.gt_matches[:, gts] + 1, e["gtMatches"])
    assert np.array_equal(result.dt_kept, seen)
    assert (result.dt_matches[:, ~seen] == -1).all() and result.dt_ignore[:, ~seen].all()


# --- synthetic workloads --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def matching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each matcher: COCOeval's loop compiled (`_matching.c`, where it was built) and
    numpy's closed forms and padded buckets."""
    from kpbench.evaluation import vectorized

    if request.param == "numpy":
        monkeypatch.setattr(vectorized, "_match_units", None)
    elif vectorized._match_units is None:
        pytest.skip("kpbench.evaluation._matching was not built (no C compiler at install)")
    return str(request.param)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_synthetic_equals_pycocotools(seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.08, detections_per_person=4.0,
                                      score_decimals=1 + seed % 2, seed=seed)
    result = assert_same_as_pycocotools(gt, results)
    assert 0.2 < result.stats["AP"] < 0.9  # a workload with matches and misses


def person(x: float, y: float, w: float, h: float, labelled: int = K) -> np.ndarray:
    """A (K, 3) keypoint layout in a box, the first `labelled` keypoints labelled (v=2)."""
    rng = np.random.default_rng(int(x * 7 + y * 13 + labelled))
    kps = np.column_stack([x + rng.uniform(0, w, K), y + rng.uniform(0, h, K), np.zeros(K)])
    kps[:labelled, 2] = 2
    kps[labelled:, :2] = 0
    return kps.round(2)


def gt_ann(ann_id: int, image_id: int, kps: np.ndarray, box: tuple[float, ...], crowd: int = 0,
           num_keypoints: int | None = None, area_scale: float = 0.6) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": crowd,
            "num_keypoints": int((kps[:, 2] > 0).sum()) if num_keypoints is None else num_keypoints,
            "keypoints": kps.reshape(-1).tolist(), "bbox": list(box), "area": box[2] * box[3] * area_scale}


def det(image_id: int, kps: np.ndarray, score: float, jitter: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pts = kps[:, :2] + rng.normal(0, jitter, (K, 2))
    return {"image_id": image_id, "category_id": 1, "score": score,
            "keypoints": np.column_stack([pts.round(2), np.ones(K)]).reshape(-1).tolist()}


def edge_case_scene() -> tuple[dict, list]:
    """Hand-built images, each an edge of COCOeval's matching:

    1: 30 detections on 4 persons (more than maxDets 20), tied scores; 2: detections but no GT; 3: GT but no
    detection; 4: neither; 5: two identical GTs (tied OKS: the later one wins) and identical detections;
    6: a crowd region over two persons, matched by many detections; 7: a GT with num_keypoints 0 that still has
    labelled keypoints (ignored, OKS over its labels) and one with num_keypoints > 0 but none labelled (box
    distance, counted); 8: GTs with 1, 7, 8, 9, 16 and 17 labelled keypoints (np.sum's pairwise blocks); 9: a
    small and a large person (area ranges), a detection with a tiny extent; 10: a detection whose OKS is below
    1 by less than 1e-10 (COCOeval caps its thresholds at 1 - 1e-10). Area range bounds are inclusive (an area
    of exactly 32², a detection spanning exactly 96 x 96), and an annotation on an image not listed is left out.
    """
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(1, 11)]
    anns: list[dict] = []
    dets: list[dict] = []
    seed = 0

    def add_gt(image_id: int, kps: np.ndarray, box: tuple, **kw: Any) -> np.ndarray:
        anns.append(gt_ann(len(anns) + 1, image_id, kps, box, **kw))
        return kps

    def add_det(image_id: int, kps: np.ndarray, score: float, jitter: float) -> None:
        nonlocal seed
        seed += 1
        dets.append(det(image_id, kps, score, jitter, seed))

    boxes = [(10, 10, 100, 200), (150, 20, 90, 180), (300, 40, 120, 220), (450, 30, 110, 210)]
    persons = [add_gt(1, person(*b), b) for b in boxes]
    for j in range(30):
        add_det(1, persons[j % 4], score=[0.9, 0.8, 0.8, 0.5][j % 4], jitter=1 + j)
    add_det(2, person(50, 50, 100, 200), 0.7, 0)
    add_det(2, person(250, 50, 100, 200), 0.7, 0)
    add_gt(3, person(20, 20, 80, 160), (20, 20, 80, 160))
    twin = person(100, 100, 90, 200)
    add_gt(5, twin, (100, 100, 90, 200))
    add_gt(5, twin.copy(), (100, 100, 90, 200))
    for _ in range(3):
        dets.append({"image_id": 5, "category_id": 1, "score": 0.6,
                     "keypoints": np.column_stack([twin[:, :2], np.ones(K)]).reshape(-1).tolist()})
    add_gt(6, np.zeros((K, 3)), (0, 0, 400, 400), crowd=1, num_keypoints=0)
    crowd_people = [add_gt(6, person(*b), b) for b in [(20, 30, 80, 170), (200, 40, 90, 190)]]
    for j in range(6):
        add_det(6, crowd_people[j % 2], 0.3 + 0.1 * (j % 3), jitter=2 + 3 * j)
    for j in range(4):
        add_det(6, person(40 + 60 * j, 250, 60, 120), 0.95, 0)  # inside the crowd region, on no person
    odd = add_gt(7, person(30, 30, 90, 190), (30, 30, 90, 190), num_keypoints=0)
    add_gt(7, np.zeros((K, 3)), (300, 50, 100, 200), num_keypoints=5)
    add_det(7, odd, 0.8, 2)
    add_det(7, person(310, 60, 80, 180), 0.7, 0)
    for j, labelled in enumerate([1, 7, 8, 9, 16, 17]):
        b = (10 + 100 * j, 20 + 10 * j, 90, 200)
        kps = add_gt(8, person(*b, labelled=labelled), b)
        add_det(8, kps, 0.5 + 0.05 * j, jitter=3)
    near = add_gt(10, person(100, 100, 100, 200), (100, 100, 100, 200))
    dets.append({"image_id": 10, "category_id": 1, "score": 0.9,  # OKS within 1e-10 of 1: counts at OKS 1.0
                 "keypoints": np.column_stack([near[:, :2] + 3e-5, np.ones(K)]).reshape(-1).tolist()})
    small = add_gt(9, person(10, 10, 20, 40), (10, 10, 20, 40))
    large = add_gt(9, person(200, 10, 200, 400), (200, 10, 200, 400))
    add_det(9, small, 0.9, 0.5)
    add_det(9, large, 0.8, 4)
    add_det(9, np.column_stack([np.full(K, 500.0) + np.arange(K) % 2, np.full(K, 50.0), np.ones(K)]), 0.85, 0)
    # Area range bounds are inclusive: a GT of area exactly 32² and a detection spanning exactly 96 x 96.
    edge = add_gt(9, person(450, 200, 40, 60), (450, 200, 40, 60))
    anns[-1]["area"] = 32.0**2
    add_det(9, edge, 0.75, 1)
    square = np.column_stack([np.tile([400.0, 496.0], K)[:K], np.repeat([300.0, 396.0], K)[:K], np.ones(K)])
    square[-1, :2] = [496.0, 396.0]
    add_det(9, square, 0.7, 0)
    anns.append(gt_ann(len(anns) + 1, 999, person(10, 10, 50, 100), (10, 10, 50, 100)))  # on no listed image
    gt = {"images": images, "annotations": anns, "categories": [copy.deepcopy(PERSON_CATEGORY)]}
    return gt, dets


def test_hand_built_edge_cases_equal_pycocotools() -> None:
    gt, results = edge_case_scene()
    result = assert_same_as_pycocotools(gt, results)
    evaluator = KeypointEvaluator(gt, SIGMAS)
    # The scene exercises what it says: cuts, the later of two tied GTs, repeated crowd matches.
    assert (~result.dt_kept).sum() == 10
    twins = evaluator.image_gt_indices(5)
    first_det = next(i for i, r in enumerate(results) if r["image_id"] == 5)
    assert result.dt_matches[0, first_det] == twins[1]
    crowd = next(i for i, a in enumerate(evaluator.gt_ann_ids) if evaluator.gt_iscrowd[i] and a)
    assert (result.dt_matches[0] == crowd).sum() >= 2
    assert len(evaluator.gt_ann_ids) == len(gt["annotations"]) - 1


@pytest.mark.parametrize(
    "settings",
    [
        EvalSettings(area_ranges=(("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10))),
        EvalSettings(iou_thresholds=(0.1,)),
        EvalSettings(max_dets=(10,)),
        EvalSettings(iou_thresholds=(0.5, 1.0)),
        EvalSettings(max_dets=(1, 5, 20), iou_thresholds=(0.5, 0.75, 0.9),
                     area_ranges=(("all", 0.0, 1e10), ("tiny", 0.0, 500.0), ("big", 5000.0, 1e10))),
    ],
    ids=["analyze-areas", "oks-0.1", "maxdets-10", "oks-1.0", "mixed"],
)
def test_custom_settings_equal_pycocotools(settings: EvalSettings) -> None:
    gt, results = make_synthetic_coco(num_images=40, crowd_fraction=0.05, detections_per_person=5.0, seed=7)
    scene_gt, scene_results = edge_case_scene()
    assert_same_as_pycocotools(gt, results, settings)
    assert_same_as_pycocotools(scene_gt, scene_results, settings)


def test_gt_ignore_equals_pycocotools_with_those_gts_unlabelled() -> None:
    """gt_ignore marks GTs ignored without making them crowd regions: pycocotools does that for num_keypoints 0
    (its OKS reads the visibility flags, not num_keypoints). It overwrites an `ignore` key in _prepare, so
    `ignore: 1` in the GT would change nothing there."""
    gt, results = make_synthetic_coco(num_images=50, crowd_fraction=0.05, seed=3)
    evaluator = KeypointEvaluator(gt, SIGMAS)
    rng = np.random.default_rng(0)
    extra = rng.random(len(evaluator.gt_ann_ids)) < 0.3
    marked = set(evaluator.gt_ann_ids[extra].tolist())
    reference = copy.deepcopy(gt)
    for ann in reference["annotations"]:
        if ann["id"] in marked:
            ann["num_keypoints"] = 0
    result = assert_same_as_pycocotools(gt, results, gt_ignore=extra, reference_gt=reference)
    plain = evaluator.evaluate(*results_to_arrays(results, K))
    assert result.stats["AR"] != plain.stats["AR"]


def test_gt_id_zero_counts_as_no_match_like_pycocotools() -> None:
    gt, results = make_synthetic_coco(num_images=10, seed=4)
    evaluator, before = ours(gt, results)
    matched = int(np.flatnonzero((before.gt_matches[0] >= 0) & ~evaluator.gt_ignore)[0])
    ann = next(a for a in gt["annotations"] if a["id"] == evaluator.gt_ann_ids[matched])
    ann["id"] = 0
    result = assert_same_as_pycocotools(gt, results)
    zero = int(np.flatnonzero(KeypointEvaluator(gt, SIGMAS).gt_ann_ids == 0)[0])
    assert (result.dt_matches[0] == zero).any()  # matched here, read as unmatched in the accumulation
    assert result.stats["AP50"] < before.stats["AP50"]
    # An area range holding GT 0 but not its detection's extent: that detection is then ignored as unmatched
    # (dtIgnore, compared for the range labelled "all").
    detection = int(np.flatnonzero(result.dt_matches[0] == zero)[0])
    extent = np.ptp(np.reshape(results[detection]["keypoints"], (K, 3))[:, :2], axis=0).prod()
    assert not np.isclose(extent, ann["area"], rtol=0.02)
    narrow = assert_same_as_pycocotools(gt, results, EvalSettings(
        area_ranges=(("all", ann["area"] * 0.99, ann["area"] * 1.01),)))
    assert narrow.dt_matches[0, detection] == zero and narrow.dt_ignore[0, detection]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_oks_follows_pycocotools_scan() -> None:
    """A GT of area -eps makes area + eps zero: a keypoint hit exactly gives 0/0, an OKS of NaN, which passes
    pycocotools' `ious < iou` test and is then replaced by any later GT; the exact scan handles such images."""
    gt, results = edge_case_scene()
    for ann in gt["annotations"]:
        if ann["image_id"] == 5:
            ann["area"] = -float(np.spacing(1))
    result = assert_same_as_pycocotools(gt, results)
    evaluator = KeypointEvaluator(gt, SIGMAS)
    assert np.isnan(evaluator.oks(5, results_to_arrays(results, K)[1][[r["image_id"] == 5 for r in results]])).any()
    assert result.stats["AP"] > 0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_oks_lets_far_gts_replace_it_with_their_exact_oks() -> None:
    """After a NaN OKS every later GT replaces the match (pycocotools' `<` passes NaN), so the far GTs' own small
    OKS values decide which one is kept: GTs too far to reach the lowest threshold, whose OKS is otherwise never
    computed, get it computed in a unit that holds a NaN."""
    images = [{"id": 1, "width": 640, "height": 480, "file_name": "1.jpg"}]
    near = person(100, 100, 80, 160)
    anns = [gt_ann(1, 1, near, (100, 100, 80, 160))]
    anns[0]["area"] = float("nan")  # every OKS to it is NaN; the area compares False: never out of range
    for i, dx in enumerate((190.0, 200.0)):  # two GTs nearby but out of reach of 0.5 (OKS tiny, not 0)
        kps = near.copy()
        kps[:, 0] += dx
        anns.append(gt_ann(2 + i, 1, kps, (100 + dx, 100, 80, 160), area_scale=0.6))
    gt = {"images": images, "annotations": anns, "categories": [PERSON_CATEGORY]}
    results = [det(1, near, 0.9, 1.0, 1), det(1, near, 0.8, 1.0, 2)]
    evaluator = KeypointEvaluator(gt, SIGMAS)
    oks = evaluator.oks(1, results_to_arrays(results, K)[1])
    assert np.isnan(oks[:, 0]).all() and (oks[:, 1:] > 0).all() and (oks[:, 1:] < 0.05).all()
    assert oks[0, 1] != oks[0, 2]  # the matches depend on these values
    assert_same_as_pycocotools(gt, results)


def test_oks_is_computeoks_bit_for_bit() -> None:
    gt, results = edge_case_scene()
    synth_gt, synth_results = make_synthetic_coco(num_images=30, seed=5)
    for g, res in ((gt, results), (synth_gt, synth_results)):
        ev = pycocotools_eval(g, res)
        evaluator = KeypointEvaluator(g, SIGMAS)
        image_ids, keypoints, scores = results_to_arrays(res, K)
        compared = 0
        for (image_id, _), ious in ev.ious.items():
            if len(ious) == 0:
                continue
            mine = np.flatnonzero(image_ids == image_id)
            mine = mine[np.argsort(-scores[mine], kind="mergesort")][:20]
            assert np.array_equal(evaluator.oks(image_id, keypoints[mine]), ious)
            compared += 1
        assert compared > 5


@pytest.mark.parametrize("n", [*range(1, 18), 33])
def test_row_sums_are_numpy_one_dimensional_sums(n: int) -> None:
    """What the exact OKS relies on: np.sum over the last axis of a contiguous (M, n) array adds each row as
    np.sum adds it alone (pairwise, 8 accumulators from 8 terms), while a zero-padded row would not."""
    rng = np.random.default_rng(n)
    rows = np.exp(-rng.exponential(2.0, (20000, n))) * rng.choice([1.0, 1e-9, 3e5], (20000, n))
    sums = np.sum(rows, axis=1)
    picks = np.r_[0:200, 19800:20000]
    assert np.array_equal(sums[picks], [np.sum(rows[i].copy()) for i in picks])
    if n >= 9:
        padded = np.zeros((len(rows), n + 3))
        padded[:, 1:n + 1] = rows
        assert not np.array_equal(np.sum(padded, axis=1), sums)


def test_no_detections_and_empty_cases() -> None:
    gt, _ = edge_case_scene()
    evaluator = KeypointEvaluator(gt, SIGMAS)
    result = evaluator.evaluate(np.zeros(0, dtype=np.int64), np.zeros((0, K, 3)), np.zeros(0))
    # Every image with GT is evaluated with no detection: recall 0, precision 0 (pycocotools' loadRes cannot
    # read an empty list, so these are COCOeval's formulas: no detection, nd = 0).
    assert (result.recall == 0).all() and (result.precision == 0).all() and (result.scores == 0).all()
    assert result.stats["AP"] == 0.0 and result.stats["APm"] == 0.0
    empty = KeypointEvaluator({"images": [{"id": 1}], "annotations": [], "categories": [PERSON_CATEGORY]}, SIGMAS)
    nothing = empty.evaluate(np.zeros(0, dtype=np.int64), np.zeros((0, K, 3)), np.zeros(0))
    assert (nothing.precision == -1).all() and nothing.stats["AP"] == -1.0


def test_only_unmatched_detections_on_images_without_gt() -> None:
    gt, results = edge_case_scene()
    # The first results are on no GT (copies: pycocotools numbers each record object in place).
    results = [copy.deepcopy(r) for r in results if r["image_id"] == 2] + results
    assert_same_as_pycocotools(gt, results)


def test_input_errors_are_kpbench_errors() -> None:
    gt, results = edge_case_scene()
    evaluator = KeypointEvaluator(gt, SIGMAS)
    image_ids, keypoints, scores = results_to_arrays(results, K)
    with pytest.raises(KpbenchError, match="not an image of the ground truth"):
        evaluator.evaluate(image_ids + 1000, keypoints, scores)
    with pytest.raises(KpbenchError, match="keypoints: expected shape"):
        evaluator.evaluate(image_ids, keypoints[:, :5], scores)
    with pytest.raises(KpbenchError, match="NaN"):
        evaluator.evaluate(image_ids, keypoints, np.full(len(scores), np.nan))
    with pytest.raises(KpbenchError, match="gt_ignore"):
        evaluator.evaluate(image_ids, keypoints, scores, gt_ignore=np.zeros(3, dtype=bool))
    with pytest.raises(KpbenchError, match="useCats"):
        KeypointEvaluator(gt, SIGMAS, EvalSettings(use_cats=False))
    with pytest.raises(KpbenchError, match="keypoint values"):
        KeypointEvaluator(gt, SIGMAS[:5])
    two = {**gt, "categories": [PERSON_CATEGORY, {**PERSON_CATEGORY, "id": 2}]}
    with pytest.raises(KpbenchError, match="category_id"):
        KeypointEvaluator(two, SIGMAS)
    assert KeypointEvaluator(two, SIGMAS, category_id=1).gt_ann_ids.tolist() == evaluator.gt_ann_ids.tolist()
    with pytest.raises(KpbenchError, match="every keypoints list needs 51"):
        results_to_arrays([{"image_id": 1, "keypoints": [1.0, 2.0], "score": 0.5}], K)


def test_repeated_evaluations_are_independent() -> None:
    """The prepared GT is not changed by an evaluation (the analysis re-scores ~12 variants)."""
    gt, results = make_synthetic_coco(num_images=30, seed=9)
    evaluator = KeypointEvaluator(gt, SIGMAS)
    arrays = results_to_arrays(results, K)
    first = evaluator.evaluate(*arrays)
    evaluator.evaluate(*arrays, gt_ignore=np.ones(len(evaluator.gt_ann_ids), dtype=bool))
    again = evaluator.evaluate(*arrays)
    assert first.stats == again.stats and np.array_equal(first.precision, again.precision)


# --- real fixtures ---------------------------------------------------------------------------------------------


@requires_shared
def test_xtcocoapi_example_equals_expected_and_pycocotools() -> None:
    gt, results = load(XTCOCO / "example_coco_val.json"), load(XTCOCO / "example_coco_preds.json")
    result = assert_same_as_pycocotools(gt, results)
    expected = load(XTCOCO / "expected_stats.json")["measured_here"]["pycocotools"]["stats"]
    assert list(result.stats.values()) == expected


@requires_shared
def test_edgecase_synth_equals_expected_and_pycocotools() -> None:
    gt, results = load(EDGE / "synth_gt.json"), load(EDGE / "synth_dt.json")
    result = assert_same_as_pycocotools(gt, results)
    assert list(result.stats.values()) == load(EDGE / "expected_stats.json")["synth"]["pycocotools"]["stats"]


@requires_shared
@pytest.mark.parametrize(
    "name,gt_key,dt_key,expected_key",
    [
        ("micro_id0", "gt", "dt", "micro_id0"),
        ("micro_perfect", "gt", "dt", "micro_perfect_useCats1"),
        ("micro_dtarea", "gt", "dt_without_bbox", None),
        ("micro_dtarea", "gt", "dt_with_bbox", None),
    ],
)
def test_edgecase_micro_fixtures(name: str, gt_key: str, dt_key: str, expected_key: str | None) -> None:
    """The micro cases pycocotools evaluates (not micro_perfect under useCats=0, which it scores 0 by a bug and
    which this evaluator refuses): GT id 0, and detection areas from a `bbox` (loadres_areas)."""
    data = load(EDGE / f"{name}.json")
    result = assert_same_as_pycocotools(data[gt_key], data[dt_key])
    if expected_key is not None:
        expected = load(EDGE / "expected_stats.json")["micro"][expected_key]["pycocotools"]["stats"]
        assert list(result.stats.values()) == expected


@requires_shared
def test_micro_dtarea_bbox_changes_apm_as_pycocotools() -> None:
    data = load(EDGE / "micro_dtarea.json")
    assert loadres_areas(data["dt_without_bbox"]) is None
    with_box = assert_same_as_pycocotools(data["gt"], data["dt_with_bbox"])
    without = assert_same_as_pycocotools(data["gt"], data["dt_without_bbox"])
    assert with_box.stats["APm"] != without.stats["APm"]


@requires_shared
def test_real_coco_sample_with_jittered_detections() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = jittered_detections(gt, seed=1)
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert_same_as_pycocotools(gt, results)
    assert_same_as_pycocotools(gt, results, EvalSettings(
        area_ranges=(("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10)),
        iou_thresholds=(0.1,)))


def test_any_over_the_last_axis_read_as_words_is_numpys_any() -> None:
    """The matching's `any` over a unit's GT slots (1, 2, 4 or 8 flags read as one integer) is numpy's, for every
    pattern of flags, and falls back to numpy for other widths and non-contiguous arrays."""
    from kpbench.evaluation.vectorized import _any_last_axis

    for width in (1, 2, 3, 4, 8, 16):
        patterns = ((np.arange(2**min(width, 10))[:, None] >> np.arange(width)) & 1).astype(bool)  # (P, width)
        mask = np.broadcast_to(patterns[:, None, :], (len(patterns), 3, width)).copy()
        assert np.array_equal(_any_last_axis(mask), mask.any(axis=-1)), width
        strided = np.concatenate([mask, mask], axis=2)[:, :, ::2]
        assert np.array_equal(_any_last_axis(strided), strided.any(axis=-1)), width
