"""Building torchvision's Keypoint R-CNN: named weights, checkpoints, random weights, input size, device, dtype.

torch and torchvision are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.io import file_digest

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
    """Fail early, as a user error, where the device cannot autocast to `dtype` (bf16 on a GPU without it); warn
    where it can but is very slow (`warn_slow_dtype`)."""
    try:
        autocast(device, dtype)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise KpbenchError(f"--dtype {dtype}: not available on {device} ({reason})") from None
    warn_slow_dtype(device, dtype)


def warn_slow_dtype(device: torch.device, dtype: str) -> None:
    """A warning for fp16 on a CPU: autocast accepts it, but CPUs have few float16 kernels, so Keypoint R-CNN runs
    hundreds of times slower than in fp32 there, with no other sign of why."""
    if dtype == "fp16" and device.type == "cpu":
        warnings.warn(
            "--dtype fp16 on a CPU: float16 autocast is very slow there (hundreds of times slower than fp32); "
            "use fp32, or bf16 on a CPU that supports it",
            KpbenchWarning,
            stacklevel=2,
        )


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
