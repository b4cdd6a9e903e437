"""AP per keypoint and per keypoint group (kpbench.analysis.keypoint_ap) and the schema's keypoint groups: every
part equal (==, every stat, the precision and recall arrays) to bare pycocotools run on the sliced keypoints and
sigmas, on the real fixtures and on generated data, with both of kpbench's evaluators."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, SHARED_DATA, load, pycocotools_eval, requires_shared

from kpbench.analysis.keypoint_ap import KeypointAP, keypoint_ap, read_keypoint_ap_rows, write_keypoint_ap_files
from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import (
    AP10K17,
    COCO17,
    CROWDPOSE14,
    KeypointSchema,
    get_schema,
    parse_groups,
    resolve_groups,
)
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.settings import EvalSettings

YOLO_SAMPLE_RESULTS = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
CROWDPOSE = SHARED_DATA / "xtcocoapi_example_crowdpose"
AREA_ALL_STATS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75")


def sliced(
    gt: dict[str, Any], results: list[dict[str, Any]], indices: tuple[int, ...], keep_area: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The GT and results cut down to `indices`, written out plainly: each GT's keypoints sliced and its
    num_keypoints recounted (mmpose's KeypointPartitionMetric); each result's keypoints sliced. With `keep_area`
    each result gets the box of its whole keypoints, so that pycocotools' loadRes gives it the whole person's
    area (without: the sliced keypoints' extent, as mmpose lets it)."""
    gt = copy.deepcopy(gt)
    cat = gt["categories"][0]
    cat["keypoints"] = [cat["keypoints"][i] for i in indices]
    cat["skeleton"] = []
    for ann in gt["annotations"]:
        kps = [ann["keypoints"][3 * i: 3 * i + 3] for i in indices]
        ann["keypoints"] = [v for kp in kps for v in kp]
        ann["num_keypoints"] = sum(1 for kp in kps if kp[2] > 0)
    out = []
    for r in results:
        full = r["keypoints"]
        record = {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                  "keypoints": [v for i in indices for v in full[3 * i: 3 * i + 3]]}
        if keep_area:
            if "bbox" in results[0]:
                record["bbox"] = r["bbox"]
            else:
                x, y = full[0::3], full[1::3]
                record["bbox"] = [min(x), min(y), max(x) - min(x), max(y) - min(y)]
        out.append(record)
    return gt, out


def assert_equal_to_pycocotools(result: KeypointAP, gt: dict[str, Any], results: list[dict[str, Any]],
                                settings: EvalSettings | None = None) -> None:
    """Every group and keypoint part equals bare pycocotools on its slice, the "all" part the plain evaluation."""
    schema = result.schema
    for part in result.parts:
        if part.kind == "all":
            ev = pycocotools_eval(gt, results, sigmas=schema.sigma_array, settings=settings)
        else:
            part_gt, part_results = sliced(gt, results, part.indices)
            ev = pycocotools_eval(part_gt, part_results, sigmas=schema.sigma_array[list(part.indices)],
                                  settings=settings)
        if settings is None or settings.is_default():
            assert list(part.stats.values()) == [float(s) for s in ev.stats], part.name
        assert np.array_equal(part.precision, ev.eval["precision"]), part.name
        assert np.array_equal(part.recall, ev.eval["recall"]), part.name


# --- the schema's groups ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [COCO17, CROWDPOSE14, AP10K17])
def test_builtin_groups_partition_the_keypoints(schema: KeypointSchema) -> None:
    covered = sorted(i for _, indices in schema.groups for i in indices)
    assert covered == list(range(schema.num_keypoints))
    assert len(schema.groups) == 4


