"""Keypoint R-CNN's heatmap-to-keypoint step without a host sync per RoI, bit for bit equal to torchvision's.

torchvision's `roi_heads.heatmaps_to_keypoints(maps, rois)` walks the RoIs in Python: per RoI it reads the ceil'd
box width and height with two `.item()` calls (a device-to-host sync each on a GPU), upsamples that RoI's
(K, 56, 56) logits bicubically to the box size (`F.interpolate`, one call per RoI), takes the argmax of every
keypoint's map and looks up its score. Each keypoint's location is the centre of the arg-max pixel,
c = d + 0.5 (Heckbert, "What Are the Coordinates of a Pixel?", Graphics Gems, 1990), scaled by box size / map size
and shifted by the box corner.

`fast_heatmaps_to_keypoints` computes the same numbers with one host copy per call (all the ceil'd sizes at
once: the Python loop needs them as ints for `F.interpolate`'s `size`), and one `F.interpolate` per distinct
output size: RoIs of equal (width, height) go through it as one batch. Interpolation treats every plane on its
own, so batching along N changes no bit; padding to a common size would (and costs the padded area), hence the
grouping. Everything that is arithmetic on floats is done with the same operations, operand dtypes and order
as torchvision's loop, so the results are equal (`torch.equal`), which the tests check:

- the width correction is torchvision's `widths[i] / map_width` (tensor by Python int): one vectorised division
  where that is the same IEEE division (CPU, float32/float64), else `widths[rows] / map_width` per size, the very
  operation torchvision does (a CUDA kernel divides by a host scalar as a multiplication by its reciprocal, so a
  tensor-by-tensor division could differ in the last bit there);
- the products `(x_int + 0.5) * correction` and the sums `+ box corner` are float32, as in torchvision, where
  the 0-dim box tensors do not promote the float32 operand (a float64 box is rounded to float32 first);
- the arg-max is each keypoint's first maximum in row-major order, as torchvision's reshape(K, -1).argmax(1)
  (ties to the first pixel, NaN as the maximum); large maps find it row by row (`_first_max`), which is the same
  index and about 3 to 5 times cheaper than torch's scalar arg-max; the score is the value at that index.

`fast_keypointrcnn_inference` replaces torchvision's `keypointrcnn_inference` (one call for all the images of the
batch, so one host copy per batch), and `patched_keypoint_postprocess()` puts it in a model for a while.

torch and torchvision are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["fast_heatmaps_to_keypoints", "fast_keypointrcnn_inference", "patched_keypoint_postprocess"]


def _size_groups(map_widths: list[int], map_heights: list[int]) -> list[tuple[int, int, list[int]]]:
    """The RoIs of each distinct output size: (width, height, row indices), the sizes in ascending (width,
    height) order and the rows of a size in ascending order, the order a stable sort by (width, height) gives."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(zip(map_widths, map_heights)):
        groups.setdefault(size, []).append(i)
    return [(w, h, rows) for (w, h), rows in sorted(groups.items())]


# From this many pixels per map on, the arg-max goes row by row (`_first_max`): torch's arg-max reduction is scalar
# code, about 10x slower per element than its vectorised max, which the two-stage search runs over most of the
# pixels (for a 250 x 150 map 0.22 ms instead of 0.71 ms per RoI on one CPU thread; below about 64 x 64 the
# extra operations cost more than they save).
_TWO_STAGE_MIN_PIXELS = 4096


