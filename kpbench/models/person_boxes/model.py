"""`--person-boxes MODEL`: the boxes of any kpbench model (a `--model` spec: keypointrcnn, yolo, FILE.py:Class, ...),
run on the same images as the top-down model, inside its call (so a speed row's time is the detector plus the crops).

Only the detector's boxes and person scores are used; its keypoints are dropped. Its detections of other categories
(`labels` other than the schema's category) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.models.base import input_format, model_info, model_name
from kpbench.models.person_boxes import PersonBoxes


def _host(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


class ModelBoxes:
    """Person boxes from a PoseModel's predictions. Images are given as float (3, H, W) tensors in [0, 1] (the
    top-down model's input); a model that takes numpy arrays gets them as uint8 (H, W, 3), as it would from a run."""

    needs_images = True

    def __init__(self, model: Any, spec: str, category_id: int = 1) -> None:
        self.model, self.spec, self.category_id = model, spec, int(category_id)
        self._info = model_info(model)

    def to(self, device: Any) -> None:
        move = getattr(self.model, "to", None)
        if move is not None:
            move(device)

    def boxes(self, image_ids: Sequence[int], images: Sequence[Any] | None) -> list[PersonBoxes]:
        if images is None:
            raise KpbenchError(f"--person-boxes {self.spec}: a detector needs the images")
        if input_format(self.model) == "numpy":
            import torch

            images = [(im * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy() for im in images]
        predictions = self.model.predict(list(images))
        if not isinstance(predictions, (list, tuple)) or len(predictions) != len(images):
            raise KpbenchError(f"--person-boxes {self.spec}: {model_name(self.model)}.predict returned "
                               f"{len(predictions) if isinstance(predictions, (list, tuple)) else type(predictions).__name__}"
                               f" for {len(images)} images")
        out = []
        for p in predictions:
            boxes = _host(p.boxes).reshape(-1, 4)
            scores = _host(p.scores).reshape(-1)
            if p.labels is not None:
                keep = _host(p.labels).reshape(-1) == self.category_id
                boxes, scores = boxes[keep], scores[keep]
            out.append(PersonBoxes(boxes, scores))
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "model", "spec": self.spec, "protocol": "detector boxes", "model": self._info.to_json()}
