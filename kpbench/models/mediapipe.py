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

Input size (`kpbench speed --sizes`, `set_input_size`): BlazePose resizes whatever it is given to its own
networks' inputs (224 x 224 detector, 256 x 256 landmarks), so a size here is the long side the image is resized to
(bilinear, aspect kept) before it is handed over; that resize is part of the model time, as Keypoint R-CNN's
transform is. Landmarks are normalised to the image, so they map back to the original image exactly as without a
resize. `kpbench run` passes images at their own size unless ``--min-size N`` is given, which sets that long side
(the same size as `speed --sizes`; recorded among the run's deviations). Its other run options are refused:
``--max-size`` has no counterpart, BlazePose's person score is no box score for ``--box-score-thresh`` to threshold
(its ``min_detection_confidence`` gates its own detector, and stays 0.5), and it has no weights or seed to choose.

mediapipe 0.10.21 pins numpy < 2 (and pulls jax and opencv), so it needs its own environment:
`python -m venv mp && mp/bin/pip install -e ".[mediapipe]"`. The mapping and the scores are plain numpy
(`landmarks_to_predictions`), tested on recorded BlazePose outputs without mediapipe installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.models.base import InputShapeRecorder, ModelInfo, Predictions

# BlazePose landmark index of each COCO keypoint, in COCO's order.
BLAZEPOSE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
NUM_LANDMARKS = 33
SETTINGS = {"static_image_mode": True, "model_complexity": 1, "min_detection_confidence": 0.5}


def mediapipe_missing() -> str:
    """--model mediapipe without mediapipe: its own environment, and there the install command of the mediapipe
    extra that works for this install (`kpbench.core.install`)."""
    from kpbench.core.install import install_hint

    return ("--model mediapipe: mediapipe is not installed; it pins numpy < 2, so give it its own environment "
            "(python -m venv mp && . mp/bin/activate) with kpbench and its mediapipe extra: "
            f"{install_hint('mediapipe')}")


def landmarks_to_predictions(landmarks: Any, width: int, height: int) -> Predictions:
    """One image's Predictions from BlazePose's landmarks, an array (33, 4) of normalised x, y, z and visibility
    (or None when no person was found)."""
    if landmarks is None:
        empty = np.zeros((0, COCO17.num_keypoints))
        return Predictions(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, COCO17.num_keypoints, 3)),
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


class MediaPipePoseModel(InputShapeRecorder):  # shapes: the (1 x H x W x 3) arrays BlazePose gets
    """BlazePose "full" through mediapipe.solutions.pose, one person per image."""

    schema: KeypointSchema = COCO17
    input_format = "numpy"
    # kpbench's run options it honours: --min-size is the long side images are resized to (set_input_size).
    run_options: ClassVar[dict[str, str]] = {"min_size": "long_side"}
    # kpbench draw's default person threshold: the middle of its visibility scale (it finds one person an image).
    draw_person_thresh = 0.5
    input_size_definition = ("the long side the image is resized to (bilinear, aspect kept) before BlazePose, which "
                             "resizes to its own 224 x 224 and 256 x 256 inputs; the resize is model time")

    def __init__(self, long_side: int | None = None) -> None:
        if long_side is not None and int(long_side) < 1:
            raise KpbenchError(f"--min-size (the long side before BlazePose): must be >= 1, got {long_side}")
        try:
            import mediapipe as mp
        except ImportError:
            raise KpbenchError(mediapipe_missing()) from None
        self._version = getattr(mp, "__version__", "?")
        self._pose = mp.solutions.pose.Pose(**SETTINGS)
        # --min-size or set_input_size: resize images to this long side first (None: as they are).
        self.long_side: int | None = int(long_side) if long_side is not None else None
        self._long_side_option = long_side is not None  # given as a run option: a deviation of the run

    def set_input_size(self, min_size: int, max_size: int) -> None:
        """The speed input size: the long side images are resized to before BlazePose (module docstring)."""
        self.long_side = int(min_size)
        self._long_side_option = False

    def info(self) -> ModelInfo:
        deviations = ["one person per image (BlazePose): every other person is a miss, an AP ceiling on crowded "
                      "images"]
        if self._long_side_option:
            deviations.append(f"images resized to long side {self.long_side} before BlazePose (from --min-size; "
                              "MediaPipe's own: as they are)")
        protocol = {**SETTINGS, **({"long_side": self.long_side} if self.long_side is not None else {})}
        return ModelInfo(
            weights="pose_landmark_full.tflite", source="mediapipe", name="blazepose-full",
            protocol="MediaPipe Pose (BlazePose full), static images, one person per image",
            keypoint_score_kind="probability",
            extra={"protocol": protocol, "mediapipe": self._version, "deviations": deviations},
        )  # fmt: skip

    def predict(self, images: Sequence[np.ndarray]) -> list[Predictions]:
        out = []
        for image in images:
            rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
            given = resize_long_side(rgb, self.long_side) if self.long_side else rgb
            if self._shapes is not None:
                self._shapes.append((1, *given.shape))
            found = self._pose.process(given).pose_landmarks
            marks = None if found is None else [[p.x, p.y, p.z, p.visibility] for p in found.landmark]
            # Normalised landmarks: the original image's width and height put them back on it.
            out.append(landmarks_to_predictions(marks, rgb.shape[1], rgb.shape[0]))
        return out


def resize_long_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """An H x W x 3 uint8 image resized (bilinear, PIL) so that its long side is `long_side`, aspect kept."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
