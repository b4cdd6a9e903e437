"""Threshold sweeps: every person row equals a full pycocotools run on the filtered results (exact floats);
operating points and keypoint rows on hand-built cases counted by hand; `kpbench thresholds` end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import (
    COCO_SAMPLE,
    EDGE,
    FCE,
    XTCOCO,
    assert_one_line_error,
    kpbench,
    load,
    png_size,
    pycocotools_eval,
    requires_shared,
)
from test_evaluate import varied_scene

from kpbench.analysis.thresholds import (
    KEYPOINT_COLUMNS,
    person_columns,
    sweep_person_thresholds,
    thresholds_for_files,
    thresholds_for_run,
    write_threshold_files,
)
from kpbench.core.config import ThresholdSettings
from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.schema import stat_names
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.oks import compute_oks
from kpbench.report.figures import NO_MATCHED_PERSONS, threshold_curves_figure
from kpbench.runs.detections import ImageDetections, to_coco_results

# --------------------------------------------------------------------------------------------------------------
# Helpers


def reference_stats(gt: dict, results: list, threshold: float, iou_type: str = "keypoints") -> list[float]:
    """A full evaluation of the results with score >= threshold: bare pycocotools, or (no detection left, where
    pycocotools' loadRes crashes) pycocotools' accumulate with an empty results set via kpbench.evaluation.cocoeval."""
    kept = [r for r in results if r["score"] >= threshold]
    if not kept:
        return evaluate(gt, [], iou_type=iou_type).stats_list()
    return [float(s) for s in pycocotools_eval(gt, kept, iou_type).stats]


def thresholds_for(results: list, extra: tuple[float, ...] = ()) -> list[float]:
    """0, the most tied score, the median score, one above every score (or 1.0 when a score is 1.0), and extras."""
    scores = [r["score"] for r in results]
    tie, count = Counter(scores).most_common(1)[0]
    assert count > 1, "the case needs tied scores"
    top = max(scores)
    above = float(np.nextafter(top, 2.0)) if top < 1.0 else 1.0
    return sorted({0.0, float(tie), float(np.median(scores)), above, *extra})


def assert_sweep_exact(gt: dict, results: list, thresholds: list[float], iou_type: str = "keypoints") -> list[dict]:
    rows = sweep_person_thresholds(evaluate(gt, results, iou_type=iou_type), thresholds)
    assert [r["threshold"] for r in rows] == thresholds
    for row in rows:
        ours = [row[name] for name in stat_names(iou_type)]
        assert ours == reference_stats(gt, results, row["threshold"], iou_type), f"threshold {row['threshold']}"
        assert row["kept"] == sum(r["score"] >= row["threshold"] for r in results)
    return rows


def jittered(gt: dict, seed: int, iou_type: str = "keypoints") -> list[dict]:
    """Detections for a real GT file: jittered copies of the labelled persons (some duplicated) and background
    false positives, scores rounded to 2 decimals so that ties occur."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []

    def add(image_id: int, kps: np.ndarray, box: list[float], score: float) -> None:
        rec: dict[str, Any] = {"image_id": image_id, "category_id": 1, "score": round(score, 2)}
        if iou_type == "keypoints":
            rec["keypoints"] = np.concatenate([kps, np.ones((17, 1))], axis=1).reshape(-1).round(2).tolist()
        else:
            rec["bbox"] = [round(float(v), 2) for v in box]
        out.append(rec)

    for ann in gt["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        for _ in range(1 + int(rng.random() < 0.3)):
            spread = rng.uniform(0.01, 0.12)
            pts = np.where(kps[:, 2:] > 0, kps[:, :2], [x + w / 2, y + h / 2])
            pts = pts + rng.normal(0, 1, pts.shape) * spread * np.sqrt(ann["area"])
            box = [x + rng.normal(0, spread * w), y + rng.normal(0, spread * h), w * rng.uniform(0.8, 1.2),
                   h * rng.uniform(0.8, 1.2)]
            add(ann["image_id"], pts, box, float(np.clip(1 - 4 * spread + rng.normal(0, 0.1), 0.02, 0.98)))
    for img in gt["images"]:
        for _ in range(2):
            pts = rng.uniform(0, 300, (17, 2))
            add(img["id"], pts, [*rng.uniform(0, 300, 2), *rng.uniform(20, 120, 2)], float(rng.uniform(0, 0.6)))
    return out


# --------------------------------------------------------------------------------------------------------------
# Exactness against full pycocotools runs


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_many_ties_exact(seed: int) -> None:
    # One decimal: scores take ~10 values, so almost every detection is tied with many others.
    gt, results = make_synthetic_coco(num_images=80, seed=seed, score_decimals=1)
    for r in results:
        r["score"] = min(r["score"], 0.9)  # leaves room for a threshold above every score
    ts = thresholds_for(results, extra=(0.3, 0.85))
    assert max(r["score"] for r in results) < 0.95 and ts[-1] > 0.9
    rows = assert_sweep_exact(gt, results, ts)
    assert rows[-1]["kept"] == 0 and rows[-1]["AP"] == 0.0 and rows[-1]["tp_50"] == 0
    assert rows[0]["AP"] > 0.1  # a meaningful curve


def test_synthetic_bbox_exact() -> None:
    gt, kp_results = make_synthetic_coco(num_images=60, seed=3, score_decimals=1)
    rng = np.random.default_rng(0)
    results = []
    for r in kp_results:
        pts = np.array(r["keypoints"]).reshape(17, 3)[:, :2]
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        box = np.array([x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)]) + rng.normal(0, 2, 4)
        results.append({"image_id": r["image_id"], "category_id": 1, "score": min(r["score"], 0.9),
                        "bbox": np.abs(box).round(2).tolist()})
    rows = assert_sweep_exact(gt, results, thresholds_for(results), iou_type="bbox")
    assert list(rows[0])[: 1 + len(stat_names("bbox"))] == ["threshold", *stat_names("bbox")]


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_varied_scene_exact(iou_type: str) -> None:
    # Two categories, area-0 GTs, images with no GT or no results, shuffled results, zero-width boxes.
    gt, results = varied_scene(seed=5, iou_type=iou_type)
    rows = assert_sweep_exact(gt, results, thresholds_for(results, extra=(0.25, 0.55, 0.85)), iou_type=iou_type)
    assert rows[0]["AP"] > 0.02 and rows[-1]["kept"] < rows[0]["kept"]


def test_boxes_after_result_0_warn_which_rows_are_not_exact() -> None:
    """Result 0 has no bbox, later results do: pycocotools on a filtered file whose first result has a bbox
    takes every area from the boxes, so the rows for those thresholds cannot be exact, and the sweep says so."""
    gt, results = make_synthetic_coco(num_images=20, seed=1)
    results = sorted(results, key=lambda r: r["score"])  # result 0 has the lowest score
    for r in results[1:]:
        r["bbox"] = [0.0, 0.0, 5.0, 5.0]  # tiny boxes: every detection "small" by its box
    low, above_first = 0.0, float(np.nextafter(results[0]["score"], 2.0))
    result = evaluate(gt, results)
    with pytest.warns(KpbenchWarning, match=re.escape(f"thresholds {above_first:g}: the first result kept carries")):
        rows = sweep_person_thresholds(result, [low, above_first])
    assert [rows[0][n] for n in stat_names("keypoints")] == reference_stats(gt, results, low)
    assert rows[1]["APl"] != reference_stats(gt, results, above_first)[4]  # why the warning is needed
    # Without boxes, or with a box on every result, every row is exact and nothing is said.
    for case in ([{k: v for k, v in r.items() if k != "bbox"} for r in results],
                 [dict(r, bbox=[0.0, 0.0, 5.0, 5.0]) for r in results]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KpbenchWarning)  # "keypoint results carry a 'bbox'"
            evaluated = evaluate(gt, case)
        with warnings.catch_warnings():
            warnings.simplefilter("error", KpbenchWarning)
            exact_rows = sweep_person_thresholds(evaluated, [low, above_first])
        assert [exact_rows[1][n] for n in stat_names("keypoints")] == reference_stats(gt, case, above_first)


def test_top20_cut_is_respected() -> None:
    # 30 detections on one image: COCOeval keeps the top 20 by score, before and after filtering.
    gt, results = make_synthetic_coco(num_images=3, seed=4, score_decimals=1)
    extra = [dict(results[0], score=round(0.05 + 0.03 * i, 2)) for i in range(30)]
    results = results + extra
    rows = assert_sweep_exact(gt, results, [0.0, 0.2, 0.5, 0.8])
    assert rows[0]["kept"] == len(results)


@requires_shared
@pytest.mark.filterwarnings("ignore::kpbench.core.errors.KpbenchWarning")
def test_real_fixtures_exact() -> None:
    # FCE: 128 detections on one image (the top-20 cut matters), every result carries a bbox.
    fce_gt, fce_dt = load(FCE / "gt_dataset.json"), load(FCE / "dt_dataset.json")
    assert_sweep_exact(fce_gt, fce_dt, thresholds_for(fce_dt, extra=(0.5,)))
    # xtcocoapi example: 34 detections tied at score 0.
    xt_gt, xt_dt = load(XTCOCO / "example_coco_val.json"), load(XTCOCO / "example_coco_preds.json")
    assert_sweep_exact(xt_gt, xt_dt, thresholds_for(xt_dt, extra=(1e-9, 0.8)))
    # Synthetic edge cases: crowds, unlabelled persons, 25 detections tied at score 1.0.
    e_gt, e_dt = load(EDGE / "synth_gt.json"), load(EDGE / "synth_dt.json")
    rows = assert_sweep_exact(e_gt, e_dt, thresholds_for(e_dt, extra=(0.45, 0.9)))
    assert rows[-1]["threshold"] == 1.0 and rows[-1]["kept"] == 25


@requires_shared
@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_real_val2017_sample_exact(iou_type: str) -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = jittered(gt, seed=7, iou_type=iou_type)
    rows = assert_sweep_exact(gt, results, thresholds_for(results, extra=(0.5, 0.7, 0.9)), iou_type=iou_type)
    assert rows[0]["AP"] > 0.2  # a meaningful curve


def test_default_thresholds_and_precision_arrays() -> None:
    from kpbench.analysis.thresholds import _accumulate, _build_slices

    gt, results = make_synthetic_coco(num_images=30, seed=5)
    result = evaluate(gt, results)
    rows = sweep_person_thresholds(result)
    assert [r["threshold"] for r in rows] == [round(0.05 * i, 2) for i in range(20)]
    assert list(rows[0]) == person_columns("keypoints")
    # At threshold 0 the re-accumulated arrays are COCOeval's own, bit for bit.
    precision, recall = _accumulate(_build_slices(result), result, 0.0)
    assert np.array_equal(precision, result.precision) and np.array_equal(recall, result.recall)
    assert [rows[0][k] for k in result.stats] == result.stats_list()


# --------------------------------------------------------------------------------------------------------------
# Operating points, counted by hand


def person(image_id: int, ann_id: int, x: float, y: float, w: float = 100.0, h: float = 200.0) -> dict:
    rng = np.random.default_rng(ann_id)
    pts = np.column_stack([x + rng.uniform(0.1, 0.9, 17) * w, y + rng.uniform(0.1, 0.9, 17) * h]).round(1)
    kps = np.concatenate([pts, np.full((17, 1), 2.0)], axis=1).reshape(-1).tolist()
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "area": w * h * 0.5,
            "iscrowd": 0, "num_keypoints": 17, "keypoints": kps}


