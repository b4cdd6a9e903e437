"""`kpbench analyze` as one library call: the error diagnosis plus the sections other analyses add.

`diagnose` runs `kpbench.analysis.errors.analyze_errors` (keypoint errors, what each correction gains, PR curves,
optional bootstrap intervals) and adds two sections to its `extra` hook, each written as a table of its own:

- ``sensitivity``: keypoint AP by the number of visible keypoints and by overlap with other persons
  (`kpbench.analysis.sensitivity.sensitivity_tables`, Ronchi & Perona's bins; COCO's evaluation parameters);
- ``score_threshold``: the LRP-optimal person-score threshold on OKS 0.5 (`kpbench.analysis.lrp`, vernier's
  definition, grid 0.00 .. 1.00) and, beside it, the best-F1 threshold of `kpbench thresholds` read on the same
  matching and grid (the highest F1 at OKS 0.5, the lowest threshold among equals). Each row gives both criteria
  at its threshold, so the two operating points can be compared directly;
- ``keypoint_ap``: AP per keypoint and per keypoint group (`kpbench.analysis.keypoint_ap`; the schema's groups
  or the caller's).

A section is {"title", "note", "columns", "rows"} and optionally "percent" (AP columns and rates, printed for people
in percent as the other tables are) and "unit" (the line under its table that says so; AP's by default):
`write_error_files` writes it as NAME.csv, NAME.md and NAME.json beside the error tables, and analyze.json carries
it under its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kpbench.analysis.errors import ErrorAnalysis, analyze_errors, analyze_run_errors, section_rows_percent

__all__ = ["add_sections", "diagnose", "diagnose_run", "score_threshold_rows", "section_rows_percent"]

SENSITIVITY = "sensitivity"
SCORE_THRESHOLD = "score_threshold"
THRESHOLD_COLUMNS: tuple[str, ...] = ("criterion", "threshold", "lrp", "loc", "fp", "fn", "f1", "n_tp", "n_fp",
                                      "n_fn")
# LRP, its components and F1 are ratios in [0, 1]: tables for people show them in percent (the threshold is a score).
THRESHOLD_PERCENT: tuple[str, ...] = ("lrp", "loc", "fp", "fn", "f1")
THRESHOLD_UNIT = "LRP, loc, fp, fn and F1 in percent; the thresholds are person scores."

SENSITIVITY_NOTE = (
    "Keypoint AP (OKS .50:.95, AP50, AP75; area all, maxDets 20) of the persons in each bin, the others ignored as "
    "COCOeval ignores a GT outside an area range; a detection that matches no GT stays a false positive in every "
    "bin. Visible keypoints: the GT's labelled keypoints (v > 0). Overlap: other annotations of the image whose box "
    "IoU with the GT exceeds 0.1. num_gt: the bin's GTs that COCOeval counts; AP -1: no such GT."
)
THRESHOLD_NOTE = (
    "Person-score thresholds for deployment, from one COCOeval matching at OKS 0.5 (area all, top 20 per image), "
    "on the grid 0.00, 0.01, ..., 1.00 (keep detections with score >= threshold). LRP-optimal: the threshold of "
    "the lowest LRP (Oksuz et al.; vernier's definition; ties to the larger threshold), lrp there is oLRP, with "
    "its localisation, FP and FN components. Best F1: `kpbench thresholds`' starred row (ties to the lower "
    "threshold). Lower LRP is better, higher F1 is better."
)


def score_threshold_rows(gt: Any, results: Any) -> list[dict[str, Any]]:
    """The LRP-optimal and the best-F1 person-score thresholds, each with LRP, its components and F1 there
    (THRESHOLD_COLUMNS; None where undefined, such as without a GT that counts or without a true positive)."""
    from kpbench.analysis.lrp import lrp_analysis

    optimum, curve = lrp_analysis(gt, results)  # one matching for both

    def row(criterion: str, at: dict[str, Any] | None, threshold: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"criterion": criterion, "threshold": threshold}
        for column in THRESHOLD_COLUMNS[2:]:
            out[column] = at[column] if at is not None else None
        return out

    at_optimum = next((r for r in curve if r["threshold"] == optimum.threshold), None)
    rows = [row("LRP-optimal", at_optimum, optimum.threshold)]  # its lrp is optimum.olrp, the same double
    f1s = [r["f1"] for r in curve if r["f1"] is not None]
    best = max(f1s) if f1s else None
    # The lowest threshold among equals; none when no F1 is above 0, as `best_f1_threshold` gives.
    best_row = next((r for r in curve if best and r["f1"] == best), None)
    rows.append(row("best F1", best_row, best_row["threshold"] if best_row is not None else None))
    return rows


def add_sections(analysis: ErrorAnalysis, groups: Any = None) -> ErrorAnalysis:
    """Add the sensitivity, score-threshold and keypoint-AP sections to an analysis made by `analyze_errors` (its
    validated inputs are reused; `groups` replaces the schema's keypoint groups); returns the same analysis."""
    from kpbench.analysis.keypoint_ap import SECTION as KEYPOINT_AP
    from kpbench.analysis.keypoint_ap import keypoint_ap
    from kpbench.analysis.sensitivity import COLUMNS, sensitivity_tables
    from kpbench.core.errors import KpbenchError
    from kpbench.evaluation.cocofiles import CheckedDetections

    if analysis.inputs is None:
        raise KpbenchError("add_sections: the analysis carries no inputs (make it with analyze_errors)")
    gt, results = analysis.inputs
    analysis.extra[SENSITIVITY] = {
        "title": "Keypoint AP by visible keypoints and by overlap (Ronchi & Perona, ICCV 2017)",
        "note": SENSITIVITY_NOTE, "columns": list(COLUMNS), "rows": sensitivity_tables(gt, results),
        "percent": ["AP", "AP50", "AP75"],
    }  # fmt: skip
    analysis.extra[SCORE_THRESHOLD] = {
        "title": "A deployable person-score threshold: LRP-optimal and best F1",
        "note": THRESHOLD_NOTE, "columns": list(THRESHOLD_COLUMNS), "rows": score_threshold_rows(gt, results),
        "percent": list(THRESHOLD_PERCENT), "unit": THRESHOLD_UNIT,
    }  # fmt: skip
    # A run's detections stay arrays (CheckedDetections); keypoint_ap takes the checked arrays themselves.
    arrays = results.detections if isinstance(results, CheckedDetections) else results
    analysis.extra[KEYPOINT_AP] = keypoint_ap(gt, arrays, groups=groups).section()
    return analysis


def diagnose(
    gt: Any, results: Any, schema: Any = None, sigmas: Any = None, coco_analyze: bool = False,
    bootstrap: int | None = None, seed: int = 0, evaluator: str = "vectorized", groups: Any = None,
) -> ErrorAnalysis:
    """Everything `kpbench analyze GT RESULTS` computes: `analyze_errors` (same arguments) with the sensitivity,
    score-threshold and keypoint-AP sections (module docstring; `groups` as `keypoint_ap`'s)."""
    return add_sections(analyze_errors(gt, results, schema=schema, sigmas=sigmas, coco_analyze=coco_analyze,
                                       bootstrap=bootstrap, seed=seed, evaluator=evaluator), groups)


def diagnose_run(
    run_dir: str | Path, coco_analyze: bool = False, bootstrap: int | None = None, seed: int = 0,
    evaluator: str = "vectorized", groups: Any = None,
) -> ErrorAnalysis:
    """Everything `kpbench analyze RUN_DIR` computes, from the run directory alone (no model is run)."""
    return add_sections(analyze_run_errors(run_dir, coco_analyze=coco_analyze, bootstrap=bootstrap, seed=seed,
                                           evaluator=evaluator), groups)
