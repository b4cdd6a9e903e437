"""Per-keypoint breakdown: which joints lose the most, measured on the detections COCOeval matched.

Pairs: every (detection, GT person) pair that COCOeval's own matching (pycocotools' evaluateImg) made at
OKS >= 0.50, area range "all", within the top 20 detections per image; pairs with an ignored GT (crowd, or no
labelled keypoints) are left out. For each pair, only the GT keypoints labelled in COCO (v > 0, "visible" in this
report; exactly the terms OKS averages over) count. Per keypoint type, over those keypoints:

- ``n``: how many there are;
- ``mean_similarity``: the mean keypoint similarity ks = exp(-d^2 / (2 s^2 k^2)), d the Euclidean distance in
  pixels between the predicted and the GT keypoint, s^2 the GT person's `area` and k = 2 sigma the keypoint's
  COCO constant (the per-keypoint term of OKS, from `kpbench.evaluation.oks.keypoint_similarity`);
- ``frac_ks_50`` and ``frac_ks_75``: the fraction with ks >= 0.50 and with ks >= 0.75;
- ``median_error``: the median of d / sqrt(area), the distance normalised by the person's scale s =
  sqrt(GT area), the scale OKS uses (0.1 means a tenth of the person's scale). A GT person of area 0 has no
  scale: its keypoints count in the other columns only.

The "all" row pools every keypoint of every pair (it is not the mean of the 17 rows). An empty row (no matched
keypoint of that type) has n = 0 and NaN statistics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import atomic_write_files, to_csv, to_markdown
from kpbench.evaluation.oks import paired_keypoint_similarity

if TYPE_CHECKING:

    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.evaluation.cocofiles import GroundTruth, Results

COLUMNS: tuple[str, ...] = ("keypoint", "n", "mean_similarity", "frac_ks_50", "frac_ks_75", "median_error")
MATCH_OKS = 0.5
STEM = "keypoints"

MARKDOWN_NOTE = """\
Detections matched to a GT person by COCOeval at OKS >= 0.50 (area "all", top 20 per image; crowd and
unlabelled GT excluded); per keypoint type, over the GT keypoints labelled in COCO (v > 0):

