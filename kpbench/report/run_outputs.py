"""What `kpbench run` writes after its metrics, from the run directory alone: the analyses' files (threshold sweeps,
the per-keypoint breakdown, AP per keypoint and group) and the figures, and what `kpbench plot RUN` redraws.

A report stage: it calls the analyses and draws; the engine, which makes the run, never imports it (the CLI, the
demo and Python users call `analyse_run` after a run)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_csv_rows
from kpbench.report.figures import PR_FILE, plot_pr_curves, plot_threshold_curves

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult


def plot_threshold_file(run_dir: str | Path) -> Path | None:
    """Redraw RUN_DIR/threshold_curves.png from the sweep files `kpbench thresholds` wrote
    (thresholds_person.csv, and thresholds_keypoint.csv when present); None when the run has no sweep."""
    from kpbench.analysis.thresholds import CURVES_FILE, KEYPOINT_STEM, PERSON_STEM

    run_dir = Path(run_dir)
    person_csv, keypoint_csv = run_dir / f"{PERSON_STEM}.csv", run_dir / f"{KEYPOINT_STEM}.csv"
    if not person_csv.is_file():
        return None
    person_rows = read_csv_rows(person_csv)
    if not person_rows:
        return None
    keypoint_rows = read_csv_rows(keypoint_csv) if keypoint_csv.is_file() else None
    from kpbench.runs.directory import manifest_path, run_dir_format

    kind = run_dir_format(run_dir).keypoint_score_kind if manifest_path(run_dir).is_file() else "logit"
    return Path(plot_threshold_curves(person_rows, run_dir / CURVES_FILE, keypoint_rows or None,
                                      keypoint_score_kind=kind))


def plot_run(run_dir: str | Path, results: Mapping[str, EvalResult] | None = None) -> list[Path]:
    """Every figure of a run directory: RUN_DIR/pr_curves.png (keypoints and boxes), and the threshold curves
    when the run has a threshold sweep. `results` ({"keypoints": ..., "bbox": ...}) saves evaluating again."""
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    read_manifest(run_dir)  # a clear error for a folder that is not a run
    if results is None:
        from kpbench.evaluation.runeval import evaluate_run

        results = evaluate_run(run_dir, write=False)
    written = [plot_pr_curves(results, run_dir / PR_FILE)]
    thresholds = plot_threshold_file(run_dir)
    if thresholds is not None:
        written.append(thresholds)
    return written


def analyse_run(run_dir: str | Path, results: Mapping[str, EvalResult] | None = None) -> list[Path]:
    """Everything `kpbench run` writes after its metrics, from the run directory alone: the threshold sweep
    (thresholds_*.csv/.md, threshold_curves.png), the per-keypoint breakdown (keypoints.csv/.md/.png), AP per
    keypoint and per keypoint group (keypoint_ap.csv/.md/.json) and the PR curves (pr_curves.png). `results` is
    the run's evaluation, to save evaluating again."""
    from kpbench.analysis.breakdown import keypoints_for_run
    from kpbench.analysis.keypoint_ap import keypoint_ap_for_run, write_keypoint_ap_files
    from kpbench.analysis.thresholds import thresholds_for_run, write_threshold_files

    run_dir = Path(run_dir)
    report = thresholds_for_run(run_dir, results=results)
    written = write_threshold_files(run_dir, report.person, report.keypoint, plot=False)
    keypoints_for_run(run_dir, results.get("keypoints") if results else None)
    written += [run_dir / f"keypoints.{ext}" for ext in ("csv", "md", "png")]
    kp_result = results.get("keypoints") if results else None
    written += write_keypoint_ap_files(run_dir, keypoint_ap_for_run(run_dir, result=kp_result))
    return written + plot_run(run_dir, results)