def detection(image_id: int, points: np.ndarray, score: float) -> dict:
    kps = np.concatenate([points, np.ones((17, 1))], axis=1).reshape(-1).tolist()
    return {"image_id": image_id, "category_id": 1, "keypoints": kps, "score": score}


def points_of(ann: dict) -> np.ndarray:
    return np.array(ann["keypoints"]).reshape(17, 3)[:, :2]


def hand_case() -> tuple[dict, list[dict]]:
    """Image 1: persons A and B, a crowd region C; image 2: person E, never detected.

    d1 0.9 exact on A (TP) | d2 0.8 duplicate of A (FP) | d3 0.7 inside the crowd (matched to it: ignored)
    d4 0.6 background (FP) | d5 0.5 near B, OKS between 0.5 and 0.75 (TP at 0.50, FP at 0.75)
    """
    a, b, e = person(1, 1, 40, 200), person(1, 2, 250, 200), person(2, 4, 100, 100)
    crowd = {"id": 3, "image_id": 1, "category_id": 1, "bbox": [540.0, 10.0, 60.0, 60.0], "area": 3600.0,
             "iscrowd": 1, "num_keypoints": 0, "keypoints": [0] * 51}
    gt = {"images": [{"id": 1, "width": 640, "height": 480}, {"id": 2, "width": 640, "height": 480}],
          "annotations": [a, b, crowd, e], "categories": [{"id": 1, "name": "person"}]}
    rng = np.random.default_rng(1)
    near_b = points_of(b) + rng.normal(0, 1, (17, 2)) * 12.0
    results = [
        detection(1, points_of(a), 0.9),
        detection(1, points_of(a), 0.8),
        detection(1, np.column_stack([rng.uniform(550, 590, 17), rng.uniform(20, 60, 17)]), 0.7),
        detection(1, np.column_stack([rng.uniform(400, 440, 17), rng.uniform(300, 340, 17)]), 0.6),
        detection(1, near_b, 0.5),
    ]
    oks = compute_oks([b["keypoints"]], [b["bbox"]], [b["area"]], [results[4]["keypoints"]])[0, 0]
    assert 0.5 < oks < 0.75, oks  # the case needs d5 between the two operating points
    return gt, results