- `n`: number of such GT keypoints;
- `mean_similarity`: mean keypoint similarity exp(-d² / (2 area k²)), the per-keypoint term of OKS
  (d: pixel distance between prediction and GT, area: the GT person's area, k = 2 sigma);
- `frac_ks_50`, `frac_ks_75`: fraction with similarity >= 0.50 and >= 0.75, in percent here (keypoints.csv keeps
  the fractions);
- `median_error`: median of d / sqrt(area), the error in units of the person's scale.

The `all` row pools all keypoints of all matched pairs.
"""
# The columns tables for people show in percent (one decimal); CSV and JSON keep the fractions.
PERCENT_COLUMNS: tuple[str, ...] = ("frac_ks_50", "frac_ks_75")
PERCENT_NOTE = "frac_ks_* in percent; mean_similarity in [0, 1]; median_error in units of sqrt(GT area)."


def matched_pairs(eval_result: EvalResult, oks: float = MATCH_OKS) -> list[tuple[int, int]]:
    """(detection id, GT annotation id) of every match COCOeval made at OKS threshold `oks`, area "all".

    Detection ids are pycocotools' 1-based positions in the results list. Matches to ignored GT are dropped.
    """
    from kpbench.evaluation.cocoeval import matched_pairs as coco_matches

    if eval_result.iou_type != "keypoints":
        raise KpbenchError(f"per-keypoint breakdown needs a keypoints evaluation, got {eval_result.iou_type!r}")
    pairs = coco_matches(eval_result, oks, "the per-keypoint breakdown")
    return list(zip(pairs.dt_ids.tolist(), pairs.gt_ids.tolist()))


def _stats(name: str, similarity: np.ndarray, error: np.ndarray) -> dict[str, Any]:
    """One row of the table from the similarities and normalised errors of one keypoint type (or all)."""
    n = int(similarity.size)
    scaled = error[~np.isnan(error)]  # NaN marks the keypoints of GT persons of area 0: no scale to divide by
    if n == 0:
        return {
            "keypoint": name,
            "n": 0,
            "mean_similarity": math.nan,
            "frac_ks_50": math.nan,
            "frac_ks_75": math.nan,
            "median_error": math.nan,
        }
    return {
        "keypoint": name,
        "n": n,
        "mean_similarity": float(np.mean(similarity)),
        "frac_ks_50": float(np.mean(similarity >= 0.5)),
        "frac_ks_75": float(np.mean(similarity >= 0.75)),
        "median_error": float(np.median(scaled)) if scaled.size else math.nan,
    }


def keypoint_breakdown(
    eval_result: EvalResult,
    gt: str | Path | dict[str, Any] | GroundTruth | None = None,
    results: str | Path | list[dict[str, Any]] | Results | None = None,
) -> list[dict[str, Any]]:
    """The per-keypoint table (one row per keypoint of the evaluation's schema, in its order, then "all") for one
    keypoints evaluation, with the schema's sigmas.

    `gt` and `results` must be what `eval_result` was computed from (paths, parsed data or validated objects);
    None reads the inputs the evaluation kept (as every evaluation by `kpbench.evaluate` does).
    """
    from kpbench.evaluation.arrays import detections_from_records, ground_truth_arrays
    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    if gt is None or results is None:
        gt_arrays, detections = eval_result.ground_truth_arrays(), eval_result.detection_arrays()
        schema = eval_result.schema
    else:
        with warnings.catch_warnings():
            # evaluate() has already warned about these inputs (e.g. a renumbered id 0); loading them again
            # renumbers the same way, so the matched ids still agree.
            warnings.simplefilter("ignore")
            gt_data = load_ground_truth(gt, "keypoints", eval_result.schema)
            res = load_results(results, gt_data, "keypoints").results
        schema = gt_data.schema
        assert schema is not None  # a keypoints GroundTruth always has one
        gt_arrays = ground_truth_arrays(gt_data.dataset, gt_data.source, schema.num_keypoints)
        detections = detections_from_records(res, "keypoints", schema.num_keypoints)
    assert schema is not None
    if len(detections) != eval_result.num_results:
        raise KpbenchError(
            f"results: {len(detections)} detections, but the evaluation saw {eval_result.num_results} (not the same "
            "file?)"
        )
    pairs = matched_pairs(eval_result)
    dt_index = np.asarray([d for d, _ in pairs], dtype=np.int64) - 1  # pycocotools numbers results from 1
    gt_order = np.argsort(gt_arrays.ann_ids, kind="stable")
    gts = gt_order[np.searchsorted(gt_arrays.ann_ids[gt_order], np.asarray([g for _, g in pairs], dtype=np.int64))]
    gt_kps = gt_arrays.keypoints[gts].reshape(-1, schema.num_keypoints, 3)  # type: ignore[index]
    dt_kps = detections.keypoints[dt_index].reshape(-1, schema.num_keypoints, 3)  # type: ignore[index]
    areas = gt_arrays.areas[gts]
    boxes = gt_arrays.boxes[gts].reshape(-1, 4)
    similarity, _ = paired_keypoint_similarity(gt_kps, boxes, areas, dt_kps, schema.sigma_array)
    with np.errstate(over="ignore"):  # keypoints far out (1e308): an infinite error, rightly
        distance = np.hypot(*(dt_kps[..., :2] - gt_kps[..., :2]).transpose(2, 0, 1))
    scale = np.sqrt(areas)[:, None]
    error = np.divide(distance, scale, out=np.full(distance.shape, np.nan), where=scale > 0)
    visible = gt_kps[..., 2] > 0
    rows = [
        _stats(name, similarity[visible[:, k], k], error[visible[:, k], k]) for k, name in enumerate(schema.keypoint_names)
    ]
    rows.append(_stats("all", similarity[visible], error[visible]))
    return rows


def rows_in_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The breakdown as tables for people show it: frac_ks_* in percent with one decimal ("n/a" for an empty
    row's NaN); the other columns unchanged. CSV and JSON keep the rows as they are."""
    def shown(value: Any) -> Any:
        return "n/a" if isinstance(value, float) and math.isnan(value) else f"{100 * value:.1f}"

    return [{k: (shown(v) if k in PERCENT_COLUMNS else v) for k, v in row.items()} for row in rows]


def breakdown_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """keypoints.md (and `kpbench keypoints --format markdown`): the table for people, with its definitions."""
    return ("## Per-keypoint breakdown\n\n" + MARKDOWN_NOTE + "\n" + to_markdown(rows_in_percent(rows), COLUMNS)
            + f"\n{PERCENT_NOTE}\n")


def write_keypoint_breakdown(out_dir: str | Path, rows: Sequence[dict[str, Any]], plot: bool = True) -> list[Path]:
    """Write keypoints.csv (fractions), keypoints.md (the table in percent and its definitions) and keypoints.png
    into out_dir."""
    out = Path(out_dir)
    paths = atomic_write_files({
        out / f"{STEM}.csv": to_csv(rows, COLUMNS),
        out / f"{STEM}.md": breakdown_markdown(rows),
    })
    if plot:
        from kpbench.report.figures import plot_keypoint_breakdown

        paths.append(plot_keypoint_breakdown(rows, out / f"{STEM}.png", match_oks=MATCH_OKS))
    return paths


def keypoints_for_run(
    run_dir: str | Path, eval_result: EvalResult | None = None, write: bool = True
) -> list[dict[str, Any]]:
    """The breakdown of a run directory, written as RUN_DIR/keypoints.csv/.md/.png (unless `write` is False).

    Like `kpbench evaluate RUN_DIR` and `kpbench thresholds`, it scores the run from its detections store (every
    image the manifest lists must be cached: an incomplete run is an error, never a stale keypoints_results.json)
    and its ground_truth.json. `eval_result`, when given, must be the run's keypoints evaluation (as `kpbench run`
    hands over: then nothing is read again); one without per-image matches (hotcoco) is redone on the default
    backend, with a warning.
    """
    from kpbench.evaluation.cocoeval import with_matches
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    read_manifest(run_dir)  # a clear error for a folder that is not a run
    if eval_result is None:
        from kpbench.evaluation.runeval import evaluate_run

        eval_result = evaluate_run(run_dir, write=False)["keypoints"]
    eval_result, notes = with_matches(eval_result, "the per-keypoint breakdown")
    for note in notes:  # say so rather than switch in silence
        from kpbench.core.errors import KpbenchWarning

        warnings.warn(note, KpbenchWarning, stacklevel=2)
    rows = keypoint_breakdown(eval_result)
    if write:
        write_keypoint_breakdown(run_dir, rows)
    return rows
