"""MediaPipe BlazePose (Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", CVPR-W 2020) as a
kpbench model: `--model mediapipe` (the `kpbench[mediapipe]` extra, `mediapipe==0.10.21`, which bundles the "full"
pose landmark model).

BlazePose finds **one person per image** and gives 33 landmarks. kpbench maps them to COCO's 17 by index
(`BLAZEPOSE_TO_COCO`: nose, eyes (the centre ones), ears, shoulders, elbows, wrists, hips, knees, ankles). On
crowded images one person per image is a ceiling on AP: every other person is a miss.

- keypoints: the landmarks' normalised x, y times the image's width and height;
- keypoint scores: each landmark's `visibility`, a probability in [0, 1];
- person score: the mean visibility of the 17 mapped landmarks (BlazePose gives no person score of its own once a
  person is tracked; visibility is its estimate that the landmark is in view and unoccluded);
- box: the extent of all 33 landmarks, clipped to the image.

mediapipe 0.10.21 pins numpy < 2 (and pulls jax and opencv), so it needs its own environment:
`python -m venv mp && mp/bin/pip install -e ".[mediapipe]"`. The mapping and the scores are plain numpy
(`landmarks_to_predictions`), tested on recorded BlazePose outputs without mediapipe installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.models.base import ModelInfo, Predictions

# BlazePose landmark index of each COCO keypoint, in COCO's order.
BLAZEPOSE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
NUM_LANDMARKS = 33
SETTINGS = {"static_image_mode": True, "model_complexity": 1, "min_detection_confidence": 0.5}
MEDIAPIPE_MISSING = ("--model mediapipe: mediapipe is not installed; it pins numpy < 2, so give it its own "
                     "environment: python -m venv mp && mp/bin/pip install -e '.[mediapipe]'")


def landmarks_to_predictions(landmarks: Any, width: int, height: int) -> Predictions:
    """One image's Predictions from BlazePose's landmarks, an array (33, 4) of normalised x, y, z and visibility
    (or None when no person was found)."""
    if landmarks is None:
        empty = np.zeros((0, COCO17.num_keypoints))
        return Predictions(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, 17, 3)),
                           keypoint_scores=empty, keypoint_score_kind="probability")
    marks = np.asarray(landmarks, dtype=np.float64)
    if marks.shape != (NUM_LANDMARKS, 4):
        raise KpbenchError(f"BlazePose landmarks: expected shape (33, 4) (x, y, z, visibility), got {marks.shape}")
    xy = marks[:, :2] * np.array([width, height], dtype=np.float64)
    visibility = marks[:, 3]
    coco = xy[list(BLAZEPOSE_TO_COCO)]
    scores = visibility[list(BLAZEPOSE_TO_COCO)]
    x0, y0 = np.clip(xy.min(axis=0), 0, [width, height])
    x1, y1 = np.clip(xy.max(axis=0), 0, [width, height])
    return Predictions(
        boxes=np.array([[x0, y0, x1, y1]]),
        scores=np.array([float(scores.mean())]),
        keypoints=np.concatenate([coco, np.ones((len(coco), 1))], axis=1)[None],
        keypoint_scores=scores[None].copy(),
        keypoint_score_kind="probability",
    )


class MediaPipePoseModel:
    """BlazePose "full" through mediapipe.solutions.pose, one person per image."""

    schema: KeypointSchema = COCO17
    input_format = "numpy"

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ImportError:
            raise KpbenchError(MEDIAPIPE_MISSING) from None
        self._version = getattr(mp, "__version__", "?")
        self._pose = mp.solutions.pose.Pose(**SETTINGS)

    def info(self) -> ModelInfo:
        return ModelInfo(
            weights="pose_landmark_full.tflite", source="mediapipe", name="blazepose-full",
            protocol="MediaPipe Pose (BlazePose full), static images, one person per image",
            keypoint_score_kind="probability",
            extra={"protocol": dict(SETTINGS), "mediapipe": self._version,
                   "deviations": ["one person per image (BlazePose): every other person is a miss, an AP ceiling "
                                  "on crowded images"]},
        )  # fmt: skip

    def predict(self, images: Sequence[np.ndarray]) -> list[Predictions]:
        out = []
        for image in images:
            rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
            found = self._pose.process(rgb).pose_landmarks
            marks = None if found is None else [[p.x, p.y, p.z, p.visibility] for p in found.landmark]
            out.append(landmarks_to_predictions(marks, rgb.shape[1], rgb.shape[0]))
        return out