def test_operating_points_by_hand() -> None:
    gt, results = hand_case()
    rows = assert_sweep_exact(gt, results, [0.0, 0.55, 0.65, 0.75, 0.85, 0.95])
    got = [(r["kept"], r["tp_50"], r["fp_50"], r["fn_50"], r["tp_75"], r["fp_75"], r["fn_75"]) for r in rows]
    # 3 non-ignored GT (A, B, E); the crowd match d3 is neither TP nor FP.
    assert got == [
        (5, 2, 2, 1, 1, 3, 2),  # all five
        (4, 1, 2, 2, 1, 2, 2),  # d1-d4
        (3, 1, 1, 2, 1, 1, 2),  # d1-d3
        (2, 1, 1, 2, 1, 1, 2),  # d1, d2
        (1, 1, 0, 2, 1, 0, 2),  # d1
        (0, 0, 0, 3, 0, 0, 3),  # none
    ]
    first = rows[0]
    assert (first["precision_50"], first["recall_50"], first["f1_50"]) == (0.5, 2 / 3, 4 / 7)
    assert (first["precision_75"], first["recall_75"], first["f1_75"]) == (0.25, 1 / 3, 2 / 7)
    assert rows[1]["f1_50"] == 2 / 6 and rows[4]["f1_50"] == 2 / 4
    assert rows[-1]["precision_50"] is None and rows[-1]["recall_50"] == 0.0 and rows[-1]["f1_50"] == 0.0
    assert [r["best_f1"] for r in rows] == [True, False, False, False, False, False]
    assert [r["kept_per_image"] for r in rows] == [2.5, 2.0, 1.5, 1.0, 0.5, 0.0]
    assert all(r["recall_50"] <= 1 for r in rows)


