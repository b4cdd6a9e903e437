"""Building torchvision's Keypoint R-CNN: named weights, checkpoints, random weights, input size, device, dtype.

torch and torchvision are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.errors import KpbenchError
from kpbench.io import file_digest

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


@dataclass
class ModelInfo:
    """What was loaded, for the run manifest."""

    weights: str
    source: str  # "torchvision", "checkpoint" or "random"
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    frozen_bn_eps: float | None = None
    seed: int | None = None


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


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """Read a state dict, or a checkpoint dict with a `model` key, from a file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise KpbenchError(f"{path}: checkpoint file not found (--weights takes COCO_V1, COCO_LEGACY, none or a path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KpbenchError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
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

    `weights` is "COCO_V1", "COCO_LEGACY", "none" (random, seeded with `seed`) or a checkpoint path.
    """
    import torch
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    # overwrite_eps lives in the detection package's _utils (torchvision.models._utils has no such name).
    from torchvision.models.detection._utils import overwrite_eps

    kwargs: dict[str, Any] = {"box_score_thresh": box_score_thresh, "min_size": min_size, "max_size": max_size}
    if weights in NAMED_WEIGHTS:
        model = _build_named(weights, **kwargs)
        info = ModelInfo(weights=weights, source="torchvision", frozen_bn_eps=0.0 if weights == "COCO_V1" else 1e-5)
    elif weights.lower() == "none":
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


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" picks cuda when available; "cuda" without a GPU is a clear error.

    A CUDA device always comes back with its index ("cuda" is the current device, usually cuda:0), so that
    synchronisation, CUDA events and memory statistics all name the same GPU.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise KpbenchError(f"--device: unknown device {device!r} (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KpbenchError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise KpbenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise KpbenchError(f"--device: unsupported device {device!r} (auto, cpu, cuda or cuda:N)")
    return dev


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for "fp16"/"bf16"; a no-op for "fp32"."""
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return torch.autocast(device_type=device.type, dtype=torch_dtype)


def check_dtype(device: torch.device, dtype: str) -> None:
    """Fail early, as a user error, where the device cannot autocast to `dtype` (bf16 on a GPU without it)."""
    try:
        autocast(device, dtype)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise KpbenchError(f"--dtype {dtype}: not available on {device} ({reason})") from None


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
