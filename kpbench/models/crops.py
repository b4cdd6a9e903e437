"""Person crops for top-down models: the box-to-crop geometry, the affine warp, its exact inverse, heatmap decoding
and the flip test's mirror maps.

**Box to crop** (the top-down protocol of Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking",
ECCV 2018, and Sun et al., "Deep High-Resolution Representation Learning", CVPR 2019): the box's centre stays; the
box is widened or heightened to the crop's aspect ratio (never shrunk), then enlarged by the padding factor (1.25),
and that region is scaled uniformly onto the crop. The affine (2 x 3, image -> crop) maps the region's centre to
the crop's centre (crop_width / 2, crop_height / 2), as HRNet's `get_affine_transform` does:

    u = s * (x - (cx - w / 2)),   v = s * (y - (cy - h / 2)),   s = crop_width / w = crop_height / h

and its inverse is computed in closed form (`invert_affines`), so a point mapped there and back moves by rounding
only (tested to 1e-9 px).

**Pixel conventions** (`PIXEL_CONVENTIONS`; a crop model declares its own as ``pixel_convention``; the affine is
the same under both, what differs is where a pixel sits):

- ``"index"`` (the default; HRNet's and mmpose's non-UDP pipeline, which the published heatmap checkpoints were
  trained with): a pixel's index is its coordinate. Crop pixel (row i, column j) is the image sampled at the inverse
  affine of (j, i), image pixel (r, c) sitting at (c, r) (OpenCV's ``warpAffine``); heatmap pixel j is crop
  coordinate j * stride (HRNet's `transform_preds` with the heatmap size as the output size; mmpose's
  ``keypoints * scale_factor``); a mirrored crop maps x to crop_width - 1 - x, and a mirrored heatmap is reversed
  and then shifted one column right (HRNet's ``TEST.SHIFT_HEATMAP``, mmpose's ``shift_heatmap``: column 0 keeps
  its value).
- ``"centre"`` (continuous pixels, COCO's convention; what a model that gives normalised landmarks uses, such as
  MediaPipe): pixel (i, j) covers [j, j + 1) x [i, i + 1) and sits at its centre (j + 0.5, i + 0.5); heatmap pixel
  j is crop coordinate (j + 0.5) * stride; a mirror maps x to crop_width - x and reverses a heatmap exactly (no
  shift).

Either way the keypoints come back in the image in the crop model's own convention and are reported as they are
(HRNet and mmpose hand COCO their index coordinates unchanged).

**The warp** samples bilinearly with zeros outside the image (torch's `grid_sample`, `align_corners=False`, whose
normalised -1 and +1 are the image's outer edges).

**Heatmaps** (K x Hh x Wh per crop) are decoded as the reference code does (`HEATMAP_REFINEMENTS`): the arg-max,
its value the score, then a quarter pixel towards the higher neighbour:

- ``"hrnet"`` (HRNet's `get_final_preds`, the default): an arg-max whose maximum is <= 0 is put at heatmap pixel
  (0, 0) and not moved; otherwise both axes are moved only when 1 < x < Wh - 1 and 1 < y < Hh - 1 (each by the
  sign of its neighbours' difference);
- ``"mmpose"`` (mmpose's `get_heatmap_maximum` and `refine_keypoints`): an arg-max whose maximum is <= 0 is put at
  (-1, -1) and not moved; x is moved when 1 < x < Wh - 1 and 0 < y, y when 1 < y < Hh - 1 and 0 < x.

torch is imported inside the functions that warp; the geometry is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    import torch

DEFAULT_PADDING = 1.25
# HRNet's quarter-pixel shift of the arg-max towards its higher neighbour.
QUARTER_OFFSET = 0.25
PIXEL_CONVENTIONS = ("index", "centre")
DEFAULT_PIXEL_CONVENTION = "index"  # HRNet's and mmpose's (module docstring)
HEATMAP_REFINEMENTS = ("hrnet", "mmpose")
DEFAULT_HEATMAP_REFINEMENT = "hrnet"


def _check_convention(convention: str) -> float:
    """The offset of a pixel's position from its index under `convention` (0 or 0.5)."""
    if convention not in PIXEL_CONVENTIONS:
        raise KpbenchError(f"pixel convention {convention!r}: expected one of {', '.join(PIXEL_CONVENTIONS)}")
    return 0.0 if convention == "index" else 0.5


