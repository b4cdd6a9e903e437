"""How far a runtime's outputs are from eager's on the same images: ΔAP with the paired bootstrap interval that
`kpbench compare` computes (kpbench.analysis.bootstrap.compare_results: the same image draws for both, so the
interval is on the difference), the largest keypoint, box and score deviations of the detections both give, and
whether the preprocessing was the same (the padded input shapes that reached the network, image by image).

Detections are paired per image greedily, as COCOeval pairs a detection with a GT: eager's detections in
descending score each take the not yet paired runtime detection of highest box IoU, if that IoU is at least
`PAIR_IOU`. A detection left unpaired on either side is counted (`unpaired_detections`), not measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.engine.speed_accuracy import RUNTIME_ACCURACY_COLUMNS, SAME_PREPROCESSING

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.runs.detections import ImageDetections

PAIR_IOU = 0.5
__all__ = [
    "PAIR_IOU", "RUNTIME_ACCURACY_COLUMNS", "SAME_PREPROCESSING", "delta_ap", "deviations", "pair_detections",
    "preprocessing_note", "runtime_accuracy_columns",
]  # fmt: skip


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes, (len(a), len(b))."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pair_detections(reference: ImageDetections, candidate: ImageDetections) -> list[tuple[int, int]]:
    """(reference index, candidate index) pairs of one image (see the module docstring)."""
    iou = _box_iou(reference.boxes, candidate.boxes)
    taken = np.zeros(len(candidate), dtype=bool)
    pairs = []
    for i in np.argsort(-reference.scores, kind="stable"):
        if not len(candidate):
            break
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= PAIR_IOU:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


def deviations(reference: Sequence[ImageDetections], candidate: Sequence[ImageDetections]) -> dict[str, Any]:
    """The largest keypoint (Euclidean, px), box (any coordinate, px) and person-score deviations over the paired
    detections of the same images, and how many detections were paired and left unpaired."""
    by_id = {d.image_id: d for d in candidate}
    kp = box = score = 0.0
    paired = unpaired = 0
    for ref in reference:
        cand = by_id.get(ref.image_id)
        if cand is None:
            unpaired += len(ref)
            continue
        pairs = pair_detections(ref, cand)
        paired += len(pairs)
        unpaired += len(ref) + len(cand) - 2 * len(pairs)
        if pairs:
            i, j = (np.asarray(x) for x in zip(*pairs))
            kp = max(kp, float(np.linalg.norm(ref.keypoints[i, :, :2] - cand.keypoints[j, :, :2], axis=-1).max()))
            box = max(box, float(np.abs(ref.boxes[i] - cand.boxes[j]).max()))
            score = max(score, float(np.abs(ref.scores[i] - cand.scores[j]).max()))
    missing = {d.image_id for d in candidate} - {d.image_id for d in reference}
    unpaired += sum(len(by_id[i]) for i in missing)
    measured = paired > 0
    return {
        "max_keypoint_dev_px": kp if measured else None, "max_box_dev_px": box if measured else None,
        "max_score_dev": score if measured else None, "paired_detections": paired, "unpaired_detections": unpaired,
    }  # fmt: skip


def preprocessing_note(reference: Sequence[ImageDetections], candidate: Sequence[ImageDetections]) -> str | None:
    """None when every image reached both networks with the same padded shape (or no shapes were recorded), else a
    note naming how many differ and the first difference."""
    shapes = {d.image_id: d.input_shape for d in reference}
    differ = [(shapes.get(d.image_id), d.input_shape) for d in candidate
              if d.input_shape is not None and shapes.get(d.image_id) is not None
              and tuple(d.input_shape) != tuple(shapes[d.image_id])]  # fmt: skip
    if not differ:
        return None
    ref, cand = differ[0]
    fmt = lambda s: "x".join(map(str, s))  # noqa: E731
    return (f"preprocessing differs from eager: {len(differ)} of {len(candidate)} images reached the network with "
            f"another padded shape (first: {fmt(cand)} where eager gave {fmt(ref)})")


def delta_ap(reference: EvalResult, candidate: EvalResult, replicates: int, seed: int) -> tuple[Any, Any, Any]:
    """candidate AP - reference AP and its paired bootstrap percentile interval (95%; None without replicates)."""
    if replicates < 1:
        return candidate.stats["AP"] - reference.stats["AP"], None, None
    from kpbench.analysis.bootstrap import compare_results

    row = next(r for r in compare_results(reference, candidate, replicates=replicates, seed=seed).rows
               if r["stat"] == "AP")
    return row["delta"], row["low"], row["high"]


def runtime_accuracy_columns(
    reference: dict[str, Any], candidate: dict[str, Any], replicates: int, seed: int, reference_label: str
) -> dict[str, Any]:
    """The RUNTIME_ACCURACY_COLUMNS of a runtime row against its eager reference. Each side is a dict with
    "detections" (ImageDetections of the same images), "keypoints" and "bbox" (their EvalResults), and optionally
    "preprocessing" (the runtime's own note on how its export preprocesses)."""
    out: dict[str, Any] = {"accuracy_reference": reference_label, "bootstrap_replicates": replicates}
    for key, iou_type in (("kp", "keypoints"), ("box", "bbox")):
        delta, low, high = delta_ap(reference[iou_type], candidate[iou_type], replicates, seed)
        out.update({f"delta_{key}_AP": delta, f"delta_{key}_AP_low": low, f"delta_{key}_AP_high": high})
    out.update(deviations(reference["detections"], candidate["detections"]))
    notes = [n for n in (candidate.get("preprocessing"),
                         preprocessing_note(reference["detections"], candidate["detections"])) if n]
    out["preprocessing"] = "; ".join(notes) if notes else SAME_PREPROCESSING
    return out
