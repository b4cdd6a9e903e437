"""Person crops for top-down models: the box-to-crop geometry, the affine warp, its exact inverse, heatmap decoding
and the flip test's mirror maps.

**Coordinates are continuous pixels** everywhere here, COCO's convention: an image's top-left corner is (0, 0) and
its bottom-right corner is (W, H), so pixel (row i, column j) covers [j, j + 1) x [i, i + 1) and its centre is
(j + 0.5, i + 0.5). A crop model returns keypoints in the same convention in its crop (a normalised landmark times
the crop size is one), and kpbench maps them back with the inverse of the affine that made the crop.

**Box to crop** (the top-down protocol of Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking",
ECCV 2018, and Sun et al., "Deep High-Resolution Representation Learning", CVPR 2019): the box's centre stays; the
box is widened or heightened to the crop's aspect ratio (never shrunk), then enlarged by the padding factor (1.25),
and that region is scaled uniformly onto the crop. The affine (2 x 3, image -> crop) is

    u = s * (x - (cx - w / 2)),   v = s * (y - (cy - h / 2)),   s = crop_width / w = crop_height / h

and its inverse is computed in closed form (`invert_affines`), so a point mapped there and back moves by rounding
only (tested to 1e-9 px).

**The warp** samples crop pixel (i, j) bilinearly at the image point the inverse affine gives for its centre,
with zeros outside the image (torch's `grid_sample` with `align_corners=False`, whose normalised -1 and +1 are the
image's outer edges: exactly the continuous convention above).

**Heatmaps** (K x Hh x Wh per crop) are decoded as in Sun et al.'s HRNet: the arg-max, moved a quarter pixel
towards the higher neighbour, its value as the keypoint score; heatmap pixel (i, j) covers the crop region of
crop pixels [j * Wc / Wh, (j + 1) * Wc / Wh), so its centre maps to (j + 0.5) * Wc / Wh. Under this alignment the
mirror image of column j is column Wh - 1 - j exactly (no one-pixel shift is needed after flipping a heatmap).

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


def crop_affines(regions: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """(M, 2, 3) affines from image to crop coordinates for `regions` (from `crop_regions`). A region of zero size
    (a degenerate box) is an error: it has no inverse."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    if len(regions) and not (np.isfinite(regions).all() and (regions[:, 2:] > 0).all()):
        bad = int(np.argmin(np.isfinite(regions).all(axis=1) & (regions[:, 2:] > 0).all(axis=1)))
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


def warp_crops(image: torch.Tensor, affines: np.ndarray, crop_size: tuple[int, int]) -> torch.Tensor:
    """Crops (M, C, crop_h, crop_w) of one image (C, H, W), float on its device, bilinear, zeros outside: crop pixel
    (i, j) is the image sampled at the inverse affine of (j + 0.5, i + 0.5)."""
    import torch
    import torch.nn.functional as F

    crop_w, crop_h = crop_size
    m = len(affines)
    _, height, width = image.shape
    if m == 0:
        return image.new_zeros((0, image.shape[0], crop_h, crop_w))
    inverse = invert_affines(affines)
    # Crop pixel centres, then their image points, then grid_sample's normalised coordinates (-1, +1 = outer edges).
    u = np.arange(crop_w, dtype=np.float64) + 0.5
    v = np.arange(crop_h, dtype=np.float64) + 0.5
    x = inverse[:, 0, 0, None, None] * u[None, None, :] + inverse[:, 0, 1, None, None] * v[None, :, None] + inverse[:, 0, 2, None, None]
    y = inverse[:, 1, 0, None, None] * u[None, None, :] + inverse[:, 1, 1, None, None] * v[None, :, None] + inverse[:, 1, 2, None, None]
    grid = np.stack([2.0 * x / width - 1.0, 2.0 * y / height - 1.0], axis=-1)
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


def unflip_keypoints(keypoints: np.ndarray, crop_width: float, perm: np.ndarray) -> np.ndarray:
    """Keypoints (M, K, 2) predicted on mirrored crops, mapped onto the unmirrored crop: x -> crop_width - x and the
    left/right keypoints swapped."""
    out = np.asarray(keypoints, dtype=np.float64)[:, perm].copy()
    out[..., 0] = crop_width - out[..., 0]
    return out


def unflip_heatmaps(heatmaps: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """Heatmaps (M, K, Hh, Wh) of mirrored crops, mapped onto the unmirrored crop: columns reversed, channels
    swapped left/right."""
    import torch

    index = torch.as_tensor(perm, device=heatmaps.device, dtype=torch.long)
    return heatmaps.flip(-1).index_select(1, index)


def decode_heatmaps(heatmaps: torch.Tensor, crop_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (M, K, 2) in crop pixels and scores (M, K) from heatmaps (M, K, Hh, Wh): the arg-max, moved a
    quarter pixel towards its higher neighbour in x and in y (HRNet's rule), its centre mapped to the crop; the
    score is the heatmap's maximum. float64 on the host."""
    import torch

    hm = heatmaps.detach().float()
    m, k, hh, wh = hm.shape
    flat = hm.reshape(m, k, hh * wh)
    scores, index = flat.max(dim=2)
    ys, xs = index // wh, index % wh
    x = xs.to(torch.float64)
    y = ys.to(torch.float64)
    # The neighbours of each arg-max, where it is not on the border.
    inner_x = (xs > 0) & (xs < wh - 1)
    inner_y = (ys > 0) & (ys < hh - 1)
    left = flat.gather(2, (index - 1).clamp(min=0).unsqueeze(2)).squeeze(2)
    right = flat.gather(2, (index + 1).clamp(max=hh * wh - 1).unsqueeze(2)).squeeze(2)
    up = flat.gather(2, (index - wh).clamp(min=0).unsqueeze(2)).squeeze(2)
    down = flat.gather(2, (index + wh).clamp(max=hh * wh - 1).unsqueeze(2)).squeeze(2)
    x = x + torch.where(inner_x, torch.sign(right - left).to(torch.float64) * QUARTER_OFFSET, torch.zeros_like(x))
    y = y + torch.where(inner_y, torch.sign(down - up).to(torch.float64) * QUARTER_OFFSET, torch.zeros_like(y))
    crop_w, crop_h = crop_size
    points = torch.stack([(x + 0.5) * (crop_w / wh), (y + 0.5) * (crop_h / hh)], dim=-1)
    return points.cpu().numpy(), scores.to(torch.float64).cpu().numpy()
