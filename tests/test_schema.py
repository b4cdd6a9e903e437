"""Keypoint schemas: COCO17 as pycocotools has it, schemas from a GT category, and a 5-keypoint set scored end to
end (evaluation on both backends, both sweeps, the breakdown, drawing) with its own sigmas, equal to bare
pycocotools given the same sigmas."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from kpdata import SHARED_DATA, load, pycocotools_eval, requires_shared

from kpbench.analysis.breakdown import keypoint_breakdown
from kpbench.analysis.thresholds import sweep_keypoint_thresholds, sweep_person_thresholds
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import AP10K17, COCO17, CROWDPOSE14, KeypointSchema, get_schema, sigmas_as_pycocotools
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.cocofiles import load_ground_truth
from kpbench.report.draw import draw_skeletons

FIVE = KeypointSchema(
    name="five",
    keypoint_names=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
    skeleton=((1, 2), (1, 3), (1, 4), (1, 5)),
    sigmas=(0.05, 0.08, 0.08, 0.1, 0.1),
    flip_pairs=((1, 2), (3, 4)),
    category_id=3,
    category_name="robot",
)


def _five_keypoint_scene(seed: int = 0, images: int = 8) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A GT of robots with 5 keypoints (some unlabelled, one crowd region) and jittered detections with
    duplicates and false positives; scores rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": [FIVE.category()]}
    results: list[dict[str, Any]] = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "width": 400, "height": 300})
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(30, 150), rng.uniform(40, 200)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            xy = np.stack([rng.uniform(x, x + w, 5), rng.uniform(y, y + h, 5)], axis=1)
            v = np.where(rng.random(5) < 0.85, 2, 0)
            crowd = int(rng.random() < 0.08)
            kps = np.concatenate([np.round(xy, 2), v[:, None]], axis=1)
            kps[v == 0, :2] = 0
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": FIVE.category_id,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h * 0.7, 2),
                "iscrowd": crowd, "num_keypoints": int((v > 0).sum()), "keypoints": kps.reshape(-1).tolist(),
            })  # fmt: skip
            for _ in range(int(rng.integers(1, 3))):
                noise = rng.normal(0, 1, (5, 2)) * np.array(FIVE.sigmas)[:, None] * 2 * np.sqrt(w * h * 0.7)
                pred = np.concatenate([np.round(xy + noise, 2), np.ones((5, 1))], axis=1)
                results.append({"image_id": image_id, "category_id": FIVE.category_id,
                                "keypoints": pred.reshape(-1).tolist(), "score": round(float(rng.uniform(0.05, 1)), 2)})
        fp = np.concatenate([rng.uniform(0, 300, (5, 2)).round(2), np.ones((5, 1))], axis=1)
        results.append({"image_id": image_id, "category_id": FIVE.category_id, "keypoints": fp.reshape(-1).tolist(),
                        "score": round(float(rng.uniform(0.05, 0.6)), 2)})
    return gt, results


def _bare_pycocotools(gt: dict, results: list, sigmas: np.ndarray) -> Any:
    return pycocotools_eval(gt, results, sigmas=sigmas)


@pytest.fixture(scope="module")
def scene() -> tuple[dict, list]:
    return _five_keypoint_scene()


def test_coco17_is_pycocotools_own() -> None:
    from pycocotools.cocoeval import Params

    assert np.array_equal(COCO17.sigma_array, Params(iouType="keypoints").kpt_oks_sigmas)  # bit for bit
    assert COCO17.num_keypoints == 17 and COCO17.category_id == 1 and get_schema("COCO17") is COCO17
    assert COCO17.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    assert COCO17.limbs[0] == (15, 13) and len(COCO17.limbs) == 19
    assert KeypointSchema.from_json(COCO17.to_json()) is COCO17
    assert not COCO17.sigma_array.flags.writeable
    assert sigmas_as_pycocotools([1.07])[0] == 1.07 / 10.0 != 0.107


def test_schema_from_a_category_finds_flip_pairs_and_checks_itself() -> None:
    schema = KeypointSchema.from_category(FIVE.category(), FIVE.sigmas, name="five")
    assert schema.flip_pairs == FIVE.flip_pairs and schema.skeleton == FIVE.skeleton and schema.category_id == 3
    with pytest.raises(KpbenchError, match="4 sigmas for 5 keypoints"):
        KeypointSchema.from_category(FIVE.category(), FIVE.sigmas[:4])
    with pytest.raises(KpbenchError, match=r"skeleton link \[1, 6\] is outside 1..5"):
        KeypointSchema("bad", FIVE.keypoint_names, ((1, 6),), FIVE.sigmas)
    with pytest.raises(KpbenchError, match="sigmas must be positive"):
        KeypointSchema("bad", FIVE.keypoint_names, (), (0.1, 0.1, 0.0, 0.1, 0.1))


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_five_keypoints_scored_with_their_own_sigmas(scene, backend: str) -> None:
    gt, results = scene
    result = evaluate(gt, results, backend=backend, schema=FIVE)
    expected = _bare_pycocotools(gt, results, FIVE.sigma_array)
    assert result.stats_list() == [float(s) for s in expected.stats]
    assert result.schema == FIVE
    # The sigmas decide the number: doubled sigmas give another AP, again pycocotools' own.
    wide = KeypointSchema("wide", FIVE.keypoint_names, FIVE.skeleton, tuple(2 * s for s in FIVE.sigmas),
                          category_id=3)
    widened = evaluate(gt, results, backend=backend, schema=wide)
    assert widened.stats_list() == [float(s) for s in _bare_pycocotools(gt, results, wide.sigma_array).stats]
    assert widened.stats["AP"] > result.stats["AP"]


def test_an_unknown_keypoint_set_without_sigmas_is_an_error(scene) -> None:
    gt, results = scene
    with pytest.raises(KpbenchError, match=r"category 3 has 5 keypoints that match no built-in keypoint schema "
                                           r"\(coco17, crowdpose14, ap10k17\), and kpbench has no sigmas for them; "
                                           r"pass its keypoint schema"):
        evaluate(gt, results)


def test_seventeen_animal_keypoints_are_not_scored_with_human_sigmas() -> None:
    """AP-10K has 17 keypoints too: the count alone must not pick COCO's person sigmas. Its names pick its own
    schema; 17 names that match no built-in schema are an error."""
    names = list(AP10K17.keypoint_names)
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "antelope", "keypoints": names}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000,
                           "iscrowd": 0, "num_keypoints": 1, "keypoints": [0] * 18 + [50, 50, 2] + [0] * 30}]}
    assert load_ground_truth(gt).schema == AP10K17
    # The left elbow 300**0.5 px off: OKS 0.485 with AP-10K's sigma 0.072, 0.548 with COCO's 0.079 at index 6.
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "keypoints": [0] * 18 + [50 + 300**0.5, 50, 1] + [0] * 30}]
    result = evaluate(gt, results)
    assert result.schema == AP10K17
    assert result.stats_list() == [float(x) for x in _bare_pycocotools(gt, results, AP10K17.sigma_array).stats]
    assert result.stats_list() != [float(x) for x in _bare_pycocotools(gt, results, COCO17.sigma_array).stats]
    gt["categories"][0]["keypoints"] = [f"part_{i}" for i in range(17)]
    with pytest.raises(KpbenchError, match=r"category 1 has 17 keypoints that match no built-in keypoint schema"):
        load_ground_truth(gt)
    # A person category under other names, or one without names, is COCO's set: scored so, with a note.
    gt["categories"][0].update(name="person", keypoints=[f"k{i}" for i in range(17)])
    loaded = load_ground_truth(gt)
    assert loaded.schema == COCO17
    assert loaded.notes[0] == ("ground truth: category 1 names its 17 keypoints differently from COCO ('k0', ...); "
                               "scored with COCO's person sigmas (coco17)")
    del gt["categories"][0]["keypoints"]
    assert load_ground_truth(gt).notes[0] == ("ground truth: category 1 lists no keypoint names; scored as coco17 "
                                             "(COCO's 17 person keypoints and sigmas)")


def test_person_sweep_over_five_keypoints_equals_pycocotools_on_filtered_results(scene) -> None:
    gt, results = scene
    result = evaluate(gt, results, schema=FIVE)
    rows = sweep_person_thresholds(result, [0.0, 0.3, 0.6, 0.9])
    for row in rows:
        kept = [r for r in results if r["score"] >= row["threshold"]]
        expected = _bare_pycocotools(gt, kept, FIVE.sigma_array).stats
        assert [row[name] for name in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")] == [
            float(s) for s in expected
        ]


def test_keypoint_sweep_and_breakdown_have_one_row_per_schema_keypoint(scene) -> None:
    gt, results = scene
    result = evaluate(gt, results, schema=FIVE)
    rows = keypoint_breakdown(result, gt, results)
    assert [r["keypoint"] for r in rows] == [*FIVE.keypoint_names, "all"]
    assert rows[-1]["n"] == sum(r["n"] for r in rows[:-1]) > 0
    logits = np.random.default_rng(1).normal(2, 2, (len(results), 5))
    swept = sweep_keypoint_thresholds(result, gt, results, logits, thresholds=[-100.0, 2.0], person_thresh=0.0)
    assert [r["keypoint"] for r in swept[:6]] == [*FIVE.keypoint_names, "all"]
    everything = swept[:6]
    # At a threshold below every logit, each labelled keypoint of a matched person is shown.
    assert all(r["shown"] == r["visible"] for r in everything)
    assert everything[-1]["visible"] == sum(r["visible"] for r in everything[:-1])


def test_drawing_uses_the_schema_limbs() -> None:
    canvas = np.zeros((60, 60, 3), dtype=np.uint8)
    kps = np.array([[[30, 10, 2], [10, 30, 2], [50, 30, 2], [20, 55, 2], [40, 55, 2]]], dtype=np.float64)
    drawn = draw_skeletons(canvas, kps, np.full((1, 5), 10.0), np.array([1.0]), schema=FIVE, colors=[(255, 0, 0)])
    assert tuple(drawn[20, 20]) == (255, 0, 0)  # on the head-left hand limb (30,10)-(10,30)
    assert tuple(drawn[30, 30]) == (0, 0, 0)  # between the hands: no limb joins them in this schema
    with pytest.raises(KpbenchError, match=r"do not fit schema coco17 \(17 keypoints\)"):
        draw_skeletons(canvas, kps, None, None)


CROWDPOSE = SHARED_DATA / "xtcocoapi_example_crowdpose"


@requires_shared
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_crowdpose_equals_xtcocotools_keypoints_crowd(backend: str) -> None:
    expected = load(CROWDPOSE / "expected_stats.json")
    result = evaluate(CROWDPOSE / "example_crowdpose_val.json", CROWDPOSE / "example_crowdpose_preds.json",
                      backend=backend)
    assert result.schema == CROWDPOSE14
    assert list(result.stats) == ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"]
    assert result.stats_list() == expected["stats"]  # all 9, exactly (AP 0.7877215935879303)
    assert tuple(result.stats) == CROWDPOSE14.stat_names and COCO17.stat_names[:3] == ("AP", "AP50", "AP75")
    assert "10 annotation(s) have no 'area'; the OKS scale is the box's w * h * 0.53" in result.notes[0]


@requires_shared
def test_crowdpose_on_the_command_line_and_without_crowd_index(tmp_path, run_cli) -> None:
    code, out, _ = run_cli("evaluate", CROWDPOSE / "example_crowdpose_val.json",
                             CROWDPOSE / "example_crowdpose_preds.json", "--format", "json")
    assert code == 0
    assert list(__import__("json").loads(out).values()) == load(CROWDPOSE / "expected_stats.json")["stats"]
    gt = load(CROWDPOSE / "example_crowdpose_val.json")
    del gt["images"][2]["crowdIndex"]
    with pytest.raises(KpbenchError, match=r"image 2 \(id \d+\) has no numeric 'crowdIndex'"):
        evaluate(gt, load(CROWDPOSE / "example_crowdpose_preds.json"))


WHOLEBODY_FIXTURE = SHARED_DATA / "xtcocoapi_example_wholebody"


@requires_shared
@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_wholebody_by_part_equals_xtcocotools(backend: str) -> None:
    from kpbench.evaluation.wholebody import WHOLEBODY_SIGMAS, evaluate_wholebody

    expected = load(WHOLEBODY_FIXTURE / "expected_stats.json")
    assert list(WHOLEBODY_SIGMAS) == expected["sigmas_133"]
    parts = evaluate_wholebody(WHOLEBODY_FIXTURE / "example_wholebody_val.json",
                               WHOLEBODY_FIXTURE / "example_wholebody_preds.json", backend=backend)
    assert list(parts) == list(expected["stats"])  # body, foot, face, left hand, right hand, whole body
    for part, result in parts.items():
        assert result.stats_list() == expected["stats"][part], part
    assert parts["keypoints_face"].schema.num_keypoints == 68
    assert parts["keypoints_face"].notes[-2] == "face: 68 keypoints, ranked by 'score'"
    assert parts["keypoints_face"].notes[-1].startswith("face: 0 result(s) with every face keypoint score at 0 left")


def test_wholebody_needs_every_part() -> None:
    from kpbench.evaluation.wholebody import evaluate_wholebody

    with pytest.raises(KpbenchError, match="not a COCO-WholeBody ground truth"):
        evaluate_wholebody({"images": [], "annotations": [{"keypoints": []}], "categories": []}, [])


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_zero_scored_keypoint_results_get_a_note_and_xtcocotools_rule_on_request(scene, tmp_path, backend) -> None:
    import json

    gt, results = scene
    zeroed = copy.deepcopy(results)
    for r in zeroed[:3]:
        r["keypoints"][2::3] = [0] * 5
    kept = zeroed[3:]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(zeroed))
    counted = evaluate(tmp_path / "gt.json", tmp_path / "res.json", backend=backend, schema=FIVE)
    assert counted.stats_list() == [float(x) for x in _bare_pycocotools(gt, zeroed, FIVE.sigma_array).stats]
    assert any(n.startswith("3 result(s) have every keypoint score at 0: pycocotools scores them") for n in counted.notes)
    dropped = evaluate(tmp_path / "gt.json", tmp_path / "res.json", backend=backend, schema=FIVE,
                       drop_zero_keypoint_results=True)
    assert dropped.stats_list() == [float(x) for x in _bare_pycocotools(gt, kept, FIVE.sigma_array).stats]
    assert dropped.num_results == len(kept)
    assert any(n.startswith("3 result(s) with every keypoint score at 0 left out") for n in dropped.notes)


def _schema_of(k: int) -> KeypointSchema:
    names = tuple(f"part_{i}" for i in range(k))
    sigmas = tuple(0.02 + 0.1 * ((7 * i) % k) / k for i in range(k))  # non-COCO, all different
    return KeypointSchema(f"k{k}", names, ((1, 2),), sigmas, category_id=5, category_name="thing")


@pytest.mark.parametrize("k", [5, 14, 133])
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_custom_sigmas_equal_pycocotools_for_any_keypoint_count(k: int, backend: str) -> None:
    """Generated data with K keypoints and non-COCO sigmas, given as --sigmas would give them: pycocotools' own
    numbers with params.kpt_oks_sigmas set."""
    schema = _schema_of(k)
    rng = np.random.default_rng(k)
    gt = {"images": [], "annotations": [], "categories": [{**schema.category(), "skeleton": []}]}
    results = []
    for image_id in range(1, 7):
        gt["images"].append({"id": image_id, "width": 300, "height": 300})
        for _ in range(2):
            x, y, w, h = rng.uniform(0, 100), rng.uniform(0, 100), rng.uniform(40, 150), rng.uniform(40, 150)
            xy = np.stack([rng.uniform(x, x + w, k), rng.uniform(y, y + h, k)], axis=1).round(2)
            v = np.where(rng.random(k) < 0.8, 2, 0)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": 5,
                                      "bbox": [x, y, w, h], "area": w * h * 0.6, "iscrowd": 0,
                                      "num_keypoints": int((v > 0).sum()),
                                      "keypoints": np.concatenate([xy, v[:, None]], 1).reshape(-1).tolist()})
            pred = xy + rng.normal(0, 3, xy.shape)
            results.append({"image_id": image_id, "category_id": 5, "score": round(float(rng.uniform(0.1, 1)), 2),
                            "keypoints": np.concatenate([pred, np.ones((k, 1))], 1).reshape(-1).tolist()})
    result = evaluate(gt, results, backend=backend, sigmas=list(schema.sigmas))
    assert result.schema.num_keypoints == k and result.schema.sigmas == schema.sigmas
    assert result.stats_list() == [float(s) for s in pycocotools_eval(gt, results, sigmas=schema.sigma_array).stats]


def test_notes_name_the_category_when_it_is_not_a_person(scene) -> None:
    gt, results = scene
    result = evaluate(gt, results[:2], schema=FIVE)
    unlabelled = sum(1 for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] == 0)
    notes = " | ".join(result.notes)
    assert "GT person" not in notes
    assert "GT 'robot' keypoint instance(s) in the uncovered images" in notes
    if unlabelled:
        assert f"{unlabelled} GT 'robot' keypoint instance(s) have no labelled keypoints" in notes
    assert evaluate(gt, [], schema=FIVE).notes[-2].endswith("(-1 where the GT has no 'robot' keypoint instance to find)")


def test_a_checked_gt_object_is_rescored_with_the_schema_or_sigmas_asked_for(scene, tmp_path) -> None:
    import json

    gt, results = scene
    checked = load_ground_truth(gt, schema=FIVE)
    wide = tuple(2 * s for s in FIVE.sigmas)
    expected = [float(x) for x in pycocotools_eval(gt, results, sigmas=np.asarray(wide)).stats]
    assert evaluate(checked, results, sigmas=list(wide)).stats_list() == expected
    # Unchecked files (validate=False) take the sigmas too, as a schema of their count.
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    unchecked = evaluate(tmp_path / "gt.json", tmp_path / "res.json", validate=False, sigmas=list(wide))
    assert unchecked.stats_list() == expected
    with pytest.raises(KpbenchError, match="crowdpose14 schema's own protocol needs the input checks"):
        evaluate(tmp_path / "gt.json", tmp_path / "res.json", validate=False, schema=CROWDPOSE14)


@requires_shared
def test_crowdpose_results_become_a_run_directory(tmp_path) -> None:
    from kpbench.engine.from_results import run_from_results

    made = run_from_results(CROWDPOSE / "example_crowdpose_preds.json", CROWDPOSE / "example_crowdpose_val.json",
                            tmp_path / "run")
    assert made.results["keypoints"].stats_list() == load(CROWDPOSE / "expected_stats.json")["stats"]
    assert load(tmp_path / "run" / "manifest.json")["status"] == "complete"
    assert any("w * h * 0.53" in d for d in made.manifest["deviations"])
    # --overwrite leaves nothing of the old run to be read again (a stale rank shard would override the cache).
    (tmp_path / "run" / "detections.rank0.bin").write_bytes((tmp_path / "run" / "detections.bin").read_bytes())
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    again = run_from_results(empty, CROWDPOSE / "example_crowdpose_val.json", tmp_path / "run", overwrite=True)
    assert again.results["keypoints"].stats["AP"] == 0.0 and not (tmp_path / "run" / "detections.rank0.bin").exists()


def _two_category_scene(second_names: list[str]) -> tuple[dict, list]:
    from kpbench.data.synthetic import make_synthetic_coco

    gt, results = make_synthetic_coco(num_images=8, seed=21)
    gt = copy.deepcopy(gt)
    gt["categories"].append({"id": 2, "name": "person" if len(second_names) == 17 else "animal",
                             "keypoints": second_names, "skeleton": []})
    extra = [{**a, "id": 10_000 + a["id"], "category_id": 2} for a in gt["annotations"][::2]]
    gt["annotations"] += extra
    results = results + [{**r, "category_id": 2, "keypoints": [v + 2 if i % 3 == 0 else v
                                                               for i, v in enumerate(r["keypoints"])]}
                         for r in results[::3]]
    return gt, results


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_several_keypoint_categories_are_each_scored_with_their_own_schema(backend: str) -> None:
    # Two categories with COCO's sigmas under other names: the same numbers as one multi-category COCOeval.
    gt, results = _two_category_scene([f"k{i}" for i in range(17)])
    combined = evaluate(gt, results, backend=backend)
    assert combined.params.category_ids == [1, 2] and combined.schema is None
    assert combined.stats_list() == [float(s) for s in pycocotools_eval(gt, results).stats]
    assert combined.notes[-1] == ("several keypoint sets, each scored with its own schema (category 1: coco17, "
                                  "category 2: coco17), summarized together")
    # Persons and AP-10K animals: each with its own sigmas, so not what COCO's sigmas for both would give.
    from kpbench.evaluation.settings import summarize

    gt, results = _two_category_scene(list(AP10K17.keypoint_names))
    mixed = evaluate(gt, results, backend=backend)
    assert "category 2: ap10k17" in mixed.notes[-1]
    runs = []
    for cat, sigmas in ((gt["categories"][0], COCO17.sigma_array), (gt["categories"][1], AP10K17.sigma_array)):
        sub = {**gt, "categories": [cat], "annotations": [a for a in gt["annotations"] if a["category_id"] == cat["id"]]}
        runs.append(pycocotools_eval(sub, [r for r in results if r["category_id"] == cat["id"]], sigmas=sigmas))
    p = runs[0].params
    expected = summarize(np.concatenate([r.eval["precision"] for r in runs], axis=2),
                         np.concatenate([r.eval["recall"] for r in runs], axis=1),
                         list(p.iouThrs), list(p.areaRngLbl), list(p.maxDets), "keypoints")
    assert mixed.stats == expected