def test_bad_inputs() -> None:
    gt, results = hand_case()
    result = evaluate(gt, results)
    with pytest.raises(KpbenchError, match="empty list"):
        sweep_person_thresholds(result, [])
    with pytest.raises(KpbenchError, match=r"outside \[0, 1\]"):
        sweep_person_thresholds(result, [0.5, 1.5])
    # hotcoco exposes no per-image matches (image_evals is None): the message says which backend to use.
    with pytest.raises(KpbenchError, match="hotcoco backend does not expose"):
        sweep_person_thresholds(dataclasses.replace(result, backend="hotcoco", image_evals=None), [0.5])
    with pytest.raises(KpbenchError, match="run directory not found"):
        thresholds_for_run("/nonexistent/run")


# --------------------------------------------------------------------------------------------------------------
# Run directories and keypoint-score rows


def make_run_dir(path: Path, gt: dict, results: list[dict], logits: np.ndarray, image_ids: list[int] | None = None) -> Path:
    """A minimal run directory: manifest, ground_truth.json and a detections cache (in the given order)."""
    path.mkdir(parents=True, exist_ok=True)
    ids = image_ids or [img["id"] for img in gt["images"]]
    lines = []
    for image_id in ids:
        index = [i for i, r in enumerate(results) if r["image_id"] == image_id]
        kps = np.array([results[i]["keypoints"] for i in index], dtype=float).reshape(-1, 17, 3)
        lo, hi = kps[..., :2].min(axis=1), kps[..., :2].max(axis=1)
        det = ImageDetections(image_id=image_id, boxes=np.concatenate([lo, hi], axis=1).reshape(-1, 4),
                              scores=np.array([results[i]["score"] for i in index]), labels=np.ones(len(index), int),
                              keypoints=kps, keypoint_scores=logits[index].reshape(-1, 17))
        lines.append(json.dumps(det.to_record()))
    (path / "detections.jsonl").write_text("\n".join(lines) + "\n")
    (path / "ground_truth.json").write_text(json.dumps(gt))
    (path / "manifest.json").write_text(json.dumps({"kpbench_run_version": 1, "image_ids": ids}))
    return path


def keypoint_case() -> tuple[dict, list[dict], np.ndarray]:
    """Image 5: background only. Image 7: persons P (keypoints 0-11 labelled) and Q (all labelled).

    Cache order: image 5 [bg 0.95, bg 0.3], image 7 [q 0.5, p 0.95], so P's detection is result 3 (dt id 4).
    P's detection: keypoints 0-7 exact, 8-11 far off (similarity < 0.5), 12-16 anywhere (unlabelled).
    Logits: 0-3: 5.0, 4-7: 1.5, 8-9: 3.0, 10-11: -2.0, 12-16: 4.0.
    """
    p, q = person(7, 1, 60, 150), person(7, 2, 350, 150)
    p["keypoints"] = [0.0 if i >= 36 else v for i, v in enumerate(p["keypoints"])]  # keypoints 12-16: v = 0
    p["num_keypoints"] = 12
    gt = {"images": [{"id": 5, "width": 640, "height": 480}, {"id": 7, "width": 640, "height": 480}],
          "annotations": [p, q], "categories": [{"id": 1, "name": "person"}]}
    p_pts = points_of(p).copy()
    p_pts[8:12] += 40.0
    p_pts[12:] = [100.0, 300.0]
    bg = np.column_stack([np.linspace(500, 600, 17), np.linspace(20, 120, 17)])
    results = [detection(5, bg, 0.95), detection(5, bg, 0.3), detection(7, points_of(q), 0.5), detection(7, p_pts, 0.95)]
    logits = np.zeros((4, 17))
    logits[3] = [5.0] * 4 + [1.5] * 4 + [3.0] * 2 + [-2.0] * 2 + [4.0] * 5
    logits[2] = 2.5  # Q: every keypoint shown at t < 2.5
    return gt, results, logits


def test_keypoint_rows_by_hand(tmp_path: Path) -> None:
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    report = thresholds_for_run(run, ThresholdSettings(kp_thresholds=[2.0, 1.0, -3.0]))
    rows = {(r["threshold"], r["keypoint"]): r for r in report.keypoint}
    assert len(report.keypoint) == 3 * 18 and list(report.keypoint[0]) == KEYPOINT_COLUMNS
    assert [r["threshold"] for r in report.keypoint[::18]] == [-3.0, 1.0, 2.0]  # ascending

    def counts(t: float, name: str) -> tuple:
        r = rows[(t, name)]
        return r["visible"], r["shown"], r["correct"], r["precision"], r["recall"]

    # Only P (score 0.95 > 0.9): 12 labelled keypoints.
    assert counts(2.0, "all") == (12, 6, 4, 4 / 6, 4 / 12)
    assert counts(1.0, "all") == (12, 10, 8, 0.8, 8 / 12)
    assert counts(-3.0, "all") == (12, 12, 8, 8 / 12, 8 / 12)
    assert counts(2.0, "nose") == (1, 1, 1, 1.0, 1.0)
    assert counts(2.0, "left_elbow") == (1, 0, 0, None, 0.0)  # logit 1.5: not shown at 2
    assert counts(2.0, "right_elbow") == (1, 1, 0, 0.0, 0.0)  # shown but 40 px off
    assert counts(2.0, "right_hip") == (0, 0, 0, None, None)  # unlabelled in the GT
    # A lower --person-thresh brings in Q (score 0.5): 17 more labelled keypoints, exact, logits 2.5.
    low = thresholds_for_run(run, ThresholdSettings(kp_thresholds=[2.0, 3.0], person_thresh=0.4)).keypoint
    overall = {r["threshold"]: (r["visible"], r["shown"], r["correct"]) for r in low if r["keypoint"] == "all"}
    assert overall == {2.0: (29, 23, 21), 3.0: (29, 4, 4)}  # a logit of exactly 3.0 is not > 3


