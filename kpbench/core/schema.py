"""COCO person-keypoint schema: names, skeleton, limbs, OKS sigmas and stat names."""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# COCO's `skeleton` exactly as in person_keypoints_*.json: 1-based keypoint index pairs.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

# The same links 0-based, for drawing.
LIMBS: tuple[tuple[int, int], ...] = tuple((a - 1, b - 1) for a, b in COCO_SKELETON)

# Per-keypoint OKS constants from Ronchi & Perona (ICCV 2017) as used by COCO. pycocotools writes them as
# literals divided by 10.0, which is not always the same double as the decimal literal (e.g. 1.07/10.0 !=
# 0.107), so we compute them the same way to stay bit-exact.
_SIGMA_LITERALS = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)  # fmt: skip
SIGMAS: np.ndarray = np.array(_SIGMA_LITERALS) / 10.0
SIGMAS.setflags(write=False)

PERSON_CATEGORY_ID = 1

KEYPOINT_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BBOX_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

# COCO keypoint evaluation keeps the top 20 detections per image (hard-coded in pycocotools' summarize()).
KEYPOINT_MAX_DETS = 20
BBOX_MAX_DETS: tuple[int, ...] = (1, 10, 100)


def stat_names(iou_type: str) -> tuple[str, ...]:
    """The summary stat names for an iou type ("keypoints" or "bbox")."""
    return KEYPOINT_STAT_NAMES if iou_type == "keypoints" else BBOX_STAT_NAMES


def is_id_value(value: object) -> bool:
    """A COCO id reference as pycocotools finds it: an integer, or a float that equals one (1.0 == 1 and
    hash(1.0) == hash(1)). Not a bool: True == 1 in Python, so a JSON true would silently refer to id 1."""
    return type(value) is int or (type(value) is float and value.is_integer())
