"""The corrections of the error analysis, on copies of the detections: keypoints moved (kpbench's rule or
coco-analyze's), scores replaced by the best OKS with a GT person (optimal rescoring), and coco-analyze's soft-NMS
of those scores.

kpbench's rule (keypoint scores untouched; only keypoints labelled in the matched GT): a jitter is moved along the
line towards g_j until ks = 0.85, a miss until ks = 0.5; an inversion and a swap are moved onto g_j (ks = 1).
coco-analyze's rule moves the keypoint to (g_x + r, g_y), r = sqrt(-ln(k) · 2 · area · σ²) (see
`coco_analyze_mode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kpbench.analysis.errors.classify import KeypointLabels
from kpbench.analysis.errors.definitions import (
    CORRECT_KS,
    GOOD_KS,
    INVERSION,
    JITTER,
    LABEL_OF,
    LOCALISATION_FIXES,
    MISS,
    SOFT_NMS_SIGMA,
    SWAP,
    ErrorMode,
)
from kpbench.analysis.errors.inputs import ErrorInputs, ImageIndex
from kpbench.core.errors import KpbenchError
from kpbench.evaluation.oks import paired_keypoint_similarity


def correct_keypoints(
    dt_keypoints: np.ndarray,
    labels: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_areas: np.ndarray,
    sigmas: np.ndarray,
    fixes: Sequence[str],
    mode: ErrorMode | None = None,
    ks_best: np.ndarray | None = None,
) -> np.ndarray:
    """A corrected copy of P matched detections (P, K, 3) for the error types in `fixes` ("miss", "swap",
    "inversion", "jitter"), against the matched GT persons aligned with them (gt_keypoints (P, K, 3), gt_areas
    (P,)). Keypoint scores (the third column) and unlisted keypoints are unchanged.

    kpbench's rule: a jitter (miss) keypoint moves along the line towards the GT keypoint to the distance r at
    which ks = exp(-r² / ((2σ)² · 2 · (area + eps))) = 0.85 (0.5); an inversion or a swap moves onto the GT
    keypoint. coco-analyze's rule (`mode.coco_analyze`): the keypoint moves to (g_x + r, g_y) with
    r = sqrt(-ln(k) · 2 · area · σ²), k = 0.85 (jitter), 0.5 (miss) or, for an inversion or a swap, its ks with
    its best reference (`ks_best` (P, K), `KeypointLabels.ks_best`), nudged off 0 and 1 by machine epsilon.
    """
    mode = mode or ErrorMode()
    unknown = set(fixes) - set(LOCALISATION_FIXES)
    if unknown:
        raise KpbenchError(f"unknown keypoint correction(s) {sorted(unknown)}; known: {', '.join(LOCALISATION_FIXES)}")
    out = np.array(dt_keypoints, dtype=np.float64, copy=True)
    target_xy = gt_keypoints[..., :2]
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if mode.coco_analyze:
        move = np.isin(labels, [LABEL_OF[f] for f in fixes])
        if not move.any():
            return out
        if ks_best is None and any(f in ("swap", "inversion") for f in fixes):
            raise KpbenchError("coco-analyze's swap and inversion corrections need each keypoint's best ks (ks_best)")
        out[..., :2][move] = _coco_analyze_targets(labels, ks_best, gt_keypoints, gt_areas, sigmas)[move]
        return out
    onto = np.isin(labels, [LABEL_OF[f] for f in fixes if f in ("swap", "inversion")])
    out[..., :2][onto] = target_xy[onto]
    variance = (sigmas * 2) ** 2
    for name, target in (("jitter", GOOD_KS), ("miss", CORRECT_KS)):
        if name not in fixes:
            continue
        move = labels == LABEL_OF[name]
        if not move.any():
            continue
        # The radius at which ks reaches the target, per keypoint of each pair (the same eps as the OKS term).
        radius = np.sqrt(-math.log(target) * variance[None, :] * 2 * (gt_areas[:, None] + np.spacing(1)))
        delta = out[..., :2] - target_xy
        distance = np.hypot(delta[..., 0], delta[..., 1])
        # Only ever closer: a keypoint already within the radius (not possible for these labels) stays put.
        move &= distance > radius
        factor = np.divide(radius, distance, out=np.ones_like(distance), where=move)
        moved = target_xy + delta * factor[..., None]
        out[..., :2][move] = moved[move]
    return out


def corrected_detections(data: ErrorInputs, pair_dt: np.ndarray, pair_gt: np.ndarray, labels: KeypointLabels,
                         sigmas: np.ndarray, fixes: Sequence[str], mode: ErrorMode | None = None) -> np.ndarray:
    """The analysed detections' keypoints (N, K, 3) with `correct_keypoints` applied to the matched pairs
    (`pair_dt` detections matched to the GT persons `pair_gt`, classified as `labels`); the others unchanged."""
    out = data.dt_keypoints.copy()
    out[pair_dt] = correct_keypoints(data.dt_keypoints[pair_dt], labels.labels, data.gt_keypoints[pair_gt],
                                     data.gt_areas[pair_gt], sigmas, fixes, mode, labels.ks_best)
    return out


def _coco_analyze_targets(labels: np.ndarray, ks_best: np.ndarray | None, gt_keypoints: np.ndarray,
                          gt_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """coco-analyze's corrected position (P, K, 2) of every jitter, miss, inversion and swap keypoint (others: the
    GT keypoint), in its operations and their order (cocoanalyze.py, _find_kpt_errors)."""
    areas = np.asarray(gt_areas, dtype=np.float64)
    variance = sigmas**2
    radius = np.zeros(labels.shape)
    for code, target in ((JITTER, GOOD_KS), (MISS, CORRECT_KS)):
        r = np.sqrt((-np.log(target) * 2 * areas)[:, None] * variance)
        radius = np.where(labels == code, r, radius)
    onto = (labels == SWAP) | (labels == INVERSION)
    if ks_best is not None and onto.any():
        eps = np.spacing(1)
        best = np.where(ks_best == 0, eps, np.where(ks_best == 1, 1 - eps, np.clip(ks_best, 0.0, 1.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt(-np.log(best) * 2 * areas[:, None] * variance)
        radius = np.where(onto, r, radius)
    out = np.array(gt_keypoints[..., :2], dtype=np.float64, copy=True)
    out[..., 0] += radius
    return out


def optimal_scores(
    dt_keypoints: np.ndarray, dt_image: np.ndarray, gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
    gt_areas: np.ndarray, gt_image: np.ndarray, gt_counted: np.ndarray, sigmas: np.ndarray,
) -> np.ndarray:
    """Optimal rescoring: each detection's maximum OKS with the counted GT persons of its image (0 without one)."""
    best = np.zeros(len(dt_keypoints))
    index = ImageIndex(gt_image, gt_counted)
    start, count = index.slots(dt_image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        gts = index.order[start[rows] + s]
        ks, terms = paired_keypoint_similarity(gt_keypoints[gts], gt_boxes[gts], gt_areas[gts], dt_keypoints[rows],
                                               sigmas)
        oks = np.where(terms, ks, 0.0).sum(axis=1) / terms.sum(axis=1)
        best[rows] = np.maximum(best[rows], oks)
    return best


def soft_nms_scores(
    dt_image: np.ndarray, list_scores: np.ndarray, scores: np.ndarray, dt_keypoints: np.ndarray, sigmas: np.ndarray,
) -> np.ndarray:
    """coco-analyze's soft-NMS of the optimal scores (cocoanalyze.py, _soft_nms), every image at once.

    In each image the detections form a list, first ordered by `list_scores` (descending, stable: the results'
    order as COCOeval holds them). Repeatedly the list is stably sorted by descending current score, its first
    detection M is taken out, and every detection d left has its score multiplied by exp(-OKS(M, d)² / 0.5), with
    OKS the mean over all K keypoints of exp(-|d - M|² / ((2σ)² · 2 · (mean of the two keypoint-extent areas +
    eps))). `scores` are the starting scores (the best OKS with a GT), (N,) or several sets (S, N) on the same
    keypoints; returns the final ones, in the same shape.
    """
    n = len(dt_image)
    start = np.asarray(scores, dtype=np.float64)
    out = np.array(start.reshape(-1, n), copy=True)
    if n == 0:
        return out.reshape(start.shape)
    order = np.lexsort((np.arange(n), -np.asarray(list_scores, dtype=np.float64), dt_image))
    image_sorted = dt_image[order]
    position = np.arange(n) - np.searchsorted(image_sorted, image_sorted, side="left")
    _, image_row = np.unique(image_sorted, return_inverse=True)
    rows, width = int(image_row.max()) + 1, int(position.max()) + 1
    member = np.full((rows, width), -1, dtype=np.int64)
    member[image_row, position] = order
    valid = member >= 0
    factor = _soft_nms_factors(member, valid, dt_keypoints, sigmas)  # (I, D, D), symmetric
    everything = np.arange(rows)
    for s in range(len(out)):
        alive = valid.copy()
        score = np.where(valid, out[s][np.where(valid, member, 0)], 0.0)
        key = np.broadcast_to(np.arange(width, dtype=np.float64), (rows, width)).copy()  # the list order
        for _ in range(width):
            busy = alive.any(axis=1)
            if not busy.any():
                break
            # The stable sort by descending score: equal scores keep the list order; the taken-out go last.
            ranked = np.lexsort((key, np.where(alive, -score, np.inf)), axis=1)
            key[everything[:, None], ranked] = np.arange(width, dtype=np.float64)[None, :]
            m = ranked[:, 0]
            alive[everything, m] &= ~busy
            update = alive & busy[:, None]
            score = np.where(update, score * factor[everything, m], score)
        out[s][member[valid]] = score[valid]
    return out.reshape(start.shape)


def _soft_nms_factors(member: np.ndarray, valid: np.ndarray, dt_keypoints: np.ndarray, sigmas: np.ndarray,
                      chunk: int = 256) -> np.ndarray:
    """exp(-OKS(a, b)² / 0.5) for every two detections a, b of an image (I, D, D), in coco-analyze's operations:
    OKS is a numpy sum of the K terms over K, and its square a numpy scalar's, which numpy takes from the C
    library's pow (not always x · x, numpy's square of arrays): math.pow is that pow. The same floats either way
    round: (d - m)² = (m - d)², and the mean of the two areas adds them either way."""
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    k = len(variances)
    rows, width = member.shape
    safe = np.where(valid, member, 0)
    xs, ys = dt_keypoints[safe, :, 0], dt_keypoints[safe, :, 1]  # (I, D, K)
    area = (xs.max(axis=2) - xs.min(axis=2)) * (ys.max(axis=2) - ys.min(axis=2))
    oks = np.zeros((rows, width, width))
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, rows, chunk):
            part = slice(lo, lo + chunk)
            dx = xs[part, None, :, :] - xs[part, :, None, :]  # [i, m, d] = d - m
            dy = ys[part, None, :, :] - ys[part, :, None, :]
            mean_area = (0.5 * (area[part, :, None] + area[part, None, :])) + np.spacing(1)
            e = (dx**2 + dy**2) / variances / mean_area[..., None] / 2
            oks[part] = np.sum(np.ascontiguousarray(np.exp(-e)), axis=3) / k
    pairs = valid[:, :, None] & valid[:, None, :]
    i, a, b = np.nonzero(pairs & (np.arange(width)[:, None] < np.arange(width)[None, :]))
    squared = np.fromiter((math.pow(v, 2) for v in oks[i, a, b].tolist()), dtype=np.float64, count=len(i))
    factor = np.ones((rows, width, width))
    factor[i, a, b] = factor[i, b, a] = np.exp(-(squared / SOFT_NMS_SIGMA))
    return factor
