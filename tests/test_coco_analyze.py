"""`kpbench analyze --coco-analyze` (`analyze_errors(..., coco_analyze=True)`) against the original coco-analyze:
the numbers it recorded on the real YOLO11n-pose sample (tests/fixtures/coco_analyze_yolo11n_sample.json; its
provenance is in tests/fixtures/README.md), and, where the reference is installed, the reference run live on that
sample and on synthetic data with crowd regions, unlabelled persons and every size.

What is compared, for every step (the baseline; each correction alone, errorsAPImpact's; each cumulative step,
COCOanalyze.summarize()'s) and area range (all, medium, large): AP and recall at each OKS threshold; the error
counts per keypoint and each matched detection's classes; the background false positives and negatives at each
threshold; the optimal scores. AP and recall are ratios of match counts and are compared with ==: they are exact
as long as every decision (an OKS against a threshold, the order of two scores) is the same, which the ulp
differences below leave alone here. The optimal scores are compared to a relative 1e-12: numpy's exp rounds a few
inputs one ulp apart between numpy 1.23.5 (the reference's) and numpy 2 (kpbench's), so the OKS they start from
and the soft-NMS factors they are multiplied by may differ in the last bit (run under numpy 1.23.5, kpbench gives
them bit for bit).

One named deviation: coco-analyze stores the precision of its false-negative step in ascending OKS order but
labels it in descending order, so its per-threshold numbers of that step read reversed; kpbench labels each at
its own threshold, and the comparison reverses the reference's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.analysis.errors import (
    GOOD,
    INVERSION,
    JITTER,
    MISS,
    SWAP,
    ErrorAnalysis,
    analyze_errors,
)
from kpbench.data.synthetic import make_synthetic_coco

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = FIXTURES / "yolo11n_pose_coco_sample_results.json"
RECORDED = FIXTURES / "coco_analyze_yolo11n_sample.json"
SAMPLE_GT = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
DRIVER = Path(__file__).parent / "coco_analyze_reference.py"
OPTIMAL_SCORE_RTOL = 1e-12
CLASSES = ("good", "jitter", "inversion", "swap", "miss")
LETTER = {GOOD: "g", JITTER: "j", INVERSION: "i", SWAP: "s", MISS: "m"}  # the driver's c[0]; "-" for no class

REFERENCE_PYTHON = os.environ.get("KPBENCH_COCO_ANALYZE_PYTHON", "")
REFERENCE_DIR = os.environ.get("KPBENCH_COCO_ANALYZE_DIR", "")
requires_reference = pytest.mark.skipif(
    not (REFERENCE_PYTHON and Path(REFERENCE_PYTHON).is_file() and REFERENCE_DIR
         and (Path(REFERENCE_DIR) / "pycocotools" / "cocoanalyze.py").is_file()),
    reason="the original coco-analyze is not installed here: set KPBENCH_COCO_ANALYZE_PYTHON to its venv's python "
           "(numpy 1.23.5) and KPBENCH_COCO_ANALYZE_DIR to its built checkout (tests/fixtures/README.md)",
)


def reference_steps(reference: dict[str, Any]) -> dict[tuple[str, str, str], tuple[list[float], list[float]]]:
    """{(how, correction, area): (AP by OKS, recall by OKS)} in kpbench's names, the false-negative step's
    threshold order put right."""
    out = {("baseline", "none", area): (v["ap_by_oks"], v["recall_by_oks"])
           for area, v in reference["baseline"].items()}
    for how in ("alone", "cumulative"):
        for step, areas in reference[how].items():
            name = "background_fn" if step == "background_fp_fn" else step
            for area, v in areas.items():
                ap, recall = v["ap_by_oks"], v["recall_by_oks"]
                if name == "background_fn":
                    ap, recall = ap[::-1], recall[::-1]
                out[how, name, area] = (ap, recall)
    return out


def flags(members: dict[str, str], position: dict[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The driver's {member: "0110..."} as a (T, count) mask over `position`'s indices."""
    out = np.zeros(shape, dtype=bool)
    for member, bits in members.items():
        out[:, position[int(member)]] = [b == "1" for b in bits]
    return out


def assert_matches_reference(analysis: ErrorAnalysis, reference: dict[str, Any], gt: dict[str, Any]) -> None:
    # The analysed detections, in the order coco-analyze's run_analysis.py hands them to loadRes.
    assert analysis.detections.tolist() == reference["inputs"]["analysed_results"]
    assert analysis.ap_by_oks["oks"] == reference["oks_thresholds"]
    ours = {(r["how"], r["correction"], r["area"]): (r["AP"], r["recall"]) for r in analysis.ap_by_oks["rows"]}
    theirs = reference_steps(reference)
    assert sorted(ours) == sorted(theirs)  # every step and range of coco-analyze, and no other
    for key, value in theirs.items():
        assert ours[key] == value, key
    # The AP column is COCOeval's mean over thresholds and recall points: the mean of the per-threshold means
    # (of 101 points each) up to the order of the additions.
    for row in analysis.ap_gain:
        ap = [v for v in theirs[row["how"], row["correction"], row["area"]][0] if v > -1]
        assert row["AP"] == pytest.approx(float(np.mean(ap)) if ap else -1.0, rel=1e-12, abs=1e-15)

    # localizationErrors.py: the counts per keypoint, and each matched detection's classes (area "all").
    counts = {r["keypoint"]: {c: r[c] for c in CLASSES} for r in analysis.counts[:-1]}
    assert counts == reference["counts"]["per_keypoint"]
    assert {c: analysis.counts[-1][c] for c in CLASSES} == reference["counts"]["total"]
    gt_ids = [a["id"] for a in gt["annotations"]]
    matched = [{"result": int(analysis.detections[d]), "gt_id": gt_ids[g],
                "classes": "".join(LETTER.get(int(c), "-") for c in row)}
               for (d, g), row in zip(analysis.pairs.tolist(), analysis.labels.labels)]
    assert sorted(matched, key=lambda m: m["result"]) == reference["counts"]["matched"]

    # The background sets at each threshold, alone and after the other corrections.
    position = {r: i for i, r in enumerate(analysis.detections.tolist())}
    gt_position = {g: i for i, g in enumerate(gt_ids)}
    thresholds = len(reference["oks_thresholds"])
    assert sorted(analysis.background_sets) == sorted((how, area) for how in ("alone", "cumulative")
                                                      for area in reference["area_ranges"])
    for how, areas in reference["background"].items():
        for area, sets in areas.items():
            fp, fn = analysis.background_sets[how, area]
            assert np.array_equal(fp, flags(sets["fp_results"], position, (thresholds, len(position)))), (how, area)
            assert np.array_equal(fn, flags(sets["fn_gt_ids"], gt_position, (thresholds, len(gt_ids)))), (how, area)

    # The optimal scores (best OKS, then soft-NMS) of every range.
    for how, areas in reference["optimal_scores"].items():
        for area, values in areas.items():
            expected = np.array([values[str(r)] for r in analysis.detections.tolist()])
            np.testing.assert_allclose(analysis.optimal_scores[how, area], expected, rtol=OPTIMAL_SCORE_RTOL, atol=0)