def test_bare_results_file_says_keypoints_need_run_dir(tmp_path: Path) -> None:
    gt, results = hand_case()
    report = thresholds_for_files(gt, results)
    assert report.keypoint == [] and any("need a run directory" in n for n in report.notes)
    paths = write_threshold_files(tmp_path, report.person, report.keypoint)
    assert sorted(p.name for p in paths) == ["threshold_curves.png", "thresholds_person.csv", "thresholds_person.md"]
    assert png_size(tmp_path / "threshold_curves.png") == (780, 600)  # one panel at 120 dpi, its legend below


def test_curves_leave_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    """The plot uses its own Agg canvas: the caller's backend stays, and pyplot is never imported."""
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    report = thresholds_for_run(run)
    (tmp_path / "rows.json").write_text(json.dumps(report.to_json()))
    code = (
        "import json, sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "from kpbench.report.figures import plot_threshold_curves\n"
        f"rows = json.load(open({str(tmp_path / 'rows.json')!r}))\n"
        f"plot_threshold_curves(rows['person'], {str(tmp_path / 'curves.png')!r}, rows['keypoint'])\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "False"]
    assert png_size(tmp_path / "curves.png") == (1560, 600)  # two panels


def test_incomplete_run_is_refused(tmp_path: Path) -> None:
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "image_ids": [*manifest["image_ids"], 99]}))
    with pytest.raises(KpbenchError, match="run incomplete, 2 of 3 images have detections"):
        thresholds_for_run(run)
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "ground_truth.json").unlink()
    with pytest.raises(KpbenchError, match=r"ground_truth\.json: missing from the run directory"):
        thresholds_for_run(run)


def synthetic_run(tmp_path: Path, num_images: int = 25) -> tuple[Path, dict, list[dict]]:
    gt, results = make_synthetic_coco(num_images=num_images, seed=6)
    logits = np.random.default_rng(0).normal(2.0, 2.0, (len(results), 17))
    run = make_run_dir(tmp_path / "run", gt, results, logits, image_ids=sorted(img["id"] for img in gt["images"])[::-1])
    return run, gt, results


def test_run_dir_matches_files(tmp_path: Path) -> None:
    run, gt, _ = synthetic_run(tmp_path)
    for iou_type in ("keypoints", "bbox"):
        settings = ThresholdSettings(iou_type=iou_type, thresholds=[0.0, 0.5, 0.9])
        from_run = thresholds_for_run(run, settings)
        from kpbench.runs.detections import read_cache

        cache = read_cache(run / "detections.jsonl")
        kp_res, box_res = to_coco_results([cache[i] for i in sorted(cache)])
        from_files = thresholds_for_files(gt, kp_res if iou_type == "keypoints" else box_res, settings)
        assert from_run.person == from_files.person
        assert [r[n] for r in from_run.person for n in stat_names(iou_type)] == [
            s for t in settings.thresholds for s in reference_stats(gt, kp_res if iou_type == "keypoints" else box_res, t, iou_type)
        ]
        assert len(from_run.keypoint) == 7 * 18
    # "all" sums the keypoints; shown never grows with the threshold.
    rows = from_run.keypoint
    for t in {r["threshold"] for r in rows}:
        per = [r for r in rows if r["threshold"] == t]
        assert sum(r["shown"] for r in per[:17]) == per[17]["shown"] and per[17]["keypoint"] == "all"
    shown = [r["shown"] for r in rows if r["keypoint"] == "all"]
    assert shown == sorted(shown, reverse=True) and shown[0] > 0


# --------------------------------------------------------------------------------------------------------------
# The command line


def test_cli_run_dir_json_and_files(tmp_path: Path) -> None:
    run, *_ = synthetic_run(tmp_path, num_images=12)
    config = tmp_path / "t.toml"
    config.write_text("[thresholds]\nkp_thresholds = [0, 2]\n")
    proc = kpbench("thresholds", run, "--format", "json", "--thresholds", "0.9,0.1,0.5", "--config", config)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert list(payload) == ["person", "keypoint"]
    assert [r["threshold"] for r in payload["person"]] == [0.1, 0.5, 0.9]
    assert list(payload["person"][0]) == person_columns("keypoints")
    assert {r["threshold"] for r in payload["keypoint"]} == {0.0, 2.0}
    assert list(payload["keypoint"][0]) == KEYPOINT_COLUMNS
    expected = thresholds_for_run(run, ThresholdSettings(thresholds=[0.1, 0.5, 0.9], kp_thresholds=[0.0, 2.0]))
    assert payload == json.loads(json.dumps(expected.to_json()))  # full precision through JSON
    names = sorted(p.name for p in run.iterdir())
    for name in ("threshold_curves.png", "thresholds_keypoint.csv", "thresholds_keypoint.md", "thresholds_person.csv",
                 "thresholds_person.md"):
        assert name in names
    assert (run / "thresholds_person.csv").read_text().splitlines()[0] == ",".join(person_columns("keypoints"))


