"""Detections as columns: the one shape in which detections travel between stages.

A run's store reads into it, a user's results file parses into it, and the evaluators, the sweeps and the analyses
read it. Python dicts and JSON appear only at the edges (a results file coming in, COCO results files going out).

`DetectionArrays` holds N detections in COCO results order (a run's: images by ascending id, each image's
detections in the model's order; a results file's: the file's order). Result i of the COCO results file that the
arrays stand for is row i, so pycocotools' 1-based result id of row i is i + 1.

No torch here, and no import from a stage: every stage may use this module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DetectionArrays:
    """N detections of K keypoints as arrays (see the module docstring for the order).

    - ``image_ids`` (N,) int64 and ``category_ids`` (N,) int64;
    - ``scores`` (N,) float64: the person (box) score, the COCO result's ``score``;
    - ``boxes`` (N, 4) float64 xywh, as COCO box results hold them (a run computes them from the model's xyxy as
      ``[x1, y1, x2 - x1, y2 - y1]`` in float64, exactly the values its bbox_results.json holds), or None;
    - ``keypoints`` (N, K, 3) float64: x, y and the third value of a COCO keypoint result, or None;
    - ``keypoint_scores`` (N, K) float64: the model's own per-keypoint scores (logits or probabilities; COCO
      results files carry none unless they add a ``keypoint_scores`` list), or None.

    Values a model gave as float32 are widened to float64 exactly, so a float64 value's shortest repr is the one a
    results file holds.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoint_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        shapes: dict[str, tuple[Any, ...] | None] = {
            "image_ids": self.image_ids.shape, "category_ids": self.category_ids.shape, "scores": self.scores.shape,
            "boxes": None if self.boxes is None else self.boxes.shape,
            "keypoints": None if self.keypoints is None else self.keypoints.shape,
            "keypoint_scores": None if self.keypoint_scores is None else self.keypoint_scores.shape,
        }
        expected: dict[str, tuple[Any, ...]] = {
            "image_ids": (n,), "category_ids": (n,), "scores": (n,), "boxes": (n, 4),
            "keypoints": (n, self.num_keypoints, 3), "keypoint_scores": (n, self.num_keypoints),
        }
        for name, shape in shapes.items():
            if shape is not None and shape != expected[name]:
                raise ValueError(f"DetectionArrays.{name}: shape {shape}, expected {expected[name]}")

    @property
    def num_keypoints(self) -> int:
        """K, from the keypoints (or their scores); 0 for box-only detections."""
        if self.keypoints is not None:
            return int(self.keypoints.shape[1])
        if self.keypoint_scores is not None:
            return int(self.keypoint_scores.shape[1])
        return 0

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> DetectionArrays:
        """The rows `index` selects (a boolean mask or integer positions), in that order."""
        return replace(
            self, image_ids=self.image_ids[index], category_ids=self.category_ids[index], scores=self.scores[index],
            boxes=None if self.boxes is None else self.boxes[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            keypoint_scores=None if self.keypoint_scores is None else self.keypoint_scores[index],
        )

    @classmethod
    def empty(cls, num_keypoints: int = 0, boxes: bool = True) -> DetectionArrays:
        """No detections (K keypoints; with a box column unless `boxes` is False)."""
        k = num_keypoints
        return cls(
            image_ids=np.zeros(0, np.int64), category_ids=np.zeros(0, np.int64), scores=np.zeros(0),
            boxes=np.zeros((0, 4)) if boxes else None,
            keypoints=np.zeros((0, k, 3)) if k else None, keypoint_scores=np.zeros((0, k)) if k else None,
        )
