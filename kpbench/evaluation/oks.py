"""Object keypoint similarity (OKS), vectorised over all ground truths and detections of an image.

OKS (Ronchi & Perona, ICCV 2017; COCO keypoint evaluation) between a detection d and a ground truth g is

    OKS = sum_i exp(-e_i) [v_i > 0] / sum_i [v_i > 0],   e_i = (dx_i^2 + dy_i^2) / (2 s^2 k_i^2)

with s^2 the GT `area` (plus machine epsilon, as pycocotools does), k_i = 2 sigma_i, and only the labelled
(v > 0) GT keypoints counted. A GT with no labelled keypoints is measured, over all keypoints, by each predicted
keypoint's distance to the GT box enlarged by its width and height on every side (zero inside it). The
operations below follow pycocotools' `computeOks` term by term so that the results agree to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kpbench.core.schema import COCO17

# Without sigmas, COCO's (coco17): these functions are pycocotools' computeOks, whose default that is.
COCO_SIGMAS = COCO17.sigma_array


def _as_keypoints(rows: Sequence[Sequence[float]] | np.ndarray, num_keypoints: int) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float64)
    return arr.reshape(len(arr), num_keypoints, 3) if arr.size else np.zeros((len(arr), num_keypoints, 3))


def _exponents(
    gt_keypoints: np.ndarray, gt_boxes: np.ndarray, gt_areas: np.ndarray, dt_keypoints: np.ndarray, sigmas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exponent e (..., K) and the mask of counted terms, for GT and detection arrays that broadcast together:
    gt_keypoints (..., K, 3), gt_boxes (..., 4) xywh, gt_areas (...), dt_keypoints (..., K, 3)."""
    variances = (sigmas * 2) ** 2
    xg, yg, vg = gt_keypoints[..., 0], gt_keypoints[..., 1], gt_keypoints[..., 2]
    xd, yd = dt_keypoints[..., 0], dt_keypoints[..., 1]
    labelled = vg > 0
    has_labels = labelled.any(axis=-1, keepdims=True)

    # GTs without labelled keypoints: distance to the box enlarged by one box size on every side.
    x0 = (gt_boxes[..., 0] - gt_boxes[..., 2])[..., None]
    x1 = (gt_boxes[..., 0] + gt_boxes[..., 2] * 2)[..., None]
    y0 = (gt_boxes[..., 1] - gt_boxes[..., 3])[..., None]
    y1 = (gt_boxes[..., 1] + gt_boxes[..., 3] * 2)[..., None]
    zero = np.zeros(())
    box_dx = np.maximum(zero, x0 - xd) + np.maximum(zero, xd - x1)
    box_dy = np.maximum(zero, y0 - yd) + np.maximum(zero, yd - y1)
    # Keypoints far out (1e308 is valid JSON) square to inf: e = inf is the right limit (similarity 0), so
    # numpy's overflow warning would only be noise.
    with np.errstate(over="ignore"):
        dx = np.where(has_labels, xd - xg, box_dx)
        dy = np.where(has_labels, yd - yg, box_dy)
        e = (dx**2 + dy**2) / variances / (gt_areas[..., None] + np.spacing(1)) / 2
    counts = np.where(has_labels, labelled, True)
    return e, np.broadcast_to(counts, e.shape)


def keypoint_errors(
    gt_keypoints: np.ndarray,
    gt_boxes: np.ndarray,
    gt_areas: np.ndarray,
    dt_keypoints: np.ndarray,
    sigmas: np.ndarray = COCO_SIGMAS,
) -> tuple[np.ndarray, np.ndarray]:
    """The exponent e (D, G, K) of every detection/GT/keypoint triple, and which terms count (D, G, K).

    gt_keypoints: (G, K, 3); gt_boxes: (G, 4) xywh; gt_areas: (G,); dt_keypoints: (D, K, 3).
    """
    return _exponents(gt_keypoints[None], gt_boxes[None], gt_areas[None], dt_keypoints[:, None], sigmas)


def _inputs(
    gt_keypoints: Any, gt_boxes: Any, gt_areas: Any, dt_keypoints: Any, num_keypoints: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        _as_keypoints(gt_keypoints, num_keypoints),
        np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(gt_areas, dtype=np.float64).reshape(-1),
        _as_keypoints(dt_keypoints, num_keypoints),
    )


def keypoint_similarity(
    gt_keypoints: Any, gt_boxes: Any, gt_areas: Any, dt_keypoints: Any, sigmas: np.ndarray = COCO_SIGMAS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-keypoint similarity exp(-e) as (D, G, K), and the mask of terms OKS averages over."""
    e, counts = keypoint_errors(*_inputs(gt_keypoints, gt_boxes, gt_areas, dt_keypoints, len(sigmas)), sigmas)
    return np.exp(-e), counts


def paired_keypoint_similarity(
    gt_keypoints: Any, gt_boxes: Any, gt_areas: Any, dt_keypoints: Any, sigmas: np.ndarray = COCO_SIGMAS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-keypoint similarity (P, K) of detection i with GT i (P aligned pairs, e.g. COCOeval's matches), and
    the mask of terms OKS averages over: the diagonal of `keypoint_similarity` without its (P, P, K) grid."""
    gt_kps, boxes, areas, dt_kps = _inputs(gt_keypoints, gt_boxes, gt_areas, dt_keypoints, len(sigmas))
    if len(gt_kps) != len(dt_kps):
        raise ValueError(f"{len(gt_kps)} GT persons and {len(dt_kps)} detections: pairs must align one to one")
    e, counts = _exponents(gt_kps, boxes, areas, dt_kps, sigmas)
    return np.exp(-e), counts


def compute_oks(
    gt_keypoints: Any, gt_boxes: Any, gt_areas: Any, dt_keypoints: Any, sigmas: np.ndarray = COCO_SIGMAS
) -> np.ndarray:
    """The OKS matrix (D, G) between D detections and G ground truths of one image (pycocotools' layout).

    Inputs are COCO flat keypoint lists (or arrays) of length 3K, GT boxes in xywh and GT areas.
    """
    similarity, counts = keypoint_similarity(gt_keypoints, gt_boxes, gt_areas, dt_keypoints, sigmas)
    if similarity.size == 0:
        return np.zeros(similarity.shape[:2])
    return np.sum(np.where(counts, similarity, 0.0), axis=2) / counts.sum(axis=2)


def compute_oks_for_annotations(
    gts: Sequence[dict[str, Any]], dts: Sequence[dict[str, Any]], sigmas: np.ndarray = COCO_SIGMAS
) -> np.ndarray:
    """OKS (D, G) from COCO annotation and result dicts (as in a GT file and a results file)."""
    return compute_oks(
        [g["keypoints"] for g in gts],
        [g["bbox"] for g in gts],
        [g["area"] for g in gts],
        [d["keypoints"] for d in dts],
        sigmas,
    )