def test_cli_files_table_and_formats(tmp_path: Path) -> None:
    gt, results = hand_case()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    table = kpbench("thresholds", "--gt", gt_path, "--results", res_path, "--out", tmp_path / "out")
    assert table.returncode == 0, table.stderr
    assert "Person-score thresholds" in table.stdout and "Keypoint-score" not in table.stdout
    assert "note: keypoint-score thresholds need a run directory" in table.stderr
    assert (tmp_path / "out" / "thresholds_person.md").is_file()
    csv = kpbench("thresholds", "--gt", gt_path, "--results", res_path, "--format", "csv", "--thresholds", "0,0.95")
    lines = csv.stdout.splitlines()
    assert lines[0].startswith("threshold,AP,AP50") and lines[2].startswith("0.95,0.0,")
    md = kpbench("thresholds", "--gt", gt_path, "--results", res_path, "--format", "markdown", "--thresholds", "0.5")
    assert md.returncode == 0 and "| threshold | AP |" in md.stdout
    payload = json.loads(kpbench("thresholds", "--gt", gt_path, "--results", res_path, "--format", "json",
                                 "--thresholds", "0.95").stdout)
    assert payload["keypoint"] == [] and payload["person"][0]["precision_50"] is None  # null, valid JSON


def test_cli_bbox_sweep_is_exact(tmp_path: Path) -> None:
    gt, kp_results = make_synthetic_coco(num_images=15, seed=8, score_decimals=1)
    results = []
    for r in kp_results:
        pts = np.array(r["keypoints"]).reshape(17, 3)[:, :2]
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        results.append({"image_id": r["image_id"], "category_id": 1, "score": r["score"],
                        "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]})
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    proc = kpbench("thresholds", "--gt", gt_path, "--results", res_path, "--iou-type", "bbox",
                   "--thresholds", "0,0.3,0.6,0.9", "--format", "json", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["person"]
    assert list(rows[0]) == person_columns("bbox")
    for row in rows:
        assert [row[n] for n in stat_names("bbox")] == reference_stats(gt, results, row["threshold"], "bbox")
    assert rows[0]["AP"] > 0.1 and rows[0]["kept"] == len(results)
    header = (tmp_path / "out" / "thresholds_person.csv").read_text().splitlines()[0]
    assert header == ",".join(person_columns("bbox"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thresholds", ","], "--thresholds: empty list"),
        (["--thresholds", "0.5,1.5"], r"--thresholds: 1.5 is outside [0, 1]"),
        (["--thresholds", "0.5,x"], "--thresholds: cannot read"),
        (["--kp-thresholds", ""], "--kp-thresholds: empty list"),
        (["--person-thresh", "2"], r"--person-thresh: 2.0 is outside [0, 1]"),
        (["--iou-type", "segm"], "--iou-type: must be keypoints or bbox"),
        (["--format", "xml"], "--format: must be one of"),
    ],
)
def test_cli_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = kpbench("thresholds", "--gt", tmp_path / "gt.json", "--results", tmp_path / "res.json", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_bad_inputs_exit_2(tmp_path: Path) -> None:
    missing = kpbench("thresholds", tmp_path / "no-such-run")
    assert missing.returncode == 2 and "run directory not found" in missing.stderr
    neither = kpbench("thresholds")
    assert neither.returncode == 2 and "needs RUN_DIR" in neither.stderr
    (tmp_path / "empty").mkdir()
    not_run = kpbench("thresholds", tmp_path / "empty")
    assert not_run.returncode == 2 and "not a run directory" in not_run.stderr
    both = kpbench("thresholds", tmp_path / "empty", "--gt", "g.json", "--results", "r.json")
    assert both.returncode == 2 and "not both" in both.stderr
    bad_config = tmp_path / "c.toml"
    bad_config.write_text("[thresholds]\nthresholds = []\n")
    cfg = kpbench("thresholds", tmp_path / "empty", "--config", bad_config)
    assert cfg.returncode == 2 and "'thresholds' is an empty list" in cfg.stderr
    for proc in (missing, neither, not_run, both, cfg):
        assert "Traceback" not in proc.stderr


def test_cli_stays_light(tmp_path: Path) -> None:
    gt, results = hand_case()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    code = (
        "import sys\nfrom kpbench.cli import app\n"
        f"app(['thresholds', '--gt', {str(gt_path)!r}, '--results', {str(res_path)!r}, '--format', 'json'], "
        "standalone_mode=False)\nprint('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("False")



# --------------------------------------------------------------------------------------------------------------
# Fixes of the QA pass: empty results, machine-readable CSV, threshold lists, output folders, NaN in the cache


def test_no_best_f1_row_when_nothing_matches(tmp_path: Path) -> None:
    """With every F1 = 0 the sweep used to mark threshold 0 as the best."""
    gt, results = hand_case()
    background = [results[3]]  # d4 matches nobody
    rows = sweep_person_thresholds(evaluate(gt, background), [0.0, 0.5, 0.7])
    assert [r["f1_50"] for r in rows] == [0.0, 0.0, 0.0]
    assert not any(r["best_f1"] for r in rows)
    # Thresholds above every score: F1 is 0 (nothing kept, 3 GT missed); no best row either.
    rows = sweep_person_thresholds(evaluate(gt, results), [0.95, 0.99])
    assert [r["f1_50"] for r in rows] == [0.0, 0.0] and not any(r["best_f1"] for r in rows)
    write_threshold_files(tmp_path, rows)
    assert "best F1" not in "".join(t.get_text() for t in threshold_curves_figure(rows).axes[0].texts)


def test_keypoint_panel_says_no_matched_persons(tmp_path: Path) -> None:
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    report = thresholds_for_run(run, ThresholdSettings(person_thresh=0.99))  # nobody scores above 0.99
    assert all(r["visible"] == 0 for r in report.keypoint)
    fig = threshold_curves_figure(report.person, report.keypoint)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert any(NO_MATCHED_PERSONS in t for t in texts) and not fig.axes[1].get_lines()
    assert fig.axes[1].get_xlim() == (-1.0, 5.0)  # the thresholds, not matplotlib's +-0.04 around nothing
    write_threshold_files(tmp_path / "out", report.person, report.keypoint)
    assert png_size(tmp_path / "out" / "threshold_curves.png") == (1560, 600)
    # With matched persons the panel has its curves and no such text.
    fig = threshold_curves_figure(report.person, thresholds_for_run(run).keypoint)
    assert len(fig.axes[1].get_lines()) == 2 and not fig.axes[1].texts


def test_cli_csv_is_one_table(tmp_path: Path, run_cli) -> None:
    import csv
    import io

    run, *_ = synthetic_run(tmp_path, num_images=6)
    code, out, err = run_cli("thresholds", run, "--format", "csv", "--thresholds", "0.2,0.6", "--kp-thresholds", "0,2")
    assert code == 0, err
    assert "\n\n" not in out  # one table: no blank line, one header
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == person_columns("keypoints") and [float(r["threshold"]) for r in rows] == [0.2, 0.6]
    code, out, err = run_cli("thresholds", run, "--format", "csv", "--table", "keypoint", "--kp-thresholds", "0,2")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == KEYPOINT_COLUMNS and len(rows) == 2 * 18
    # Markdown and table can show one table too; json always has both.
    code, out, _ = run_cli("thresholds", run, "--format", "markdown", "--table", "keypoint", "--kp-thresholds", "0")
    assert "Keypoint-score" in out and "Person-score" not in out
    code, out, _ = run_cli("thresholds", run, "--table", "person", "--thresholds", "0.5")
    assert "Person-score" in out and "Keypoint-score" not in out
    assert_one_line_error(run_cli("thresholds", run, "--table", "both"), "--table", "person, keypoint")
    assert_one_line_error(run_cli("thresholds", run, "--format", "json", "--table", "person"), "--table", "json")
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(hand_case()[0]))
    res_path.write_text(json.dumps(hand_case()[1]))
    assert_one_line_error(
        run_cli("thresholds", "--gt", gt_path, "--results", res_path, "--format", "csv", "--table", "keypoint"),
        "--table keypoint", "RUN_DIR",
    )


@pytest.mark.parametrize("value", ["0.5,,0.7", "0.5,0.7,", ",0.5"])
def test_cli_empty_threshold_item_is_an_error(tmp_path: Path, run_cli, value: str) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(hand_case()[0]))
    res_path.write_text(json.dumps(hand_case()[1]))
    for option in ("--thresholds", "--kp-thresholds"):
        assert_one_line_error(
            run_cli("thresholds", "--gt", gt_path, "--results", res_path, option, value), option, "empty item"
        )


def test_cli_notes_a_reordered_threshold_list(tmp_path: Path, run_cli) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(hand_case()[0]))
    res_path.write_text(json.dumps(hand_case()[1]))
    code, out, err = run_cli("thresholds", "--gt", gt_path, "--results", res_path, "--thresholds", "0.9,0.1,0.5,0.1",
                             "--format", "json")
    assert code == 0, err
    assert [r["threshold"] for r in json.loads(out)["person"]] == [0.1, 0.5, 0.9]
    assert "note: --thresholds: using 0.1,0.5,0.9 (sorted, duplicates removed)" in err
    code, out, err = run_cli("thresholds", "--gt", gt_path, "--results", res_path, "--thresholds", "0.1,0.5",
                             "--format", "json")
    assert code == 0 and "sorted" not in err
    config = tmp_path / "t.toml"
    config.write_text("[thresholds]\nthresholds = [0.5, 0.2]\n")
    code, _, err = run_cli("thresholds", "--gt", gt_path, "--results", res_path, "--config", config, "--format", "json")
    assert code == 0 and f"note: thresholds [thresholds] in {config}: using 0.2,0.5" in err


def test_cli_unusable_out_is_one_line(tmp_path: Path, run_cli) -> None:
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert_one_line_error(run_cli("thresholds", run, "--out", a_file), "--out", "exists and is not a directory")
    assert_one_line_error(run_cli("thresholds", run, "--out", "/proc/x"), "--out /proc/x", "cannot create")


def test_ap_in_percent_in_tables_for_people_fractions_in_csv_and_json(tmp_path: Path, run_cli) -> None:
    gt, results = hand_case()
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    args = ("thresholds", "--gt", gt_path, "--results", res_path, "--thresholds", "0,0.95")
    rows = json.loads(run_cli(*args, "--format", "json")[1])["person"]
    ap = rows[0]["AP"]
    assert 0 < ap < 1 and rows[0]["APm"] == -1.0  # every person here is large: no medium GT, COCO's -1
    csv_lines = run_cli(*args, "--format", "csv")[1].splitlines()
    assert csv_lines[1].startswith(f"0.0,{ap!r},") and ",-1.0," in csv_lines[1]
    table = run_cli(*args)[1]
    assert f"{100 * ap:.1f}" in table and "AP" in table and "percent" in table
    md = run_cli(*args, "--format", "markdown", "--out", tmp_path / "out")[1]
    row = next(line for line in md.splitlines() if line.startswith("| 0.000 |"))
    assert row.startswith(f"| 0.000 | {100 * ap:.1f} |") and "| n/a |" in row
    # precision, recall and F1 at 0.50 (0.5, 2/3, 4/7) in percent too: one scale per kind of output.
    assert "| 1 | 50.0 | 66.7 | 57.1 | 1 |" in row and "| 0.500 |" not in row
    assert "precision, recall and F1 in percent" in md and "precision, recall and F1 in percent" in table
    assert csv_lines[0].split(",").index("precision_50") == 16 and csv_lines[1].split(",")[16:19] == \
        ["0.5", repr(2 / 3), repr(4 / 7)]  # CSV: fractions
    assert (tmp_path / "out" / "thresholds_person.md").read_text() == md.split("\n", 2)[2]


def test_nan_in_the_cache_names_the_file_and_the_image(tmp_path: Path, run_cli) -> None:
    gt, results, logits = keypoint_case()
    results[3]["keypoints"][4] = float("nan")  # image 7, its second detection: result 3 of the rebuilt results
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    message = "detections.jsonl: image 7, detection 1 (result 3 of the rebuilt results): 'keypoints' holds NaN"
    with pytest.raises(KpbenchError, match=re.escape(message)):
        thresholds_for_run(run)
    assert_one_line_error(run_cli("thresholds", run), str(run / "detections.jsonl"), message)


@pytest.mark.parametrize("command", ["thresholds", "evaluate --run", "keypoints"])
def test_numeric_strings_in_the_cache_are_refused(tmp_path: Path, run_cli, command: str) -> None:
    """A score of "0.98" in the cache is refused as evaluate refuses it in a results file (numpy would read it)."""
    from kpdata import make_run_dir

    run = make_run_dir(tmp_path).path
    cache = run / "detections.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["scores"][0] = str(record["scores"][0])
    lines[1] = json.dumps(record) + "\n"
    cache.write_text("".join(lines))
    assert_one_line_error(run_cli(*command.split(), run), f"error: {cache}: line 2 is not a valid detections record "
                          f"('scores' holds a non-number: {record['scores'][0]!r})")


def test_keypoints_at_1e308_leak_no_numpy_warning(tmp_path: Path, run_cli) -> None:
    """±1e308 is valid JSON and finite: scored as far off (OKS 0), without numpy's overflow warnings leaking."""
    from kpdata import make_run_dir

    run = make_run_dir(tmp_path).path
    cache = run / "detections.jsonl"
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    for record in records:
        record["keypoints"] = [[[1e308 if k % 2 else -1e308, -1e308, 1.0] for k in range(17)] for _ in record["keypoints"]]
    cache.write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for command in ("evaluate --run", "thresholds", "keypoints"):
            code, _, err = run_cli(*command.split(), run, "--format", "json")
            assert code == 0 and "Warning" not in err, (command, err)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["keypoints"]["AP"] == 0.0


def test_keypoint_table_in_percent_for_people_fractions_in_csv(tmp_path: Path, run_cli) -> None:
    """The keypoint-score table printed precision and recall as fractions (0.67) beside a person table in percent;
    now the terminal pivot, the markdown and thresholds_keypoint.md show percent, and the CSV keeps fractions."""
    gt, results, logits = keypoint_case()
    run = make_run_dir(tmp_path / "run", gt, results, logits)
    args = ("thresholds", run, "--kp-thresholds", "2,1,-3", "--thresholds", "0.5")
    code, out, err = run_cli(*args, "--table", "keypoint")
    assert code == 0, err
    header, *lines = out.splitlines()[1:]
    assert header.split() == ["keypoint", "visible", "R>-3", "P>-3", "R>1", "P>1", "R>2", "P>2"]
    # "all" at 2: 4 correct of 6 shown, of 12 visible; at 1: 8 of 10 of 12; at -3: 8 of 12 of 12.
    assert next(line for line in lines if line.split()[0] == "all").split() == [
        "all", "12", "66.7", "66.7", "66.7", "80.0", "33.3", "66.7"]
    md = (run / "thresholds_keypoint.md").read_text()
    assert md.startswith("Precision and recall in percent; n/a where a ratio is 0/0")
    assert "| 2.000 | all | 12 | 6 | 4 | 66.7 | 33.3 |" in md
    assert "| 2.000 | all | 12 | 6 | 4 | 0.667 | 0.333 |" not in md
    assert md in run_cli(*args, "--table", "keypoint", "--format", "markdown")[1]
    rows = run_cli(*args, "--table", "keypoint", "--format", "csv")[1].splitlines()
    assert f"2.0,all,12,6,4,{4 / 6!r},{4 / 12!r}" in rows
