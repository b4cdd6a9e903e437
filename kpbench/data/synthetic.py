"""Synthetic COCO person-keypoint ground truth and detections, for tests and benchmarks.

The scenes are plausible rather than pretty: each person is a box with 17 keypoints inside it, some persons have
no labelled keypoints, a few crowd regions appear, and detections are jittered copies of the GT (scaled by the
COCO sigmas, so OKS spreads over the whole 0.5:0.95 range), duplicates, and background false positives. Scores
are rounded so that ties occur, which is where evaluators tend to disagree.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from kpbench.core.schema import COCO17

PERSON_CATEGORY: dict[str, Any] = {
    "id": COCO17.category_id,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO17.keypoint_names),
    "skeleton": [list(pair) for pair in COCO17.skeleton],
}

# A rough upright pose in box-relative coordinates (x, y in [0, 1]) for the 17 COCO keypoints.
_TEMPLATE = np.array(
    [
        [0.50, 0.08], [0.46, 0.06], [0.54, 0.06], [0.42, 0.08], [0.58, 0.08], [0.35, 0.22], [0.65, 0.22],
        [0.28, 0.38], [0.72, 0.38], [0.25, 0.52], [0.75, 0.52], [0.40, 0.55], [0.60, 0.55], [0.40, 0.75],
        [0.60, 0.75], [0.40, 0.95], [0.60, 0.95],
    ]
)  # fmt: skip


def make_synthetic_coco(
    num_images: int = 20,
    persons_per_image: float = 2.2,
    detections_per_person: float = 3.0,
    labelled_fraction: float = 0.6,
    crowd_fraction: float = 0.01,
    width: int = 640,
    height: int = 480,
    score_decimals: int = 2,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO GT dict and a keypoint results list (no `bbox`, like torchvision's).

    Defaults give ~2.2 GT persons per image (60% with keypoints) and ~10 detections per image; val2017 scale is
    num_images=5000, which gives ~11,000 GT persons and ~50,000 detections.
    """
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    next_ann_id = 1
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"})
        for _ in range(rng.poisson(persons_per_image)):
            w = float(rng.uniform(30, 250))
            h = float(min(height - 2, w * rng.uniform(1.2, 2.5)))
            x = float(rng.uniform(0, width - w))
            y = float(rng.uniform(0, height - h))
            area = round(w * h * float(rng.uniform(0.4, 0.7)), 2)
            crowd = bool(rng.random() < crowd_fraction)
            labelled = (not crowd) and rng.random() < labelled_fraction
            points = _TEMPLATE * [w, h] + [x, y] + rng.normal(0, 0.03, (COCO17.num_keypoints, 2)) * [w, h]
            points = np.round(points, 2)
            visibility = np.where(rng.random(COCO17.num_keypoints) < 0.8, 2, 0) if labelled else np.zeros(COCO17.num_keypoints)
            if labelled and not visibility.any():
                visibility[0] = 2
            kps = np.concatenate([points * (visibility[:, None] > 0), visibility[:, None]], axis=1)
            annotations.append(
                {
                    "id": next_ann_id,
                    "image_id": image_id,
                    "category_id": COCO17.category_id,
                    "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                    "area": area,
                    "iscrowd": int(crowd),
                    "num_keypoints": int((visibility > 0).sum()),
                    "keypoints": [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps.reshape(-1))],
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
            next_ann_id += 1
            if crowd:
                continue
            for _ in range(rng.poisson(detections_per_person * 0.8)):
                noise = rng.normal(0, 1, (COCO17.num_keypoints, 2)) * (2 * COCO17.sigma_array[:, None]) * np.sqrt(area)
                jitter = float(rng.uniform(0.2, 2.5))
                pred = points + noise * jitter
                score = float(np.clip(1.0 - 0.3 * jitter + rng.normal(0, 0.1), 0.01, 1.0))
                results.append(_result(image_id, pred, score, score_decimals))
        for _ in range(rng.poisson(detections_per_person * 0.7)):
            bw, bh = rng.uniform(20, 150), rng.uniform(40, 250)
            bx, by = rng.uniform(0, width - bw), rng.uniform(0, height - bh)
            pred = _TEMPLATE * [bw, bh] + [bx, by] + rng.normal(0, 5, (COCO17.num_keypoints, 2))
            results.append(_result(image_id, pred, float(rng.uniform(0.01, 0.6)), score_decimals))
    gt = {
        "info": {"description": "kpbench synthetic COCO keypoints", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [copy.deepcopy(PERSON_CATEGORY)],  # a copy: callers may edit their GT
    }
    return gt, results


def _result(image_id: int, points: np.ndarray, score: float, decimals: int) -> dict[str, Any]:
    flat = np.concatenate([np.round(points, 2), np.ones((COCO17.num_keypoints, 1))], axis=1).reshape(-1)
    return {
        "image_id": image_id,
        "category_id": COCO17.category_id,
        "keypoints": [float(v) for v in flat],
        "score": round(score, decimals),
    }
