"""Accuracy in the speed table (`--accuracy N`): keypoint and box AP of a row's model, as set up for the row, on the
first N images, through the one inference loop (kpbench.engine.inference) and the same evaluator as `kpbench
run`; and, for a row on another runtime than eager, its distance from eager on the same images
(kpbench.analysis.runtime_accuracy: ΔAP with the paired bootstrap interval, the largest deviations, the
preprocessing). This is where a speed table ends, as evaluation ends a run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kpbench.engine.speed_variants import Variant

# The columns a runtime row gets from its comparison with eager (kpbench.analysis.runtime_accuracy fills them):
# defined here, with the table that carries them, so that the engine needs nothing from the analysis stage to
# name its columns.
RUNTIME_ACCURACY_COLUMNS: tuple[str, ...] = (
    "accuracy_reference", "delta_kp_AP", "delta_kp_AP_low", "delta_kp_AP_high", "delta_box_AP", "delta_box_AP_low",
    "delta_box_AP_high", "bootstrap_replicates", "max_keypoint_dev_px", "max_box_dev_px", "max_score_dev",
    "paired_detections", "unpaired_detections", "preprocessing",
)  # fmt: skip
# The `preprocessing` cell of a runtime row whose inputs reached the network exactly as eager's did.
SAME_PREPROCESSING = "same as eager"


def accuracy_pass(
    model: Any,
    paths: Sequence[Path],
    image_ids: Sequence[int],
    gt: dict[str, Any],
    device: torch.device,
    variant: Variant,
    progress: bool = False,
) -> dict[str, Any]:
    """The model (as set up now) over the images at `paths`, in the variant's dtype and batch: {"kp_AP", "box_AP",
    "detections" (ImageDetections, with each image's padded input shape), "keypoints", "bbox" (EvalResults)}.

    Images are decoded batch by batch; `image_ids` are their COCO ids and `gt` the full annotation dict.
    """
    from kpbench.core.progress import progress_bar
    from kpbench.data.coco import read_image_rgb_uint8, restrict_ground_truth
    from kpbench.engine.inference import BatchResult, inference_on_dataset
    from kpbench.evaluation.cocoeval import evaluate  # lazy: the timing path never needs the evaluation stack
    from kpbench.runs.detections import ImageDetections, to_coco_results

    starts = range(0, len(paths), variant.batch_size)
    bar = progress_bar(starts, desc="accuracy", unit="batch", leave=False, disable=not progress, file=sys.stderr)

    def batches() -> Iterator[tuple[Sequence[int], list[Any]]]:
        for start in bar:
            end = start + variant.batch_size
            yield image_ids[start:end], [read_image_rgb_uint8(p) for p in paths[start:end]]

    dets: list[ImageDetections] = []

    def keep(batch: BatchResult) -> None:
        dets.extend(batch.detections)

    inference_on_dataset(model, batches(), device, keep, dtype=variant.dtype)
    kp_results, box_results = to_coco_results(dets)
    subset = restrict_ground_truth(gt, image_ids)
    out: dict[str, Any] = {"detections": dets}
    for key, results, iou_type in (("kp_AP", kp_results, "keypoints"), ("box_AP", box_results, "bbox")):
        # The model's keypoint set scores its keypoints (its sigmas), as `kpbench run` scores them.
        schema = model.schema if iou_type == "keypoints" else None
        result = evaluate(subset, results, iou_type=iou_type, schema=schema)
        out[iou_type] = result
        out[key] = float(result.stats["AP"])  # no detections: 0
    return out


def evaluate_accuracy(
    model: Any, paths: Sequence[Path], image_ids: Sequence[int], gt: dict[str, Any], device: torch.device,
    variant: Variant, progress: bool = False,
) -> dict[str, float]:
    """Keypoint and box AP ({"kp_AP", "box_AP"}) of `accuracy_pass`."""
    measured = accuracy_pass(model, paths, image_ids, gt, device, variant, progress)
    return {"kp_AP": measured["kp_AP"], "box_AP": measured["box_AP"]}


def compare_with_eager(
    reference: dict[str, Any], candidate: dict[str, Any], replicates: int, seed: int, reference_label: str
) -> dict[str, Any]:
    """A runtime row's columns against eager's accuracy pass on the same images
    (kpbench.analysis.runtime_accuracy)."""
    from kpbench.analysis.runtime_accuracy import runtime_accuracy_columns

    return runtime_accuracy_columns(reference, candidate, replicates, seed, reference_label)
