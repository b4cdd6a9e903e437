"""COCO image sets: locating the root, RGB decoding, image selection and the DataLoader."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import out_of_memory, read_file_bytes, read_json
from kpbench.core.schema import COCO17, is_id_value

if TYPE_CHECKING:
    import torch

COCO_ROOT_ENV = "KPBENCH_COCO_ROOT"


def resolve_coco_root(root: str | Path | None) -> Path:
    """The COCO root from the option, else $KPBENCH_COCO_ROOT; a clear error when neither exists."""
    value = root if root is not None else os.environ.get(COCO_ROOT_ENV)
    if value is None:
        raise KpbenchError(
            f"no COCO root given: pass --coco-root DIR or set {COCO_ROOT_ENV} "
            "(`kpbench data download --coco-root DIR` fetches val2017)"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise KpbenchError(
            f"{path}: COCO root not found (`kpbench data download --coco-root {path}` fetches val2017, "
            "or add --download to `kpbench run`)"
        )
    return path


def annotation_path(root: Path, split: str = "val2017") -> Path:
    """ROOT/annotations/person_keypoints_<split>.json"""
    return root / "annotations" / f"person_keypoints_{split}.json"


def image_path(root: Path, split: str, file_name: str) -> Path:
    """ROOT/<split>/<file_name>"""
    return root / split / file_name


IMAGE_SETS = ("all", "with-persons")
_GET_DATA_HINT = "`kpbench data download --coco-root {root}` or `kpbench run --download` fetches it"


def load_annotations(root: Path, split: str = "val2017") -> dict[str, Any]:
    """Parse ROOT/annotations/person_keypoints_<split>.json; a missing or broken file says how to get it."""
    path = annotation_path(root, split)
    if not path.exists():
        raise KpbenchError(f"{path}: annotation file not found ({_GET_DATA_HINT.format(root=root)})")
    data = read_json(path, invalid="cannot read the annotation file", hint="; delete it and download it again",
                     what="annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise KpbenchError(f"{path}: not a COCO annotation file (no 'images' and 'annotations' lists)")
    # What selecting images needs (every other field is checked where the GT is evaluated).
    for kind, key in (("images", "id"), ("annotations", "image_id")):
        for i, record in enumerate(data[kind]):
            value = record.get(key) if isinstance(record, dict) else record
            if not is_id_value(value):  # as the evaluation takes ids
                raise KpbenchError(f"{path}: {kind} entry {i}: '{key}' must be an integer id, got {value!r}")
    return data


def images_with_instances(gt: dict[str, Any], category_id: int, labelled: bool = False) -> set[int]:
    """The ids of the images that show an instance of `category_id` (a person, for COCO): any annotation of it,
    crowd regions included; with `labelled`, only non-crowd annotations with labelled keypoints count."""
    return {
        int(a["image_id"])
        for a in gt["annotations"]
        if a.get("category_id", category_id) == category_id
        and (not labelled or (not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0))
    }


def select_image_ids(
    gt: dict[str, Any],
    images: str = "all",
    limit: int | None = None,
    image_ids: Sequence[int] | None = None,
    category_id: int = COCO17.category_id,
) -> list[int]:
    """The evaluated image ids, ascending: all images (the protocol) or those with an annotation of
    `category_id` (persons), then only `image_ids` if given, then the first `limit`."""
    if images not in IMAGE_SETS:
        raise KpbenchError(f"--images: must be one of {', '.join(IMAGE_SETS)}, got {images!r}")
    ids = sorted({int(img["id"]) for img in gt["images"]})
    if images == "with-persons":
        with_persons = images_with_instances(gt, category_id)
        ids = [i for i in ids if i in with_persons]
    if image_ids is not None:
        known = set(ids)
        missing = [i for i in image_ids if i not in known]
        if missing:
            where = "the annotation file" if images == "all" else "the images with persons"
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise KpbenchError(f"--image-ids: {shown} not in {where}")
        wanted = set(image_ids)
        ids = [i for i in ids if i in wanted]
    if limit is not None:
        if limit < 1:
            raise KpbenchError(f"--limit: must be >= 1, got {limit}")
        ids = ids[:limit]
    if not ids:
        raise KpbenchError("no images selected (the annotation file lists none that match --images)")
    return ids


def restrict_ground_truth(gt: dict[str, Any], image_ids: Sequence[int]) -> dict[str, Any]:
    """The annotation file restricted to `image_ids`: their image records (ascending id), their annotations
    (file order), and every other top-level key (info, licenses, categories) unchanged."""
    positions = ground_truth_positions(gt, image_ids)
    out = dict(gt)
    out["images"] = [gt["images"][i] for i in positions["image"]]
    out["annotations"] = [gt["annotations"][i] for i in positions["annotation"]]
    return out


def ground_truth_positions(gt: dict[str, Any], image_ids: Sequence[int]) -> dict[str, list[int]]:
    """Where in the annotation file each record `restrict_ground_truth` keeps comes from, in its order:
    {"image": [index in gt["images"], ...], "annotation": [index in gt["annotations"], ...]} (so that a message
    about the restricted GT can name the file's records)."""
    wanted = set(image_ids)
    images = [i for i, img in enumerate(gt["images"]) if int(img["id"]) in wanted]
    return {
        "image": sorted(images, key=lambda i: int(gt["images"][i]["id"])),  # stable: file order among equal ids
        "annotation": [i for i, a in enumerate(gt["annotations"]) if int(a["image_id"]) in wanted],
    }


def image_files(root: Path, split: str, gt: dict[str, Any], image_ids: Sequence[int]) -> list[Path]:
    """The image file of each id (from its `file_name`); every missing file is a clear error up front, so a
    long run does not stop at image 4000."""
    by_id = {int(img["id"]): img for img in gt["images"]}
    paths = [image_path(root, split, str(by_id[i].get("file_name", f"{i:012d}.jpg"))) for i in image_ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        folder = root / split
        if not folder.is_dir():
            raise KpbenchError(f"{folder}: image folder not found ({_GET_DATA_HINT.format(root=root)})")
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise KpbenchError(
            f"{missing[0]}: image file not found{more} (`kpbench data download --coco-root {root}` or `kpbench run "
            f"--download` extracts the missing images again from {split}.zip)"
        )
    return paths


def read_image_rgb_uint8(path: str | Path) -> torch.Tensor:
    """Decode an image file as an RGB uint8 tensor (3, H, W): grey, CMYK and alpha images become 3-channel RGB."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    raw = read_file_bytes(path, "image file")
    if not raw:  # torch.frombuffer refuses an empty buffer with a ValueError of its own
        raise KpbenchError(f"{path}: cannot decode image (empty file)")
    try:
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec; they are still the reference here.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchVision are deprecated")
            image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise KpbenchError(f"{path}: cannot decode image ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    except MemoryError:
        raise out_of_memory(path, len(raw)) from None
    if image.dtype == torch.uint16:  # a 16-bit PNG: scale to 8 bits, rounding to nearest (x * 255 / 65535)
        image = ((image.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    if image.dtype != torch.uint8:
        raise KpbenchError(f"{path}: unsupported pixel type {image.dtype} (expected 8- or 16-bit RGB)")
    return image


def read_image_rgb(path: str | Path) -> torch.Tensor:
    """Decode an image file as an RGB float tensor (3, H, W) in [0, 1] (never BGR: the model expects RGB)."""
    return to_float_image(read_image_rgb_uint8(path))


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) to float in [0, 1], the model's input; the same op on every device, so results match."""
    return image.float().div_(255.0)


@dataclass(frozen=True)
class UnreadableImage:
    """An image a dataset item could not decode, with the one-line message that says why."""

    message: str


def raise_unreadable(images: Sequence[Any]) -> None:
    """Raise the KpbenchError of the first UnreadableImage of a batch, if any."""
    for image in images:
        if isinstance(image, UnreadableImage):
            raise KpbenchError(image.message)


class CocoImages:
    """A map-style dataset over image files: item i is (image_id, uint8 RGB tensor (3, H, W)).

    Images stay uint8 until they reach the device (4x less to copy; `to_float_image` there). A plain class,
    not a torch Dataset subclass, so that importing this module does not import torch; DataLoader only needs
    `__len__` and `__getitem__`.
    """

    def __init__(self, image_ids: Sequence[int], paths: Sequence[Path]) -> None:
        if len(image_ids) != len(paths):
            raise ValueError("image_ids and paths differ in length")
        self.image_ids = [int(i) for i in image_ids]
        self.paths = [Path(p) for p in paths]

    @classmethod
    def from_annotations(cls, root: Path, split: str, gt: dict[str, Any], image_ids: Sequence[int]) -> CocoImages:
        """The images of `image_ids` under ROOT/<split>, checked to exist."""
        return cls(image_ids, image_files(root, split, gt, image_ids))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | UnreadableImage]:
        try:
            return self.image_ids[index], read_image_rgb_uint8(self.paths[index])
        except KpbenchError as exc:
            # Returned, not raised: a DataLoader worker would wrap the error in its own traceback.
            return self.image_ids[index], UnreadableImage(str(exc))


def collate_images(
    batch: list[tuple[int, torch.Tensor | UnreadableImage]],
) -> tuple[list[int], list[torch.Tensor | UnreadableImage]]:
    """Keep images as a list: they differ in size, and the model pads them itself."""
    return [image_id for image_id, _ in batch], [image for _, image in batch]


def make_loader(
    dataset: CocoImages, batches: Sequence[Sequence[int]], workers: int = 2, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding (image_ids, uint8 images) for the given batches of dataset indices, in order.

    Batches are fixed up front (not by the loader), so that resumed and distributed runs feed the model the
    very same batches as an uninterrupted single-process run.
    """
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        # A few batches in flight per worker keep the device fed without holding many decoded images.
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
