"""Person-box sources: where a top-down model's person boxes come from (`--person-boxes gt | FILE.json | MODEL`).

A source is one file of this package, behind one small protocol (`PersonBoxSource`):

- `gt` (`ground_truth.py`): the ground truth's persons, score 1 (the "GT-box" protocol);
- `FILE.json` (`detections_file.py`): COCO detection results, such as `COCO_val2017_detections_AP_H_56_person.json`
  (the "detector-box" protocol of the published top-down numbers);
- `MODEL` (`model.py`): the boxes of any kpbench model spec (Keypoint R-CNN, YOLO-pose, a user's detector adapter),
  run on the same images.

Every source has its own score threshold and per-image maximum (`BoxSelection`), applied before any crop is made:
the boxes at or above the threshold, the highest-scoring `max_per_image` of them (ties keep the source's order).
Boxes are xyxy in image pixels (continuous coordinates, COCO's), scores in [0, 1].

No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kpbench.core.errors import KpbenchError

GT_SOURCE = "gt"


@dataclass
class PersonBoxes:
    """One image's person boxes: (N, 4) xyxy float64 and (N,) float64 scores."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> PersonBoxes:
        return cls(np.zeros((0, 4)), np.zeros(0))


@dataclass(frozen=True)
class BoxSelection:
    """A source's own filter: boxes scoring at least `score_threshold`, at most `max_per_image` of them (the highest
    scoring; None: all)."""

    score_threshold: float = 0.0
    max_per_image: int | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.score_threshold) and 0.0 <= self.score_threshold <= 1.0):
            raise KpbenchError(f"--person-box-thresh: must be in [0, 1], got {self.score_threshold}")
        if self.max_per_image is not None and self.max_per_image < 1:
            raise KpbenchError(f"--person-box-max: must be >= 1, got {self.max_per_image}")

    def apply(self, found: PersonBoxes) -> PersonBoxes:
        """The kept boxes, highest score first (a stable sort: equal scores keep the source's order)."""
        keep = np.flatnonzero(found.scores >= self.score_threshold)
        order = keep[np.argsort(-found.scores[keep], kind="stable")]
        if self.max_per_image is not None:
            order = order[: self.max_per_image]
        return PersonBoxes(found.boxes[order], found.scores[order])

    def to_json(self) -> dict[str, Any]:
        return {"score_threshold": self.score_threshold, "max_per_image": self.max_per_image}


@runtime_checkable
class PersonBoxSource(Protocol):
    """Where person boxes come from. `needs_images` says whether `boxes` looks at the pixels (a detector) or only at
    the image ids (GT, a file)."""

    needs_images: bool

    def boxes(self, image_ids: Sequence[int], images: Sequence[Any] | None) -> list[PersonBoxes]:
        """The boxes of each image, before the selection (in the source's own order)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the source is, for the manifest ("kind", "spec" and the source's own facts)."""
        ...


def source_kind(spec: str) -> str:
    """"gt", "file" (a path ending in .json) or "model" (anything else: a kpbench model spec)."""
    text = spec.strip()
    if not text:
        raise KpbenchError("--person-boxes: empty; give gt, a COCO detections FILE.json or a model spec")
    if text.lower() == GT_SOURCE:
        return "gt"
    if text.lower().endswith(".json"):
        return "file"
    return "model"


def check_source_spec(spec: str) -> str:
    """The source's kind, after the cheap checks: a detections file must exist."""
    kind = source_kind(spec)
    if kind == "file" and not Path(spec).is_file():
        raise KpbenchError(f"--person-boxes {spec}: file not found (a COCO detection results file)")
    return kind
