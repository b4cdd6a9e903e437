"""Top-down pose models: a crop model (one person per crop) behind the interface below, and `TopDownModel`, which
composes a person-box source, kpbench's crops and the crop model into a whole-image PoseModel that the run loop
and speed drive like any other.

**A crop model** is any object with

- ``schema``: its `KeypointSchema` (K keypoints; its flip pairs serve the flip test);
- ``crop_size``: (width, height) of the crops it takes, e.g. (192, 256);
- ``predict_crops(batch: CropBatch) -> CropOutput``: for the M crops of `batch`, either ``keypoints`` (M, K, 2) in
  crop pixels with ``keypoint_scores`` (M, K), or ``heatmaps`` (M, K, Hh, Wh), which kpbench decodes
  (`kpbench.models.crops.decode_heatmaps`: arg-max, quarter-pixel shift, the maximum as the score, as HRNet does);
- ``info() -> ModelInfo`` (its ``keypoint_score_kind`` says whether the scores are probabilities or logits);
- optionally ``pixel_convention`` ("index", the default: HRNet's and mmpose's, a pixel's index is its coordinate;
  or "centre": continuous pixels, e.g. normalised landmarks times the crop size; `kpbench.models.crops`), which
  sets where the warp samples, how heatmap pixels map to the crop and how a mirrored crop maps back, and
  ``heatmap_refinement`` ("hrnet", the default, or "mmpose": the reference decoders' border rules);
- optionally ``input_format`` ("tensor", the default here: ``batch.images`` is a float (M, 3, H, W) tensor in
  [0, 1] on the model's device; or "numpy": a list of M uint8 (H, W, 3) arrays) and ``to(device)``.

kpbench does the cropping (`kpbench.models.crops`: centre and scale, the aspect-ratio fix, the padding factor, the
affine warp, batched across the images of a call up to ``crop_batch_size`` crops per model call) and maps the
keypoints back to the image with the exact inverse of each crop's affine. ``CropBatch`` also carries each crop's
image id, person box and affine, for adapters that want them (an oracle in the tests does).

**Flip test** (``flip_test``): the crops are also given mirrored; the mirrored answer is mapped back (x -> W - 1 - x under the "index"
pixel convention, where a mirrored heatmap is also shifted one column as HRNet and mmpose do; x -> W - x under
"centre"; left and right keypoints swapped by the schema's flip pairs) and averaged with the plain one: in heatmap space where
the adapter returns heatmaps (``flip_space`` "auto" or "heatmaps"), else in keypoint space (keypoints and scores
averaged). A schema without flip pairs cannot be flip-tested (refused).

**Detections.** One per selected person box: its box and its box score as the person score (post-processing, such
as rescoring by the keypoint scores and OKS-NMS, is a stage of its own: `kpbench.engine.postprocess`, whose OKS uses
this model's `nms_areas`, the crop regions' areas); keypoints
(x, y, 1) in image pixels and the crop model's keypoint scores.

The composite asks the run loop for the image ids of each call (``wants_image_ids``): GT and file sources look
boxes up by id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.models.base import INPUT_FORMATS, ModelInfo, Predictions, model_info, model_name
from kpbench.models.crops import (
    DEFAULT_HEATMAP_REFINEMENT,
    DEFAULT_PADDING,
    DEFAULT_PIXEL_CONVENTION,
    HEATMAP_REFINEMENTS,
    PIXEL_CONVENTIONS,
    apply_affines,
    crop_affines,
    crop_regions,
    decode_heatmaps,
    degenerate_regions,
    flip_crops,
    flip_permutation,
    invert_affines,
    unflip_heatmaps,
    unflip_keypoints,
    warp_crops,
)
from kpbench.models.person_boxes import BoxSelection, PersonBoxes, PersonBoxSource

if TYPE_CHECKING:
    import torch

    from kpbench.core.schema import KeypointSchema

FLIP_SPACES = ("auto", "keypoints", "heatmaps")
DEFAULT_CROP_BATCH = 64


@dataclass
class CropBatch:
    """M crops handed to a crop model, with what they came from.

    - ``images``: (M, 3, H, W) float tensor in [0, 1] on the model's device ("tensor" models) or a list of M uint8
      (H, W, 3) arrays ("numpy" models); (H, W) is the model's crop size;
    - ``image_ids`` (M,) int64: the COCO id of each crop's image;
    - ``boxes`` (M, 4) float64: each crop's person box, xyxy in image pixels;
    - ``affines`` (M, 2, 3) float64: image -> crop coordinates (in the crop model's pixel convention), before any
      mirroring;
    - ``flipped``: whether these are the mirrored crops of the flip test (crop x = W - 1 - x of the plain crop
      under the "index" convention, W - x under "centre").
    """

    images: Any
    image_ids: np.ndarray
    boxes: np.ndarray
    affines: np.ndarray
    flipped: bool = False

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])


@dataclass
class CropOutput:
    """A crop model's answer for M crops: ``keypoints`` (M, K, 2) in crop pixels and ``keypoint_scores`` (M, K), or
    ``heatmaps`` (M, K, Hh, Wh) (numpy or torch) that kpbench decodes; optionally ``found`` (M,) bool, False for a
    crop in which the model found nobody (that crop gives no detection; with the flip test, a person counts as found
    when either pass found it)."""

    keypoints: Any | None = None
    keypoint_scores: Any | None = None
    heatmaps: Any | None = None
    found: Any | None = None


def is_crop_model(obj: Any) -> bool:
    """Whether `obj` (a model or its class) declares the crop-model interface (`crop_size` and `predict_crops`)."""
    return callable(getattr(obj, "predict_crops", None)) and getattr(obj, "crop_size", None) is not None


def check_crop_model(model: Any, spec: str) -> Any:
    """`model` when it is a usable crop model; else one KpbenchError naming what is wrong."""
    from kpbench.core.schema import KeypointSchema

    missing = [name for name in ("schema", "crop_size", "predict_crops", "info") if not hasattr(model, name)]
    if missing:
        raise KpbenchError(f"--model {spec}: {model_name(model)} is not a top-down crop model (it has no "
                           f"{', '.join(missing)}; see kpbench.models.topdown)")
    if not isinstance(model.schema, KeypointSchema):
        raise KpbenchError(f"--model {spec}: its schema is a {type(model.schema).__name__}, not a KeypointSchema")
    size = model.crop_size
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
        raise KpbenchError(f"--model {spec}: crop_size must be (width, height), two positive integers; got {size!r}")
    convention = getattr(model, "pixel_convention", DEFAULT_PIXEL_CONVENTION)
    if convention not in PIXEL_CONVENTIONS:
        raise KpbenchError(f"--model {spec}: pixel_convention {convention!r}; expected one of "
                           f"{', '.join(PIXEL_CONVENTIONS)}")
    refinement = getattr(model, "heatmap_refinement", DEFAULT_HEATMAP_REFINEMENT)
    if refinement not in HEATMAP_REFINEMENTS:
        raise KpbenchError(f"--model {spec}: heatmap_refinement {refinement!r}; expected one of "
                           f"{', '.join(HEATMAP_REFINEMENTS)}")
    fmt = getattr(model, "input_format", "tensor")
    if fmt not in INPUT_FORMATS:
        raise KpbenchError(f"--model {spec}: input_format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")
    return model


def _host(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


@dataclass
class Crops:
    """The crops of one call, across its images (`TopDownModel.make_crops`): the pixels ((M, 3, H, W) float tensor,
    None when M = 0) and each crop's image index in the call, image id, person box (xyxy) and affine."""

    images: Any
    image_index: np.ndarray
    image_ids: np.ndarray
    boxes: np.ndarray
    affines: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.image_index.shape[0])

    def take(self, index: np.ndarray) -> Crops:
        """The crops at positions `index` (an int array; repeats allowed), in that order."""
        import torch

        index = np.asarray(index, dtype=np.int64)
        pixels = None if self.images is None else self.images[torch.as_tensor(index, device=self.images.device)]
        return Crops(pixels, self.image_index[index], self.image_ids[index], self.boxes[index], self.affines[index])


