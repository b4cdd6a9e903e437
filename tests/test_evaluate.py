"""Parity of kpbench.evaluate with pycocotools (and hotcoco), bit for bit, on real and synthetic data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, EDGE, FCE, XTCOCO, load, pycocotools_eval, requires_shared

from kpbench.evaluate import evaluate, write_metrics
from kpbench.schema import BBOX_STAT_NAMES, KEYPOINT_STAT_NAMES, SIGMAS
from kpbench.synthetic import make_synthetic_coco


def assert_parity(gt: dict, results: list, iou_type: str = "keypoints", backend: str = "pycocotools") -> None:
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
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_parity_fce(backend: str) -> None:
    with pytest.warns(UserWarning):
        assert_parity(load(FCE / "gt_dataset.json"), load(FCE / "dt_dataset.json"), backend=backend)


@requires_shared
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_parity_xtcocoapi(backend: str) -> None:
    gt, dt = load(XTCOCO / "example_coco_val.json"), load(XTCOCO / "example_coco_preds.json")
    assert_parity(gt, dt, backend=backend)
    expected = load(XTCOCO / "expected_stats.json")
    assert evaluate(gt, dt).stats["AP"] == 0.8608896054440609
    assert "AP" in str(expected)


@requires_shared
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_parity_synthetic_edgecases(backend: str) -> None:
    gt, dt = load(EDGE / "synth_gt.json"), load(EDGE / "synth_dt.json")
    assert_parity(gt, dt, backend=backend)
    expected = load(EDGE / "expected_stats.json")["synth"]["pycocotools"]["stats"]
    assert evaluate(gt, dt, backend=backend).stats_list() == expected


def jittered_detections(gt: dict, seed: int = 0) -> list[dict]:
    """Deterministic detections from GT: every labelled person, jittered, plus a false positive per image."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        pts = np.where(kps[:, 2:] > 0, kps[:, :2], [x + w / 2, y + h / 2])
        pts = pts + rng.normal(0, 1, pts.shape) * 0.04 * np.sqrt(ann["area"]) * rng.uniform(0.2, 2)
        flat = np.concatenate([pts, np.ones((17, 1))], axis=1).reshape(-1)
        results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": flat.round(2).tolist(),
                        "score": round(float(rng.uniform(0.3, 1.0)), 2)})
    for img in gt["images"]:
        flat = np.concatenate([rng.uniform(0, 200, (17, 2)), np.ones((17, 1))], axis=1).reshape(-1)
        results.append({"image_id": img["id"], "category_id": 1, "keypoints": flat.round(2).tolist(),
                        "score": round(float(rng.uniform(0, 0.5)), 2)})
    return results


@requires_shared
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
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
@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_parity_generated(seed: int, backend: str) -> None:
    gt, results = make_synthetic_coco(num_images=60, seed=seed)
    assert_parity(gt, results, backend=backend)


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
        assert mine.image_id == theirs["image_id"]
        assert mine.dt_ids.tolist() == list(theirs["dtIds"])
        assert np.array_equal(mine.dt_matches, theirs["dtMatches"])
        assert np.array_equal(mine.dt_ignore, theirs["dtIgnore"])
        assert np.array_equal(mine.gt_ignore, np.asarray(theirs["gtIgnore"], dtype=bool))


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
    del results


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

    from kpbench.errors import KpbenchError

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
