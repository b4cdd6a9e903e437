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
- `frac_ks_50`, `frac_ks_75`: fraction with similarity >= 0.50 and >= 0.75;
- `median_error`: median of d / sqrt(area), the error in units of the person's scale.

The `all` row pools all keypoints of all matched pairs.
"""


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
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
) -> list[dict[str, Any]]:
    """The per-keypoint table (one row per keypoint of the evaluation's schema, in its order, then "all") for one
    keypoints evaluation, with the schema's sigmas.

    `gt` and `results` must be what `eval_result` was computed from (paths, parsed data or validated objects).
    """
    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    with warnings.catch_warnings():
        # evaluate() has already warned about these inputs (e.g. a renumbered id 0); loading them again
        # renumbers the same way, so the matched ids still agree.
        warnings.simplefilter("ignore")
        gt_data = load_ground_truth(gt, "keypoints", eval_result.schema)
        res = load_results(results, gt_data, "keypoints").results
    schema = gt_data.schema
    assert schema is not None  # a keypoints GroundTruth always has one
    if len(res) != eval_result.num_results:
        raise KpbenchError(
            f"results: {len(res)} detections, but the evaluation saw {eval_result.num_results} (not the same file?)"
        )
    anns = {a["id"]: a for a in gt_data.dataset["annotations"]}
    pairs = matched_pairs(eval_result)
    gts = [anns[g] for _, g in pairs]
    gt_kps = np.array([g["keypoints"] for g in gts], dtype=np.float64).reshape(-1, schema.num_keypoints, 3)
    dt_kps = np.array([res[d - 1]["keypoints"] for d, _ in pairs], dtype=np.float64).reshape(-1, schema.num_keypoints, 3)
    areas = np.array([g["area"] for g in gts], dtype=np.float64)
    boxes = np.array([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4)
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


def write_keypoint_breakdown(out_dir: str | Path, rows: Sequence[dict[str, Any]], plot: bool = True) -> list[Path]:
    """Write keypoints.csv, keypoints.md (the table and its definitions) and keypoints.png into out_dir."""
    out = Path(out_dir)
    paths = atomic_write_files({
        out / f"{STEM}.csv": to_csv(rows, COLUMNS),
        out / f"{STEM}.md": "## Per-keypoint breakdown\n\n" + MARKDOWN_NOTE + "\n" + to_markdown(rows, COLUMNS),
    })
    if plot:
        from kpbench.report.figures import plot_keypoint_breakdown

        paths.append(plot_keypoint_breakdown(rows, out / f"{STEM}.png", match_oks=MATCH_OKS))
    return paths


def keypoints_for_run(
    run_dir: str | Path, eval_result: EvalResult | None = None, write: bool = True
) -> list[dict[str, Any]]:
    """The breakdown of a run directory, written as RUN_DIR/keypoints.csv/.md/.png (unless `write` is False).

    Like `kpbench evaluate --run` and `kpbench thresholds`, it scores the run from its detections cache (every
    image the manifest lists must be cached: an incomplete run is an error, never a stale keypoints_results.json)
    and its ground_truth.json. `eval_result`, when given, must be the keypoints evaluation of those results (saves
    evaluating again, as `kpbench run` does); without one, or with one from a backend that exposes no matching
    (hotcoco), the run is evaluated here with pycocotools.
    """
    from kpbench.evaluation.cocoeval import evaluate
    from kpbench.evaluation.runeval import finished_run_detections, load_run_ground_truth, run_results
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)  # a clear error for a folder that is not a run
    ordered = finished_run_detections(run_dir, manifest)
    gt = load_run_ground_truth(run_dir, ["keypoints"])
    results = run_results(run_dir, ordered, gt)["keypoints"]
    if eval_result is not None and eval_result.image_evals is None:
        # Only pycocotools exposes the per-image matching used here: say so rather than switch in silence.
        from kpbench.core.errors import KpbenchWarning
        from kpbench.evaluation.cocoeval import pycocotools_for_matches_note

        warnings.warn(pycocotools_for_matches_note("the per-keypoint breakdown", eval_result.backend), KpbenchWarning,
                      stacklevel=2)
        eval_result = None
    if eval_result is None:
        eval_result = evaluate(gt["keypoints"], results, iou_type="keypoints")
    rows = keypoint_breakdown(eval_result, gt["keypoints"], results)
    if write:
        write_keypoint_breakdown(run_dir, rows)
    return rows
