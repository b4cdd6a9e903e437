"""Keypoint R-CNN's stage split for `kpbench speed`: the model's transform, backbone+FPN, RPN, box head, keypoint
head and keypoint post-processing, timed by hooks at the boundaries of torchvision's modules.

torchvision's GeneralizedRCNN.forward runs, in order: ``transform`` (resize, normalise, pad), ``backbone``
(ResNet-50 + FPN), ``rpn``, ``roi_heads``, then ``transform.postprocess`` (rescaling to the original image).
Inside RoIHeads.forward, the box branch (box RoI pooling, box head and predictor, NMS) comes first, then the
keypoint branch (``keypoint_roi_pool``, ``keypoint_head``, ``keypoint_predictor``), then the module-level
function ``keypointrcnn_inference`` (heatmaps to keypoints, `torchvision.models.detection.roi_heads`).

Stages (ms): ``transform`` = the transform's forward plus its postprocess; ``backbone``; ``rpn``;
``keypoint_head`` = from the keypoint RoI pooling to the keypoint predictor's output; ``keypoint_postprocess`` =
``keypointrcnn_inference``; ``box_head`` = the rest of ``roi_heads`` (box branch and NMS). Together they cover the
whole call but GeneralizedRCNN.forward's own few lines of Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kpbench.engine.stages import StageClock, device_sync

STAGES = ("transform", "backbone", "rpn", "box_head", "keypoint_head", "keypoint_postprocess")


class _RCNNClock(StageClock):
    def take(self) -> dict[str, float]:
        raw = super().take()
        roi = raw.pop("_roi_heads", 0.0)
        out = {name: raw.get(name, 0.0) for name in STAGES}
        out["box_head"] = max(roi - out["keypoint_head"] - out["keypoint_postprocess"], 0.0)
        return out


@contextlib.contextmanager
def keypointrcnn_stages(module: Any, device: Any) -> Iterator[StageClock]:
    """Hooks on a torchvision KeypointRCNN that time its stages (synchronised boundaries); removed on exit."""
    from torchvision.models.detection import roi_heads as roi_heads_module

    clock = _RCNNClock(device_sync(device))
    handles = []

    def around(submodule: Any, stage: str, end: Any = None) -> None:
        def begin(*_: Any) -> None:
            clock.start(stage)

        def finish(*_: Any) -> None:  # a forward hook that returned a value would replace the module's output
            clock.stop(stage)

        handles.append(submodule.register_forward_pre_hook(begin))
        handles.append((end or submodule).register_forward_hook(finish))

    # A wrapped model (KeypointRCNNModel.from_module) need only have the transform and the backbone: the stages
    # it lacks read 0.
    for name in ("transform", "backbone", "rpn"):
        if getattr(module, name, None) is not None:
            around(getattr(module, name), name)
    heads = getattr(module, "roi_heads", None)
    if heads is not None:
        around(heads, "_roi_heads")
        if getattr(heads, "keypoint_roi_pool", None) is not None:
            around(heads.keypoint_roi_pool, "keypoint_head", end=heads.keypoint_predictor)

    def timed(function: Any, stage: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            clock.start(stage)
            try:
                return function(*args, **kwargs)
            finally:
                clock.stop(stage)

        return call

    transform = module.transform
    # The bound method, shadowed by an instance attribute until that is deleted.
    transform.postprocess = timed(transform.postprocess, "transform")
    # RoIHeads.forward calls the module-level name, so the function is swapped there (and put back on exit); the
    # one in place now is wrapped, which may be the fast post-processing of a speed variant.
    inference = roi_heads_module.keypointrcnn_inference
    roi_heads_module.keypointrcnn_inference = timed(inference, "keypoint_postprocess")
    try:
        yield clock
    finally:
        roi_heads_module.keypointrcnn_inference = inference
        del transform.postprocess
        for handle in handles:
            handle.remove()