def crop_regions(boxes_xyxy: np.ndarray, crop_size: tuple[int, int], padding: float = DEFAULT_PADDING) -> np.ndarray:
    """The image region each crop covers, (M, 4) as centre x, centre y, width, height (float64): the box's centre,
    its size fixed to the crop's aspect ratio by growing the short side, times `padding`."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    crop_w, crop_h = (float(v) for v in crop_size)
    aspect = crop_w / crop_h
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    wider = w > aspect * h
    h = np.where(wider, w / aspect, h)
    w = np.where(wider, w, h * aspect)
    return np.stack([cx, cy, w * padding, h * padding], axis=1)


def degenerate_regions(regions: np.ndarray) -> np.ndarray:
    """(M,) bool: the regions (from `crop_regions`) of no area or not finite, which no affine can invert."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    return ~(np.isfinite(regions).all(axis=1) & (regions[:, 2:] > 0).all(axis=1))


def crop_affines(regions: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """(M, 2, 3) affines from image to crop coordinates for `regions` (from `crop_regions`). A region of zero size
    (a degenerate box) is an error: it has no inverse."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    if degenerate_regions(regions).any():
        bad = int(np.argmax(degenerate_regions(regions)))
        raise KpbenchError(f"person box {bad}: its crop region {regions[bad].tolist()} has no area (a box of width or "
                           "height 0 cannot be cropped)")
    crop_w, crop_h = (float(v) for v in crop_size)
    sx = crop_w / regions[:, 2]
    sy = crop_h / regions[:, 3]
    out = np.zeros((len(regions), 2, 3))
    out[:, 0, 0] = sx
    out[:, 0, 2] = -sx * (regions[:, 0] - 0.5 * regions[:, 2])
    out[:, 1, 1] = sy
    out[:, 1, 2] = -sy * (regions[:, 1] - 0.5 * regions[:, 3])
    return out


def invert_affines(affines: np.ndarray) -> np.ndarray:
    """The inverses of (M, 2, 3) affines, in closed form: [A | t]^-1 = [A^-1 | -A^-1 t]."""
    affines = np.asarray(affines, dtype=np.float64)
    a, b, c, d = affines[:, 0, 0], affines[:, 0, 1], affines[:, 1, 0], affines[:, 1, 1]
    det = a * d - b * c
    inv = np.empty_like(affines)
    inv[:, 0, 0], inv[:, 0, 1] = d / det, -b / det
    inv[:, 1, 0], inv[:, 1, 1] = -c / det, a / det
    t = affines[:, :, 2]
    inv[:, :, 2] = -np.einsum("mij,mj->mi", inv[:, :, :2], t)
    return inv


def apply_affines(affines: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (M, K, 2) points through their crop's (M, 2, 3) affine."""
    affines = np.asarray(affines, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return np.einsum("mij,mkj->mki", affines[:, :, :2], points) + affines[:, None, :, 2]


def warp_crops(
    image: torch.Tensor, affines: np.ndarray, crop_size: tuple[int, int], convention: str = DEFAULT_PIXEL_CONVENTION
) -> torch.Tensor:
    """Crops (M, C, crop_h, crop_w) of one image (C, H, W), float on its device, bilinear, zeros outside: crop pixel
    (i, j) is the image sampled at the inverse affine of its position ((j, i) under the "index" convention, image
    pixels at their indices; (j + 0.5, i + 0.5) under "centre", image pixels at their centres)."""
    import torch
    import torch.nn.functional as F

    offset = _check_convention(convention)
    crop_w, crop_h = crop_size
    m = len(affines)
    _, height, width = image.shape
    if m == 0:
        return image.new_zeros((0, image.shape[0], crop_h, crop_w))
    inverse = invert_affines(affines)
    # Crop pixel positions, then their image points, then grid_sample's normalised coordinates (-1, +1 = outer
    # edges, so a point at index c is at continuous c + 0.5 under the "index" convention).
    u = np.arange(crop_w, dtype=np.float64) + offset
    v = np.arange(crop_h, dtype=np.float64) + offset
    x = inverse[:, 0, 0, None, None] * u[None, None, :] + inverse[:, 0, 1, None, None] * v[None, :, None] + inverse[:, 0, 2, None, None]
    y = inverse[:, 1, 0, None, None] * u[None, None, :] + inverse[:, 1, 1, None, None] * v[None, :, None] + inverse[:, 1, 2, None, None]
    shift = 0.5 - offset
    grid = np.stack([2.0 * (x + shift) / width - 1.0, 2.0 * (y + shift) / height - 1.0], axis=-1)
    grid_t = torch.from_numpy(grid).to(device=image.device, dtype=image.dtype)
    source = image.unsqueeze(0).expand(m, -1, -1, -1)
    return F.grid_sample(source, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip_crops(crops: Any) -> Any:
    """Crops mirrored left-right: (M, C, H, W) tensors along W, or a list of (H, W, C) arrays along their W."""
    if isinstance(crops, (list, tuple)):
        return [np.ascontiguousarray(np.asarray(c)[:, ::-1]) for c in crops]
    return crops.flip(-1)


def flip_permutation(num_keypoints: int, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Index array p such that keypoint k of a mirrored person is keypoint p[k] of the original (left <-> right)."""
    perm = np.arange(num_keypoints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def unflip_keypoints(
    keypoints: np.ndarray, crop_width: float, perm: np.ndarray, convention: str = DEFAULT_PIXEL_CONVENTION
) -> np.ndarray:
    """Keypoints (M, K, 2) predicted on mirrored crops, mapped onto the unmirrored crop: x -> crop_width - 1 - x
    ("index" convention) or crop_width - x ("centre") and the left/right keypoints swapped."""
    offset = _check_convention(convention)
    out = np.asarray(keypoints, dtype=np.float64)[:, perm].copy()
    out[..., 0] = crop_width - 1.0 + 2.0 * offset - out[..., 0]
    return out


def unflip_heatmaps(heatmaps: torch.Tensor, perm: np.ndarray, convention: str = DEFAULT_PIXEL_CONVENTION) -> torch.Tensor:
    """Heatmaps (M, K, Hh, Wh) of mirrored crops, mapped onto the unmirrored crop: columns reversed, channels
    swapped left/right, and under the "index" convention shifted one column right, column 0 kept (HRNet's
    SHIFT_HEATMAP, mmpose's shift_heatmap: there the mirror of column j is Wh - 1/stride - j, not Wh - 1 - j)."""
    import torch

    offset = _check_convention(convention)
    index = torch.as_tensor(perm, device=heatmaps.device, dtype=torch.long)
    out = heatmaps.flip(-1).index_select(1, index)
    if offset == 0.0 and out.shape[-1] > 1:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def decode_heatmaps(
    heatmaps: torch.Tensor,
    crop_size: tuple[int, int],
    convention: str = DEFAULT_PIXEL_CONVENTION,
    refinement: str = DEFAULT_HEATMAP_REFINEMENT,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (M, K, 2) in crop pixels and scores (M, K) from heatmaps (M, K, Hh, Wh): the arg-max (the first
    one in row-major order), its value the score, moved a quarter pixel towards the higher neighbour by
    `refinement`'s rule, then mapped to the crop by `convention` (module docstring). float64 on the host."""
    import torch

    offset = _check_convention(convention)
    if refinement not in HEATMAP_REFINEMENTS:
        raise KpbenchError(f"heatmap refinement {refinement!r}: expected one of {', '.join(HEATMAP_REFINEMENTS)}")
    hm = heatmaps.detach().float()
    m, k, hh, wh = hm.shape
    flat = hm.reshape(m, k, hh * wh)
    scores, index = flat.max(dim=2)
    ys, xs = index // wh, index % wh
    positive = scores > 0
    # A maximum <= 0 is no keypoint: HRNet puts it at (0, 0), mmpose at (-1, -1); neither moves it.
    unset = 0 if refinement == "hrnet" else -1
    xs = torch.where(positive, xs, torch.full_like(xs, unset))
    ys = torch.where(positive, ys, torch.full_like(ys, unset))
    inner_x = (xs > 1) & (xs < wh - 1)
    inner_y = (ys > 1) & (ys < hh - 1)
    if refinement == "hrnet":
        move_x = move_y = inner_x & inner_y
    else:
        move_x, move_y = inner_x & (ys > 0), inner_y & (xs > 0)
    # Neighbours read at clamped positions; where they would fall outside, the move is off anyway.
    at = ys.clamp(0, hh - 1) * wh + xs.clamp(0, wh - 1)

    def value(shift: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (at + shift).clamp(0, hh * wh - 1).unsqueeze(2)).squeeze(2)

    one, row = torch.ones_like(at), torch.full_like(at, wh)
    dx = torch.sign(value(one) - value(-one)).to(torch.float64)
    dy = torch.sign(value(row) - value(-row)).to(torch.float64)
    x = xs.to(torch.float64) + torch.where(move_x, dx * QUARTER_OFFSET, torch.zeros_like(dx))
    y = ys.to(torch.float64) + torch.where(move_y, dy * QUARTER_OFFSET, torch.zeros_like(dy))
    crop_w, crop_h = crop_size
    points = torch.stack([(x + offset) * (crop_w / wh), (y + offset) * (crop_h / hh)], dim=-1)
    return points.cpu().numpy(), scores.to(torch.float64).cpu().numpy()