def _first_max(maps: Tensor) -> tuple[Tensor, Tensor]:
    """The flat row-major index of each map's first maximum, as `maps.reshape(B, -1).argmax(1)` gives it, and
    the value there, for maps (B, h, w).

    Large maps go in two stages with the same result: the first row that holds the map's maximum (rows' maxima,
    then their first arg-max), then the first maximum within that row. The first maximum in row-major order lies
    in the first row whose maximum equals the map's, at that row's first maximum. NaN is the maximum for
    torch.argmax, and amax propagates NaN, so a map with a NaN gives its first NaN both ways; -0.0 and 0.0
    compare equal for both, so the first of either is found both ways.
    """
    count, height, width = maps.shape
    if height * width < _TWO_STAGE_MIN_PIXELS or height == 1:
        flat = maps.reshape(count, height * width)
        pos = flat.argmax(dim=1)
        return pos, flat.gather(1, pos.unsqueeze(1)).squeeze(1)
    row = maps.amax(dim=2).argmax(dim=1)
    row_values = maps.gather(1, row.view(count, 1, 1).expand(count, 1, width)).squeeze(1)
    col = row_values.argmax(dim=1)
    return row * width + col, row_values.gather(1, col.unsqueeze(1)).squeeze(1)


def _vector_division_is_exact(rois: Tensor) -> bool:
    """Whether `widths / map_widths` (tensor by tensor) equals `widths[i] / map_width` (tensor by Python int) RoI
    by RoI: on a CPU in float32 or float64 both are an IEEE division. CUDA kernels divide by a host scalar as a
    multiplication by its reciprocal, and so do CPU kernels in float16 and bfloat16 (which can differ in the last
    bit from a division, though no width w over ceil(w) was seen to): there the division goes size by size, in
    torchvision's form, exact by construction."""
    import torch

    return rois.device.type == "cpu" and rois.dtype in (torch.float32, torch.float64)


