"""kpbench.evaluation.fastcheck, hotcoco's dict-free input checks, and kpbench.evaluation.fastparse, the default
backend's parse straight into arrays: the same verdict, messages, notes and numbers as the full checks.

Every case runs `evaluate(gt_path, results_path, backend="hotcoco")` twice, with the fast path and with it switched
off, and requires the same outcome: the same one-line error, or the same stats, notes, warnings and scores. Each
case also states which way the fast path went: "fast" (proved clean, hotcoco parsed the files), "hotcoco" (proved
clean except for a value inside a keypoint list, which hotcoco's parser refused: the full checks word it) or
"full" (not proved: the full checks ran). A case that silently took another way fails.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, FCE, XTCOCO, jittered_detections, load, requires_shared

import kpbench.evaluation
import kpbench.evaluation.cocoeval as evaluate_module
from kpbench.core.errors import KpbenchError
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation import fastcheck
from kpbench.evaluation.cocoeval import EvalResult, evaluate

SENTINEL = 424242.5  # a value no generated file holds: replaced by a raw JSON token in the file text


def _write(path: Path, content: Any) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _comparable(result: EvalResult) -> dict[str, Any]:
    """Every field of an EvalResult as plain data (arrays as lists), for exact comparison; not the inputs it kept,
    which are files on one way and parsed data on the other."""
    evals = None if result.image_evals is None else list(result.image_evals)  # built, if the backend keeps arrays
    plain = dataclasses.asdict(dataclasses.replace(result, inputs=None, image_evals=evals))
    return json.loads(json.dumps(plain, default=lambda a: a.tolist() if isinstance(a, np.ndarray) else repr(a)))


class Checker:
    """Runs one hotcoco evaluation of two files with the fast path and without it, and records which way the
    fast one went ("fast", "hotcoco" or "full", as in the module docstring) by watching the calls it made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd, self.proved, self.ran = capfd, None, None
        real_check, real_fast = fastcheck.check_files, evaluate_module._hotcoco_on_checked_files

        def check_files(*args: Any, **kwargs: Any) -> Any:
            self.proved = real_check(*args, **kwargs)
            return self.proved

        def hotcoco_on_checked_files(*args: Any, **kwargs: Any) -> Any:
            self.ran = real_fast(*args, **kwargs)
            return self.ran

        monkeypatch.setattr(fastcheck, "check_files", check_files)
        monkeypatch.setattr(evaluate_module, "_hotcoco_on_checked_files", hotcoco_on_checked_files)

    def outcome(self, gt: str | Path, results: str | Path, iou_type: str) -> tuple[str, Any, str]:
        """("error", message, stderr) or ("ok", comparable result + "warnings", stderr)."""
        self.capfd.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = evaluate(gt, results, iou_type=iou_type, backend="hotcoco")
            except KpbenchError as exc:
                return "error", str(exc), self.capfd.readouterr().err
        detail = {**_comparable(result), "warnings": [str(w.message) for w in caught]}
        return "ok", detail, self.capfd.readouterr().err

    def way(self) -> str:
        if self.proved is None:
            return "full"
        return "hotcoco" if self.ran is None else "fast"

    def same_as_full_checks(
        self, tmp_path: Path, gt: Any, results: Any, way: str, iou_type: str = "keypoints"
    ) -> tuple[str, Any]:
        """Write the files, evaluate them both ways, require the same outcome and stderr and the stated way."""
        gt_path, res_path = _write(tmp_path / "gt.json", gt), _write(tmp_path / "res.json", results)
        self.proved = self.ran = None
        fast = self.outcome(gt_path, res_path, iou_type)
        assert self.way() == way
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evaluate_module, "_hotcoco_on_checked_files", lambda *args: None)
            full = self.outcome(gt_path, res_path, iou_type)
        assert fast == full
        return fast[0], fast[1]


