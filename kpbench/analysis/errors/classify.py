"""Ronchi & Perona's classes of keypoint localisation errors (ICCV 2017): good, jitter, inversion, swap, miss.

For each detection matched to a GT person g and each keypoint j labelled in g (v > 0), the keypoint similarity
ks = exp(-e), e = d² / ((2σ_j)² · 2 · (area + eps)) (the OKS term, `kpbench.evaluation.oks`), is computed against
four references: (a) g's keypoint j; (b) g flipped, g's keypoint flip(j) (the schema's flip pairs; a keypoint
without a partner, such as the nose, is its own); (c) every other annotation g' of the image, keypoint j, with g''s
own area and visibility (an unlabelled reference keypoint gives ks 0); (d) every other annotation flipped. The best
reference (highest ks; a tie goes to (a), then (b), then the others) labels the keypoint:

    good       best is (a), ks >= 0.85          jitter  best is (a), 0.5 <= ks < 0.85
    inversion  best is (b), ks >= 0.5           swap    best is (c) or (d), ks >= 0.5
    miss       best ks < 0.5

Flipped references use keypoint j's sigma (left/right partners share their sigma in every built-in schema). A
schema without flip pairs has no inversions: references (b) and (d) are not formed. coco-analyze's boundaries and
tie order are options (`strict_good`, `others_before_flip`; see `coco_analyze_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpbench.analysis.errors.definitions import (
    CORRECT_KS,
    GOOD,
    GOOD_KS,
    INVERSION,
    JITTER,
    MISS,
    NOT_LABELLED,
    SWAP,
    UNCLASSIFIED,
)
from kpbench.analysis.errors.inputs import ErrorInputs, ImageIndex
from kpbench.evaluation.oks import paired_keypoint_similarity


def labelled_similarity(ref: np.ndarray, boxes: np.ndarray, areas: np.ndarray, dt: np.ndarray,
                         sigmas: np.ndarray) -> np.ndarray:
    """ks (P, K) of detections against aligned reference persons; 0 where the reference keypoint is unlabelled."""
    ks, _ = paired_keypoint_similarity(ref, boxes, areas, dt, sigmas)
    return np.where(ref[..., 2] > 0, ks, 0.0)





@dataclass
class KeypointLabels:
    """The class of every keypoint of every matched pair, and the similarities it was decided by."""

    labels: np.ndarray  # (P, K) int8: GOOD ... MISS, UNCLASSIFIED, NOT_LABELLED
    ks_matched: np.ndarray  # (P, K) ks to the matched GT's own keypoint (reference a)
    ks_best: np.ndarray  # (P, K) ks to the best reference
    best_reference: np.ndarray  # (P, K) 0: matched (a), 1: matched flipped (b), 2: another person (c or d)


def classify_keypoints(
    dt_keypoints: np.ndarray,
    matched: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_boxes: np.ndarray,
    gt_areas: np.ndarray,
    gt_image: np.ndarray,
    sigmas: np.ndarray,
    flip: np.ndarray | None,
    strict_good: bool = False,
    others_before_flip: bool = False,
) -> KeypointLabels:
    """Label each keypoint of P detections (P, K, 3), detection p matched to GT `matched[p]` (an index into the
    G GT arrays, all annotations of the images), as good, jitter, inversion, swap or miss (module docstring).

    `flip` is flip(j) per keypoint (None: no inversions). `strict_good` is coco-analyze's boundary: good is
    ks > 0.85, and ks exactly 0.85 is UNCLASSIFIED. Ties between references go to the matched person, then to
    its flip, then to the others; `others_before_flip` is coco-analyze's order: the matched person, the others
    unflipped, the matched person flipped, the others flipped.
    """
    matched = np.asarray(matched, dtype=np.int64)
    ref = gt_keypoints[matched]
    boxes, areas = gt_boxes[matched], gt_areas[matched]
    labelled = ref[..., 2] > 0
    ks_a = labelled_similarity(ref, boxes, areas, dt_keypoints, sigmas)
    ks_b = (labelled_similarity(ref[:, flip], boxes, areas, dt_keypoints, sigmas) if flip is not None
            else np.full(ks_a.shape, -np.inf))
    ks_c = np.full(ks_a.shape, -np.inf)  # the best other person, unflipped
    ks_d = np.full(ks_a.shape, -np.inf)  # ... flipped
    index = ImageIndex(gt_image)
    image = gt_image[matched]
    start, count = index.slots(image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        others = index.order[start[rows] + s]
        rows, others = rows[others != matched[rows]], others[others != matched[rows]]
        if not len(rows):
            continue
        other_ref = gt_keypoints[others]
        ks = labelled_similarity(other_ref, gt_boxes[others], gt_areas[others], dt_keypoints[rows], sigmas)
        ks_c[rows] = np.maximum(ks_c[rows], ks)
        if flip is not None:
            ks = labelled_similarity(other_ref[:, flip], gt_boxes[others], gt_areas[others], dt_keypoints[rows],
                                      sigmas)
            ks_d[rows] = np.maximum(ks_d[rows], ks)
    ks_other = np.maximum(ks_c, ks_d)
    is_a = (ks_a >= ks_b) & (ks_a >= ks_other)  # ties to the matched person
    # Then coco-analyze's argmax order (the others unflipped before the matched person flipped) or kpbench's.
    flip_first = (ks_b > ks_c) & (ks_b >= ks_d) if others_before_flip else ks_b >= ks_other
    is_b = ~is_a & flip_first
    best = np.where(is_a, ks_a, np.where(is_b, ks_b, ks_other))
    reference = np.where(is_a, 0, np.where(is_b, 1, 2)).astype(np.int8)
    labels = np.full(ks_a.shape, SWAP, dtype=np.int8)
    labels[is_b] = INVERSION
    good = ks_a > GOOD_KS if strict_good else ks_a >= GOOD_KS
    labels[is_a & good] = GOOD
    labels[is_a & (ks_a < GOOD_KS)] = JITTER
    if strict_good:
        labels[is_a & (ks_a == GOOD_KS)] = UNCLASSIFIED
    labels[best < CORRECT_KS] = MISS
    labels[~labelled] = NOT_LABELLED
    return KeypointLabels(labels=labels, ks_matched=ks_a, ks_best=best, best_reference=reference)


def classify_matches(data: ErrorInputs, pair_dt: np.ndarray, pair_gt: np.ndarray, sigmas: np.ndarray,
                     flip: np.ndarray | None, coco_analyze: bool = False) -> KeypointLabels:
    """`classify_keypoints` of the analysed detections `pair_dt` matched to the GT persons `pair_gt` (indices into
    `data`'s arrays), with coco-analyze's boundary and tie order when `coco_analyze`."""
    return classify_keypoints(data.dt_keypoints[pair_dt], pair_gt, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                              data.gt_image, sigmas, flip, strict_good=coco_analyze, others_before_flip=coco_analyze)
