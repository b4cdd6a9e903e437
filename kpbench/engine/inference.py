"""The one inference loop: `kpbench run`, speed's `--accuracy` and `kpbench draw` feed images through here.

The driver owns everything around the model (as detectron2's `inference_on_dataset` does): converting the
decoded images to the model's input format, inference mode and autocast, the clock, the record of padded input
shapes, and bringing the model's Predictions to the host once the clock has stopped. The caller owns where the
batches come from (a DataLoader, files; `background` decodes them ahead in a thread) and what happens to each
finished call (`on_batch`: the store writer, a list, a drawing).

One model call is timed as ``synchronize -> perf_counter -> predict -> synchronize -> perf_counter`` (the
synchronisations on CUDA only): the model's own resize and post-processing are included, decoding and the copy
to the device are not.

**One copy to the host per call.** The call's predictions, whatever their number of images, are packed on their
device into one float32 tensor (labels carried bit for bit as int64) and copied to the host once
(`predictions_to_host`): not one copy per array and image, each of which waits for the device. Torch tensors come
to the host as float32, as torchvision gives them; numpy arrays keep their dtype (float64 where a model computes
in float64), so nothing is rounded that the model gave more precisely.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.models.base import Predictions, input_format, model_info, model_name, record_input_shapes
from kpbench.runs.detections import BatchDetections, ImageDetections

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
_COLUMNS = ("boxes", "scores", "keypoints", "keypoint_scores")


class ModelCallError(KpbenchError):
    """A model's predict raised. The message names the model and the images of the call; `cause` is the
    exception the model raised, whose traceback the command line shows before the one `error:` line."""

    def __init__(self, message: str, cause: BaseException, model: str, image_ids: Sequence[int]) -> None:
        super().__init__(message)
        self.cause = cause
        self.model = model
        self.image_ids = [int(i) for i in image_ids]


@dataclass
class BatchResult:
    """One model call: the image ids, their detections as host columns (`batch`), the padded input shape (None
    when the model records none) and the seconds the call took. `detections` gives them image by image."""

    image_ids: list[int]
    batch: BatchDetections
    input_shape: tuple[int, ...] | None
    model_s: float
    _images: list[ImageDetections] | None = field(default=None, repr=False)

    @property
    def detections(self) -> list[ImageDetections]:
        """The call's images as ImageDetections (float64), in order."""
        if self._images is None:
            self._images = self.batch.images()
        return self._images


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


def _shape_of(value: Any) -> tuple[int, ...]:
    """An array's shape without touching its data (a tensor's shape is host metadata on every device)."""
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else np.shape(value)


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "device")


def predictions_to_host(
    image_ids: Sequence[int],
    predictions: Sequence[Predictions],
    num_keypoints: int,
    category_id: int = 1,
    input_shape: tuple[int, ...] | None = None,
) -> BatchDetections:
    """A call's Predictions as host columns, with one device-to-host copy per device (see the module docstring).

    Shapes are checked first, from the arrays' metadata: an array whose size does not fit N detections of K
    keypoints is a KpbenchError naming the image (any shape of the right size is taken, as reshaping it)."""
    k = num_keypoints
    counts = [len(p) for p in predictions]
    expected = {"boxes": (4,), "scores": (), "keypoints": (k, 3), "keypoint_scores": (k,)}
    for image_id, p, n in zip(image_ids, predictions, counts):
        for name in _COLUMNS:
            shape = _shape_of(getattr(p, name))
            want = (n, *expected[name])
            if math.prod(shape) != math.prod(want):
                raise KpbenchError(f"image {image_id}: predictions {name} has shape {shape}, expected {want} "
                                   f"({n} detections, {k} keypoints)")
        if p.labels is not None and math.prod(_shape_of(p.labels)) != n:
            raise KpbenchError(f"image {image_id}: predictions labels has shape {_shape_of(p.labels)}, expected "
                               f"({n},) ({n} detections, {k} keypoints)")
    # Every (column, image) value: torch tensors are packed per device and copied once; the rest go through numpy.
    host: dict[tuple[str, int], np.ndarray] = {}
    by_device: dict[Any, list[tuple[str, int, Any]]] = {}
    for i, p in enumerate(predictions):
        for name in (*_COLUMNS, "labels"):
            value = getattr(p, name)
            if value is None:
                continue
            if _is_tensor(value):
                by_device.setdefault(value.device, []).append((name, i, value))
            elif name == "labels":  # copies (np.array): the model may reuse its arrays for its next call
                host[name, i] = np.array(value, dtype=np.int64).reshape(-1)
            else:
                host[name, i] = np.array(value, dtype=np.float64).reshape(-1)
    for items in by_device.values():
        _copy_tensors(items, host)
    n_total = sum(counts)

    def column(name: str, dtype: Any, width: tuple[int, ...]) -> np.ndarray:
        parts = [host[name, i] for i in range(len(predictions))]
        if not parts:
            return np.zeros((0, *width), dtype)
        wide = any(part.dtype == np.float64 for part in parts)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out.astype(np.float64 if wide else dtype, copy=False).reshape(n_total, *width)

    for i, (p, n) in enumerate(zip(predictions, counts)):
        if p.labels is None:
            host["labels", i] = np.full(n, category_id, dtype=np.int64)
    labels_parts = [host["labels", i] for i in range(len(predictions))]
    return BatchDetections(
        image_ids=np.asarray(image_ids, dtype=np.int64).reshape(-1),
        counts=np.asarray(counts, dtype=np.int64).reshape(-1),
        boxes=column("boxes", np.float32, (4,)),
        scores=column("scores", np.float32, ()),
        labels=(np.concatenate(labels_parts) if labels_parts else np.zeros(0, np.int64)).astype(np.int64, copy=False),
        keypoints=column("keypoints", np.float32, (k, 3)),
        keypoint_scores=column("keypoint_scores", np.float32, (k,)),
        input_shape=tuple(int(v) for v in input_shape) if input_shape is not None else None,
    )