def fast_heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Keypoints (N, K, 3) float32 as (x, y, 1) and their heatmap scores (N, K) float32 from keypoint logits
    `maps` (N, K, H, W) and boxes `rois` (N, 4) as (x1, y1, x2, y2): the outputs of torchvision's
    `heatmaps_to_keypoints` bit for bit, with one host copy per call instead of two per RoI, and one bicubic
    upsampling per distinct box size instead of one per RoI (see the module docstring).

    Under tracing (ONNX export) it hands over to torchvision's function, whose traced loop export relies on.
    """
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision.models.detection import roi_heads

    if torchvision._is_tracing():
        return roi_heads.heatmaps_to_keypoints(maps, rois)

    num_rois, num_keypoints = len(rois), maps.shape[1]
    offset_x, offset_y = rois[:, 0], rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    if num_rois == 0:
        empty = torch.zeros((0, num_keypoints), dtype=torch.float32, device=maps.device)
        return torch.zeros((0, 3, num_keypoints), dtype=torch.float32, device=maps.device).permute(0, 2, 1), empty

    # The one host copy: the output sizes must be Python ints for F.interpolate and for the grouping. int()
    # of a NaN or infinite size raises as torchvision's int(....item()) does.
    ceil_sizes = torch.stack([widths_ceil, heights_ceil]).tolist()
    map_widths = [int(v) for v in ceil_sizes[0]]
    map_heights = [int(v) for v in ceil_sizes[1]]
    groups = _size_groups(map_widths, map_heights)
    # The same order as a device tensor, without a host-to-device copy (a sync on a GPU): a stable sort by
    # height, then a stable sort of that by width, orders the rows by (width, height, row) as `groups` lists
    # them, so each group is a slice of `order`.
    order = torch.argsort(heights_ceil, stable=True)
    order = order[torch.argsort(widths_ceil[order], stable=True)]
    maps_order = order.to(maps.device)
    exact_vector_division = _vector_division_is_exact(rois)

    height, width = maps.shape[2], maps.shape[3]
    positions, scores, width_corrections, height_corrections = [], [], [], []
    start = 0
    for map_width, map_height, rows in groups:
        count = len(rows)
        # A single RoI's maps as a view; RoIs sharing a size gathered into one batch.
        batch = maps[rows[0] : rows[0] + 1] if count == 1 else maps.index_select(0, maps_order[start : start + count])
        # Each keypoint's map as a one-channel image, as torchvision's maps[i][:, None]: (count * K, 1, H, W).
        upsampled = F.interpolate(
            batch.reshape(count * num_keypoints, 1, height, width), size=(map_height, map_width),
            mode="bicubic", align_corners=False,
        )  # fmt: skip
        pos, values = _first_max(upsampled.view(count * num_keypoints, map_height, map_width))
        positions.append(pos.view(count, num_keypoints))
        scores.append(values.view(count, num_keypoints))
        if not exact_vector_division:
            rows_t = order[start : start + count]
            # Tensor by Python int, the division torchvision does for each RoI (see _vector_division_is_exact).
            width_corrections.append(widths.index_select(0, rows_t) / map_width)
            height_corrections.append(heights.index_select(0, rows_t) / map_height)
        start += count

    # Back from (width, height) order to the RoIs' order.
    def unsort(parts: list[Tensor]) -> Tensor:
        sorted_rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        return torch.empty_like(sorted_rows).index_copy_(0, order.to(sorted_rows.device), sorted_rows)

    map_widths_t = widths_ceil.to(torch.int64)
    if exact_vector_division:
        width_correction, height_correction = widths / map_widths_t, heights / heights_ceil.to(torch.int64)
    else:
        width_correction, height_correction = unsort(width_corrections), unsort(height_corrections)
    flat_pos = unsort(positions)
    map_widths_t = map_widths_t.to(flat_pos.device).unsqueeze(1)
    x_int = flat_pos % map_widths_t
    y_int = torch.div(flat_pos - x_int, map_widths_t, rounding_mode="floor")
    # float32 throughout, as torchvision's products and sums with its 0-dim box tensors (see the module docstring).
    x = (x_int.float() + 0.5) * width_correction.to(torch.float32).unsqueeze(1)
    y = (y_int.float() + 0.5) * height_correction.to(torch.float32).unsqueeze(1)
    xy_preds = torch.empty((num_rois, 3, num_keypoints), dtype=torch.float32, device=maps.device)
    xy_preds[:, 0] = x + offset_x.to(torch.float32).unsqueeze(1)
    xy_preds[:, 1] = y + offset_y.to(torch.float32).unsqueeze(1)
    xy_preds[:, 2] = 1
    return xy_preds.permute(0, 2, 1), unsort(scores).to(torch.float32)


def fast_keypointrcnn_inference(x: Tensor, boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Drop-in for torchvision's `roi_heads.keypointrcnn_inference`: per image, the keypoints (n_i, K, 3) and
    scores (n_i, K) from the batch's keypoint logits `x` (sum n_i, K, H, W) and each image's boxes.

    RoIs are independent, so all the images' boxes go through one `fast_heatmaps_to_keypoints` call (one host
    copy per batch) and the results are split per image.
    """
    import torch

    counts = [int(b.size(0)) for b in boxes]
    if x.size(0) != sum(counts):
        x.split(counts, dim=0)  # raises torch's error, as torchvision's split does
    if not boxes:
        return [], []
    keypoints, scores = fast_heatmaps_to_keypoints(x, torch.cat(boxes) if len(boxes) > 1 else boxes[0])
    return list(keypoints.split(counts)), list(scores.split(counts))


@contextlib.contextmanager
def patched_keypoint_postprocess() -> Iterator[None]:
    """Within the context, every torchvision Keypoint R-CNN in the process post-processes its keypoints with
    `fast_keypointrcnn_inference`; on exit (also on an exception) the previous function is back.

    The seam: `RoIHeads.forward` calls `keypointrcnn_inference` by its global name in
    torchvision.models.detection.roi_heads, looked up in that module's namespace at each call, so replacing the
    module attribute changes what a model calls without touching the model (a method patch would need the
    whole forward copied). The patch is process-wide, and a TorchScript-compiled model keeps the function it
    was compiled with.
    """
    from torchvision.models.detection import roi_heads

    previous = roi_heads.keypointrcnn_inference
    roi_heads.keypointrcnn_inference = fast_keypointrcnn_inference
    try:
        yield
    finally:
        roi_heads.keypointrcnn_inference = previous
