"""The images of the speed table: the COCO images it times (and scores with --accuracy), or seeded synthetic ones,
decoded into the model's input format before any timing, and the batches the calls cycle through."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.schema import COCO17
from kpbench.engine.timing import sync

if TYPE_CHECKING:
    import torch

# The (height, width) of synthetic images: a typical COCO image.
SYNTHETIC_HW = (480, 640)


def select_person_images(gt: dict[str, Any], n: int, category_id: int = COCO17.category_id) -> list[dict[str, Any]]:
    """The first `n` images, by ascending id, with a non-crowd person annotation that has keypoints.

    Deterministic; keypoints are required so that --accuracy has something to score on every chosen image.
    """
    from kpbench.data.coco import images_with_instances

    with_people = images_with_instances(gt, category_id, labelled=True)
    records = sorted((im for im in gt["images"] if im["id"] in with_people), key=lambda im: im["id"])
    return records[:n]


def load_images(
    root: Path, split: str, records: Sequence[dict[str, Any]], device: torch.device, model: Any
) -> tuple[list[Any], dict[str, float]]:
    """Decode images into `model`'s input format (on `device` for a tensor model); returns them and the mean
    preprocessing ms per image: `preprocess_ms`, split into `decode_ms` (read and decode the file) and
    `to_device_ms` (into the model's input format, on its device).

    Each image is loaded twice: the first load (disk cache, decoder set-up) is kept, the second is timed.
    """
    from kpbench.data.coco import image_path, read_image_rgb_uint8
    from kpbench.engine.inference import prepare_images

    paths = [image_path(root, split, r["file_name"]) for r in records]
    images = [prepare_images(model, [read_image_rgb_uint8(p)], device)[0] for p in paths]
    decode, to_device = [], []
    for p in paths:
        sync(device)
        t0 = time.perf_counter()
        decoded = read_image_rgb_uint8(p)
        t1 = time.perf_counter()
        x = prepare_images(model, [decoded], device)
        sync(device)
        t2 = time.perf_counter()
        decode.append((t1 - t0) * 1e3)
        to_device.append((t2 - t1) * 1e3)
        del x
    n = len(paths)
    return images, {"preprocess_ms": (sum(decode) + sum(to_device)) / n, "decode_ms": sum(decode) / n,
                    "to_device_ms": sum(to_device) / n}  # fmt: skip


def synthetic_images(
    n: int, seed: int, device: torch.device, hw: tuple[int, int] = SYNTHETIC_HW, model: Any = None
) -> tuple[list[Any], dict[str, float]]:
    """`n` seeded random RGB images of a typical COCO size in `model`'s input format (float on `device` for a
    tensor model or without a model; uint8 numpy otherwise); returns them and the mean to-device ms per image
    (as `preprocess_ms` and `to_device_ms`; nothing is decoded)."""
    import torch

    from kpbench.models.base import input_format

    gen = torch.Generator().manual_seed(seed)
    host = [torch.rand((3, *hw), generator=gen) for _ in range(n)]
    if model is not None and input_format(model) == "numpy":
        # The same random images, quantised as a decoded file would be.
        arrays = [(x * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy() for x in host]
        return arrays, {"preprocess_ms": 0.0, "decode_ms": None, "to_device_ms": 0.0}
    images, times = [], []
    for x in host:
        sync(device)
        t0 = time.perf_counter()
        images.append(x.to(device))
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    mean = sum(times) / len(times)
    return images, {"preprocess_ms": mean, "decode_ms": None, "to_device_ms": mean}


def make_batches(images: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """Batches of `batch_size` consecutive images (wrapping around), one starting at each image position."""
    n = len(images)
    count = n // math.gcd(n, batch_size)  # after this many batches the cycle repeats
    return [[images[(k * batch_size + j) % n] for j in range(batch_size)] for k in range(count)]
