"""Detections per image and per model call, and the JSON-lines cache of format-1 and format-2 run directories.

`ImageDetections` is one image's detections (float64 arrays); `BatchDetections` is one model call's, as columns on
the host in the model's own precision (what the run loop hands the store writer, `kpbench.runs.store`).

Run directories of format 1 and 2 cached detections as JSON Lines (`detections.jsonl`), one line per finished
image, appended and flushed as each image finished. Format 3 writes the binary store instead
(`kpbench.runs.store`); the JSON lines stay readable (`iter_cache` reads either), and `kpbench export --to jsonl`
writes them from any run. A line looks like::

    {"image_id": 139, "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "labels": [...],
     "keypoints": [[[x, y, v] * 17], ...], "keypoint_scores": [[17 logits], ...], "input_shape": [1, 3, 800, 1216]}

Boxes are xyxy in original image pixels; keypoints are the model's (x, y, visibility) and keypoint scores are
the model's own (Keypoint R-CNN's are heatmap logits, not probabilities; the manifest's keypoint_score_kind
says which). `input_shape` is the padded batch tensor (N, C, H, W) that reached the network with this image
(models without a shape recorder leave it out): kept per image, so that the run's record of shapes survives a crash (caches written
before kpbench recorded it have none). A torn last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError, shown
from kpbench.core.schema import NUM_KEYPOINTS

if TYPE_CHECKING:
    from kpbench.models.base import Predictions


@dataclass
class ImageDetections:
    """All detections of one image, as arrays (N detections)."""

    image_id: int
    boxes: np.ndarray  # (N, 4) float64, xyxy
    scores: np.ndarray  # (N,) float64
    labels: np.ndarray  # (N,) int64
    keypoints: np.ndarray  # (N, 17, 3) float64: x, y, visibility
    keypoint_scores: np.ndarray  # (N, 17) float64 logits
    input_shape: tuple[int, ...] | None = None  # the padded batch (N, C, H, W) that reached the backbone

    def __len__(self) -> int:
        return len(self.scores)

    def to_record(self) -> dict[str, Any]:
        """The JSON-able cache line for this image."""
        record = {
            "image_id": int(self.image_id),
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "labels": self.labels.tolist(),
            "keypoints": self.keypoints.tolist(),
            "keypoint_scores": self.keypoint_scores.tolist(),
        }
        if self.input_shape is not None:
            record["input_shape"] = [int(v) for v in self.input_shape]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], num_keypoints: int = NUM_KEYPOINTS) -> ImageDetections:
        """Parse one cache line (already JSON-decoded) of detections with `num_keypoints` keypoints. Every value
        must be a JSON number: numpy would read "0.5" (and true) as one, where a results file with them is
        refused."""
        n = len(record["scores"])
        return cls(
            image_id=int(record["image_id"]),
            boxes=_numbers(record, "boxes", np.float64).reshape(n, 4),
            scores=_numbers(record, "scores", np.float64).reshape(n),
            labels=_numbers(record, "labels", np.int64).reshape(n),
            keypoints=_numbers(record, "keypoints", np.float64).reshape(n, num_keypoints, 3),
            keypoint_scores=_numbers(record, "keypoint_scores", np.float64).reshape(n, num_keypoints),
            input_shape=_shape(record["input_shape"]) if record.get("input_shape") is not None else None,
        )

    @classmethod
    def from_predictions(
        cls,
        image_id: int,
        predictions: Predictions,
        input_shape: tuple[int, ...] | None = None,
        *,
        num_keypoints: int | None = None,
        category_id: int = 1,
    ) -> ImageDetections:
        """From a model's Predictions of one image (numpy arrays or torch tensors on any device), and the padded
        batch shape that reached the network. Labels default to `category_id`; a shape that does not fit
        N detections of `num_keypoints` keypoints is a KpbenchError."""
        scores = _host(predictions.scores, np.float64)
        n = scores.size
        k = num_keypoints
        keypoints = _host(predictions.keypoints, np.float64)
        if k is None:
            k = keypoints.shape[1] if keypoints.ndim == 3 else NUM_KEYPOINTS
        labels = (
            np.full(n, category_id, dtype=np.int64) if predictions.labels is None
            else _host(predictions.labels, np.int64, integer=True)
        )  # fmt: skip
        parts = {
            "boxes": (_host(predictions.boxes, np.float64), (n, 4)), "scores": (scores, (n,)),
            "labels": (labels, (n,)), "keypoints": (keypoints, (n, k, 3)),
            "keypoint_scores": (_host(predictions.keypoint_scores, np.float64), (n, k)),
        }  # fmt: skip
        for name, (array, shape) in parts.items():
            if array.size != int(np.prod(shape)):
                raise KpbenchError(
                    f"image {image_id}: predictions {name} has shape {tuple(array.shape)}, expected {shape} "
                    f"({n} detections, {k} keypoints)"
                )
        return cls(
            image_id=int(image_id),
            **{name: array.reshape(shape) for name, (array, shape) in parts.items()},
            input_shape=tuple(int(v) for v in input_shape) if input_shape is not None else None,
        )


@dataclass
class BatchDetections:
    """One model call's detections on the host, as columns: B images, N detections in all, image i's rows being
    ``starts[i]:starts[i + 1]``. Float columns keep the model's precision (float32 from torch tensors; float64
    from numpy arrays), so the store records float32 when nothing would be lost."""

    image_ids: np.ndarray  # (B,) int64
    counts: np.ndarray  # (B,) int64, detections per image
    boxes: np.ndarray  # (N, 4) xyxy
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) int64
    keypoints: np.ndarray  # (N, K, 3)
    keypoint_scores: np.ndarray  # (N, K)
    input_shape: tuple[int, ...] | None = None  # the padded batch (B, C, H, W) that reached the network

    @property
    def starts(self) -> np.ndarray:
        """(B + 1,) row offsets of the images."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def image(self, i: int) -> ImageDetections:
        """Image i of the call as an ImageDetections (float64 arrays, as the JSON-lines cache held them)."""
        a, b = (int(v) for v in self.starts[i : i + 2])
        return ImageDetections(
            image_id=int(self.image_ids[i]), boxes=self.boxes[a:b].astype(np.float64),
            scores=self.scores[a:b].astype(np.float64), labels=self.labels[a:b].astype(np.int64),
            keypoints=self.keypoints[a:b].astype(np.float64),
            keypoint_scores=self.keypoint_scores[a:b].astype(np.float64), input_shape=self.input_shape,
        )

    def images(self) -> list[ImageDetections]:
        """Every image of the call, in order."""
        return [self.image(i) for i in range(len(self))]


