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

**Run options.** `kpbench run` (and `draw IMAGE`, `speed`) can hand a model the options in `RUN_OPTIONS`
(``--weights``, ``--min-size``, ``--max-size``, ``--box-score-thresh``, ``--seed``) when the user gives them. A model
class declares which it honours and how with a class attribute ``run_options``: {run option: the keyword of its
constructor that receives it}. The keyword is the option's own name when the model takes it as is (Keypoint R-CNN's
``min_size``) or the model's own setting it maps to (YOLO: ``{"min_size": "imgsz", "box_score_thresh": "conf"}``).
Without ``run_options`` the constructor's keyword arguments are the declaration: each of its keywords named like a
run option takes that option as is (every option with ``**kwargs``). An option the user gives that the model does
not honour is refused in one line before the model is built (`kpbench.models.registry.check_model_options`); one it
does not give is not passed, so the model's own default applies. What a model made of a mapped option belongs in
its `info()` (YOLO lists ``imgsz 512`` among its deviations from Ultralytics' validation settings).

**Drawing threshold.** A model may declare ``draw_person_thresh``, the person score above which `kpbench draw` shows
its detections when the user gives no ``--person-thresh`` and the run knows no better one (its best-F1 or LRP-optimal
threshold): Keypoint R-CNN 0.9 (the tutorial's), YOLO 0.25 (Ultralytics' own predict default), MediaPipe 0.5. It is
recorded in the manifest's model info.

**Optional hooks**, found with getattr (a model without one simply does not offer that feature):

- ``to(device)``: move to the torch device chosen by ``--device`` (called once, after building);
- ``set_input_size(min_size, max_size)``: the short side and long-side cap the model resizes to (speed sizes); a
  model whose size means something else says what in an ``input_size_definition`` attribute (text for the speed
  report's "What was timed");
- ``record_input_shapes()``: a context manager yielding a list that gets the padded batch shape (N, C, H, W)
  of every call that reaches the network (run's and speed's shape record);
- ``speed_variant(name)``: a context manager putting the model in a speed variant (``"channels_last"``,
  ``"compile"``, ``"fast_postprocess"``) and back, or None when the model has no such variant.

No torch here: the registry and the commands that never run a model import this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    from kpbench.core.schema import KeypointSchema

KEYPOINT_SCORE_KINDS = ("logit", "probability")
# The options a command can hand a model's constructor (settings key: command-line name), see "Run options" above.
RUN_OPTIONS: dict[str, str] = {"weights": "--weights", "min_size": "--min-size", "max_size": "--max-size",
                               "box_score_thresh": "--box-score-thresh", "seed": "--seed"}
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
    # The person-score threshold `kpbench draw` shows this model's detections at when nothing better is known (the
    # model's `draw_person_thresh` attribute, filled in by `model_info`); None: by its keypoint score kind.
    draw_person_thresh: float | None = None
    # What an input size (`set_input_size`, `kpbench speed --sizes`) means for this model, for the speed report's
    # "What was timed" (the model's `input_size_definition` attribute, filled in by `model_info`).
    input_size_definition: str | None = None

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
    if info.draw_person_thresh is None:
        info.draw_person_thresh = declared_draw_person_thresh(model)
    if info.input_size_definition is None and isinstance(getattr(model, "input_size_definition", None), str):
        info.input_size_definition = model.input_size_definition
    return info


def declared_draw_person_thresh(model: Any) -> float | None:
    """The person-score threshold a model (or its class) declares for drawing, `draw_person_thresh`, checked to be a
    probability in [0, 1]; None when it declares none."""
    import functools

    target = model.func if isinstance(model, functools.partial) else model  # yolo:PATH.pt binds its checkpoint
    value = getattr(target, "draw_person_thresh", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise KpbenchError(f"{getattr(model, '__name__', model_name(model))}.draw_person_thresh: expected a person "
                           f"score in [0, 1], got {value!r}")
    return float(value)


def honoured_options(factory: Any) -> dict[str, str]:
    """The run options a model class (or factory) honours: {run option: the constructor keyword that receives it},
    from its `run_options` declaration, else from its constructor's keyword arguments (module docstring). A
    declaration that names an unknown option or a keyword the constructor does not take is a KpbenchError for
    the model's author."""
    import functools
    import inspect

    target = factory.func if isinstance(factory, functools.partial) else factory
    bound = set(factory.keywords) if isinstance(factory, functools.partial) else set()
    name = getattr(target, "__name__", type(target).__name__)
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: it takes nothing kpbench can see
        params = []
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    keywords = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)}
    declared = getattr(target, "run_options", None)
    if declared is None:
        honoured = {option: option for option in RUN_OPTIONS if takes_any or option in keywords}
    else:
        if not isinstance(declared, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in declared.items()):
            raise KpbenchError(f"{name}.run_options: expected a dict {{run option: constructor keyword}}, got "
                               f"{declared!r}")
        unknown = sorted(set(declared) - set(RUN_OPTIONS))
        if unknown:
            raise KpbenchError(f"{name}.run_options: unknown run option(s) {', '.join(unknown)}; known: "
                               f"{', '.join(RUN_OPTIONS)}")
        untaken = sorted(v for v in declared.values() if not takes_any and v not in keywords and v not in bound)
        if untaken:
            raise KpbenchError(f"{name}.run_options: its constructor takes no {', '.join(untaken)}")
        honoured = dict(declared)
    # A keyword already bound by the spec (yolo:PATH.pt binds the checkpoint) is not the user's to give again.
    return {option: keyword for option, keyword in honoured.items() if keyword not in bound}


def describe_honoured(honoured: dict[str, str]) -> str:
    """The run options a model honours, for messages: "--weights, --min-size (as imgsz), --box-score-thresh (as
    conf)", or "none of them"."""
    parts = [RUN_OPTIONS[o] + ("" if honoured[o] == o else f" as {honoured[o]}") for o in RUN_OPTIONS if o in honoured]
    return ", ".join(parts) or "none of them"


class InputShapeRecorder:
    """The `record_input_shapes()` hook for a model that notes its input batches itself: while the context is open,
    the model appends each batch's shape to `self._shapes` (None outside it), which the context yields."""

    _shapes: list[tuple[int, ...]] | None = None

    @contextlib.contextmanager
    def record_input_shapes(self) -> Iterator[list[tuple[int, ...]]]:
        self._shapes = []
        try:
            yield self._shapes
        finally:
            self._shapes = None


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
