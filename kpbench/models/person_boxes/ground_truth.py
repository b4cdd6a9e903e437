"""`--person-boxes gt`: the ground truth's persons as the boxes (the "GT-box" protocol, about 2 AP above detector boxes
on COCO val2017 for the usual models).

Which annotations: the schema's category, not crowd, with at least one labelled keypoint and a box of positive width
and height, as the HRNet and mmpose COCO readers choose them; each gets score 1.0. A person without labelled
keypoints is ignored by COCO's keypoint evaluation, so cropping it would only add unmatched detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kpbench.models.person_boxes import PersonBoxes


class GroundTruthBoxes:
    """Person boxes read from a COCO ground truth dict (only the images asked for are ever looked at)."""

    needs_images = False

    def __init__(self, gt: dict[str, Any], category_id: int = 1) -> None:
        self.category_id = int(category_id)
        by_image: dict[int, list[list[float]]] = {}
        for ann in gt.get("annotations", []):
            if ann.get("category_id") != self.category_id or ann.get("iscrowd"):
                continue
            keypoints = ann.get("keypoints") or []
            if not any(v > 0 for v in keypoints[2::3]):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w > 0 and h > 0:
                by_image.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
        self._by_image = {i: np.asarray(b, dtype=np.float64) for i, b in by_image.items()}

    def boxes(self, image_ids: Sequence[int], images: Sequence[Any] | None = None) -> list[PersonBoxes]:
        out = []
        for image_id in image_ids:
            found = self._by_image.get(int(image_id))
            out.append(PersonBoxes.empty() if found is None else PersonBoxes(found.copy(), np.ones(len(found))))
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "gt", "spec": "gt", "protocol": "GT boxes",
                "annotations": "non-crowd persons with >= 1 labelled keypoint and a box of positive size, score 1"}