@pytest.fixture()
def checker(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Checker:
    return Checker(monkeypatch, capfd)


class ArrayChecker:
    """The same comparison for the default backend: `evaluate(gt_path, results_path)` with the files parsed straight
    into arrays (kpbench.evaluation.fastparse) and with that switched off (the full checks on dicts, then arrays
    made from them). Its ways are "fast" (parsed into arrays) and "full"."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
        from kpbench.evaluation import fastparse

        self.capfd, self.parsed = capfd, None
        real_parse = fastparse.parse_files

        def parse_files(*args: Any, **kwargs: Any) -> Any:
            self.parsed = real_parse(*args, **kwargs)
            return self.parsed

        monkeypatch.setattr(fastparse, "parse_files", parse_files)

    def outcome(self, gt: str | Path, results: str | Path, iou_type: str) -> tuple[str, Any, str]:
        self.capfd.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = evaluate(gt, results, iou_type=iou_type)
            except KpbenchError as exc:
                return "error", str(exc), self.capfd.readouterr().err
        assert result.backend == "vectorized"
        detail = {**_comparable(result), "warnings": [str(w.message) for w in caught],
                  "detections": _comparable_arrays(result)}
        return "ok", detail, self.capfd.readouterr().err

    def way(self) -> str:
        return "full" if self.parsed is None else "fast"

    def same_as_full_checks(
        self, tmp_path: Path, gt: Any, results: Any, way: str, iou_type: str = "keypoints"
    ) -> tuple[str, Any]:
        gt_path, res_path = _write(tmp_path / "gt.json", gt), _write(tmp_path / "res.json", results)
        self.parsed = None
        fast = self.outcome(gt_path, res_path, iou_type)
        assert self.way() == way
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(evaluate_module, "_vectorized_on_checked_files", lambda *args: None)
            full = self.outcome(gt_path, res_path, iou_type)
        assert fast == full
        return fast[0], fast[1]


def _comparable_arrays(result: EvalResult) -> dict[str, Any]:
    """The evaluated GT and detections as plain data (the same doubles either way)."""
    gt, det = result.ground_truth_arrays(), result.detection_arrays()
    return {name: None if value is None else np.asarray(value).tolist() for name, value in (
        ("gt_ids", gt.ann_ids), ("gt_boxes", gt.boxes), ("gt_areas", gt.areas), ("gt_keypoints", gt.keypoints),
        ("gt_crowd", gt.crowd), ("gt_iscrowd", gt.iscrowd), ("gt_no_keypoints", gt.no_keypoints),
        ("image_ids", det.image_ids), ("category_ids", det.category_ids), ("scores", det.scores),
        ("keypoints", det.keypoints), ("boxes", det.boxes))}


@pytest.fixture()
def array_checker(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> ArrayChecker:
    return ArrayChecker(monkeypatch, capfd)


@pytest.fixture(scope="module")
def scene() -> tuple[dict, list]:
    return make_synthetic_coco(num_images=6, detections_per_person=2.5, seed=3)


def _results(change: Callable[[list[dict]], Any]) -> Callable[[dict, list], tuple[Any, Any]]:
    def make(gt: dict, results: list) -> tuple[Any, Any]:
        results = copy.deepcopy(results)
        change(results)
        return gt, results

    return make


def _gt(change: Callable[[dict], Any]) -> Callable[[dict, list], tuple[Any, Any]]:
    def make(gt: dict, results: list) -> tuple[Any, Any]:
        gt = copy.deepcopy(gt)
        change(gt)
        return gt, results

    return make


def _result_token(field: str, token: str, index: int = 1, position: int | None = None) -> Callable:
    """Result `index`'s `field` (or its keypoint `position`) written as the raw JSON `token`."""

    def make(gt: dict, results: list) -> tuple[Any, Any]:
        results = copy.deepcopy(results)
        if position is None:
            results[index][field] = SENTINEL
        else:
            results[index][field][position] = SENTINEL
        return gt, json.dumps(results).replace(str(SENTINEL), token)

    return make


def _gt_token(field: str, token: str, index: int = 1, position: int | None = None) -> Callable:
    def make(gt: dict, results: list) -> tuple[Any, Any]:
        gt = copy.deepcopy(gt)
        if position is None:
            gt["annotations"][index][field] = SENTINEL
        else:
            gt["annotations"][index][field][position] = SENTINEL
        return json.dumps(gt).replace(str(SENTINEL), token), results

    return make


def _pop(records: str, field: str, index: int = 1) -> Callable:
    if records == "results":
        return _results(lambda r: r[index].pop(field))
    return _gt(lambda g: g["annotations"][index].pop(field))


def _update(records: str, index: int, **fields: Any) -> Callable:
    if records == "results":
        return _results(lambda r: r[index].update(fields))
    return _gt(lambda g: g["annotations"][index].update(fields))


HUGE_INT = "9" * 400  # beyond float64: infinity for pycocotools, "out of range" for hotcoco

# name: (make the files, the way evaluate takes, the expected outcome: None for a plain success, else a
# fragment of the error message, or of a WARNING or a NOTE attached to the success)
CASES: dict[str, tuple[Callable, str, str | None]] = {
    # Clean files: the fast path proves them and words the same notes.
    "clean": (lambda gt, r: (gt, r), "fast", "NOTE GT person(s) have no labelled keypoints"),
    "no detections": (lambda gt, r: (gt, []), "fast", "NOTE res.json: no detections; AP and AR are 0"),
    "some images without detections": (
        lambda gt, r: (gt, [x for x in r if x["image_id"] != 1]), "fast", "NOTE results cover 5 of 6 GT images"
    ),
    "crowded image": (
        _results(lambda r: r.extend([dict(r[-1], score=0.01)] * 25)), "fast", "NOTE 1 image(s) have more than 20"
    ),
    "large finite numbers": (_result_token("keypoints", "1e308", position=0), "fast", None),
    "a 4301-digit integer in a field nobody reads": (
        lambda gt, r: (json.dumps({**gt, "extra": SENTINEL}).replace(str(SENTINEL), "9" * 4301), r), "fast", None
    ),
    "invalid UTF-8 in a field nobody reads": (
        lambda gt, r: (json.dumps({**gt, "extra": SENTINEL}).encode().replace(str(SENTINEL).encode(), b'"Jos\xe9"'), r),
        "full",
        "gt.json: not valid JSON",
    ),
    "unknown extra fields": (_results(lambda r: r[0].update(note="x,y", id=7)), "fast", None),
    # Refused by hotcoco's parser after the fast checks passed: the full checks word the error.
    "keypoint string": (_result_token("keypoints", '"5"', position=3), "hotcoco", "result 1: 'keypoints' holds a non-number ('5')"),
    "keypoint bool": (_result_token("keypoints", "true", position=3), "hotcoco", "result 1: 'keypoints' holds a non-number (True)"),
    "keypoint null": (_result_token("keypoints", "null", position=3), "hotcoco", "result 1: 'keypoints' holds a non-number (None)"),
    "keypoint nested list": (_result_token("keypoints", "[1, 2]", position=3), "full", "result 1: 'keypoints' holds a non-number ([1, 2])"),  # 52 commas
    "keypoint out of range": (_result_token("keypoints", "1e999", position=3), "hotcoco", "result 1: 'keypoints' holds NaN or infinity"),
    "keypoint huge integer": (_result_token("keypoints", HUGE_INT, position=3), "hotcoco", "result 1: 'keypoints' holds NaN or infinity"),
    "gt keypoint string": (_gt_token("keypoints", '"5"', position=3), "hotcoco", "annotation 1: 'keypoints' holds a non-number ('5')"),
    "gt keypoint huge integer": (_gt_token("keypoints", HUGE_INT, position=3), "hotcoco", "annotation 1: 'keypoints' holds NaN or infinity"),
    # Not proved: the full checks run (errors, warnings, repairs, forms msgspec's strict types refuse).
    "not json": (lambda gt, r: (gt, "[{not json"), "full", 'res.json: not valid JSON'),
    "results are an object": (lambda gt, r: (gt, {"a": 1}), "full", 'results must be a JSON list of detections, got dict'),
    "results are a gt file": (lambda gt, r: (gt, gt), "full", 'this is a ground-truth file'),
    "gt is a list": (lambda gt, r: ([1, 2], r), "full", 'gt.json: ground truth must be a JSON object'),
    "keypoint NaN": (_result_token("keypoints", "NaN", position=3), "full", "result 1: 'keypoints' holds NaN or infinity"),
    "keypoint Infinity": (_result_token("keypoints", "Infinity", position=3), "full", "result 1: 'keypoints' holds NaN or infinity"),
    "48 keypoint values": (_results(lambda r: r[1].update(keypoints=r[1]["keypoints"][:48])), "full", "result 1: 'keypoints' has 48 values, expected 51"),
    "54 keypoint values": (_results(lambda r: r[1].update(keypoints=r[1]["keypoints"] + [1, 1, 1])), "full", "result 1: 'keypoints' has 54 values, expected 51"),
    "keypoints missing": (_pop("results", "keypoints"), "full", "result 1 has no 'keypoints'"),
    "keypoints null": (_update("results", 1, keypoints=None), "full", "result 1: 'keypoints' must be a list, got NoneType"),
    "score missing": (_pop("results", "score"), "full", "result 1 has no 'score'"),
    "score null": (_update("results", 1, score=None), "full", "result 1: 'score' must be a number, got None"),
    "score string": (_update("results", 1, score="0.5"), "full", "result 1: 'score' must be a number, got '0.5'"),
    "score bool": (_update("results", 1, score=True), "full", "result 1: 'score' must be a number, got True"),
    "score NaN": (_result_token("score", "NaN"), "full", "result 1: 'score' holds NaN or infinity"),
    "score out of range": (_result_token("score", "1e999"), "full", "result 1: 'score' holds NaN or infinity"),
    "unknown image": (_update("results", 1, image_id=999999), "full", 'result 1: image_id 999999 is not in the ground truth'),
    "unknown category": (_update("results", 1, category_id=7), "full", 'result 1: category_id 7 is not in the ground truth'),
    "image id written as a float": (_result_token("image_id", "1.0"), "full", None),
    "image id bool": (_update("results", 1, image_id=True), "full", "result 1: 'image_id' must be an integer id, got True"),
    "bbox on every result": (_results(lambda r: [x.update(bbox=[1, 2, 3, 4]) for x in r]), "full", "WARNING keypoint results carry a 'bbox'"),
    "bbox on a later result": (_update("results", 1, bbox=[1, 2, 3, 4]), "full", "NOTE 1 result(s) carry a 'bbox' but result 0 does not"),
    "segmentation first": (_update("results", 0, segmentation=[[1, 2, 3, 4, 5, 6]]), "full", "result 0 has a 'segmentation' and no 'bbox'"),
    "caption first": (_update("results", 0, caption="a person"), "full", "result 0 has a 'caption'"),
    "gt without num_keypoints": (_pop("gt", "num_keypoints"), "full", "annotation 1 (id 2) has no 'num_keypoints'"),
    "gt without area": (_pop("gt", "area"), "full", "annotation 1 (id 2) has no 'area'"),
    "gt without iscrowd": (_pop("gt", "iscrowd"), "full", "annotation 1 (id 2) has no 'iscrowd'"),
    "gt area null": (_update("gt", 1, area=None), "full", "annotation 1: 'area' must be a number, got None"),
    "gt iscrowd bool": (_update("gt", 1, iscrowd=True), "full", "annotation 1: 'iscrowd' must be a number, got True"),
    "gt 48 keypoint values": (_gt(lambda g: g["annotations"][1].update(keypoints=[0] * 48)), "full", "annotation 1: 'keypoints' has 48 values, expected 51"),
    "gt annotation id 0": (_update("gt", 1, id=0), "full", 'WARNING annotation id 0 renumbered'),
    "gt duplicate annotation ids": (_gt(lambda g: g["annotations"][2].update(id=g["annotations"][1]["id"])), "full", 'annotation 2: duplicate annotation id 2 (also annotation 1)'),
    "gt duplicate image ids": (_gt(lambda g: g["images"][2].update(id=g["images"][1]["id"])), "full", 'image 2: duplicate image id 2'),
    "gt annotation of an unknown category": (
        _update("gt", 1, category_id=7), "full", "annotation 1 (id 2) refers to category 7, not in 'categories'"
    ),
    "gt annotation category as a list": (_update("gt", 1, category_id=[1]), "full", "'category_id' must be an integer id"),
    "result image id as a list": (_update("results", 1, image_id=[1]), "full", "result 1: 'image_id' must be an integer id"),
    "gt category keypoints not a list": (
        _gt(lambda g: g["categories"][0].update(keypoints=5)), "full", "category 1: 'keypoints' must be a list"
    ),
    "gt annotation of an unknown image": (_update("gt", 1, image_id=999999), "full", "refers to image 999999, not in 'images'"),
    "gt annotation id too large": (_update("gt", 1, id=2**53), "full", "'id' must be an integer (as COCO ids are) below 2**53"),
    "gt category with 16 keypoint names": (_gt(lambda g: g["categories"][0].update(keypoints=["a"] * 16)), "full", 'category 1 has 16 keypoints that match no built-in keypoint schema'),
    "gt category with no keypoint names": (_gt(lambda g: g["categories"][0].update(keypoints=[])), "full", 'NOTE category 1 lists no keypoint names; scored as coco17'),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_outcome_as_the_full_checks(name: str, scene, tmp_path: Path, checker: Checker) -> None:
    make, way, expected = CASES[name]
    gt, results = make(*scene)
    outcome, detail = checker.same_as_full_checks(tmp_path, gt, results, way)
    if expected is None:
        assert outcome == "ok"
    elif expected.startswith(("WARNING ", "NOTE ")):
        kind, fragment = expected.split(" ", 1)
        assert outcome == "ok"
        texts = detail["warnings"] if kind == "WARNING" else detail["notes"]
        assert any(fragment in text for text in texts), detail
    else:
        assert outcome == "error" and expected in detail


@pytest.mark.parametrize("name", list(CASES))
def test_arrays_same_outcome_as_the_full_checks(name: str, scene, tmp_path: Path, array_checker: ArrayChecker) -> None:
    """Every case again through the default backend's parse into arrays: the same error message (old checks and
    new on the same bad input), or the same stats, notes, warnings and input arrays."""
    make, way, expected = CASES[name]
    gt, results = make(*scene)
    outcome, detail = array_checker.same_as_full_checks(tmp_path, gt, results, "fast" if way == "fast" else "full")
    if expected is None:
        assert outcome == "ok"
    elif expected.startswith(("WARNING ", "NOTE ")):
        kind, fragment = expected.split(" ", 1)
        assert outcome == "ok"
        texts = detail["warnings"] if kind == "WARNING" else detail["notes"]
        assert any(fragment in text for text in texts), detail
    else:
        assert outcome == "error" and expected in detail


def test_arrays_bbox_results_and_real_fixtures(scene, tmp_path: Path, array_checker: ArrayChecker) -> None:
    gt, _ = scene
    boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    _, detail = array_checker.same_as_full_checks(tmp_path, gt, boxes, "fast", iou_type="bbox")
    assert detail["stats"]["AP"] == 1.0
    _, detail = array_checker.same_as_full_checks(tmp_path, gt, boxes[2:], "fast", iou_type="bbox")
    assert any(n.startswith("results cover") for n in detail["notes"])
    boxes[1]["bbox"] = [1, 2, -3, 4]
    outcome, message = array_checker.same_as_full_checks(tmp_path, gt, boxes, "full", iou_type="bbox")
    assert outcome == "error" and "result 1: 'bbox' has a negative width or height" in message
    if COCO_SAMPLE.is_dir():
        sample = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
        array_checker.same_as_full_checks(tmp_path, sample, jittered_detections(sample), "fast")
        array_checker.same_as_full_checks(tmp_path, load(XTCOCO / "example_coco_val.json"),
                                          load(XTCOCO / "example_coco_preds.json"), "fast")
        array_checker.same_as_full_checks(tmp_path, load(FCE / "gt_dataset.json"), load(FCE / "dt_dataset.json"),
                                          "full")  # its results carry a bbox: a warning


def test_clean_notes_are_worded_by_the_full_checks(scene, tmp_path: Path, checker: Checker) -> None:
    gt, results = scene
    crowded = [x for x in results if x["image_id"] != 1] + [dict(results[-1], score=0.01)] * 25
    _, detail = checker.same_as_full_checks(tmp_path, gt, crowded, "fast")
    assert [n.split(":")[0].split(";")[0] for n in detail["notes"]] == [
        detail["notes"][0].split(":")[0],  # the unlabelled GT persons
        f"results cover {len(gt['images']) - 1} of {len(gt['images'])} GT images",
        "1 image(s) have more than 20 detections",
    ]
    assert detail["warnings"] == [] and detail["result_scores"] == [x["score"] for x in crowded]
    assert detail["result_has_bbox"] == [False] * len(crowded)


def test_bbox_results(scene, tmp_path: Path, checker: Checker) -> None:
    gt, _ = scene
    boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    _, detail = checker.same_as_full_checks(tmp_path, gt, boxes, "fast", iou_type="bbox")
    assert detail["stats"]["AP"] == 1.0
    boxes[1]["bbox"] = [1, 2, -3, 4]  # negative width: msgspec's bound refuses it, the full checks word it
    outcome, message = checker.same_as_full_checks(tmp_path, gt, boxes, "full", iou_type="bbox")
    assert outcome == "error" and "negative width or height" in message


def test_notes_name_the_files_as_given(scene, tmp_path: Path, checker: Checker, monkeypatch) -> None:
    gt, _ = scene
    _write(tmp_path / "gt.json", gt)
    _write(tmp_path / "res.json", [])
    monkeypatch.chdir(tmp_path)
    outcome, detail, _ = checker.outcome("./gt.json", f"{tmp_path}//res.json", "keypoints")
    assert checker.way() == "fast" and outcome == "ok"
    assert detail["notes"][-1].startswith(f"{tmp_path}//res.json: no detections")


def test_hotcoco_remarks_are_printed_once(scene, tmp_path: Path, checker: Checker) -> None:
    """hotcoco prints its own load warnings (here: a category without a name) itself; the fast path does not
    fall back on them, so they are printed once, as on the full path."""
    gt, results = scene
    gt = copy.deepcopy(gt)
    del gt["categories"][0]["name"]
    outcome, _ = checker.same_as_full_checks(tmp_path, gt, results, "fast")
    _, _, stderr = checker.outcome(tmp_path / "gt.json", tmp_path / "res.json", "keypoints")
    assert outcome == "ok" and stderr.count("without a name") == 1


def test_input_hotcoco_refuses_but_pycocotools_accepts(scene, tmp_path: Path, checker: Checker) -> None:
    """A negative annotation id passes the checks (pycocotools takes it) but not hotcoco's parser: one line."""
    gt, results = scene
    gt = copy.deepcopy(gt)
    gt["annotations"][1]["id"] = -5
    outcome, message = checker.same_as_full_checks(tmp_path, gt, results, "hotcoco")
    assert outcome == "error" and "hotcoco refused input that pycocotools accepts" in message
    assert "--backend pycocotools" in message and "\n" not in message
    assert evaluate(tmp_path / "gt.json", tmp_path / "res.json").stats  # the default backend scores it


def test_without_msgspec_the_full_checks_run(
    scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checker: Checker
) -> None:
    gt, results = scene
    gt_path, res_path = _write(tmp_path / "gt.json", gt), _write(tmp_path / "res.json", results)
    expected = checker.outcome(gt_path, res_path, "keypoints")
    assert checker.way() == "fast"
    monkeypatch.delattr(kpbench.evaluation, "fastcheck", raising=False)
    monkeypatch.setitem(sys.modules, "kpbench.evaluation.fastcheck", None)  # `from kpbench.evaluation import fastcheck` raises
    checker.proved = checker.ran = None
    assert checker.outcome(gt_path, res_path, "keypoints") == expected
    assert checker.way() == "full"


def test_check_files_returns_the_full_checks_notes(scene, tmp_path: Path) -> None:
    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    gt, results = scene
    gt_path, res_path = _write(tmp_path / "gt.json", gt), _write(tmp_path / "res.json", results[3:])
    checked = fastcheck.check_files(gt_path, res_path)
    full_gt = load_ground_truth(gt_path)
    full = load_results(res_path, full_gt)
    assert checked is not None
    assert checked.notes == [*full_gt.notes, *full.notes] and len(checked.notes) == 2
    assert np.array_equal(checked.result_scores, [r["score"] for r in results[3:]])


@requires_shared
@pytest.mark.parametrize(
    ("gt_file", "results", "way"),
    [
        (COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json", "jittered", "fast"),
        (XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json", "fast"),
        (FCE / "gt_dataset.json", FCE / "dt_dataset.json", "full"),  # its results carry a bbox: a warning
    ],
    ids=["val2017_sample", "xtcocoapi", "fce"],
)
def test_real_fixtures(gt_file: Path, results: Any, way: str, tmp_path: Path, checker: Checker) -> None:
    gt = load(gt_file)
    detections = jittered_detections(gt) if results == "jittered" else load(results)
    outcome, _ = checker.same_as_full_checks(tmp_path, gt, detections, way)
    assert outcome == "ok"


def test_wholebody_and_several_keypoint_categories_go_to_the_full_checks(scene, tmp_path: Path) -> None:
    """The full checks add a note for a COCO-WholeBody GT and score several keypoint sets per category: the fast path must not
    decide either alone."""
    from kpbench.core.schema import COCO17

    gt, results = copy.deepcopy(scene[0]), scene[1]
    for ann in gt["annotations"]:
        ann["foot_kpts"] = [0] * 18
    assert fastcheck.check_files(_write(tmp_path / "wb.json", gt), _write(tmp_path / "r.json", results)) is None
    two = copy.deepcopy(scene[0])
    two["categories"].append({**two["categories"][0], "id": 2, "keypoints": [f"k{i}" for i in range(17)]})
    two["annotations"][0]["category_id"] = 2
    path = _write(tmp_path / "two.json", two)
    assert fastcheck.check_files(path, _write(tmp_path / "r2.json", results), schema=COCO17) is None
