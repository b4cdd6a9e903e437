"""The one inference loop: `kpbench run`, speed's `--accuracy` and `kpbench draw` feed images through here.

The driver owns everything around the model (as detectron2's `inference_on_dataset` does): converting the
decoded images to the model's input format, inference mode and autocast, the clock, the record of padded input
shapes, and turning the model's Predictions into ImageDetections once the clock has stopped. The caller owns
where the batches come from (a DataLoader, files) and what happens to each finished batch (`on_batch`: the
cache writer, a list, a drawing).

One model call is timed as ``synchronize -> perf_counter -> predict -> synchronize -> perf_counter`` (the
synchronisations on CUDA only): the model's own resize and post-processing are included, decoding and the copy
to the device are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.models.base import Predictions, input_format, model_info, model_name, record_input_shapes
from kpbench.runs.detections import ImageDetections

if TYPE_CHECKING:
    import torch


@dataclass
class BatchResult:
    """One model call: the image ids, their detections (in order), the padded input shape (None when the model
    records none) and the seconds the call took."""

    image_ids: list[int]
    detections: list[ImageDetections]
    input_shape: tuple[int, ...] | None
    model_s: float


@dataclass
class InferenceStats:
    """A whole loop: images and calls, the model seconds, and every call's padded input shape."""

    images: int = 0
    calls: int = 0
    model_s: float = 0.0
    shapes: list[tuple[int, ...]] = field(default_factory=list)


def prepare_images(model: Any, images: Sequence[Any], device: torch.device, non_blocking: bool = False) -> list[Any]:
    """Decoded RGB uint8 (3, H, W) host tensors in the model's input format: float (3, H, W) in [0, 1] on the
    device ("tensor"), or uint8 (H, W, 3) numpy arrays ("numpy")."""
    if input_format(model) == "tensor":
        from kpbench.data.coco import to_float_image

        return [to_float_image(image.to(device, non_blocking=non_blocking)) for image in images]
    import numpy as np

    return [np.ascontiguousarray(image.permute(1, 2, 0).numpy()) for image in images]


def check_predictions(model: Any, predictions: Any, count: int, kind: str) -> list[Predictions]:
    """The model's answer to `count` images, checked: a list of `count` Predictions with the declared kind of
    keypoint score."""
    name = model_name(model)
    if not isinstance(predictions, (list, tuple)) or len(predictions) != count:
        got = f"{len(predictions)} items" if isinstance(predictions, (list, tuple)) else type(predictions).__name__
        raise KpbenchError(f"{name}.predict: returned {got} for {count} images (one Predictions per image)")
    for p in predictions:
        if not isinstance(p, Predictions):
            raise KpbenchError(f"{name}.predict: returned a {type(p).__name__}, expected kpbench.models.base.Predictions")
        if p.keypoint_score_kind != kind:
            raise KpbenchError(
                f"{name}.predict: keypoint_score_kind {p.keypoint_score_kind!r}, but info() declares {kind!r}"
            )
    return list(predictions)


def inference_on_dataset(
    model: Any,
    batches: Iterable[tuple[Sequence[int], Sequence[Any]]],
    device: torch.device,
    on_batch: Callable[[BatchResult], None],
    *,
    dtype: str = "fp32",
    non_blocking: bool = False,
) -> InferenceStats:
    """Run `model` (a PoseModel) over `batches` of (image ids, decoded RGB uint8 (3, H, W) tensors) and hand
    each finished call to `on_batch`. In inference mode, under autocast for fp16/bf16 (a model that is not a
    torch model simply ignores both)."""
    import torch

    from kpbench.models.keypointrcnn import autocast

    schema = model.schema
    kind = model_info(model).keypoint_score_kind
    cuda = device.type == "cuda"
    stats = InferenceStats()
    with torch.inference_mode(), record_input_shapes(model) as shapes:
        for ids, images in batches:
            inputs = prepare_images(model, images, device, non_blocking=non_blocking and cuda)
            recorded = len(shapes) if shapes is not None else 0
            if cuda:
                torch.cuda.synchronize(device)  # the copies above are not model time
            t0 = time.perf_counter()
            with autocast(device, dtype):
                # A model that looks its inputs up by image id (a top-down model's GT or file boxes) asks for them.
                predictions = (model.predict(inputs, image_ids=[int(i) for i in ids])
                               if getattr(model, "wants_image_ids", False) else model.predict(inputs))
            if cuda:
                torch.cuda.synchronize(device)
            model_s = time.perf_counter() - t0
            predictions = check_predictions(model, predictions, len(inputs), kind)
            # This call's padded batch, as the model's recorder saw it (none when nothing was recorded).
            shape = shapes[-1] if shapes is not None and len(shapes) > recorded else None
            detections = [
                ImageDetections.from_predictions(
                    image_id, p, input_shape=shape, num_keypoints=schema.num_keypoints, category_id=schema.category_id
                )
                for image_id, p in zip(ids, predictions)
            ]
            stats.images += len(inputs)
            stats.calls += 1
            stats.model_s += model_s
            on_batch(BatchResult([int(i) for i in ids], detections, shape, model_s))
    if shapes is not None:
        stats.shapes = [tuple(int(v) for v in s) for s in shapes]
    return stats
