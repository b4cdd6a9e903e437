"""Parity of kpbench.evaluation.cocoeval with pycocotools (and hotcoco), bit for bit, on real and synthetic data."""

from __future__ import annotations

import copy
import hashlib
import random
import warnings
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, EDGE, FCE, XTCOCO, jittered_detections, load, pycocotools_eval, requires_shared

from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.schema import BBOX_STAT_NAMES, KEYPOINT_STAT_NAMES, SIGMAS
from kpbench.data.synthetic import PERSON_CATEGORY, make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate, write_metrics


def precision_hash(precision: np.ndarray) -> str:
    """The short precision-array hash of the fixtures' expected_stats.json (sha256 of the raw doubles)."""
    return hashlib.sha256(np.ascontiguousarray(precision, dtype=np.float64).tobytes()).hexdigest()[:16]


def varied_scene(seed: int, iou_type: str = "keypoints") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Synthetic data with what the plain generator lacks: a second keypoint category (COCOeval evaluates each
    category on its own, useCats=1), GT persons of area 0, images without any annotation, images without
    results, results in shuffled order (ties are broken by image order, not file order), scores with one decimal
    (many ties across images) and, for boxes, some zero-width detections."""
    rng = np.random.default_rng(seed)
    gt, results = make_synthetic_coco(num_images=25, seed=seed, score_decimals=1)
    gt["categories"].append(dict(PERSON_CATEGORY, id=3, name="other"))
    gt["images"] += [{"id": 1000 + i, "width": 640, "height": 480} for i in range(3)]
    for ann in gt["annotations"]:
        ann["category_id"] = 3 if rng.random() < 0.2 else 1
        ann["area"] = 0.0 if rng.random() < 0.05 else ann["area"]
    results = [dict(r, category_id=int(rng.choice([1, 3], p=[0.8, 0.2]))) for r in results if r["image_id"] % 7]
    random.Random(seed).shuffle(results)
    if iou_type == "bbox":
        boxes = []
        for r in results:
            pts = np.array(r["keypoints"]).reshape(17, 3)[:, :2]
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            width = 0.0 if rng.random() < 0.05 else float(x1 - x0)
            boxes.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                          "bbox": [float(x0), float(y0), width, float(y1 - y0)]})
        results = boxes
    return gt, results


def assert_parity(gt: dict, results: list, iou_type: str = "keypoints", backend: str = "vectorized") -> None:
    reference = pycocotools_eval(gt, results, iou_type)
    ours = evaluate(copy.deepcopy(gt), copy.deepcopy(results), iou_type=iou_type, backend=backend)
    assert ours.stats_list() == [float(s) for s in reference.stats]  # exact float equality
    assert np.array_equal(ours.precision, reference.eval["precision"])
    assert np.array_equal(ours.recall, reference.eval["recall"])


def test_sigmas_are_pycocotools_bits() -> None:
    literals = [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    assert SIGMAS.tolist() == (np.array(literals) / 10.0).tolist()
    assert SIGMAS[11] != 0.107  # the /10.0 changes the last bit of some values


@requires_shared
def test_fce_published_stats() -> None:
    expected = load(FCE / "expected_stats.json")["published_expected_stats"]
    with pytest.warns(UserWarning, match="carry a 'bbox'"):
        result = evaluate(FCE / "gt_dataset.json", FCE / "dt_dataset.json")
    assert result.stats_list() == expected
    assert list(result.stats) == list(KEYPOINT_STAT_NAMES)


@requires_shared
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_parity_fce(backend: str) -> None:
    with pytest.warns(UserWarning):
        assert_parity(load(FCE / "gt_dataset.json"), load(FCE / "dt_dataset.json"), backend=backend)


@requires_shared
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
@pytest.mark.parametrize(
    ("gt_file", "dt_file", "expected_at"),
    [
        (XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json", ("measured_here", "pycocotools")),
        (EDGE / "synth_gt.json", EDGE / "synth_dt.json", ("synth", "pycocotools")),
    ],
    ids=["xtcocoapi", "synthetic_edgecases"],
)
def test_parity_measured_fixtures(gt_file, dt_file, expected_at: tuple[str, str], backend: str) -> None:
    """The fixtures' recorded pycocotools stats and precision hash (expected_stats.json), from either backend."""
    gt, dt = load(gt_file), load(dt_file)
    assert_parity(gt, dt, backend=backend)
    expected = load(gt_file.parent / "expected_stats.json")[expected_at[0]][expected_at[1]]
    result = evaluate(gt, dt, backend=backend)
    assert result.stats_list() == expected["stats"]
    assert precision_hash(result.precision) == expected["precision_sha256"]


