"""Paths to the real fixtures in ../shared/data and a skip marker for machines without them."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO_SAMPLE = SHARED_DATA / "coco_val2017_sample"
FCE = SHARED_DATA / "fce_keypoints_1img"
XTCOCO = SHARED_DATA / "xtcocoapi_example_coco"
EDGE = SHARED_DATA / "kpbench_synthetic_edgecases"

requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real fixtures not found at {SHARED_DATA} (../shared/data beside the repo)"
)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def pycocotools_eval(gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "keypoints") -> Any:
    """A bare pycocotools COCOeval run on deep copies (pycocotools mutates its inputs)."""
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
