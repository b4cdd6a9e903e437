"""The msgspec record types both dict-free readers of COCO files share (`fastcheck`, hotcoco's checks, and
`fastparse`, the default backend's arrays): the bounded numbers the full checks allow, and the image and category
records. msgspec decodes and bounds-checks in one pass; a value out of bounds fails the decode, and the file then
goes to the full checks, which word the problem. Needs msgspec (a base dependency)."""

from __future__ import annotations

import sys
from typing import Annotated

from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from kpbench.evaluation.cocofiles import MAX_COCO_ID

Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
NonNegative = Annotated[float, Meta(ge=0.0, le=sys.float_info.max)]
CocoId = Annotated[int, Meta(gt=-MAX_COCO_ID, lt=MAX_COCO_ID)]

# gc=False: no record can be part of a reference cycle, and untracked objects decode faster.


class ImageRecord(Struct, gc=False):
    """A GT image: its id is all either reader needs."""

    id: CocoId


class CategoryRecord(Struct, gc=False):
    """A GT category: its id, and its keypoint names (kept as raw JSON) when it has them."""

    id: CocoId
    keypoints: list[Raw] | UnsetType | None = UNSET