@requires_shared
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_parity_real_val2017_sample(backend: str) -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = jittered_detections(gt)
    assert_parity(gt, results, backend=backend)
    stats = evaluate(gt, results).stats
    assert 0.3 < stats["AP"] < 1.0  # a meaningful curve, not all zeros or ones


@requires_shared
def test_parity_real_sample_bbox() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    rng = np.random.default_rng(3)
    results = [
        {"image_id": a["image_id"], "category_id": 1, "score": round(float(rng.uniform(0.1, 1)), 2),
         "bbox": (np.array(a["bbox"]) + rng.normal(0, 3, 4)).clip(0.5).round(2).tolist()}
        for a in gt["annotations"]
    ]
    assert_parity(gt, results, iou_type="bbox")
    assert list(evaluate(gt, results, iou_type="bbox").stats) == list(BBOX_STAT_NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_parity_generated(seed: int, backend: str) -> None:
    gt, results = make_synthetic_coco(num_images=60, seed=seed)
    assert_parity(gt, results, backend=backend)


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_parity_varied_scene(iou_type: str, backend: str) -> None:
    gt, results = varied_scene(seed=4, iou_type=iou_type)
    assert_parity(gt, results, iou_type=iou_type, backend=backend)
    result = evaluate(gt, results, iou_type=iou_type)
    assert result.params.category_ids == [1, 3] and result.precision.shape[2] == 2
    assert result.num_images == len(gt["images"]) == 28
    assert 0.05 < result.stats["AP"] < 0.9  # both categories contribute a real curve


def test_generated_data_has_every_case() -> None:
    gt, results = make_synthetic_coco(num_images=300, seed=0)
    anns = gt["annotations"]
    assert any(a["iscrowd"] for a in anns)
    assert any(a["num_keypoints"] == 0 and not a["iscrowd"] for a in anns)
    scores = [r["score"] for r in results]
    assert len(set(scores)) < len(scores)  # ties
    assert_parity(gt, results)


def test_image_evals_match_pycocotools_evalimgs() -> None:
    gt, results = make_synthetic_coco(num_images=30, seed=5)
    reference = pycocotools_eval(gt, results)
    ours = evaluate(gt, results)
    ref = [e for e in reference.evalImgs if e is not None]
    assert ours.image_evals is not None and len(ours.image_evals) == len(ref)
    for mine, theirs in zip(ours.image_evals, ref, strict=True):
        assert (mine.image_id, mine.category_id) == (theirs["image_id"], theirs["category_id"])
        assert ours.params.area_ranges[mine.area_index] == theirs["aRng"]
        assert mine.dt_ids.tolist() == list(theirs["dtIds"])
        assert mine.dt_scores.tolist() == list(theirs["dtScores"])
        assert np.array_equal(mine.dt_matches, theirs["dtMatches"])
        assert np.array_equal(mine.dt_ignore, theirs["dtIgnore"])
        assert mine.gt_ids.tolist() == list(theirs["gtIds"])
        assert np.array_equal(mine.gt_matches, theirs["gtMatches"])
        assert np.array_equal(mine.gt_ignore, np.asarray(theirs["gtIgnore"], dtype=bool))
    assert any(e.dt_matches.any() for e in ours.image_evals)  # matches happened


def test_empty_results_give_zero() -> None:
    gt, _ = make_synthetic_coco(num_images=5, seed=0)
    result = evaluate(gt, [])
    assert result.stats["AP"] == 0.0 and result.stats["AR"] == 0.0
    assert result.num_results == 0
    assert any("no detections" in n for n in result.notes)


def test_gt_id_zero_is_renumbered_and_scored_right() -> None:
    gt, results = make_synthetic_coco(num_images=3, seed=0, labelled_fraction=1.0, crowd_fraction=0.0)
    gt["annotations"][0]["id"] = 0
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "score": 1.0,
         "keypoints": [float(v) if i % 3 != 2 else 1.0 for i, v in enumerate(a["keypoints"])]}
        for a in gt["annotations"]
    ]
    # Bare pycocotools mis-scores the detection matched to GT id 0.
    assert pycocotools_eval(gt, perfect).stats[0] < 1.0
    with pytest.warns(UserWarning, match="annotation id 0 renumbered"):
        result = evaluate(gt, perfect)
    assert result.stats["AP"] == 1.0 and result.stats["AR"] == 1.0
    assert gt["annotations"][0]["id"] == 0  # the caller's data is untouched
    # The new id is the largest + 1, so it cannot collide; the other ids keep their values.
    largest = max(a["id"] for a in gt["annotations"])
    matched = {int(g) for e in result.image_evals or [] for g in e.gt_ids}
    assert largest + 1 in matched and 0 not in matched and len(results) > 0


