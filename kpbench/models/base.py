"""The model interface: what every pose model gives kpbench, and what kpbench gives it.

A pose model is any object with

- ``schema``: the `KeypointSchema` its keypoints follow (K keypoints);
- ``predict(images) -> list[Predictions]``: one `Predictions` per image, in order;
- ``info() -> ModelInfo``: what was loaded, for the run manifest.

**Images.** ``predict`` gets a list of images in the format the model declares with its ``input_format``
attribute (default ``"numpy"``):

- ``"numpy"``: RGB uint8 arrays of shape (H, W, 3), as decoded from the file (no EXIF rotation), on the host;
- ``"tensor"``: float32 torch tensors of shape (3, H, W) in [0, 1], already on the device given to ``to()``.
  Torch models use it so that the copy to the device is done before the clock starts, not as model time.

Images are never resized or padded by kpbench: a model resizes them itself (its input size), and returns
coordinates in the pixels of the image it was given.

**Predictions.** Arrays are numpy arrays or torch tensors on any device; kpbench copies them to the host after
the clock stops. N detections of K keypoints:

- ``boxes`` (N, 4) xyxy, ``scores`` (N,) person scores in [0, 1];
- ``keypoints`` (N, K, 3): x, y in image pixels and a visibility flag (COCO does not score it);
- ``keypoint_scores`` (N, K), marked by ``keypoint_score_kind`` as ``"logit"`` or ``"probability"``;
- ``labels`` (N,) category ids, optional (None: the schema's category for every detection).

**Optional hooks**, found with getattr (a model without one simply does not offer that feature):

- ``to(device)``: move to the torch device chosen by ``--device`` (called once, after building);
- ``set_input_size(min_size, max_size)``: the short side and long-side cap the model resizes to (speed sizes);
- ``record_input_shapes()``: a context manager yielding a list that gets the padded batch shape (N, C, H, W)
  of every call that reaches the network (run's and speed's shape record);
- ``speed_variant(name)``: a context manager putting the model in a speed variant (``"channels_last"``,
  ``"compile"``, ``"fast_postprocess"``) and back, or None when the model has no such variant.

No torch here: the registry and the commands that never run a model import this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    from kpbench.core.schema import KeypointSchema

KEYPOINT_SCORE_KINDS = ("logit", "probability")
INPUT_FORMATS = ("numpy", "tensor")
SPEED_VARIANTS = ("channels_last", "compile")


@dataclass
class Predictions:
    """One image's detections, as a model returns them (see the module docstring for shapes and units)."""

    boxes: Any
    scores: Any
    keypoints: Any
    keypoint_scores: Any
    keypoint_score_kind: str = "logit"
    labels: Any | None = None

    def __len__(self) -> int:
        # Shapes are host-side metadata on every device: counting does not wait for the model.
        return int(self.scores.shape[0]) if hasattr(self.scores, "shape") else len(self.scores)


@dataclass
class ModelInfo:
    """What was loaded, for the run manifest. The first six fields are Keypoint R-CNN's manifest record since
    format version 1 (a checkpoint's path and sha256 are any model's weights file); the rest describe any
    model."""

    weights: str | None
    source: str  # "torchvision", "checkpoint", "random" for Keypoint R-CNN; free text for other models
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    frozen_bn_eps: float | None = None
    seed: int | None = None
    name: str | None = None  # the model's name ("keypointrcnn_resnet50_fpn", ...)
    published: dict[str, float] | None = None  # reference numbers published for these weights (AP in percent)
    protocol: str | None = None  # how the published numbers were measured
    default_input_size: list[int] | None = None  # [min_size, max_size] the model resizes to by default
    keypoint_score_kind: str = "logit"  # what its keypoint scores are: "logit" or "probability"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the manifest's "model")."""
        return asdict(self)


@runtime_checkable
class PoseModel(Protocol):
    """The interface every pose model implements (isinstance checks that the three members exist)."""

    schema: KeypointSchema

    def predict(self, images: Sequence[Any]) -> list[Predictions]:
        """One Predictions per image, in order."""
        ...

    def info(self) -> ModelInfo:
        """What was loaded."""
        ...


def input_format(model: Any) -> str:
    """The model's declared input format, "numpy" (the default) or "tensor"."""
    fmt = getattr(model, "input_format", "numpy")
    if fmt not in INPUT_FORMATS:
        raise KpbenchError(f"{model_name(model)}: input_format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")
    return str(fmt)


def model_name(model: Any) -> str:
    """A model's name for messages: its class name."""
    return type(model).__name__


def model_info(model: Any) -> ModelInfo:
    """`model.info()`, checked: a ModelInfo, or a dict with its fields (plugins need not import kpbench's class)."""
    info = model.info()
    if isinstance(info, dict):
        try:
            info = ModelInfo(**{"source": "plugin", **info})
        except TypeError as exc:
            raise KpbenchError(f"{model_name(model)}.info(): {exc}") from None
    if not isinstance(info, ModelInfo):
        raise KpbenchError(f"{model_name(model)}.info(): returned {type(info).__name__}, expected a ModelInfo or a dict")
    if info.keypoint_score_kind not in KEYPOINT_SCORE_KINDS:
        raise KpbenchError(
            f"{model_name(model)}.info(): keypoint_score_kind {info.keypoint_score_kind!r}; expected logit or probability"
        )
    return info


def record_input_shapes(model: Any) -> contextlib.AbstractContextManager[list[tuple[int, ...]] | None]:
    """The model's shape recorder, or a context yielding None for a model without one."""
    hook = getattr(model, "record_input_shapes", None)
    return hook() if hook is not None else contextlib.nullcontext(None)


def set_input_size(model: Any, min_size: int, max_size: int) -> None:
    """Set the model's input size through its hook; a model without one cannot be timed per size."""
    hook = getattr(model, "set_input_size", None)
    if hook is None:
        raise KpbenchError(f"{model_name(model)}: has no set_input_size(min_size, max_size), so its input size "
                           "cannot be set")
    hook(min_size, max_size)
