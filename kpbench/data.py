"""COCO image sets: locating the root, RGB decoding, image selection and the DataLoader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kpbench.errors import KpbenchError

if TYPE_CHECKING:
    import torch

COCO_ROOT_ENV = "KPBENCH_COCO_ROOT"


def resolve_coco_root(root: str | Path | None) -> Path:
    """The COCO root from the option, else $KPBENCH_COCO_ROOT; a clear error when neither exists."""
    value = root if root is not None else os.environ.get(COCO_ROOT_ENV)
    if value is None:
        raise KpbenchError(
            f"no COCO root given: pass --coco-root DIR or set {COCO_ROOT_ENV} "
            "(`kpbench data download --root DIR` fetches val2017)"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise KpbenchError(f"{path}: COCO root not found (`kpbench data download --root {path}` fetches val2017)")
    return path


def annotation_path(root: Path, split: str = "val2017") -> Path:
    """ROOT/annotations/person_keypoints_<split>.json"""
    return root / "annotations" / f"person_keypoints_{split}.json"


def image_path(root: Path, split: str, file_name: str) -> Path:
    """ROOT/<split>/<file_name>"""
    return root / split / file_name


def read_image_rgb(path: str | Path) -> torch.Tensor:
    """Decode an image file as an RGB float tensor (3, H, W) in [0, 1] (never BGR: the model expects RGB)."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise KpbenchError(f"{path}: image file not found")
    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise KpbenchError(f"{path}: cannot decode image ({str(exc).splitlines()[0]})") from None
    return image.float().div_(255.0)