def test_inputs_are_not_changed_and_results_can_be_reused() -> None:
    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    gt, results = make_synthetic_coco(num_images=6, seed=1)
    before = copy.deepcopy(results)
    first = evaluate(gt, results)
    assert results == before  # pycocotools' loadRes adds id/area/bbox to the records it gets: they are copies
    gt_data = load_ground_truth(gt)
    res = load_results(results, gt_data)
    again = [evaluate(gt_data, res), evaluate(gt_data, res)]
    assert [r.stats_list() for r in again] == [first.stats_list()] * 2
    assert not again[1].result_has_bbox.any()  # still read as results without a bbox


@requires_shared
def test_micro_id0_fixture() -> None:
    micro = load(EDGE / "micro_id0.json")
    expected = load(EDGE / "expected_stats.json")["micro"]["micro_id0"]
    assert pycocotools_eval(micro["gt"], micro["dt"]).stats.tolist() == expected["pycocotools"]["stats"]
    with pytest.warns(UserWarning, match="renumbered"):
        assert evaluate(micro["gt"], micro["dt"]).stats_list() == expected["hotcoco"]["stats"]


@requires_shared
def test_micro_dtarea_bbox_warning() -> None:
    micro = load(EDGE / "micro_dtarea.json")
    without = evaluate(micro["gt"], micro["dt_without_bbox"])
    with pytest.warns(UserWarning, match="area from the box"):
        with_box = evaluate(micro["gt"], micro["dt_with_bbox"])
    assert without.stats["APm"] != with_box.stats["APm"]
    assert with_box.stats["APm"] == pycocotools_eval(micro["gt"], micro["dt_with_bbox"]).stats[3]


def test_max_dets_note() -> None:
    gt, results = make_synthetic_coco(num_images=2, seed=0)
    results += [dict(results[0], score=0.001) for _ in range(25)]
    notes = evaluate(gt, results).notes
    assert any("top 20" in n for n in notes)


def test_hotcoco_missing_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from kpbench.core.errors import KpbenchError

    monkeypatch.setitem(sys.modules, "hotcoco", None)  # makes `import hotcoco` raise ImportError
    gt, results = make_synthetic_coco(num_images=2, seed=0)
    with pytest.raises(KpbenchError, match="hotcoco is not installed"):
        evaluate(gt, results, backend="hotcoco")