def _copy_tensors(items: list[tuple[str, int, Any]], host: dict[tuple[str, int], np.ndarray]) -> None:
    """Pack one device's tensors into one flat float32 tensor there (labels as the float32 pairs of their int64
    bits, first, so that they stay 8-byte aligned), copy it to the host once, and cut it up again."""
    import torch

    items = sorted(items, key=lambda item: item[0] != "labels")
    flat = []
    for name, _, tensor in items:
        t = (tensor.detach() if tensor.requires_grad else tensor).reshape(-1)
        if name == "labels":
            t = (t if t.dtype == torch.int64 else t.to(torch.int64)).view(torch.float32)
        elif t.dtype != torch.float32:
            t = t.float()
        flat.append(t)
    # A CPU tensor's .cpu() is itself: copy one that is not new, so that the writer thread never reads memory the
    # model may reuse for its next call.
    packed = (torch.cat(flat) if len(flat) > 1 else flat[0].clone()).cpu().numpy()
    pos = 0
    for (name, i, _), t in zip(items, flat):
        size = int(t.numel())
        piece = packed[pos : pos + size]
        host[name, i] = piece.view(np.int64) if name == "labels" else piece
        pos += size


def background(batches: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`batches` produced by a thread, up to `depth` ahead: decoding (which releases the GIL in torchvision's
    decoders) overlaps the model. An exception in the thread is raised here, where the batch would have come."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            items.put(("error", exc))

    thread = threading.Thread(target=produce, name="kpbench-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


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
    torch model simply ignores both). An exception from the model's predict is a `ModelCallError` naming the
    model and the images, with the model's own exception as its cause."""
    import torch

    from kpbench.engine.device import autocast

    schema = model.schema
    kind = model_info(model).keypoint_score_kind
    name = model_name(model)
    cuda = device.type == "cuda"
    stats = InferenceStats()
    with torch.inference_mode(), record_input_shapes(model) as shapes:
        for ids, images in batches:
            inputs = prepare_images(model, images, device, non_blocking=non_blocking and cuda)
            recorded = len(shapes) if shapes is not None else 0
            if cuda:
                torch.cuda.synchronize(device)  # the copies above are not model time
            t0 = time.perf_counter()
            try:
                with autocast(device, dtype):
                    # A model that looks its inputs up by image id (a top-down model's GT or file boxes) asks for them.
                    predictions = (model.predict(inputs, image_ids=[int(i) for i in ids])
                                   if getattr(model, "wants_image_ids", False) else model.predict(inputs))
                if cuda:
                    torch.cuda.synchronize(device)
            except (KpbenchError, KeyboardInterrupt):
                raise
            except Exception as exc:  # the model's own failure: keep its traceback, name the images
                which = f"image {ids[0]}" if len(ids) == 1 else f"images {', '.join(str(int(i)) for i in ids)}"
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ModelCallError(f"{name}.predict raised {type(exc).__name__}"
                                     f"{f' ({first})' if first else ''} on {which}", exc, name, ids) from exc
            model_s = time.perf_counter() - t0
            predictions = check_predictions(model, predictions, len(inputs), kind)
            # This call's padded batch, as the model's recorder saw it (none when nothing was recorded).
            shape = shapes[-1] if shapes is not None and len(shapes) > recorded else None
            host = predictions_to_host(ids, predictions, schema.num_keypoints, schema.category_id, shape)
            stats.images += len(inputs)
            stats.calls += 1
            stats.model_s += model_s
            on_batch(BatchResult([int(i) for i in ids], host, host.input_shape, model_s))
    if shapes is not None:
        stats.shapes = [tuple(int(v) for v in s) for s in shapes]
    return stats
