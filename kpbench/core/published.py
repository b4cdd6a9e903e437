"""Published reference numbers as data: torchvision's Keypoint R-CNN weights and the protocol they were measured with.

A run records its model's published numbers in the manifest (the model's info, `ModelInfo.published`), and the
evaluation reads them from there. Run directories of format 1 predate that record (every one was torchvision's
Keypoint R-CNN): their published numbers are looked up here, by the weights the manifest names. This module is
data and imports nothing of kpbench, so that any stage may read it (no stage imports a model adapter).
"""

from __future__ import annotations

from typing import Any

# torchvision's keypointrcnn_resnet50_fpn weights: box AP and keypoint AP on COCO val2017 (their `_metrics`), percent.
KEYPOINTRCNN_PUBLISHED_AP: dict[str, dict[str, float]] = {
    "COCO_V1": {"box_AP": 54.6, "kp_AP": 65.0},
    "COCO_LEGACY": {"box_AP": 50.6, "kp_AP": 61.1},
}
# The sha256 prefixes torchvision puts in the weight file names (keypointrcnn_resnet50_fpn_coco-<prefix>.pth): a
# checkpoint with one of these hashes is that published file.
KEYPOINTRCNN_SHA_PREFIX: dict[str, str] = {"COCO_V1": "fc266e95", "COCO_LEGACY": "9f466800"}
# The transform sizes of torchvision's published protocol (its detection reference scripts).
KEYPOINTRCNN_MIN_SIZE = 800
KEYPOINTRCNN_MAX_SIZE = 1333


def keypointrcnn_weights_name(model: dict[str, Any]) -> str | None:
    """The named torchvision weights a manifest's model record was loaded with (also a checkpoint file that is one,
    by its sha256), else None."""
    if model.get("source") == "torchvision" and model.get("weights") in KEYPOINTRCNN_PUBLISHED_AP:
        return str(model["weights"])
    sha = model.get("checkpoint_sha256")
    if model.get("source") == "checkpoint" and sha:
        for name, prefix in KEYPOINTRCNN_SHA_PREFIX.items():
            if str(sha).startswith(prefix):
                return name
    return None