def test_write_metrics_files(tmp_path) -> None:
    import json

    gt, results = make_synthetic_coco(num_images=10, seed=0)
    result = evaluate(gt, results)
    paths = write_metrics(tmp_path, {"keypoints": result})
    assert [p.name for p in paths] == ["metrics.csv", "metrics.md", "metrics.json"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"keypoints": result.stats}
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "iou_type,stat,value"
    assert csv_lines[1] == f"keypoints,AP,{result.stats['AP']!r}"
    assert "| AP |" in (tmp_path / "metrics.md").read_text()


def test_unchecked_files_give_the_same_numbers(tmp_path) -> None:
    import json

    gt, results = make_synthetic_coco(num_images=10, seed=3)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    checked = evaluate(gt_path, res_path)
    for backend in ("pycocotools", "hotcoco"):
        unchecked = evaluate(gt_path, res_path, backend=backend, validate=False)
        assert unchecked.stats == checked.stats
        assert np.array_equal(unchecked.precision, checked.precision)
        assert unchecked.notes == ["input checks skipped (validate=False)"]
    assert np.array_equal(evaluate(gt_path, res_path, validate=False).result_scores, checked.result_scores)
    # A file the backend cannot read is still a one-line KpbenchError, pointing at the checks.
    res_path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(KpbenchError, match=r"failed on the unchecked input.*without --no-validate"):
        evaluate(gt_path, res_path, validate=False)


def _gt_with(change: Any) -> tuple[dict, list]:
    gt, results = make_synthetic_coco(num_images=3, seed=2)
    change(gt)
    return gt, results


def _results_with(change: Any) -> tuple[dict, list]:
    gt, results = make_synthetic_coco(num_images=3, seed=2)
    results = [dict(r) for r in results]
    change(results)
    return gt, results


def _set(records_key: str | None, index: int, field: str, value: Any) -> Any:
    """A change that sets data[records_key][index][field] (data[index][field] for a results list)."""

    def change(data: Any) -> None:
        (data[records_key] if records_key else data)[index][field] = value

    return change


def _boxed(index: int, box: Any) -> Any:
    """A change that gives every keypoint result a bbox (so pycocotools reads them all), result `index` `box`."""

    def change(results: list[dict]) -> None:
        for r in results:
            r["bbox"] = [1.0, 2.0, 30.0, 40.0]
        results[index]["bbox"] = box

    return change


def _keypoint_value(index: int, position: int, value: Any) -> Any:
    def change(results: list[dict]) -> None:
        results[index]["keypoints"] = [*results[index]["keypoints"]]
        results[index]["keypoints"][position] = value

    return change