def test_coco17_groups_by_name() -> None:
    assert COCO17.group_names() == {
        "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
        "arms": ("left_elbow", "right_elbow", "left_wrist", "right_wrist"),
        "torso": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
        "legs": ("left_knee", "right_knee", "left_ankle", "right_ankle"),
    }
    assert [name for name, _ in CROWDPOSE14.groups] == ["head", "arms", "torso", "legs"]
    assert CROWDPOSE14.group_names()["head"] == ("head", "neck")
    assert [name for name, _ in AP10K17.groups] == ["head", "front legs", "torso", "back legs"]


def test_groups_round_trip_and_do_not_change_what_a_schema_scores() -> None:
    data = COCO17.to_json()
    assert data["groups"]["legs"] == ["left_knee", "right_knee", "left_ankle", "right_ankle"]
    assert KeypointSchema.from_json(data) is COCO17
    mine = COCO17.with_groups([("face", ["nose", "left_eye", "right_eye"]), ("feet", [15, 16])])
    assert mine.groups == (("face", (0, 1, 2)), ("feet", (15, 16)))
    assert mine == COCO17 and hash(mine) == hash(COCO17)  # groups change no score
    again = KeypointSchema.from_json({**mine.to_json(), "name": "mine"})
    assert again.groups == mine.groups
    # A manifest written before groups existed reads as the built-in, groups included.
    old = {k: v for k, v in data.items() if k != "groups"}
    assert KeypointSchema.from_json(old).groups == COCO17.groups


def test_parse_groups_syntax_names_indices_and_files(tmp_path: Path) -> None:
    assert parse_groups("head:nose,left_eye; legs: 13,14 ,15") == (("head", ("nose", "left_eye")),
                                                                   ("legs", (13, 14, 15)))
    assert resolve_groups(parse_groups("head:nose,left_eye;legs:13,14"), COCO17) == (("head", (0, 1)),
                                                                                      ("legs", (13, 14)))
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"upper": ["left_shoulder", "right_shoulder", 0], "lower": ["left_hip"]}))
    assert resolve_groups(parse_groups(str(path)), COCO17) == (("upper", (5, 6, 0)), ("lower", (11,)))
    for bad, message in (("head", "is not NAME:KEYPOINT"), ("head:", "is not NAME:KEYPOINT"), (":nose", "NAME"),
                         (";", "no group")):
        with pytest.raises(KpbenchError, match=message):
            parse_groups(bad)
    path.write_text(json.dumps(["nose"]))
    with pytest.raises(KpbenchError, match="expected a JSON object of groups"):
        parse_groups(str(path))


@pytest.mark.parametrize(("groups", "message"), [
    ([("head", ["nose", "beak"])], "'beak' is not a keypoint of the coco17 schema (nose, left_eye"),
    ([("head", [17])], "group 'head' has a keypoint outside 0..16"),
    ([("head", ["nose", 0])], "group 'head' lists a keypoint twice"),
    ([("head", [])], "group 'head' needs keypoint indices"),
    ([("all", [0])], "a group needs a name other than 'all'"),
    ([("a", [0]), ("a", [1])], "two groups are named 'a'"),
    ([("a", "nose")], "needs a list of keypoints"),
])  # fmt: skip
def test_bad_groups_are_one_clear_error(groups: Any, message: str) -> None:
    with pytest.raises(KpbenchError, match=message.replace("(", r"\(")):
        COCO17.with_groups(groups)


# --- exact against pycocotools ---------------------------------------------------------------------------------


@requires_shared
def test_real_sample_every_part_equals_pycocotools_on_the_slice() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = load(YOLO_SAMPLE_RESULTS)
    result = keypoint_ap(gt, results)
    assert [p.name for p in result.parts] == ["all", "head", "arms", "torso", "legs", *COCO17.keypoint_names]
    assert_equal_to_pycocotools(result, gt, results)
    # "all" is kpbench.evaluate's own evaluation, stat for stat.
    plain = evaluate(gt, results)
    assert result["all"].stats == plain.stats and np.array_equal(result["all"].precision, plain.precision)
    # The numbers README quotes (YOLO11n-pose on the 35-image sample).
    assert round(100 * result["all"].stats["AP"], 1) == 47.2
    assert {p.name: round(100 * p.stats["AP"], 1) for p in result.parts if p.kind == "group"} == {
        "head": 52.0, "arms": 45.1, "torso": 61.7, "legs": 55.3}
    assert (result["legs"].num_gt, result["head"].num_gt, result["nose"].num_gt) == (35, 56, 46)


