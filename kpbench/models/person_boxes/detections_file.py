"""`--person-boxes FILE.json`: COCO detection results as the boxes (the "detector-box" protocol): a JSON list of
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, such as the widely used
`COCO_val2017_detections_AP_H_56_person.json` (a detector of person AP 56.4) or a `bbox_results.json` of a kpbench run.

Records of other categories are left out (the schema's category is kept); images the file does not list have no
boxes. A malformed record is one error naming the file, the record and the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import file_digest, read_json
from kpbench.models.person_boxes import PersonBoxes


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class DetectionFileBoxes:
    """Person boxes read from a COCO detection results file."""

    needs_images = False

    def __init__(self, path: str | Path, category_id: int = 1) -> None:
        self.path = Path(path)
        self.category_id = int(category_id)
        data = read_json(self.path, what="person boxes file")
        if not isinstance(data, list):
            raise KpbenchError(f"{self.path}: expected a JSON list of COCO detection results, got {type(data).__name__}")
        by_image: dict[int, tuple[list[list[float]], list[float]]] = {}
        kept = 0
        for index, record in enumerate(data):
            where = f"{self.path}: record {index}"
            if not isinstance(record, dict):
                raise KpbenchError(f"{where}: expected an object, got {type(record).__name__}")
            for key in ("image_id", "category_id", "bbox", "score"):
                if key not in record:
                    raise KpbenchError(f"{where}: no '{key}' (a COCO detection result has image_id, category_id, "
                                       "bbox and score)")
            image_id, category = record["image_id"], record["category_id"]
            if type(image_id) is not int or type(category) is not int:
                raise KpbenchError(f"{where}: 'image_id' and 'category_id' must be integers")
            bbox, score = record["bbox"], record["score"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
                raise KpbenchError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            if not _number(score):
                raise KpbenchError(f"{where}: 'score' must be a finite number, got {score!r}")
            if bbox[2] < 0 or bbox[3] < 0:
                raise KpbenchError(f"{where}: 'bbox' has a negative width or height: {bbox}")
            if category != self.category_id:
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes, scores = by_image.setdefault(image_id, ([], []))
            boxes.append([x, y, x + w, y + h])
            scores.append(float(score))
            kept += 1
        self._by_image = {i: PersonBoxes(np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(s, dtype=np.float64))
                          for i, (b, s) in by_image.items()}
        self._records, self._kept = len(data), kept
        self._sha256 = file_digest(self.path)

    def boxes(self, image_ids: Sequence[int], images: Sequence[Any] | None = None) -> list[PersonBoxes]:
        out = []
        for image_id in image_ids:
            found = self._by_image.get(int(image_id))
            out.append(PersonBoxes.empty() if found is None else PersonBoxes(found.boxes.copy(), found.scores.copy()))
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "spec": str(self.path), "protocol": "detector boxes", "path": str(self.path.resolve()),
                "sha256": self._sha256, "records": self._records, "category_records": self._kept}
