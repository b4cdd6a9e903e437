"""torchvision's Keypoint R-CNN as a kpbench pose model: `KeypointRCNNModel`, the one adapter (the only code
that knows torchvision's output keys, its transform and its backbone), and what builds it: named weights,
checkpoints, random weights, input size (the device and dtype helpers are `kpbench.engine.device`).

torch and torchvision are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import file_digest
from kpbench.core.schema import COCO17
from kpbench.models.base import InputShapeRecorder, ModelInfo, Predictions

if TYPE_CHECKING:
    import torch

NAMED_WEIGHTS = ("COCO_V1", "COCO_LEGACY")
# Published val2017 results of torchvision's weights (the `_metrics` in their meta): box AP and keypoint AP.
PUBLISHED_AP: dict[str, dict[str, float]] = {
    "COCO_V1": {"box_AP": 54.6, "kp_AP": 65.0},
    "COCO_LEGACY": {"box_AP": 50.6, "kp_AP": 61.1},
}
DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333
# The sha256 prefixes torchvision puts in the weight file names (keypointrcnn_resnet50_fpn_coco-<prefix>.pth): a
# checkpoint with one of these hashes is that published file. COCO_V1 also needs FrozenBatchNorm eps 0.
NAMED_WEIGHTS_SHA_PREFIX: dict[str, str] = {"COCO_V1": "fc266e95", "COCO_LEGACY": "9f466800"}
_COCO_V1_SHA_PREFIX = NAMED_WEIGHTS_SHA_PREFIX["COCO_V1"]


MODEL_NAME = "keypointrcnn_resnet50_fpn"
# The speed variant that post-processes keypoints with kpbench.models.keypointrcnn_postprocess (no host sync per
# RoI, outputs equal to torchvision's bit for bit).
FAST_POSTPROCESS = "fast_postprocess"
PUBLISHED_PROTOCOL_TEXT = (
    "COCO val2017 (5000 images), min_size 800, max_size 1333, box_score_thresh 0.05, batch 1, fp32; "
    "torchvision's reference evaluation"
)
__all__ = ["FAST_POSTPROCESS", "KeypointRCNNModel", "ModelInfo", "build_model"]


def published_weights_name(info: ModelInfo | dict[str, Any]) -> str | None:
    """The named torchvision weights a model was loaded with (also a checkpoint file that is one), else None."""
    get = info.get if isinstance(info, dict) else lambda key: getattr(info, key)
    if get("source") == "torchvision" and get("weights") in NAMED_WEIGHTS:
        return str(get("weights"))
    sha = get("checkpoint_sha256")
    if get("source") == "checkpoint" and sha:
        for name, prefix in NAMED_WEIGHTS_SHA_PREFIX.items():
            if str(sha).startswith(prefix):
                return name
    return None


def weights_cache_path(name: str) -> Path:
    """Where torchvision's loader caches the named weights ($TORCH_HOME/hub/checkpoints/<file>)."""
    import torch
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    url = KeypointRCNN_ResNet50_FPN_Weights[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file: checkpoints here, the annotation file in a run manifest."""
    return file_digest(path, "sha256")


def default_max_size(min_size: int) -> int:
    """The long-side cap that keeps torchvision's 800:1333 ratio for a short side: round(min_size * 1333 / 800)."""
    return round(min_size * DEFAULT_MAX_SIZE / DEFAULT_MIN_SIZE)


def transform_footprint(height: int, width: int, min_size: int, max_size: int) -> tuple[tuple[int, int, int], int]:
    """The padded tensor (3, H, W) torchvision's transform makes of a height x width image (scale
    min(min_size / short side, max_size / long side), each side floored, then padded to a multiple of 32), and a
    lower bound of the bytes one call holds for it: the float input, the resized image, the padded batch and the
    ResNet stem's 64-channel stride-2 output and its normalised copy (float32)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    h, w = (-(-int(height * scale) // 32) * 32, -(-int(width * scale) // 32) * 32)
    per_pixel = 3 * 4 + 3 * 4 + 2 * 64 * 4 / 4
    return (3, h, w), int(3 * 4 * height * width + h * w * per_pixel)


def _build_named(name: str, **kwargs: Any) -> torch.nn.Module:
    """torchvision's builder with named weights (its cache, hash check and COCO_V1 eps); offline is a clear error."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights, keypointrcnn_resnet50_fpn

    cached = weights_cache_path(name)
    try:
        return keypointrcnn_resnet50_fpn(weights=KeypointRCNN_ResNet50_FPN_Weights[name], **kwargs)
    except Exception as exc:  # network errors, a truncated cache file, a hash mismatch
        state = "is present but could not be loaded" if cached.exists() else "is not cached"
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise KpbenchError(
            f"cannot load {name} weights: {cached} {state} and the download failed ({type(exc).__name__}: {reason}); "
            f"put the file there, or pass a local checkpoint with --weights PATH"
        ) from None


def _frozen_bn_model(**kwargs: Any) -> torch.nn.Module:
    """Keypoint R-CNN with FrozenBatchNorm2d, the layout trained checkpoints are saved in."""
    from torchvision.models.detection import KeypointRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    return KeypointRCNN(backbone, num_classes=2, num_keypoints=17, **kwargs)


_WEIGHTS_CHOICES = "--weights takes COCO_V1, COCO_LEGACY, none or a path"
# What a torch.save file starts with: a zip archive (the format since torch 1.6) or a pickle of protocol 2 to 5
# (the legacy format).
_ZIP_MAGIC = b"PK\x03\x04"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def canonical_weights(weights: str) -> str:
    """The canonical spelling of `weights`: named weights and "none" match case-insensitively ("coco_v1" is
    COCO_V1) unless a file of that name exists; anything else is a checkpoint path, returned as given."""
    if weights in NAMED_WEIGHTS or weights == "none":
        return weights
    by_lower = {name.lower(): name for name in (*NAMED_WEIGHTS, "none")}
    if weights.lower() in by_lower and not Path(weights).exists():
        return by_lower[weights.lower()]
    return weights


def check_weights(weights: str) -> str:
    """Cheap checks of --weights before anything heavy (no torch import): returns the canonical name, or, for a
    path, fails in one line when it is missing, a directory, empty or not a torch.save file."""
    weights = canonical_weights(weights)
    if weights not in NAMED_WEIGHTS and weights != "none":
        _check_checkpoint_file(Path(weights))
    return weights


def _check_checkpoint_file(path: Path) -> None:
    """One line for a checkpoint path that is missing, a directory, unreadable, empty or not a torch.save file."""
    if path.is_dir():
        raise KpbenchError(f"{path}: is a directory, expected a checkpoint file ({_WEIGHTS_CHOICES})")
    if not path.is_file():
        raise KpbenchError(f"{path}: checkpoint file not found{_weights_suggestion(str(path))} ({_WEIGHTS_CHOICES})")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if not head:
        raise KpbenchError(f"{path}: empty file, not a checkpoint")
    if not (head.startswith(_ZIP_MAGIC) or (head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5)):
        raise KpbenchError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip or pickle file)")