@requires_shared
def test_pycocotools_evaluator_gives_the_same_arrays() -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = load(YOLO_SAMPLE_RESULTS)
    fast, reference = keypoint_ap(gt, results), keypoint_ap(gt, results, evaluator="pycocotools")
    assert reference.evaluator == "pycocotools"
    for a, b in zip(fast.parts, reference.parts, strict=True):
        assert (a.name, a.num_gt, a.stats) == (b.name, b.num_gt, b.stats)
        assert np.array_equal(a.precision, b.precision) and np.array_equal(a.recall, b.recall)


@requires_shared
def test_area_all_stats_equal_mmpose_style_slices_but_medium_and_large_need_the_person_area() -> None:
    """mmpose's partition metric lets loadRes take a sliced detection's area from the sliced keypoints (one
    keypoint: area 0). On area "all" that changes nothing; on medium and large it does, which is why kpbench
    keeps each detection's whole-person area."""
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = load(YOLO_SAMPLE_RESULTS)
    result = keypoint_ap(gt, results)
    differ = []
    for part in result.parts[1:]:
        part_gt, part_results = sliced(gt, results, part.indices, keep_area=False)
        ev = pycocotools_eval(part_gt, part_results, sigmas=COCO17.sigma_array[list(part.indices)])
        mmpose = dict(zip(part.stats, (float(s) for s in ev.stats)))
        assert {s: part.stats[s] for s in AREA_ALL_STATS} == {s: mmpose[s] for s in AREA_ALL_STATS}, part.name
        if part.stats["APm"] != mmpose["APm"]:
            differ.append(part.name)
    assert "nose" in differ and len(differ) >= 10  # unmatched detections left out of APm by the sliced area