class TopDownModel:
    """A whole-image PoseModel made of a person-box source, kpbench's crops and a crop model (module docstring).

    `on_boxes(image_ids, selected)` (optional) is told each call's selected boxes, for a record of the source."""

    input_format = "tensor"
    wants_image_ids = True
    top_down = True

    def __init__(
        self,
        crop_model: Any,
        source: PersonBoxSource,
        selection: BoxSelection | None = None,
        *,
        flip_test: bool = False,
        flip_space: str = "auto",
        padding: float = DEFAULT_PADDING,
        crop_batch_size: int = DEFAULT_CROP_BATCH,
        spec: str = "crop model",
        on_boxes: Callable[[Sequence[int], list[PersonBoxes]], None] | None = None,
    ) -> None:
        self.crop_model = check_crop_model(crop_model, spec)
        self.schema: KeypointSchema = crop_model.schema
        self.crop_size: tuple[int, int] = (int(crop_model.crop_size[0]), int(crop_model.crop_size[1]))
        self.source = source
        self.selection = selection or BoxSelection()
        if flip_space not in FLIP_SPACES:
            raise KpbenchError(f"--flip-space: must be one of {', '.join(FLIP_SPACES)}, got {flip_space!r}")
        if flip_test and not self.schema.flip_pairs:
            raise KpbenchError(f"--flip-test: the keypoint set {self.schema.name!r} of {spec} has no flip pairs "
                               "(left/right keypoints), so a mirrored crop cannot be mapped back")
        if not (np.isfinite(padding) and padding > 0):
            raise KpbenchError(f"--box-padding: must be a positive number, got {padding}")
        if crop_batch_size < 1:
            raise KpbenchError(f"--crop-batch-size: must be >= 1, got {crop_batch_size}")
        self.flip_test, self.flip_space = bool(flip_test), flip_space
        self.padding, self.crop_batch_size, self.spec = float(padding), int(crop_batch_size), spec
        self.on_boxes = on_boxes
        self._crop_info = model_info(crop_model)
        self._perm = flip_permutation(self.schema.num_keypoints, self.schema.flip_pairs)
        self._crop_format = getattr(crop_model, "input_format", "tensor")
        self.pixel_convention: str = getattr(crop_model, "pixel_convention", DEFAULT_PIXEL_CONVENTION)
        self.heatmap_refinement: str = getattr(crop_model, "heatmap_refinement", DEFAULT_HEATMAP_REFINEMENT)
        self.last_crop_count = 0  # crops made by the last call (speed's per-person cost)

    # --- PoseModel hooks -------------------------------------------------------------------------------------

    def to(self, device: Any) -> None:
        """Move the crop model (and a detector source) to `device`."""
        for part in (self.crop_model, self.source):
            move = getattr(part, "to", None)
            if move is not None:
                move(device)

    def describe(self) -> dict[str, Any]:
        """The top-down settings, as the manifest records them."""
        return {
            "person_boxes": self.source.describe(),
            "selection": self.selection.to_json(),
            "crop_size": list(self.crop_size),
            "padding": self.padding,
            "aspect_ratio_fix": "grow the short side to the crop's aspect ratio, then scale by the padding",
            "warp": "affine (the region's centre to the crop's centre), bilinear, zeros outside the image",
            "pixel_convention": self.pixel_convention,
            "heatmap_refinement": self.heatmap_refinement,
            "nms_area": "crop region (the box fixed to the crop's aspect ratio, times the padding)",
            "flip_test": self.flip_test,
            "flip_space": self.flip_space if self.flip_test else None,
            "crop_batch_size": self.crop_batch_size,
        }

    def info(self) -> ModelInfo:
        crop = self._crop_info
        extra = dict(crop.extra)
        deviations = [str(d) for d in extra.get("deviations") or []]
        described = self.source.describe()
        if described["kind"] == "gt":
            deviations.append("person boxes from the ground truth (the GT-box protocol): about 2 AP above detector "
                              "boxes, not comparable with detector-box results")
        extra.update(protocol={**(extra.get("protocol") or {}), "top_down": self.describe()},
                     deviations=deviations, crop_model=crop.to_json())
        return ModelInfo(
            weights=crop.weights, source=crop.source, checkpoint_path=crop.checkpoint_path,
            checkpoint_sha256=crop.checkpoint_sha256, seed=crop.seed, name=crop.name, published=crop.published,
            protocol=f"top-down on {described['protocol']} ({described['spec']})",
            default_input_size=[self.crop_size[1], self.crop_size[0]], keypoint_score_kind=crop.keypoint_score_kind,
            extra=extra,
        )

    # --- prediction ------------------------------------------------------------------------------------------

    def predict(self, images: Sequence[torch.Tensor], image_ids: Sequence[int] | None = None) -> list[Predictions]:
        """One Predictions per image (float (3, H, W) tensors in [0, 1]): a detection per selected person box."""
        if image_ids is None:
            raise KpbenchError(f"top-down model {self.spec}: needs each image's id (its person boxes are looked up "
                               "by id); call predict(images, image_ids=...)")
        if len(image_ids) != len(images):
            raise KpbenchError(f"top-down model {self.spec}: {len(image_ids)} image ids for {len(images)} images")
        found = self.source.boxes(list(image_ids), images if self.source.needs_images else None)
        selected = [self.selection.apply(f) for f in found]
        if self.on_boxes is not None:
            self.on_boxes(list(image_ids), selected)
        crops = self.make_crops(images, image_ids, selected)
        self.last_crop_count = len(crops.image_index)
        keypoints, scores, found = self.crop_keypoints(crops)
        return self._predictions(selected, crops, keypoints, scores, found)

    def flush_records(self) -> None:
        """What `on_boxes` recorded of the calls so far made durable, if it keeps such a record (its `sync`): the
        run's store writer calls this before writing detections, which must never reach the disk before their
        boxes (`kpbench.engine.loop`)."""
        sync = getattr(self.on_boxes, "sync", None)
        if sync is not None:
            sync()

    def make_crops(self, images: Sequence[torch.Tensor], image_ids: Sequence[int], selected: list[PersonBoxes]) -> Crops:
        """The crops of `selected` (each image's person boxes, in order) cut from `images` (float (3, H, W) tensors
        in [0, 1]) with this model's crop size and padding; speed times the crop model on them alone."""
        import torch

        pixels, index, boxes, affines = [], [], [], []
        for i, (image, persons) in enumerate(zip(images, selected)):
            if not len(persons):
                continue
            regions = crop_regions(persons.boxes, self.crop_size, self.padding)
            bad = np.flatnonzero(degenerate_regions(regions))
            if len(bad):
                # Refused, not skipped: a person the source found would silently get no detection.
                source = self.source.describe()
                raise KpbenchError(
                    f"image {int(image_ids[i])}: person box {int(bad[0])} {np.asarray(persons.boxes)[bad[0]].tolist()} "
                    f"(xyxy) from the person-box source {source.get('spec', source.get('kind'))} has no area, so it "
                    "cannot be cropped (drop such boxes from the source, or raise --person-box-thresh above its score)")
            a = crop_affines(regions, self.crop_size)
            pixels.append(warp_crops(image, a, self.crop_size, self.pixel_convention))
            index.append(np.full(len(persons), i))
            boxes.append(persons.boxes)
            affines.append(a)
        if not pixels:
            empty = np.zeros(0, dtype=np.int64)
            return Crops(None, empty, empty, np.zeros((0, 4)), np.zeros((0, 2, 3)))
        image_index = np.concatenate(index)
        ids = np.asarray([int(image_ids[i]) for i in image_index], dtype=np.int64)
        return Crops(torch.cat(pixels), image_index, ids, np.concatenate(boxes), np.concatenate(affines))

    def nms_areas(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """The areas OKS-NMS uses for detections of these person boxes: their crop regions' (aspect-fixed and padded,
        HRNet's ``prod(scale * 200)``, mmpose's ``prod(bbox_scales)``), not the boxes'."""
        regions = crop_regions(boxes_xyxy, self.crop_size, self.padding)
        return regions[:, 2] * regions[:, 3]

    def _as_input(self, pixels: torch.Tensor) -> Any:
        """Crops in the crop model's input format: the float tensor, or uint8 (H, W, 3) arrays."""
        if self._crop_format == "tensor":
            return pixels
        import torch

        as_bytes = (pixels * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(c) for c in as_bytes]

    def _call(self, batch: CropBatch) -> CropOutput:
        out = self.crop_model.predict_crops(batch)
        if not isinstance(out, CropOutput):
            raise KpbenchError(f"{model_name(self.crop_model)}.predict_crops: returned a {type(out).__name__}, expected "
                               "kpbench.models.topdown.CropOutput")
        m, k = len(batch), self.schema.num_keypoints
        if out.heatmaps is not None:
            shape = tuple(out.heatmaps.shape)
            if len(shape) != 4 or shape[:2] != (m, k):
                raise KpbenchError(f"{model_name(self.crop_model)}.predict_crops: heatmaps of shape {shape}, expected "
                                   f"({m}, {k}, H, W)")
        elif out.keypoints is None or out.keypoint_scores is None:
            raise KpbenchError(f"{model_name(self.crop_model)}.predict_crops: gave neither heatmaps nor keypoints with "
                               "keypoint_scores")
        else:
            if tuple(out.keypoints.shape) != (m, k, 2) or tuple(out.keypoint_scores.shape) != (m, k):
                raise KpbenchError(f"{model_name(self.crop_model)}.predict_crops: keypoints {tuple(out.keypoints.shape)}"
                                   f" and scores {tuple(out.keypoint_scores.shape)}, expected ({m}, {k}, 2) and ({m}, {k})")
        return out

    def _decoded(self, out: CropOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (m, K, 2), scores (m, K), found (m,)) of one crop-model answer."""
        if out.heatmaps is not None:
            import torch

            keypoints, scores = decode_heatmaps(torch.as_tensor(out.heatmaps), self.crop_size, self.pixel_convention,
                                                self.heatmap_refinement)
        else:
            keypoints, scores = _host(out.keypoints), _host(out.keypoint_scores)
        found = np.ones(len(scores), dtype=bool) if out.found is None else np.asarray(out.found, dtype=bool).reshape(-1)
        if found.shape != (len(scores),):
            raise KpbenchError(f"{model_name(self.crop_model)}.predict_crops: found has shape {found.shape}, expected "
                               f"({len(scores)},)")
        return keypoints, scores, found

    def crop_keypoints(self, crops: Crops) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keypoints (M, K, 2) in crop pixels, scores (M, K) and found (M,) of every crop, in chunks of
        crop_batch_size, with the flip test when it is on (the crop model's whole cost, without the mapping back)."""
        import torch

        m, k = len(crops.image_index), self.schema.num_keypoints
        keypoints, scores, found = np.zeros((m, k, 2)), np.zeros((m, k)), np.zeros(m, dtype=bool)
        for start in range(0, m, self.crop_batch_size):
            part = slice(start, min(start + self.crop_batch_size, m))
            pixels = crops.images[part]
            meta = (crops.image_ids[part], crops.boxes[part], crops.affines[part])
            plain = self._call(CropBatch(self._as_input(pixels), *meta))
            if not self.flip_test:
                keypoints[part], scores[part], found[part] = self._decoded(plain)
                continue
            mirrored = self._call(CropBatch(self._as_input(flip_crops(pixels)), *meta, flipped=True))
            heatmap_space = plain.heatmaps is not None and mirrored.heatmaps is not None and self.flip_space != "keypoints"
            if self.flip_space == "heatmaps" and not heatmap_space:
                raise KpbenchError(f"--flip-space heatmaps: {model_name(self.crop_model)} returns keypoints, not "
                                   "heatmaps (use --flip-space keypoints or auto)")
            kp_a, sc_a, found_a = self._decoded(plain)
            kp_b, sc_b, found_b = self._decoded(mirrored)
            if heatmap_space:
                a, b = torch.as_tensor(plain.heatmaps), torch.as_tensor(mirrored.heatmaps)
                kp, sc = decode_heatmaps((a + unflip_heatmaps(b, self._perm, self.pixel_convention)) * 0.5,
                                         self.crop_size, self.pixel_convention, self.heatmap_refinement)
            else:
                kp_b = unflip_keypoints(kp_b, self.crop_size[0], self._perm, self.pixel_convention)
                sc_b = sc_b[:, self._perm]
                kp, sc = 0.5 * (kp_a + kp_b), 0.5 * (sc_a + sc_b)
                # A person found in one pass only keeps that pass's answer.
                kp = np.where((found_a & ~found_b)[:, None, None], kp_a, np.where((found_b & ~found_a)[:, None, None], kp_b, kp))
                sc = np.where((found_a & ~found_b)[:, None], sc_a, np.where((found_b & ~found_a)[:, None], sc_b, sc))
            keypoints[part], scores[part], found[part] = kp, sc, found_a | found_b
        return keypoints, scores, found

    def _predictions(
        self, selected: list[PersonBoxes], crops: Crops, keypoints: np.ndarray, scores: np.ndarray, found: np.ndarray
    ) -> list[Predictions]:
        k = self.schema.num_keypoints
        in_image = apply_affines(invert_affines(crops.affines), keypoints) if len(keypoints) else keypoints
        kind = self._crop_info.keypoint_score_kind
        out = []
        for i, persons in enumerate(selected):
            rows = np.flatnonzero(crops.image_index == i)
            kept = found[rows]
            rows = rows[kept]
            kps = np.concatenate([in_image[rows], np.ones((len(rows), k, 1))], axis=2) if len(rows) else np.zeros((0, k, 3))
            out.append(Predictions(boxes=persons.boxes[kept] if len(persons) else persons.boxes,
                                   scores=persons.scores[kept] if len(persons) else persons.scores, keypoints=kps,
                                   keypoint_scores=scores[rows], keypoint_score_kind=kind))
        return out