def _weights_suggestion(weights: str) -> str:
    """"; did you mean COCO_V1?" for a --weights value close to a named one (coco-v1, COCO_V2, ...), else ""."""
    names = {name.lower(): name for name in NAMED_WEIGHTS}
    close = difflib.get_close_matches(weights.lower(), list(names), n=1, cutoff=0.7)
    return f"; did you mean {names[close[0]]}?" if close else ""


def _load_error(exc: Exception) -> str:
    """torch.load's error in one short line: no ANSI colours, no advice on weights_only, the first sentence."""
    text = _ANSI.sub("", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text:  # the actual reason hides after several paragraphs of advice
        text = text.split(marker, 1)[1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].rstrip(".")
    text = f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__
    if marker in str(exc):
        text += "; kpbench loads checkpoints with weights_only=True: tensors and plain data only"
    return text


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """Read a state dict, or a checkpoint dict with a `model` key, from a file.

    Loaded with weights_only=True (no pickled code runs). A checkpoint of torchvision's reference training
    script also holds its argparse.Namespace of arguments, which is allowed as data.
    """
    import argparse

    import torch

    path = Path(path)
    _check_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # A pickle protocol other than 2 only draws a warning from the weights-only unpickler.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KpbenchError(f"{path}: unreadable checkpoint ({_load_error(exc)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise KpbenchError(f"{path}: not a state dict nor a checkpoint dict with a 'model' state dict")
    return obj


def _load_state(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load every tensor of `state` into `model`, exactly; a mismatch is one short line, not torch's key list."""
    not_ours = f"{path}: not a Keypoint R-CNN ResNet-50-FPN checkpoint"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape (another number of classes or keypoints)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
        raise KpbenchError(f"{not_ours} ({detail})") from None
    problems = [
        f"{len(keys)} {what} key(s), such as {keys[0]!r}"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise KpbenchError(f"{not_ours} ({'; '.join(problems)})")


def build_model(
    weights: str = "COCO_V1",
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    box_score_thresh: float = 0.05,
    seed: int = 0,
) -> tuple[torch.nn.Module, ModelInfo]:
    """Build Keypoint R-CNN in eval mode on the CPU, with the given weights and transform size.

    `weights` is "COCO_V1", "COCO_LEGACY", "none" (random, seeded with `seed`; names match case-insensitively)
    or a checkpoint path.
    """
    weights = check_weights(weights)  # before the heavy imports: a bad path fails at once

    import torch
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    # overwrite_eps lives in the detection package's _utils (torchvision.models._utils has no such name).
    from torchvision.models.detection._utils import overwrite_eps

    kwargs: dict[str, Any] = {"box_score_thresh": box_score_thresh, "min_size": min_size, "max_size": max_size}
    if weights in NAMED_WEIGHTS:
        model = _build_named(weights, **kwargs)
        info = ModelInfo(weights=weights, source="torchvision", frozen_bn_eps=0.0 if weights == "COCO_V1" else 1e-5)
    elif weights == "none":
        torch.manual_seed(seed)
        model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
        info = ModelInfo(weights="none", source="random", seed=seed)
    else:
        path = Path(weights)
        state = load_checkpoint_state(path)
        model = _frozen_bn_model(**kwargs)
        _load_state(model, state, path)
        sha = file_sha256(path)
        # torchvision's builder sets FrozenBatchNorm eps to 0 for COCO_V1, whose training used eps 0; do the
        # same when the checkpoint is that file (recognised by its hash), keep the default eps otherwise.
        eps = 0.0 if sha.startswith(_COCO_V1_SHA_PREFIX) else 1e-5
        overwrite_eps(model, eps)
        info = ModelInfo(
            weights=str(path), source="checkpoint", checkpoint_path=str(path.resolve()), checkpoint_sha256=sha,
            frozen_bn_eps=eps,
        )
    model.eval()
    return model, info


def set_input_size(model: torch.nn.Module, min_size: int, max_size: int | None = None) -> None:
    """Set the size the model's own transform resizes to: short side `min_size`, long side at most `max_size`.

    With no max_size, it keeps torchvision's 800:1333 ratio (`default_max_size`).
    """
    if max_size is None:
        max_size = default_max_size(min_size)
    model.transform.min_size = (int(min_size),)
    model.transform.max_size = int(max_size)


@contextlib.contextmanager
def record_backbone_shapes(model: torch.nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """Collect the padded batch tensor shape (N, C, H, W) of every call that reaches the backbone."""
    shapes: list[tuple[int, ...]] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        shapes.append(tuple(args[0].shape))

    handle = model.backbone.register_forward_pre_hook(hook)
    try:
        yield shapes
    finally:
        handle.remove()


@contextlib.contextmanager
def _channels_last(model: torch.nn.Module) -> Iterator[None]:
    """Weights and backbone input in channels-last memory format: the transform pads the images into a new NCHW
    batch, which is converted where it enters the backbone (inside the timed call, as in deployment)."""
    import torch

    model.to(memory_format=torch.channels_last)
    handle = model.backbone.register_forward_pre_hook(_to_channels_last)
    try:
        yield
    finally:
        handle.remove()
        model.to(memory_format=torch.contiguous_format)


def _to_channels_last(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the batch tensor (N, C, H, W) in channels-last memory format."""
    import torch

    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


@contextlib.contextmanager
def _compiled_backbone(model: torch.nn.Module) -> Iterator[None]:
    """The backbone compiled with torch.compile: it holds most of the FLOPs and has static control flow; the
    heads' NMS is data dependent and would only add graph breaks."""
    import torch

    backbone = model.backbone
    try:
        model.backbone = torch.compile(backbone)
        yield
    finally:
        model.backbone = backbone
        with contextlib.suppress(Exception):
            torch._dynamo.reset()


def _fast_postprocess(model: torch.nn.Module) -> contextlib.AbstractContextManager[None] | None:
    """torchvision's keypoint post-processing replaced by the fast one while in the context; None for a model
    whose RoI heads are not torchvision's keypoint RoIHeads, which the patch would not reach."""
    from torchvision.models.detection.roi_heads import RoIHeads

    from kpbench.models.keypointrcnn_postprocess import patched_keypoint_postprocess

    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, RoIHeads) or getattr(heads, "keypoint_predictor", None) is None:
        return None
    return patched_keypoint_postprocess()


def describe(info: ModelInfo) -> ModelInfo:
    """Keypoint R-CNN's ModelInfo with the model-level facts filled in: name, published AP of named weights (also
    a checkpoint that is one), protocol, default input size and keypoint score kind (heatmap logits)."""
    published_name = published_weights_name(info)
    extra = dict(info.extra)
    if info.source == "torchvision" and info.weights in NAMED_WEIGHTS_SHA_PREFIX:
        # torchvision checks the file against this sha256 prefix, which its file name carries.
        extra.setdefault("weights_sha256_prefix", NAMED_WEIGHTS_SHA_PREFIX[str(info.weights)])
    return replace(
        info,
        extra=extra,
        name=info.name or MODEL_NAME,
        published=info.published or (dict(PUBLISHED_AP[published_name]) if published_name else None),
        protocol=info.protocol or (PUBLISHED_PROTOCOL_TEXT if published_name else None),
        default_input_size=info.default_input_size or [DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE],
        keypoint_score_kind="logit",
    )


class KeypointRCNNModel:
    """torchvision's Keypoint R-CNN ResNet-50-FPN as a kpbench PoseModel (see kpbench.models.base).

    Takes float (3, H, W) tensors on its device (input_format "tensor") and resizes them with its own transform;
    keypoint scores are heatmap logits. `module` is the torchvision model.
    """

    schema = COCO17
    input_format = "tensor"
    draw_person_thresh = 0.9  # kpbench draw's default: the tutorial's (its scores pile up near 1 for real persons)
    input_size_definition = ("the short side given to torchvision's transform: min_size=(s,), "
                             "max_size=round(s*1333/800)")

    def __init__(
        self,
        weights: str | None = None,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        box_score_thresh: float = 0.05,
        seed: int = 0,
    ) -> None:
        if max_size is None:
            max_size = default_max_size(min_size) if min_size else DEFAULT_MAX_SIZE
        module, info = build_model(
            weights or "COCO_V1", min_size=min_size or DEFAULT_MIN_SIZE, max_size=max_size,
            box_score_thresh=box_score_thresh, seed=seed,
        )  # fmt: skip
        self._setup(module, info)

    @staticmethod
    def check_weights(weights: str | None) -> str:
        """The canonical --weights (COCO_V1 when none is given), checked without importing torch."""
        return check_weights(weights or "COCO_V1")

    @classmethod
    def from_module(cls, module: Any, info: ModelInfo) -> KeypointRCNNModel:
        """Wrap an already built model (anything with torchvision's transform, backbone and output dicts)."""
        self = cls.__new__(cls)
        self._setup(module, info)
        return self

    def _setup(self, module: Any, info: ModelInfo) -> None:
        self.module = module
        self._info = describe(info)

    def info(self) -> ModelInfo:
        return self._info

    def to(self, device: torch.device) -> KeypointRCNNModel:
        self.module.to(device)
        return self

    def predict(self, images: Sequence[torch.Tensor]) -> list[Predictions]:
        # torchvision's output keys are read here and nowhere else.
        outputs = self.module(list(images))
        return [
            Predictions(
                boxes=o["boxes"],
                scores=o["scores"],
                keypoints=o["keypoints"],
                keypoint_scores=o["keypoints_scores"],
                keypoint_score_kind="logit",
                labels=o["labels"],
            )
            for o in outputs
        ]

    def set_input_size(self, min_size: int, max_size: int | None = None) -> None:
        set_input_size(self.module, min_size, max_size)

    def record_input_shapes(self) -> contextlib.AbstractContextManager[list[tuple[int, ...]]]:
        return record_backbone_shapes(self.module)

    def speed_stages(self, device: Any) -> contextlib.AbstractContextManager[Any]:
        from kpbench.models.keypointrcnn_stages import keypointrcnn_stages

        return keypointrcnn_stages(self.module, device)

    def input_footprint(self, height: int, width: int) -> tuple[tuple[int, int, int], int]:
        """The padded tensor (3, H, W) the backbone gets for an image at the current size, and the bytes held at
        once for it (kpbench.engine.memory's guard, a lower bound): `transform_footprint`."""
        return transform_footprint(height, width, self.module.transform.min_size[-1], self.module.transform.max_size)

    # Runtime hooks (kpbench.runtimes): an ONNX export of the whole model, and this adapter over an ONNX session.

    def weights_digest(self) -> str:
        """sha256 of the weights file, or of the state dict's tensors (named or random weights)."""
        if self._info.checkpoint_sha256:
            return str(self._info.checkpoint_sha256)
        if getattr(self, "_state_digest", None) is None:
            self._state_digest = state_digest(self.module)
        return str(self._state_digest)

    def onnx_export_key(self, request: Any) -> dict[str, Any]:
        """What the ONNX file depends on: the transform's sizes and the box threshold are in the graph."""
        return {"image": [3, "height", "width"], "min_size": request.size, "max_size": request.max_size,
                "box_score_thresh": float(self.module.roi_heads.score_thresh)}

    def onnx_refuses(self, request: Any) -> str | None:
        """The export takes one image per call."""
        if request.batch_size != 1:
            return "Keypoint R-CNN's ONNX export takes one image per call (batch 1)"
        return None

    def export_onnx(self, path: Path, request: Any) -> dict[str, Any]:
        """torch.onnx export of the whole model (transform, backbone, heads, post-processing) at the request's size."""
        return export_keypointrcnn_onnx(self.module, Path(path), request)

    def onnx_model(self, session: Any, facts: dict[str, Any]) -> KeypointRCNNOnnxModel:
        """This model run through an ONNX session."""
        return KeypointRCNNOnnxModel(session, self._info, facts)

    def speed_variant(self, name: str) -> contextlib.AbstractContextManager[None] | None:
        if name == "channels_last":
            return _channels_last(self.module)
        if name == "compile":
            return _compiled_backbone(self.module)
        if name == FAST_POSTPROCESS:
            return _fast_postprocess(self.module)
        return None


# ----------------------------------------------------------------------------------------------------------
# ONNX export and the model over an ONNX session (kpbench.runtimes)

ONNX_OUTPUTS = ("boxes", "labels", "scores", "keypoints", "keypoints_scores", "padded_shape")
# The largest image (height and width) a TensorRT engine's profile takes.
ONNX_PROFILE_MAX_SIDE = 2048
EXPORTER_TEXT = (
    "torch.onnx TorchScript exporter (dynamo=False, as torchvision's ONNX tests use; the dynamo exporter stops at "
    "the RPN's data-dependent proposal count: GuardOnDataDependentSymNode)"
)


def state_digest(module: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in order)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def _export_forward(module: Any) -> Any:
    """A module whose forward is Keypoint R-CNN's on one image (3, H, W) in [0, 1], returning its outputs as a
    tuple, plus the padded batch shape that reached the backbone (so an ONNX row records padded shapes too)."""
    import torch
    from torch.onnx import operators

    class ExportForward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            m = self.model
            original = [(image.shape[-2], image.shape[-1])]
            images, _ = m.transform([image])
            features = m.backbone(images.tensors)
            proposals, _ = m.rpn(images, features)
            detections, _ = m.roi_heads(features, proposals, images.image_sizes)
            d = m.transform.postprocess(detections, images.image_sizes, original)[0]
            shape = operators.shape_as_tensor(images.tensors)
            return d["boxes"], d["labels"], d["scores"], d["keypoints"], d["keypoints_scores"], shape

    return ExportForward().eval()  # export restores the mode it found, which must stay eval for the module


def export_keypointrcnn_onnx(module: Any, path: Path, request: Any) -> dict[str, Any]:
    """Export `module` (transform at the request's size) to `path` with torch.onnx's TorchScript exporter: one image
    of any height and width per call; the facts kpbench.runtimes records."""
    import torch

    if request.batch_size != 1:
        raise KpbenchError("Keypoint R-CNN's ONNX export takes one image per call (batch 1)")
    old = (module.transform.min_size, module.transform.max_size)
    set_input_size(module, request.size, request.max_size)
    device = next(module.parameters()).device
    dummy = torch.rand(3, request.size, round(request.size * 4 / 3), generator=torch.Generator().manual_seed(0))
    dynamic = {"image": [1, 2], **{name: [0] for name in ONNX_OUTPUTS[:-1]}}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values in torchvision's code
            torch.onnx.export(
                _export_forward(module), (dummy.to(device),), str(path), opset_version=request.opset,
                input_names=["image"], output_names=list(ONNX_OUTPUTS), dynamic_axes=dynamic, dynamo=False,
            )
    except Exception as exc:
        raise KpbenchError(f"Keypoint R-CNN's ONNX export failed ({type(exc).__name__}: {exc})") from None
    finally:
        module.transform.min_size, module.transform.max_size = old
    side = ONNX_PROFILE_MAX_SIDE
    return {
        "exporter": f"{EXPORTER_TEXT}, opset {request.opset}", "input_shapes": {"image": [3, "height", "width"]},
        "batch_sizes": [1], "preprocessing": None, "min_size": request.size, "max_size": request.max_size,
        "profile": {"image": [[3, 32, 32], [3, request.size, request.max_size], [3, side, side]]},
    }  # fmt: skip


class KeypointRCNNOnnxModel(InputShapeRecorder):  # shapes: the padded batches its graph reports
    """Keypoint R-CNN's ONNX export run through a runtime's session: the same PoseModel interface (tensor input,
    logits as keypoint scores), one image per session call, at the size the export was made for."""

    schema = COCO17
    input_format = "tensor"

    def __init__(self, session: Any, info: ModelInfo, facts: dict[str, Any]) -> None:
        self.session = session
        self._info = info
        self.size = (int(facts["min_size"]), int(facts["max_size"]))
        self._input = session.get_inputs()[0].name

    def info(self) -> ModelInfo:
        return self._info

    def input_footprint(self, height: int, width: int) -> tuple[tuple[int, int, int], int]:
        """As the eager model's, at the export's size."""
        return transform_footprint(height, width, *self.size)

    def set_input_size(self, min_size: int, max_size: int | None = None) -> None:
        """The size is part of the export: another one needs another export (kpbench.runtimes builds one per size)."""
        wanted = (int(min_size), int(max_size if max_size is not None else default_max_size(min_size)))
        if wanted != self.size:
            raise KpbenchError(f"this ONNX export of Keypoint R-CNN is for min_size {self.size[0]}, max_size "
                               f"{self.size[1]}, not {wanted[0]}, {wanted[1]}")

    def predict(self, images: Sequence[Any]) -> list[Predictions]:
        out = []
        for image in images:
            array = image.detach().to("cpu", copy=False).numpy() if hasattr(image, "detach") else image
            boxes, labels, scores, keypoints, keypoint_scores, shape = self.session.run(None, {self._input: array})
            if self._shapes is not None:
                self._shapes.append(tuple(int(d) for d in shape))
            out.append(Predictions(boxes=boxes, scores=scores, keypoints=keypoints, keypoint_scores=keypoint_scores,
                                   keypoint_score_kind="logit", labels=labels))
        return out


# The device helpers moved to kpbench.engine.device (they are not Keypoint R-CNN's); these names stay importable
# from here for one release, resolved lazily so that this adapter does not import the engine.
_MOVED_TO_ENGINE = ("resolve_device", "autocast", "check_dtype", "warn_slow_dtype")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ENGINE:
        import kpbench.engine.device

        return getattr(kpbench.engine.device, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