def generated_scene(seed: int, schema: KeypointSchema, images: int = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A GT with unlabelled keypoints, persons labelled only in some groups, crowd regions and GTs without any
    labelled keypoint; detections jittered per keypoint, duplicated, missing, plus false positives; scores rounded
    so that ties occur."""
    rng = np.random.default_rng(seed)
    k = schema.num_keypoints
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": [schema.category()]}
    results: list[dict[str, Any]] = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 5))):
            w, h = rng.uniform(20, 200), rng.uniform(30, 300)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            xy = np.stack([rng.uniform(x, x + w, k), rng.uniform(y, y + h, k)], axis=1).round(2)
            v = np.where(rng.random(k) < rng.uniform(0.2, 1.0), 2, 0)
            if rng.random() < 0.15:
                v[:] = 0  # no labelled keypoint at all
            crowd = int(rng.random() < 0.07)
            kps = np.concatenate([xy, v[:, None]], axis=1)
            kps[v == 0, :2] = 0
            area = round(float(w * h * rng.uniform(0.4, 0.9)), 2)
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": schema.category_id,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": area, "iscrowd": crowd,
                "num_keypoints": int((v > 0).sum()), "keypoints": kps.reshape(-1).tolist(),
            })  # fmt: skip
            for _ in range(int(rng.choice([0, 1, 1, 2]))):
                spread = rng.uniform(0.2, 3.0, (k, 1)) * schema.sigma_array[:, None] * 2 * np.sqrt(area)
                pred = np.concatenate([(xy + rng.normal(0, 1, (k, 2)) * spread).round(2), np.ones((k, 1))], axis=1)
                results.append({"image_id": image_id, "category_id": schema.category_id,
                                "keypoints": pred.reshape(-1).tolist(), "score": round(float(rng.uniform(0, 1)), 1)})
        for _ in range(int(rng.integers(0, 3))):
            fp = np.concatenate([rng.uniform(0, 480, (k, 2)).round(2), np.ones((k, 1))], axis=1)
            results.append({"image_id": image_id, "category_id": schema.category_id,
                            "keypoints": fp.reshape(-1).tolist(), "score": round(float(rng.uniform(0, 1)), 1)})
    return gt, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_data_equals_pycocotools_with_user_groups(seed: int) -> None:
    gt, results = generated_scene(seed, COCO17)
    groups = [("upper", ["left_shoulder", "right_shoulder", "left_elbow", 8]), ("face", [0, 1, 2]),
              ("left", [5, 7, 9, 11, 13, 15])]
    result = keypoint_ap(gt, results, groups=groups)
    assert [p.name for p in result.parts][:4] == ["all", "upper", "face", "left"]
    assert_equal_to_pycocotools(result, gt, results)
    reference = keypoint_ap(gt, results, groups=groups, evaluator="pycocotools")
    assert [p.stats for p in reference.parts] == [p.stats for p in result.parts]


def test_generated_data_with_boxes_and_other_settings_equals_pycocotools() -> None:
    """Results that carry a bbox (loadRes then takes every area from it) and non-COCO parameters."""
    gt, results = generated_scene(5, COCO17, images=12)
    for r in results:
        x, y = r["keypoints"][0::3], r["keypoints"][1::3]
        r["bbox"] = [min(x) - 3, min(y) - 5, max(x) - min(x) + 9, max(y) - min(y) + 11]
    settings = EvalSettings(max_dets=(2, 5), iou_thresholds=(0.3, 0.5, 0.8),
                            area_ranges=(("all", 0.0, 1e10), ("small", 0.0, 5000.0), ("big", 5000.0, 1e10)))
    result = keypoint_ap(gt, results, settings=settings, per_keypoint=False)
    assert [p.kind for p in result.parts] == ["all", "group", "group", "group", "group"]
    assert_equal_to_pycocotools(result, gt, results, settings)
    assert list(result.parts[0].stats) == list(evaluate(gt, results, settings=settings).stats)


def test_a_five_keypoint_schema_with_its_groups_equals_pycocotools() -> None:
    five = KeypointSchema(name="five", keypoint_names=("head", "l_hand", "r_hand", "l_foot", "r_foot"),
                          skeleton=((1, 2),), sigmas=(0.05, 0.08, 0.08, 0.1, 0.1), category_id=3,
                          category_name="robot", groups=(("hands", (1, 2)), ("feet", (3, 4))))
    gt, results = generated_scene(7, five, images=15)
    result = keypoint_ap(gt, results, schema=five)
    assert [p.name for p in result.parts] == ["all", "hands", "feet", "head", "l_hand", "r_hand", "l_foot", "r_foot"]
    assert_equal_to_pycocotools(result, gt, results)


@requires_shared
def test_crowdpose_groups_equal_pycocotools_with_its_box_areas() -> None:
    gt = load(CROWDPOSE / "example_crowdpose_val.json")
    results = load(CROWDPOSE / "example_crowdpose_preds.json")
    result = keypoint_ap(gt, results)
    assert result.schema is CROWDPOSE14
    assert any("not the crowdpose protocol's own split" in n for n in result.notes)
    filled = copy.deepcopy(gt)  # CrowdPose's GT has no area: its OKS scale is w * h * 0.53
    for ann in filled["annotations"]:
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3] * 0.53)
    assert_equal_to_pycocotools(result, filled, results)
    # The whole set's AP is CrowdPose's AP (COCOeval's first stat over all images).
    assert result["all"].stats["AP"] == evaluate(gt, results).stats["AP"]


def test_recounted_num_keypoints_by_hand() -> None:
    """Person A labels every keypoint, person B only the head. With a perfect detection of A alone: the legs
    group counts A only (B is ignored, not a miss), AP 1; the head group counts both, recall 1/2, and AP is the
    precision 1 over 51 of the 101 recall points. (COCOeval's precision is tp / (tp + fp + eps), so a perfect
    precision is 1 - 2.2e-16: the APs are compared to 1e-15.)"""
    a = np.array([[100 + 5 * j, 100 + 10 * j, 2] for j in range(17)], dtype=float)
    b = np.array([[300 + 5 * j, 100 + 10 * j, 2 if j < 5 else 0] for j in range(17)], dtype=float)
    b[5:, :2] = 0
    gt = {"images": [{"id": 1, "width": 640, "height": 480}], "categories": [COCO17.category()], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 160], "area": 9000.0, "iscrowd": 0,
         "num_keypoints": 17, "keypoints": a.reshape(-1).tolist()},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [300, 100, 80, 160], "area": 9000.0, "iscrowd": 0,
         "num_keypoints": 5, "keypoints": b.reshape(-1).tolist()},
    ]}  # fmt: skip
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "keypoints": a.reshape(-1).tolist()}]
    result = keypoint_ap(gt, results)
    assert (result["legs"].num_gt, result["legs"].stats["AR"]) == (1, 1.0)
    assert result["legs"].stats["AP"] == pytest.approx(1.0, abs=1e-15)
    assert (result["head"].num_gt, result["head"].stats["AR"]) == (2, 0.5)
    assert result["head"].stats["AP"] == pytest.approx(51 / 101, abs=1e-15)
    assert result["left_knee"].num_gt == 1 and result["nose"].num_gt == 2
    assert result["all"].num_gt == 2 and result["all"].stats["AR"] == 0.5


def test_detection_arrays_in_give_the_records_numbers() -> None:
    gt, results = generated_scene(3, COCO17)
    n = len(results)
    arrays = DetectionArrays(
        image_ids=np.array([r["image_id"] for r in results], dtype=np.int64),
        category_ids=np.ones(n, dtype=np.int64), scores=np.array([r["score"] for r in results]),
        keypoints=np.array([r["keypoints"] for r in results]).reshape(n, 17, 3),
    )
    assert [p.stats for p in keypoint_ap(gt, arrays).parts] == [p.stats for p in keypoint_ap(gt, results).parts]


@pytest.mark.parametrize("evaluator", ["vectorized", "pycocotools"])
def test_no_gt_person_or_no_detection(evaluator: str) -> None:
    """An image without persons (a run of COCO image 802 alone), and results without detections: COCOeval's -1
    and 0, never a crash (the slices of nothing used to fail to reshape)."""
    gt, results = generated_scene(0, COCO17)
    nobody = {**gt, "annotations": []}
    result = keypoint_ap(nobody, results, evaluator=evaluator)
    assert [p.stats["AP"] for p in result.parts] == [-1.0] * 22 and [p.num_gt for p in result.parts] == [0] * 22
    result = keypoint_ap(gt, [], evaluator=evaluator)
    assert [p.stats["AP"] for p in result.parts] == [0.0] * 22


def test_empty_results_and_bad_calls() -> None:
    gt, _ = generated_scene(0, COCO17)
    result = keypoint_ap(gt, [])
    assert all(p.stats["AP"] in (0.0, -1.0) for p in result.parts)
    assert any("no detections; AP and AR are 0" in n for n in result.notes), result.notes
    with pytest.raises(KpbenchError, match="evaluator: must be one of vectorized, pycocotools"):
        keypoint_ap(gt, [], evaluator="hotcoco")
    with pytest.raises(KpbenchError, match="'beak' is not a keypoint"):
        keypoint_ap(gt, [], groups=[("head", ["beak"])])


def test_files_hold_fractions_percent_and_every_stat(tmp_path: Path) -> None:
    gt, results = generated_scene(1, COCO17)
    result = keypoint_ap(gt, results)
    written = write_keypoint_ap_files(tmp_path, result)
    assert sorted(p.name for p in written) == ["keypoint_ap.csv", "keypoint_ap.json", "keypoint_ap.md"]
    rows = read_keypoint_ap_rows(tmp_path)
    assert rows == json.loads(json.dumps(result.rows()))
    assert rows[0]["AR75"] == result["all"].stats["AR75"]  # JSON: every stat, full precision
    csv_lines = (tmp_path / "keypoint_ap.csv").read_text().splitlines()
    assert csv_lines[0] == "kind,name,num_gt,AP,AP50,AP75,APm,APl,AR,keypoints"
    assert csv_lines[1].startswith(f"all,all,{result['all'].num_gt},{result['all'].stats['AP']!r},")
    md = (tmp_path / "keypoint_ap.md").read_text()
    assert f"| group | legs | {result['legs'].num_gt} | {100 * result['legs'].stats['AP']:.1f} |" in md
    assert read_keypoint_ap_rows(tmp_path / "nothing") is None


def test_analyze_section_files_are_the_same_bytes(tmp_path: Path) -> None:
    """evaluate --out and run write keypoint_ap.* with this module; analyze with its section writer: same bytes."""
    from kpbench.analysis.errors import section_files
    from kpbench.analysis.keypoint_ap import SECTION
    from kpbench.analysis.keypoint_ap import section_files as ours

    gt, results = generated_scene(2, COCO17)
    result = keypoint_ap(gt, results)

    from types import SimpleNamespace

    analysis = SimpleNamespace(extra={SECTION: result.section()})  # what errors.section_files reads
    assert section_files(tmp_path, analysis) == ours(tmp_path, result.section())  # type: ignore[arg-type]


def test_get_schema_groups_are_the_builtins() -> None:
    assert get_schema("coco17").groups is COCO17.groups


def test_a_runs_keypoint_ap_reads_its_store_not_its_results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's AP per keypoint comes from the store (or the evaluation handed over) as arrays: the same numbers as
    the results file `kpbench evaluate RUN_DIR` writes, and no results file is parsed on the way."""
    from kpdata import make_run_dir

    import kpbench.analysis.keypoint_ap as module
    from kpbench.analysis.keypoint_ap import keypoint_ap_for_run
    from kpbench.evaluation.runeval import evaluate_run

    run = make_run_dir(tmp_path, store=True).path
    results = evaluate_run(run)
    from_file = keypoint_ap(run / "ground_truth.json", run / "keypoints_results.json")
    (run / "keypoints_results.json").unlink()

    def no_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a results file was parsed")

    monkeypatch.setattr(module, "load_results", no_parse)
    for given in (None, results["keypoints"]):
        from_run = keypoint_ap_for_run(run, result=given)
        assert [p.name for p in from_run.parts] == [p.name for p in from_file.parts]
        for mine, theirs in zip(from_run.parts, from_file.parts):
            assert mine.stats == theirs.stats
            assert np.array_equal(mine.precision, theirs.precision) and np.array_equal(mine.recall, theirs.recall)
        # Handed the run's evaluation, the "all" row is that evaluation (not made again); it is the same numbers.
        assert (from_run["all"].precision is results["keypoints"].precision) == (given is not None)
    assert from_file["all"].stats == results["keypoints"].stats
    # Handed the evaluation, the ground truth it parsed is checked again, not read again from ground_truth.json.
    from kpbench.evaluation import runeval

    def no_gt_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ground_truth.json was read again")

    monkeypatch.setattr(runeval, "load_run_ground_truth", no_gt_read)
    assert keypoint_ap_for_run(run, result=results["keypoints"]).rows() == from_file.rows()


def crowded_scene(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`generated_scene` with each detection repeated 5 times, jittered, scores rounded to tenths: images hold
    up to some 50 detections, more than maxDets (20), with ties in score at the cut."""
    gt, results = generated_scene(seed, COCO17, images=8)
    rng = np.random.default_rng(seed + 100)
    crowded = []
    for r in results:
        for _ in range(5):
            kps = np.asarray(r["keypoints"]).reshape(17, 3)
            kps[:, :2] = (kps[:, :2] + rng.normal(0, 4, (17, 2))).round(2)
            crowded.append({**r, "keypoints": kps.reshape(-1).tolist(), "score": round(float(rng.uniform(0, 1)), 1)})
    return gt, crowded


def test_more_detections_than_max_dets_with_ties_at_the_cut_equal_pycocotools() -> None:
    """The parts evaluate only the detections COCOeval keeps (each image's top 20 by score, chosen once): the
    numbers stay pycocotools' where images hold more than 20 detections and equal scores straddle the cut."""
    gt, results = crowded_scene(11)
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() > 20  # the cut is exercised
    result = keypoint_ap(gt, results)
    assert_equal_to_pycocotools(result, gt, results)


def test_evaluated_detections_are_each_images_top_max_dets_in_results_order() -> None:
    from kpbench.evaluation.vectorized import evaluated_detections

    image_ids = np.array([3, 1, 3, 3, 1, 3, 2])
    scores = np.array([0.5, 0.9, 0.7, 0.5, 0.9, 0.2, 0.1])
    # image 3: 0.7 (2), then the tie 0.5 (0 before 3 in results order); image 1: the tie 0.9 keeps 1 before 4.
    assert evaluated_detections(image_ids, scores, 2).tolist() == [0, 1, 2, 4, 6]
    assert evaluated_detections(image_ids, scores, 1).tolist() == [1, 2, 6]
    assert evaluated_detections(image_ids, scores, 10).tolist() == list(range(7))
    assert evaluated_detections(np.zeros(0, dtype=np.int64), np.zeros(0), 20).tolist() == []
    with pytest.raises(KpbenchError, match="NaN cannot be ranked"):
        evaluated_detections(image_ids, np.where(image_ids == 2, np.nan, scores), 2)


def test_part_evaluator_equals_one_evaluator_per_part_on_every_detection() -> None:
    """KeypointPartEvaluator's part (the GT cut as arrays, only the kept detections) gives the arrays and the
    area-"all" matches of a KeypointEvaluator built on the sliced GT dict and run on every detection."""
    from kpbench.evaluation.arrays import keypoint_extent_areas
    from kpbench.evaluation.vectorized import KeypointEvaluator, KeypointPartEvaluator, evaluated_detections

    gt, results = crowded_scene(12)
    n = len(results)
    image_ids = np.array([r["image_id"] for r in results])
    scores = np.array([r["score"] for r in results])
    keypoints = np.array([r["keypoints"] for r in results]).reshape(n, 17, 3)
    parts = KeypointPartEvaluator(gt, COCO17.sigma_array, None, None, image_ids, keypoints, scores)
    kept = evaluated_detections(image_ids, scores, 20)
    assert len(kept) < n
    for indices in [(0, 1, 2, 3, 4), (9,), (5, 11, 16)]:
        part_gt, _ = sliced(gt, results, indices)
        plain = KeypointEvaluator(part_gt, COCO17.sigma_array[list(indices)]).evaluate(
            image_ids, keypoints[:, list(indices)], scores, areas=keypoint_extent_areas(keypoints))
        part = parts.evaluate_part(indices)
        assert part.stats == plain.stats
        assert np.array_equal(part.precision, plain.precision) and np.array_equal(part.recall, plain.recall)
        assert np.array_equal(part.dt_matches, plain.dt_matches[:, kept])
        by_kept = np.where(plain.gt_matches >= 0, np.searchsorted(kept, plain.gt_matches), -1)
        assert np.array_equal(part.gt_matches, by_kept)
        assert parts.num_counted(indices) == sum(
            1 for a in part_gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0)
    assert parts.evaluate_part(None).stats == KeypointEvaluator(gt, COCO17.sigma_array).evaluate(
        image_ids, keypoints, scores).stats
