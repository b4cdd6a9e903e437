"""The error analysis as one call: `analyze_errors` (results files or data) and `analyze_run_errors` (a run
directory); the procedure of the mode (`kpbench_mode` or `coco_analyze_mode`), then the notes and the summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.analysis.errors.coco_analyze_mode import analyze_coco_analyze
from kpbench.analysis.errors.definitions import CORRECT_KS, GOOD_KS, MATCH_OKS, NOT_LABELLED, UNCLASSIFIED, ErrorMode
from kpbench.analysis.errors.inputs import ErrorInputs, flip_index, original_areas, prepare_inputs
from kpbench.analysis.errors.kpbench_mode import analyze_kpbench
from kpbench.analysis.errors.result import ErrorAnalysis, count_rows
from kpbench.analysis.errors.scoring import EVALUATORS, Scorer, make_scorer
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema, stat_names

if TYPE_CHECKING:
    from kpbench.core.arrays import DetectionArrays
    from kpbench.evaluation.cocofiles import CheckedDetections, GroundTruth, Results


def analyze_errors(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays | CheckedDetections,
    schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
    coco_analyze: bool = False,
    bootstrap: int | None = None,
    seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """The error diagnosis of keypoint results (`kpbench.analysis.errors`): counts per error type and keypoint, and the
    AP gained by each correction alone and cumulatively, per area range, with the PR curves after each
    cumulative step.

    `gt` and `results` are paths, parsed data or validated objects, `results` also `DetectionArrays` (row i is
    result i; keypoint results without a 'bbox'), as for `kpbench.evaluate`; `schema`/`sigmas` as for `evaluate`.
    `coco_analyze` reproduces coco-analyze's numbers (its area ranges, strict 0.85 boundary and σ² corrections).
    `bootstrap` replicates (seeded) put percentile intervals on every stat of the plain evaluation
    (`kpbench.evaluate` with COCO's parameters, pycocotools). `evaluator` re-evaluates the corrected detections:
    "vectorized" (`kpbench.evaluation.vectorized`, the default) or "pycocotools" (the reference, much slower);
    both give the same numbers bit for bit.
    """
    import warnings

    from kpbench.evaluation.cocofiles import load_ground_truth

    if sigmas is not None and schema is not None:
        raise KpbenchError("give a schema or sigmas, not both (--schema / --sigmas)")
    if evaluator not in EVALUATORS:
        raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    gt_data = load_ground_truth(gt, "keypoints", schema, sigmas)
    check_bootstrap_memory(bootstrap, seed, gt_data)  # before any work: the GT gives the number of images
    res = _checked_results(results, gt_data)
    mode = ErrorMode(coco_analyze)
    data = prepare_inputs(gt_data, res, coco_analyze_order=coco_analyze)
    schema = data.schema
    # coco-analyze's detection areas are loadRes's, set once from the original results.
    scorer = make_scorer(evaluator, data, mode.eval_settings, original_areas(data) if mode.coco_analyze else None)
    # The analysis words the maxDets cut itself (with how many detections it keeps).
    from kpbench.evaluation.cocofiles import crowded_images_note

    crowded = crowded_images_note(data.crowded_images) if data.crowded_images else None
    notes = [*gt_data.notes, *(n for n in res.notes if n != crowded)]
    with warnings.catch_warnings():
        # The inputs were checked (and warned about) once above; the re-evaluations see the same records.
        warnings.simplefilter("ignore")
        analysis = _analyze(data, scorer, mode, notes)
        if bootstrap is not None:
            from kpbench.analysis.bootstrap import bootstrap_intervals
            from kpbench.evaluation.cocoeval import evaluate

            analysis.intervals = bootstrap_intervals(evaluate(gt_data, res), bootstrap, seed)
    analysis.inputs = (gt_data, res)
    return analysis


def check_bootstrap_memory(bootstrap: int | None, seed: int, gt: GroundTruth) -> None:
    """Refuse a bootstrap request (`kpbench.analysis.bootstrap.BootstrapRequest`: its bounds, and its memory for the
    GT's images and COCO's keypoint stats) before the analysis; nothing without one."""
    if bootstrap is None:
        return
    from kpbench.analysis.bootstrap import BootstrapRequest

    BootstrapRequest(bootstrap, seed).check_memory(len(gt.dataset["images"]), len(stat_names("keypoints")))


def _checked_results(results: Any, gt: GroundTruth) -> Results | CheckedDetections:
    """The results checked against the GT: records as `Results`, arrays as `CheckedDetections` (never made dicts)."""
    from kpbench.core.arrays import DetectionArrays
    from kpbench.evaluation.cocofiles import CheckedDetections, load_results, validate_detection_arrays

    if isinstance(results, CheckedDetections):
        return results
    if isinstance(results, DetectionArrays):
        return validate_detection_arrays(results, gt, "keypoints")
    return load_results(results, gt, "keypoints")


def _analyze(data: ErrorInputs, scorer: Scorer, mode: ErrorMode, notes: list[str]) -> ErrorAnalysis:
    flip = flip_index(data.schema)
    analysis = (analyze_coco_analyze if mode.coco_analyze else analyze_kpbench)(data, scorer, flip)
    schema = data.schema
    labels = analysis.labels
    unclassified = int((labels.labels == UNCLASSIFIED).sum())
    if mode.coco_analyze:
        notes.append("coco-analyze mode: its procedure, from its code (README, 'coco-analyze differs'): area 'all' "
                     "is [32², 1e10] (small persons ignored), medium [32², 96²], large [96², 1e10], each analysed on "
                     "its own; good is ks > 0.85; corrections to (g_x + r, g_y) with σ² (jitter lands at ks "
                     f"{GOOD_KS**0.25:.3f}, miss at {CORRECT_KS**0.25:.3f}); scores rescored then soft-NMS; "
                     "background per OKS threshold; background_fn is scored on top of background_fp")
        if unclassified:
            notes.append(f"{unclassified} keypoint(s) with ks exactly 0.85 fall in no class (coco-analyze's strict "
                         "boundaries): counted as unclassified and left uncorrected")
        notes.append("background counts in the summary: area 'all' at OKS 0.5 on the uncorrected detections "
                     "(analyze.json's background: every range, threshold and step)")
    if flip is None:
        notes.append(f"the {schema.name} schema has no flip pairs: inversions are not measured (no inversion "
                     "column or correction)")
    if data.crowded_images:
        notes.append(f"{data.crowded_images} image(s) have more than {KEYPOINT_MAX_DETS} detections: only each "
                     f"image's top {KEYPOINT_MAX_DETS} by score are analysed ({len(data.dt_scores)} of "
                     f"{data.num_results})")
    if not mode.coco_analyze:
        notes.append("optimal rescoring: each detection's score becomes its maximum OKS with the counted GT persons "
                     "(not crowd, with labelled keypoints) of its image")
    what = ("one per distinct set of corrected detections, the matchings at OKS 0.1 and those of the background "
            "steps, per area range" if mode.coco_analyze else f"one per distinct correction, and the matching at OKS "
            f"{MATCH_OKS}")
    notes.append(f"{scorer.runs} COCOeval passes with the {scorer.name} evaluator ({what})")
    analysis.mode = mode
    analysis.notes = list(dict.fromkeys(notes))
    analysis.counts = count_rows(labels.labels, schema, analysis.error_types, mode.coco_analyze)
    analysis.summary.update({
        "num_images": len(data.gt.dataset["images"]),
        "num_gt": int(data.gt_counted.sum()),
        "num_results": data.num_results,
        "num_analysed": len(data.dt_scores),
        "num_matched": len(analysis.pairs),
        "num_keypoints": int((labels.labels != NOT_LABELLED).sum()),
        "evaluator": scorer.name,
        "evaluations": scorer.runs,
    })
    return analysis


def analyze_run_errors(
    run_dir: str | Path, coco_analyze: bool = False, bootstrap: int | None = None, seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """`analyze_errors` for a run directory: its detections store read once, as arrays (as `kpbench evaluate
    RUN_DIR` reads it, and checked the same way), its ground_truth.json and the schema its manifest records. No
    results records are made (pycocotools, as `evaluator`, gets its own)."""
    from kpbench.evaluation.runeval import finished_run_arrays, load_run_ground_truth, run_checked_detections
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)
    gt = load_run_ground_truth(run_dir, ["keypoints"])
    check_bootstrap_memory(bootstrap, seed, gt["keypoints"])  # before the store is read
    arrays = finished_run_arrays(run_dir, manifest)
    checked = run_checked_detections(run_dir, arrays, gt)["keypoints"]
    return analyze_errors(gt["keypoints"], checked, coco_analyze=coco_analyze, bootstrap=bootstrap, seed=seed,
                          evaluator=evaluator)