def _duplicate_image(index: int, like: int) -> Any:
    def change(gt: dict) -> None:
        gt["images"][index] = dict(gt["images"][index], id=gt["images"][like]["id"])

    return change


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        # pycocotools would crash on these (sorting by -score, int(iscrowd), None[0], a short box) ...
        (lambda: _results_with(_set(None, 1, "score", "0.9")), ["result 1", "'score' must be a number", "'0.9'"]),
        (lambda: _gt_with(_set("annotations", 2, "iscrowd", None)), ["annotation 2", "'iscrowd' must be a number"]),
        (lambda: _results_with(_set(None, 0, "bbox", None)), ["result 0", "'bbox' must be a list"]),
        (lambda: _results_with(_boxed(2, [1, 2])), ["result 2", "'bbox' has 2 values, expected 4"]),
        (lambda: _results_with(_set(None, 0, "caption", "a person")), ["result 0", "'caption'"]),
        (lambda: _results_with(_set(None, 0, "segmentation", [[0, 0, 1, 1]])), ["result 0", "'segmentation'"]),
        # ... or change the numbers silently ("0" is a true crowd flag; NaN is never 0) ...
        (lambda: _gt_with(_set("annotations", 0, "iscrowd", "0")), ["annotation 0", "'iscrowd' must be a number"]),
        (lambda: _gt_with(_set("annotations", 1, "num_keypoints", float("nan"))),
         ["annotation 1", "'num_keypoints' holds NaN"]),
        (lambda: _results_with(_boxed(1, [1, 2, float("inf"), 4])), ["result 1", "'bbox' holds NaN or infinity"]),
        # ... or break the matching by id that the sweeps and the breakdown rely on.
        (lambda: _gt_with(_set("annotations", 1, "id", 4.5)), ["annotation 1", "'id' must be an integer", "4.5"]),
        (lambda: _gt_with(_set("annotations", 0, "id", 2**60)), ["annotation 0", "below 2**53"]),
        (lambda: _gt_with(_set("images", 0, "id", "000139")), ["image 0", "'id' must be an integer"]),
        (lambda: _gt_with(_set("categories", 0, "id", "person")), ["category 0", "'id' must be an integer"]),
        # JSON true/false are not numbers, although Python and numpy read them as 1 and 0.
        (lambda: _results_with(_set(None, 1, "score", True)), ["result 1", "'score' must be a number", "True"]),
        (lambda: _results_with(_set(None, 0, "score", False)), ["result 0", "'score' must be a number", "False"]),
        (lambda: _results_with(_keypoint_value(2, 5, True)), ["result 2", "'keypoints' holds a non-number (True)"]),
        (lambda: _results_with(_set(None, 1, "image_id", True)), ["result 1", "'image_id' must be an integer id"]),
        (lambda: _results_with(_set(None, 0, "category_id", True)), ["result 0", "'category_id' must be an integer"]),
        (lambda: _results_with(_boxed(1, [1, 2, True, 4])), ["result 1", "'bbox' holds a non-number (True)"]),
        (lambda: _gt_with(_set("annotations", 1, "iscrowd", False)), ["annotation 1", "'iscrowd' must be a number"]),
        (lambda: _gt_with(_set("annotations", 0, "area", True)), ["annotation 0", "'area' must be a number"]),
        (lambda: _gt_with(_set("annotations", 2, "num_keypoints", True)), ["annotation 2", "'num_keypoints'"]),
        (lambda: _gt_with(_set("annotations", 0, "image_id", True)), ["annotation 0", "'image_id' must be an integer"]),
        (lambda: _gt_with(_set("images", 0, "id", True)), ["image 0", "'id' must be an integer"]),
        # Two image records with one id: pycocotools keeps the last one silently.
        (lambda: _gt_with(_duplicate_image(2, 0)), ["image 2", "duplicate image id", "also image 0"]),
    ],
)
@pytest.mark.filterwarnings("ignore::kpbench.core.errors.KpbenchWarning")  # keypoint results with a bbox warn
def test_bad_inputs_are_named(make: Any, fragments: list[str]) -> None:
    gt, results = make()
    with pytest.raises(KpbenchError) as info:
        evaluate(gt, results)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_keypoint_results_with_some_boxes() -> None:
    """Result 0 without a bbox: pycocotools ignores the later boxes. Same numbers, and a note says so."""
    gt, results = make_synthetic_coco(num_images=8, seed=3)
    results = [dict(r) for r in results]
    for r in results[1::3]:
        r["bbox"] = [0.0, 0.0, 5.0, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KpbenchWarning)  # a note, not a warning: the numbers are pycocotools'
        result = evaluate(gt, results)
    assert result.stats_list() == [float(s) for s in pycocotools_eval(gt, results).stats]
    assert result.stats == evaluate(gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results]).stats
    assert any(f"{len(results[1::3])} result(s) carry a 'bbox' but result 0 does not" in n for n in result.notes)
    assert result.result_has_bbox.tolist() == [i % 3 == 1 for i in range(len(results))]


