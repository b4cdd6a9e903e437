"""MediaPipe BlazePose as a top-down crop model: `--model mediapipe-crops --person-boxes gt|FILE.json|MODEL`.

BlazePose (Bazarevsky et al., CVPR-W 2020) finds one person per image; given one person box's crop at a time, it
becomes a top-down model: kpbench crops each person (256 x 256, padding 1.25, `kpbench.models.crops`), BlazePose
finds the person in the crop (its own detector, then its landmark network, static-image mode), and kpbench maps the
landmarks back to the image with the crop's inverse affine. The 33 landmarks become COCO's 17 as in the
whole-image adapter (`kpbench.models.mediapipe.landmarks_to_predictions`); the keypoint scores are the landmarks'
visibilities (probabilities). A crop in which BlazePose finds nobody gives no detection (`CropOutput.found`).

mediapipe 0.10.21 pins numpy < 2: it runs in its own environment (README, "MediaPipe BlazePose").
"""

from __future__ import annotations

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.models.base import ModelInfo
from kpbench.models.mediapipe import SETTINGS, landmarks_to_predictions, mediapipe_missing
from kpbench.models.topdown import CropBatch, CropOutput

CROP_SIZE = (256, 256)  # BlazePose's landmark network takes 256 x 256


class MediaPipeCropModel:
    """BlazePose "full" on person crops, one person per crop."""

    schema: KeypointSchema = COCO17
    input_format = "numpy"
    crop_size = CROP_SIZE
    # Landmarks normalised to the crop's edges, times the crop size: continuous pixels (kpbench.models.crops).
    pixel_convention = "centre"

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ImportError:
            raise KpbenchError(mediapipe_missing().replace("--model mediapipe", "--model mediapipe-crops")) from None
        self._version = getattr(mp, "__version__", "?")
        self._pose = mp.solutions.pose.Pose(**SETTINGS)

    def info(self) -> ModelInfo:
        return ModelInfo(
            weights="pose_landmark_full.tflite", source="mediapipe", name="blazepose-full-crops",
            protocol="MediaPipe Pose (BlazePose full), static images, one person per crop",
            keypoint_score_kind="probability",
            extra={"protocol": {**SETTINGS, "crop_size": list(CROP_SIZE)}, "mediapipe": getattr(self, "_version", "?")},
        )  # fmt: skip

    def predict_crops(self, batch: CropBatch) -> CropOutput:
        """Each crop's 17 keypoints in crop pixels and visibilities; `found` is False where BlazePose found nobody."""
        k = self.schema.num_keypoints
        m = len(batch)
        keypoints, scores, found = np.zeros((m, k, 2)), np.zeros((m, k)), np.zeros(m, dtype=bool)
        for i, crop in enumerate(batch.images):
            rgb = np.ascontiguousarray(crop, dtype=np.uint8)
            result = self._pose.process(rgb).pose_landmarks
            if result is None:
                continue
            marks = [[p.x, p.y, p.z, p.visibility] for p in result.landmark]
            person = landmarks_to_predictions(marks, rgb.shape[1], rgb.shape[0])
            keypoints[i] = person.keypoints[0, :, :2]
            scores[i] = person.keypoint_scores[0]
            found[i] = True
        return CropOutput(keypoints=keypoints, keypoint_scores=scores, found=found)
