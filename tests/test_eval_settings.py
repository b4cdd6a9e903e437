"""COCOeval's parameters as settings: kpbench's summary equals pycocotools' own wherever pycocotools' summarize()
can read the parameters, both backends honour them, and pycocotools' traps (maxDets 20 hard-coded for keypoints,
useCats=0 zeroing keypoint stats) are said, not suffered."""

from __future__ import annotations

import numpy as np
import pytest
from kpdata import jittered_detections, pycocotools_eval

from kpbench.core.errors import KpbenchError
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate, metrics_json
from kpbench.evaluation.settings import (
    EvalSettings,
    parse_area_ranges,
    parse_iou_thresholds,
    parse_max_dets,
    summarize,
)


@pytest.fixture(scope="module")
def scene() -> tuple[dict, list]:
    gt, results = make_synthetic_coco(num_images=12, seed=5)
    return gt, results


@pytest.fixture(scope="module")
def box_results(scene) -> list[dict]:
    """The keypoint results as box results: each box is its keypoints' extent."""
    boxes = []
    for r in scene[1]:
        x, y = np.asarray(r["keypoints"][0::3]), np.asarray(r["keypoints"][1::3])
        box = [float(x.min()), float(y.min()), float(x.max() - x.min()), float(y.max() - y.min())]
        boxes.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"], "bbox": box})
    return boxes


def _pycocotools(gt: dict, results: list, iou_type: str, max_dets: list[int] | None = None) -> np.ndarray:
    return np.asarray(pycocotools_eval(gt, results, iou_type, max_dets=max_dets).stats)


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_summary_equals_pycocotools_summarize_at_coco_parameters(scene, box_results, iou_type: str) -> None:
    gt, results = scene[0], scene[1] if iou_type == "keypoints" else box_results
    result = evaluate(gt, results, iou_type=iou_type)
    p = result.params
    ours = summarize(result.precision, result.recall, p.iou_thresholds, p.area_labels, p.max_dets, iou_type)
    assert ours == result.stats  # names and values, bit for bit


def test_box_max_dets_equal_pycocotools_which_reads_them(scene, box_results) -> None:
    gt, results = scene[0], box_results
    for backend in ("pycocotools", "hotcoco"):
        result = evaluate(gt, results, iou_type="bbox", backend=backend, settings=EvalSettings(max_dets=(2, 5, 50)))
        assert list(result.stats) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR2", "AR5", "AR50", "ARs", "ARm", "ARl"]
        expected = _pycocotools(gt, results, "bbox", [2, 5, 50]).tolist()
        # pycocotools reads its AP at a hard-coded maxDets 100 (so -1 here), the other stats at maxDets[2].
        assert expected[0] == -1.0 and result.stats["AP"] > 0
        assert result.stats_list()[1:] == expected[1:]
        assert result.notes[-1].startswith("maxDets [2, 5, 50]: pycocotools' summarize() reads box AP at a "
                                           "hard-coded 100 and would report -1")


def test_keypoint_max_dets_other_than_20_are_not_minus_one(scene) -> None:
    gt, results = scene
    # pycocotools' own summarize() hard-codes maxDets 20 for keypoints: with [5] every stat reads -1.
    assert set(_pycocotools(gt, results, "keypoints", [5]).tolist()) == {-1.0}
    result = evaluate(gt, results, settings=EvalSettings(max_dets=(5,)))
    assert result.stats["AP"] == float(np.mean(result.precision[..., 0, 0][result.precision[..., 0, 0] > -1]))
    assert -1.0 not in (result.stats["AP"], result.stats["AR"])
    assert result.notes[-1].startswith("maxDets [5]: pycocotools' summarize() reads every keypoint stat at a "
                                       "hard-coded 20 and would report -1")
    assert evaluate(gt, results, backend="hotcoco", settings=EvalSettings(max_dets=(5,))).stats == result.stats
    # Spelled-out COCO areas go through kpbench's summary: the same stats as pycocotools'.
    spelled = EvalSettings(area_ranges=parse_area_ranges("all:0:1e10,medium:1024:9216,large:9216:1e10"))
    assert evaluate(gt, results, settings=spelled).stats_list() == _pycocotools(gt, results, "keypoints").tolist()


def test_use_cats_0_for_keypoints_is_honoured_and_said(scene) -> None:
    """pycocotools' computeOks ignores useCats=0 (every keypoint stat 0): the default backend honours it, as hotcoco
    does (arrays equal), and asking for pycocotools gets the vectorized backend, each time with a note."""
    gt, results = scene
    result = evaluate(gt, results, settings=EvalSettings(use_cats=False))
    assert result.backend == "vectorized"
    assert any("pycocotools' computeOks ignores it and would score every keypoint stat 0; the vectorized backend "
               "honours it (as hotcoco does)" in n for n in result.notes)
    asked = evaluate(gt, results, backend="pycocotools", settings=EvalSettings(use_cats=False))
    assert asked.backend == "vectorized" and asked.stats == result.stats
    assert any("evaluated with the vectorized backend, which honours it" in n for n in asked.notes)
    hotcoco = evaluate(gt, results, backend="hotcoco", settings=EvalSettings(use_cats=False))
    assert np.array_equal(hotcoco.precision, result.precision) and hotcoco.stats == result.stats
    # One keypoint category: useCats changes nothing.
    assert result.stats_list() == _pycocotools(gt, results, "keypoints").tolist()
    assert metrics_json({"keypoints": result})["params"] == {"keypoints": {
        "max_dets": None, "area_ranges": None, "iou_thresholds": None, "use_cats": False}}
    assert "params" not in metrics_json({"keypoints": evaluate(gt, results)})


def test_thresholds_without_0_5_say_so_and_iou_ranges_parse_like_cocoeval(scene) -> None:
    gt, results = scene
    thresholds = parse_iou_thresholds("0.5:0.95:0.05")
    from pycocotools.cocoeval import Params

    assert np.array_equal(thresholds, Params(iouType="keypoints").iouThrs)
    result = evaluate(gt, results, settings=EvalSettings(iou_thresholds=(0.6, 0.7)))
    assert result.stats["AP50"] == -1.0 and result.stats["AP75"] == -1.0
    assert result.notes[-1] == "IoU/OKS thresholds [0.6, 0.7] hold no [0.5, 0.75]: AP/AR at 0.5, 0.75 are -1"


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_max_dets, "20,10", "--max-dets: positive integers in ascending order"),
    (parse_max_dets, "a", "--max-dets: not a comma-separated list of ints"),
    (parse_iou_thresholds, "0.5,1.5", "--iou-thresholds: values in [0, 1]"),
    (parse_area_ranges, "medium:0:10", "--area-ranges: the first range must be labelled 'all'"),
    (parse_area_ranges, "all:5:1", "--area-ranges: needs 0 <= LO <= HI"),
])
def test_bad_settings_are_one_clear_error(parse, text: str, message: str) -> None:
    with pytest.raises(KpbenchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_jittered_real_style_detections_keep_default_stats(scene) -> None:
    """COCO's parameters spelled out change nothing: the backend's own stats are kept."""
    gt, _ = scene
    results = jittered_detections(gt)
    spelled = EvalSettings(max_dets=(20,), iou_thresholds=parse_iou_thresholds("0.5:0.95:0.05"))
    assert evaluate(gt, results, settings=spelled).stats == evaluate(gt, results).stats