@requires_shared
def test_matches_the_recorded_coco_analyze_on_the_real_sample() -> None:
    reference = json.loads(RECORDED.read_text())
    assert reference["reference"]["numpy"] == "1.23.5" and reference["inputs"]["num_analysed"] == 499
    analysis = analyze_errors(SAMPLE_GT, RESULTS, coco_analyze=True)
    assert_matches_reference(analysis, reference, json.loads(SAMPLE_GT.read_text()))
    # Issue 23, item 3: after every correction coco-analyze's AP is 1.000 (kpbench's coco-analyze mode said 0.920).
    final = {r["area"]: r["AP"] for r in analysis.ap_gain if (r["how"], r["correction"]) == ("cumulative", "background_fn")}
    assert final == {"all": 1.0, "medium": 1.0, "large": 1.0}


@requires_shared
def test_the_pycocotools_re_evaluation_matches_it_too() -> None:
    """The reference re-evaluation (pycocotools itself) gives the same coco-analyze numbers."""
    reference = json.loads(RECORDED.read_text())
    analysis = analyze_errors(SAMPLE_GT, RESULTS, coco_analyze=True, evaluator="pycocotools")
    assert_matches_reference(analysis, reference, json.loads(SAMPLE_GT.read_text()))


def run_reference(gt: Path, results: Path) -> dict[str, Any]:
    """The driver under the reference's python: coco-analyze's numbers as JSON."""
    done = subprocess.run([REFERENCE_PYTHON, str(DRIVER), "--coco-analyze", REFERENCE_DIR, str(gt), str(results)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@requires_reference
@requires_shared
def test_live_coco_analyze_on_the_real_sample() -> None:
    reference = run_reference(SAMPLE_GT, RESULTS)
    analysis = analyze_errors(SAMPLE_GT, RESULTS, coco_analyze=True)
    assert_matches_reference(analysis, reference, json.loads(SAMPLE_GT.read_text()))
    # The recording is what the reference gives (its optimal scores may round differently on another CPU).
    recorded = json.loads(RECORDED.read_text())
    assert {k: v for k, v in reference.items() if k != "optimal_scores"} == {
        k: v for k, v in recorded.items() if k != "optimal_scores"}


@requires_reference
@pytest.mark.parametrize(("seed", "detections_per_person"), [(4, 9.0), (7, 3.0)])
def test_live_coco_analyze_on_synthetic_data(tmp_path: Path, seed: int, detections_per_person: float) -> None:
    """More than 20 detections in some images, crowd regions, unlabelled persons, small, medium and large ones."""
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.05, detections_per_person=detections_per_person,
                                      seed=seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    reference = run_reference(tmp_path / "gt.json", tmp_path / "results.json")
    assert_matches_reference(analyze_errors(gt, results, coco_analyze=True), reference, gt)


def test_coco_analyze_files_say_its_definitions(tmp_path: Path) -> None:
    """In coco-analyze mode the written tables describe coco-analyze's procedure, and analyze.json carries the
    per-threshold AP and the background counts of every step and area range."""
    from kpbench.analysis.errors import write_error_files

    gt, results = make_synthetic_coco(num_images=8, seed=3)
    analysis = analyze_errors(gt, results, coco_analyze=True)
    write_error_files(tmp_path, analysis, plot=False)
    assert "coco-analyze's AP gains, each area range analysed on its own" in (tmp_path / "errors_ap_gain.md").read_text()
    assert "good (matched, ks > 0.85)" in (tmp_path / "errors_keypoints.md").read_text()
    payload = json.loads((tmp_path / "analyze.json").read_text())
    assert payload["settings"]["oks_thresholds"] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert payload["ap_by_oks"] == json.loads(json.dumps(analysis.ap_by_oks))
    assert len(payload["ap_by_oks"]["rows"]) == 15 * 3  # baseline, 7 alone, 7 cumulative; 3 area ranges
    assert len(payload["background"]) == 2 * 3 * 10  # alone and cumulative; 3 area ranges; 10 thresholds
    fp, fn = analysis.background_sets["alone", "all"]
    first = payload["background"][0]
    assert (first["how"], first["area"], first["oks"], first["fp"], first["fn"]) == (
        "alone", "all", 0.5, int(fp[0].sum()), int(fn[0].sum()))