def test_bool_scores_used_to_be_scored_as_1(tmp_path) -> None:
    """`"score": true` was read as 1.0 by numpy and scored; every record true made a bool array, also accepted."""
    gt, results = make_synthetic_coco(num_images=3, seed=2)
    for records in ([dict(r, score=True) for r in results], [dict(results[0], score=True), *results[1:]]):
        with pytest.raises(KpbenchError, match="'score' must be a number, got True"):
            evaluate(gt, records)


def test_results_covering_some_gt_images_get_a_note() -> None:
    gt, results = make_synthetic_coco(num_images=6, seed=2)
    ids = sorted({r["image_id"] for r in results})
    assert len(ids) == 6
    kept = [r for r in results if r["image_id"] in ids[:4]]
    missed = sum(
        1 for a in gt["annotations"] if a["image_id"] in ids[4:] and not a["iscrowd"] and a["num_keypoints"] > 0
    )
    note = (
        "results cover 4 of 6 GT images; COCOeval scores every GT image, so missing images count as misses "
        f"({missed} GT person(s) in the uncovered images)"
    )
    assert note in evaluate(gt, kept).notes
    assert not [n for n in evaluate(gt, results).notes if "results cover" in n]  # all covered: no note
    assert not [n for n in evaluate(gt, []).notes if "results cover" in n]  # none: the "no detections" note


def test_check_backend() -> None:
    import sys

    from kpbench.evaluation.cocoeval import check_backend

    assert check_backend("pycocotools") == "pycocotools"
    assert check_backend("vectorized") == "vectorized"
    with pytest.raises(KpbenchError, match=r"^--backend: must be one of vectorized, pycocotools, hotcoco, got 'coco'$"):
        check_backend("coco")
    mp = pytest.MonkeyPatch()
    try:
        mp.setitem(sys.modules, "hotcoco", None)  # as if not installed (find_spec then finds nothing)
        with pytest.raises(KpbenchError, match=r"^--backend hotcoco: hotcoco is not installed \(pip install"):
            check_backend("hotcoco")
    finally:
        mp.undo()


def test_describe_protocol_counts_a_selection_of_every_image_as_no_subset() -> None:
    """--limit 5000 on 5000 images, or --image-ids naming them all, used to be the deviation "image subset: 5000 of
    5000 images", and the summary then refused to compare with the published AP."""
    from kpbench.core.config import RunSettings, settings_dict
    from kpbench.evaluation.runeval import describe_protocol

    v1 = {"weights": "COCO_V1", "source": "torchvision", "checkpoint_sha256": None, "seed": None}
    for changes in ({"limit": 5000}, {"limit": 6000}, {"image_ids": list(range(5000))}, {"images": "with-persons"}):
        _, deviations, published = describe_protocol(settings_dict(RunSettings(**changes)), v1, 5000, 5000)
        assert deviations == [] and published == {"box_AP": 54.6, "kp_AP": 65.0}, changes
    _, deviations, _ = describe_protocol(settings_dict(RunSettings(limit=4999)), v1, 4999, 5000)
    assert deviations == ["image subset: 4999 of 5000 images (--limit 4999)"]


def test_file_inputs_record_scores_and_boxes_before_pycocotools_adds_keys(tmp_path) -> None:
    """Records parsed from files are not copied for pycocotools, which adds a `bbox` to each; the sweep's inputs
    must be read before that."""
    import json

    gt, results = make_synthetic_coco(num_images=6, seed=4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    from_files = evaluate(tmp_path / "gt.json", tmp_path / "res.json", backend="pycocotools")
    from_lists = evaluate(gt, results, backend="pycocotools")
    assert from_files.result_has_bbox is not None and not from_files.result_has_bbox.any()
    assert from_files.result_scores.tolist() == [r["score"] for r in results]
    assert from_files.stats == from_lists.stats
    assert "bbox" not in results[0]  # the caller's lists are untouched
