"""`kpbench analyze`'s added sections (kpbench.analysis.diagnose): the sensitivity tables and the LRP-optimal
threshold beside the best-F1 one, in analyze.json, in their own CSV/Markdown/JSON files, and on the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from kpdata import COCO_SAMPLE, make_run_dir, requires_shared

from kpbench.analysis.diagnose import SCORE_THRESHOLD, SENSITIVITY, THRESHOLD_COLUMNS, diagnose, diagnose_run
from kpbench.analysis.errors import analyze_errors, write_error_files
from kpbench.analysis.keypoint_ap import SECTION as KEYPOINT_AP
from kpbench.analysis.keypoint_ap import keypoint_ap
from kpbench.analysis.lrp import best_f1_threshold, lrp_curve, lrp_optimal
from kpbench.analysis.sensitivity import COLUMNS, sensitivity_tables
from kpbench.core.io import to_csv
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate

FIXTURE = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
SAMPLE_GT = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"


def test_sections_equal_the_analyses_they_come_from(tmp_path: Path) -> None:
    gt, res = make_synthetic_coco(num_images=12, seed=4)
    analysis = diagnose(gt, res)
    # The error diagnosis itself is untouched: the sections only add.
    plain = analyze_errors(gt, res).to_json()
    payload = analysis.to_json()
    assert {k: v for k, v in payload.items() if k not in (SENSITIVITY, SCORE_THRESHOLD, KEYPOINT_AP)} == plain
    assert payload[KEYPOINT_AP] == keypoint_ap(gt, res).section()
    assert payload[SENSITIVITY]["rows"] == sensitivity_tables(gt, res)
    assert payload[SENSITIVITY]["columns"] == list(COLUMNS)
    optimum = lrp_optimal(gt, res)
    lrp_row, f1_row = payload[SCORE_THRESHOLD]["rows"]
    assert lrp_row["criterion"] == "LRP-optimal" and f1_row["criterion"] == "best F1"
    assert (lrp_row["threshold"], lrp_row["lrp"], lrp_row["loc"], lrp_row["fp"], lrp_row["fn"]) == (
        optimum.threshold, optimum.olrp, optimum.loc, optimum.fp, optimum.fn)
    assert (lrp_row["n_tp"], lrp_row["n_fp"], lrp_row["n_fn"]) == (optimum.n_tp, optimum.n_fp, optimum.n_fn)
    best = best_f1_threshold(evaluate(gt, res))
    assert best is not None
    assert (f1_row["threshold"], f1_row["f1"], f1_row["n_tp"], f1_row["n_fp"], f1_row["n_fn"]) == (
        best["threshold"], best["f1_50"], best["tp_50"], best["fp_50"], best["fn_50"])
    # The best-F1 row's LRP is the curve's at that threshold, never below the optimum.
    at_f1 = next(r for r in lrp_curve(gt, res) if r["threshold"] == f1_row["threshold"])
    assert f1_row["lrp"] == at_f1["lrp"] and f1_row["lrp"] >= lrp_row["lrp"]

    paths = write_error_files(tmp_path, analysis, plot=False)
    names = sorted(p.name for p in paths)
    assert names == ["analyze.json", "errors_ap_gain.csv", "errors_ap_gain.json", "errors_ap_gain.md",
                     "errors_keypoints.csv", "errors_keypoints.json", "errors_keypoints.md", "keypoint_ap.csv",
                     "keypoint_ap.json", "keypoint_ap.md", "score_threshold.csv",
                     "score_threshold.json", "score_threshold.md", "sensitivity.csv", "sensitivity.json",
                     "sensitivity.md"]
    assert (tmp_path / "sensitivity.csv").read_text() == to_csv(payload[SENSITIVITY]["rows"], COLUMNS)
    read_back = list(csv.DictReader(io.StringIO((tmp_path / "score_threshold.csv").read_text())))
    assert list(read_back[0]) == list(THRESHOLD_COLUMNS)
    assert float(read_back[0]["threshold"]) == lrp_row["threshold"] and float(read_back[0]["lrp"]) == lrp_row["lrp"]
    assert json.loads((tmp_path / "score_threshold.json").read_text()) == payload[SCORE_THRESHOLD]
    md = (tmp_path / "sensitivity.md").read_text()
    assert md.startswith("## Keypoint AP by visible keypoints and by overlap")
    assert "| table | bin | num_gt | AP | AP50 | AP75 |" in md
    assert json.loads((tmp_path / "analyze.json").read_text())[SENSITIVITY] == payload[SENSITIVITY]


def test_no_person_that_counts_gives_empty_cells() -> None:
    gt, res = make_synthetic_coco(num_images=3, seed=1)
    for ann in gt["annotations"]:
        ann["iscrowd"] = 1  # every GT ignored: LRP and F1 are undefined, every AP is -1
    analysis = diagnose(gt, res)
    rows = analysis.extra[SCORE_THRESHOLD]["rows"]
    assert [r["criterion"] for r in rows] == ["LRP-optimal", "best F1"]
    assert all(r[c] is None for r in rows for c in THRESHOLD_COLUMNS[1:])
    assert {r["AP"] for r in analysis.extra[SENSITIVITY]["rows"]} == {-1.0}


@requires_shared
def test_real_yolo_fixture_thresholds() -> None:
    """On the real 35-image sample with YOLO11n-pose: the LRP-optimal threshold 0.46 and the best-F1 0.34 (which
    `kpbench thresholds` stars) keep the same detections; LRP's tie rule takes the larger, F1's the lower."""
    analysis = diagnose(SAMPLE_GT, FIXTURE)
    lrp_row, f1_row = analysis.extra[SCORE_THRESHOLD]["rows"]
    optimum = lrp_optimal(SAMPLE_GT, FIXTURE)
    assert lrp_row["threshold"] == optimum.threshold == 0.46 and lrp_row["lrp"] == optimum.olrp
    assert f1_row["threshold"] == best_f1_threshold(evaluate(SAMPLE_GT, FIXTURE))["threshold"] == 0.34
    assert (lrp_row["n_tp"], lrp_row["n_fp"], lrp_row["n_fn"]) == (f1_row["n_tp"], f1_row["n_fp"], f1_row["n_fn"])
    assert (lrp_row["n_tp"], lrp_row["n_fp"], lrp_row["n_fn"]) == (47, 6, 23)
    assert analysis.extra[SENSITIVITY]["rows"] == sensitivity_tables(SAMPLE_GT, FIXTURE)


def test_cli_prints_and_writes_the_sections(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    code, out, err = run_cli("analyze", run, "--table", "sensitivity", "--format", "csv")
    assert code == 0, err
    analysis = diagnose_run(run)
    assert out == to_csv(analysis.extra[SENSITIVITY]["rows"], COLUMNS)
    code, out, err = run_cli("analyze", run, "--table", "score_threshold", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == ",".join(THRESHOLD_COLUMNS)
    assert (run / "score_threshold.csv").read_text() == out
    code, out, _ = run_cli("analyze", run)
    assert code == 0
    assert "Keypoint AP by visible keypoints and by overlap" in out and "LRP-optimal" in out and "best F1" in out


@requires_shared
def test_score_threshold_table_in_percent_for_people(tmp_path: Path, run_cli) -> None:
    """The score-threshold table printed LRP, its components and F1 as fractions (0.589) beside tables in percent;
    now `kpbench analyze` and score_threshold.md show them in percent, and the CSV and JSON keep the fractions."""
    from kpbench.evaluation.cocoeval import percent

    code, out, err = run_cli("analyze", SAMPLE_GT, FIXTURE, "--out", tmp_path)
    assert code == 0, err
    lrp_row, f1_row = diagnose(SAMPLE_GT, FIXTURE).extra[SCORE_THRESHOLD]["rows"]
    assert round(lrp_row["lrp"], 3) == 0.589 and round(f1_row["f1"], 3) == 0.764

    def cells(row: dict) -> list[str]:
        return [row["criterion"], f"{row['threshold']:.3f}", *(percent(row[c]) for c in ("lrp", "loc", "fp", "fn", "f1")),
                *(str(row[c]) for c in ("n_tp", "n_fp", "n_fn"))]

    md = (tmp_path / "score_threshold.md").read_text()
    assert "| " + " | ".join(cells(lrp_row)) + " |" in md and "| LRP-optimal | 0.460 | 58.9 |" in md
    assert md.rstrip().endswith("LRP, loc, fp, fn and F1 in percent; the thresholds are person scores.")
    block = out.split("A deployable person-score threshold: LRP-optimal and best F1:\n", 1)[1]
    lines = block.splitlines()
    assert lines[1].split() == ["LRP-optimal", *cells(lrp_row)[1:]] and lines[2].split()[:2] == ["best", "F1"]
    assert lines[3] == "LRP, loc, fp, fn and F1 in percent; the thresholds are person scores."
    first = next(csv.DictReader(io.StringIO((tmp_path / "score_threshold.csv").read_text())))
    assert float(first["lrp"]) == lrp_row["lrp"]  # CSV: fractions