def _host(value: Any, dtype: Any, integer: bool = False) -> np.ndarray:
    """A prediction array on the host: torch tensors go through float32 (or stay integer), as torchvision's
    outputs always have, so that the cache lines are what they were when kpbench read torchvision directly."""
    if hasattr(value, "detach"):
        tensor = value.detach()
        return (tensor if integer else tensor.float()).cpu().numpy().astype(dtype)
    return np.asarray(value, dtype=dtype)


def _numbers(record: dict[str, Any], key: str, dtype: Any) -> np.ndarray:
    """record[key] as an array of `dtype`; a ValueError unless it holds only JSON numbers (ints or floats)."""
    values = np.asarray(record[key])
    if values.dtype.kind in "iuf" or not values.size:
        return values.astype(dtype)
    # Strings ('U'), bools ('b'), None or ints beyond int64 ('O'): only the last may pass, found item by item.
    bad = [v for v in _flat(record[key]) if type(v) not in (int, float)][:1]
    if not bad:
        return values.astype(dtype)
    raise ValueError(f"'{key}' holds a non-number: {shown(bad[0])}")


def _flat(value: Any) -> Iterator[Any]:
    """The leaves of nested lists."""
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


def _shape(value: Any) -> tuple[int, ...]:
    """A cache line's input_shape: four positive integers (N, C, H, W)."""
    if not isinstance(value, list) or len(value) != 4 or not all(type(v) is int and v > 0 for v in value):
        raise ValueError(f"input_shape must be 4 positive integers, got {value!r}")
    return tuple(value)


def append_detections(fh: IO[str], dets: ImageDetections) -> None:
    """Append one image's line to an open cache file and make it durable."""
    fh.write(json.dumps(dets.to_record(), separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def iter_cache(path: str | Path, num_keypoints: int | None = None) -> Iterator[ImageDetections]:
    """Read a detections file, image by image: a format-3 store (`kpbench.runs.store`, whose torn tail is
    skipped) or a JSON-lines cache (a torn final line is skipped, a torn line elsewhere is an error). JSON lines
    have `num_keypoints` keypoints; by default, those of the schema in the manifest of the run directory that holds
    the file (17 for a format-1 run, or a cache outside a run directory)."""
    path = Path(path)
    if path.is_dir():
        raise KpbenchError(f"{path}: is a directory, expected the run's detections file")
    if not path.is_file():
        raise KpbenchError(f"{path}: detections cache not found (is this a run directory made by `kpbench run`?)")
    from kpbench.runs.store import is_store_file, iter_store

    if is_store_file(path):
        yield from iter_store(path)
        return
    k = num_keypoints if num_keypoints is not None else _run_keypoint_count(path.parent)
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):  # line by line: val2017's cache can be hundreds of MB
            if not line.endswith(b"\n"):
                return  # only the last line can lack its newline: a torn tail, redone on resume
            try:
                # json.loads reads UTF-8 bytes; bad bytes are a ValueError (UnicodeDecodeError) like bad JSON.
                yield ImageDetections.from_record(json.loads(line), k)
            except (KeyError, ValueError, TypeError, OverflowError) as exc:
                raise KpbenchError(f"{path}: line {number} is not a valid detections record ({exc})") from None


def read_cache(path: str | Path, num_keypoints: int | None = None) -> dict[int, ImageDetections]:
    """All cached images by id (the last line wins if an image appears twice)."""
    return {d.image_id: d for d in iter_cache(path, num_keypoints)}


def _run_keypoint_count(run_dir: Path) -> int:
    """K of the schema a run directory's manifest records; 17 without one (format 1, or no run directory)."""
    from kpbench.runs.directory import is_run_dir, read_manifest, run_format

    if not is_run_dir(run_dir):
        return NUM_KEYPOINTS
    try:
        return run_format(read_manifest(run_dir)).schema.num_keypoints
    except KpbenchError:  # a damaged manifest is reported by the code that reads it for what it says
        return NUM_KEYPOINTS


def to_coco_results(images: Iterable[ImageDetections]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO keypoint and bbox results, torchvision's convention.

    Keypoint results carry the box score and no `bbox` (pycocotools would take the area from it); keypoints are
    the model's (x, y, v) unchanged. Box results are xywh.
    """
    keypoint_results: list[dict[str, Any]] = []
    bbox_results: list[dict[str, Any]] = []
    for det in images:
        for i in range(len(det)):
            x1, y1, x2, y2 = det.boxes[i].tolist()
            score = float(det.scores[i])
            category = int(det.labels[i])
            keypoint_results.append(
                {
                    "image_id": det.image_id,
                    "category_id": category,
                    "keypoints": det.keypoints[i].reshape(-1).tolist(),
                    "score": score,
                }
            )
            bbox_results.append(
                {"image_id": det.image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    return keypoint_results, bbox_results
