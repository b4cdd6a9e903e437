"""A vectorised, in-memory COCOeval for keypoints and boxes that gives pycocotools' numbers bit for bit.

The algorithm is COCOeval's (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the evaluation
protocol of cocodataset.org/#keypoints-eval and #detection-eval), restated over arrays. An evaluation unit is one
(category, image) pair, or one image with useCats=0 (every category pooled, GTs and detections in category order):

1. Per unit, detections are ordered by descending score (a stable sort: equal scores keep category, then results
   order) and the first maxDets[-1] kept; their similarity with the unit's GTs is computed: OKS (Ronchi & Perona,
   ICCV 2017) for keypoints, IoU for boxes, where a crowd GT's IoU is the intersection over the detection's area
   (pycocotools' maskUtils.iou with iscrowd, `bbIou` in its maskApi.c).
2. Per area range, a GT is ignored when it is a crowd region (iscrowd read for truth), has no labelled keypoint
   (num_keypoints == 0, keypoints only), lies outside the range (its `area`), or the caller marks it. Per
   threshold t, detections in score order each take, among the GTs still free (crowd regions, int(iscrowd) != 0,
   never stop being free) with similarity >= min(t, 1 - 1e-10), the one of largest similarity, ties going to the
   later GT in the order "non-ignored first"; an ignored GT is taken only when no non-ignored one qualifies. A
   detection matched to an ignored GT is ignored, and so is an unmatched one whose area (a box result's w * h, a
   keypoint result's keypoint extent, or its `bbox` when pycocotools' loadRes reads one) is outside the range.
3. Per category, area range and maxDet, the images' first maxDet detections are pooled and stably sorted by
   descending score; cumulative TP/FP counts give recall and precision, precision is made non-increasing from the
   right, and both are read at the 101 recall thresholds (np.searchsorted, side 'left'); -1 where no GT counts.

Step 2 runs for all units, area ranges and thresholds at once: units are bucketed by their GT count (padded to a
power of two) and the greedy matching advances one detection rank at a time. The floating-point operations are
pycocotools' own, in its order, so the similarities are identical, not merely close: in particular numpy's np.sum
adds 8 or more terms pairwise (8 accumulators), so each OKS is summed over exactly its labelled terms, as a
contiguous row of that length (a zero-padded row would round differently). A pycocotools quirk is kept on
purpose: a match to a GT whose annotation id is 0 counts as no match in the accumulation (its id is falsy).

The per-image matches come out as arrays (`MatchTable`, every category, area range and threshold), from which
`MatchTable.image_evals()` builds pycocotools' evalImgs entries (`ImageEval`) on demand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.threads import parallel_map, shares
from kpbench.evaluation.arrays import (
    GroundTruthArrays,
    box_areas,
    ground_truth_arrays,
    keypoint_extent_areas,
    keypoint_extents,
    loadres_areas,
    sorted_unique,
)
from kpbench.evaluation.settings import EvalSettings, summarize

__all__ = [
    "CocoEvaluator", "ImageEval", "KeypointEvaluator", "KeypointPartEvaluator", "MatchTable", "VectorizedResult",
    "coco_parameters", "evaluated_detections", "loadres_areas", "results_to_arrays",
]

# COCOeval's defaults (pycocotools' Params.setDetParams / setKpParams), built the way it builds them.
_DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_KEYPOINT_AREAS = (("all", 0.0**2, 1e5**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e5**2))
_BOX_AREAS = (("all", 0.0**2, 1e5**2), ("small", 0.0**2, 32.0**2), ("medium", 32.0**2, 96.0**2),
              ("large", 96.0**2, 1e5**2))
_KEYPOINT_MAX_DETS = (20,)
_BOX_MAX_DETS = (1, 10, 100)
_EPS = np.spacing(1)
_OKS_BLOCK = 4096  # detection-GT pairs per pass of the OKS arithmetic
_REACH_BLOCK = 8192  # detection-GT pairs per pass of the OKS bound
_MIN_MATCH_SHARE = 2048  # units per thread at least in the compiled matching

try:  # COCOeval's matching loop in C (`_matching.c`), built at install where a C compiler is found
    from kpbench.evaluation._matching import match_units as _match_units
except ImportError:
    _match_units = None


@dataclass
class ImageEval:
    """COCOeval's matching for one (category, area range, image): one entry of pycocotools' evalImgs.

    Detections are sorted by descending score (stable) and cut to the largest maxDet, as COCOeval does.
    `dt_ids` are the results' 1-based positions in the results list (pycocotools' loadRes numbering).
    `dt_matches[t, d]` is the GT annotation id detection d matched at IoU/OKS threshold t (0: none). GTs are in
    COCOeval's order for the area range: not ignored first, each group in annotation order.
    """

    image_id: int
    category_id: int
    area_index: int
    dt_ids: np.ndarray  # (D,)
    dt_scores: np.ndarray  # (D,)
    dt_matches: np.ndarray  # (T, D) matched GT id, 0 for none
    dt_ignore: np.ndarray  # (T, D) bool
    gt_ids: np.ndarray  # (G,)
    gt_matches: np.ndarray  # (T, G) matched detection id, 0 for none
    gt_ignore: np.ndarray  # (G,) bool


def coco_parameters(
    iou_type: str, settings: EvalSettings | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[str, float, float], ...], tuple[int, ...]]:
    """COCOeval's (iouThrs, recThrs, area ranges (label, lo, hi), maxDets) for `iou_type` with `settings` applied."""
    settings = settings or EvalSettings()
    thresholds = (np.asarray(settings.iou_thresholds, dtype=np.float64) if settings.iou_thresholds is not None
                  else _DEFAULT_IOU_THRESHOLDS.copy())
    keypoints = iou_type == "keypoints"
    areas = settings.area_ranges if settings.area_ranges is not None else (_KEYPOINT_AREAS if keypoints else _BOX_AREAS)
    max_dets = tuple(int(m) for m in settings.max_dets) if settings.max_dets is not None else (
        _KEYPOINT_MAX_DETS if keypoints else _BOX_MAX_DETS)
    return thresholds, _RECALL_THRESHOLDS.copy(), tuple(areas), max_dets


@dataclass
class MatchTable:
    """COCOeval's per-image matching as arrays, for every category, area range and threshold (what evalImgs holds).

    Units are (category, image) pairs, category-major, in pycocotools' order (p.catIds, then p.imgIds), or images
    with useCats=0 (`category_ids` is then [-1], as in evalImgs). Evaluated detections (E of them: each unit's first
    maxDets[-1] by score) are listed unit by unit, by rank; GTs unit by unit, in annotation order (category order
    first with useCats=0).
    """

    num_results: int
    image_ids: np.ndarray  # (I,) p.imgIds
    category_ids: np.ndarray  # (K,) evalImgs' category ids
    area_labels: tuple[str, ...]  # (A,)
    iou_thresholds: np.ndarray  # (T,)
    dt_index: np.ndarray  # (E,) results index
    dt_unit: np.ndarray  # (E,)
    dt_rank: np.ndarray  # (E,)
    dt_scores: np.ndarray  # (E,)
    dt_gt: np.ndarray  # (A, T, E) position (into the gt_* arrays) of the GT matched, -1 for none
    dt_ignore: np.ndarray  # (A, T, E) COCOeval's dtIgnore
    gt_ids: np.ndarray  # (H,) annotation ids
    gt_unit: np.ndarray  # (H,)
    gt_ignore: np.ndarray  # (A, H) COCOeval's gtIgnore for each area range
    gt_dt: np.ndarray  # (A, T, H) results index of the (last) detection matched, -1 for none

    @property
    def num_units(self) -> int:
        return len(self.category_ids) * len(self.image_ids)

    def counted(self) -> np.ndarray:
        """(A, T, E) matched to a GT whose id is not 0 (COCOeval's dtMatches test: a match to GT id 0 reads as none)."""
        ids = np.append(self.gt_ids, 0)
        return ids[self.dt_gt] != 0

    def unit_slices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(dt_start, dt_count, gt_start, gt_count) per unit."""
        units = self.num_units
        dt_count = np.bincount(self.dt_unit, minlength=units)
        gt_count = np.bincount(self.gt_unit, minlength=units)
        return _starts(dt_count), dt_count, _starts(gt_count), gt_count

    def iter_image_evals(self) -> Iterator[ImageEval]:
        """pycocotools' evalImgs entries that are not None, in its order: category, area range, image."""
        dt_start, dt_count, gt_start, gt_count = self.unit_slices()
        num_images = len(self.image_ids)
        present = np.flatnonzero((dt_count > 0) | (gt_count > 0))
        dt_ids = self.dt_index + 1
        gt_id_ext = np.append(self.gt_ids, 0)
        for k, category_id in enumerate(self.category_ids.tolist()):
            units = present[(present >= k * num_images) & (present < (k + 1) * num_images)]
            for a in range(len(self.area_labels)):
                for u in units.tolist():
                    ds, dn, gs, gn = int(dt_start[u]), int(dt_count[u]), int(gt_start[u]), int(gt_count[u])
                    dts, gts = slice(ds, ds + dn), np.arange(gs, gs + gn)
                    ignore = self.gt_ignore[a, gts]
                    gts = gts[np.argsort(ignore, kind="stable")]  # evaluateImg: not ignored first
                    yield ImageEval(
                        image_id=int(self.image_ids[u - k * num_images]), category_id=int(category_id), area_index=a,
                        dt_ids=dt_ids[dts], dt_scores=self.dt_scores[dts],
                        dt_matches=gt_id_ext[self.dt_gt[a, :, dts]], dt_ignore=self.dt_ignore[a, :, dts],
                        gt_ids=self.gt_ids[gts], gt_matches=self.gt_dt[a][:, gts] + 1,
                        gt_ignore=self.gt_ignore[a, gts],
                    )

    def image_evals(self) -> list[ImageEval]:
        """Every evalImgs entry (see `iter_image_evals`)."""
        return list(self.iter_image_evals())


class LazyImageEvals(Sequence[ImageEval]):
    """A MatchTable's evalImgs entries, built on first use (a sweep reads the table itself, never these)."""

    def __init__(self, table: MatchTable) -> None:
        self.table = table
        self._items: list[ImageEval] | None = None

    def _built(self) -> list[ImageEval]:
        if self._items is None:
            self._items = self.table.image_evals()
        return self._items

    def __len__(self) -> int:
        return len(self._built())

    def __getitem__(self, index: Any) -> Any:
        return self._built()[index]

    def __iter__(self) -> Iterator[ImageEval]:
        return iter(self._built())


@dataclass
class VectorizedResult:
    """One evaluation: COCOeval's accumulated arrays, its stats, and the matches (every unit, area and threshold;
    and, for one keypoint category, the area-"all" matches by results index, as `KeypointEvaluator` gives them)."""

    stats: dict[str, float]  # summarize() of the arrays (pycocotools' names and values with COCO's parameters)
    precision: np.ndarray  # (T, R, K, A, M), COCOeval.eval['precision']
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray  # (T, R, K, A, M)
    matches: MatchTable
    iou_thresholds: np.ndarray  # (T,)
    area_labels: tuple[str, ...]  # (A,)
    max_dets: tuple[int, ...]  # (M,)
    # Area range "all" (the label "all", else the first range), at maxDets[-1], by results index:
    dt_matches: np.ndarray  # (T, N) index (into the evaluator's GT order) of each detection's GT, -1 for none or cut
    dt_ignore: np.ndarray  # (T, N) COCOeval's dtIgnore; True for detections cut by maxDets (they never count)
    gt_matches: np.ndarray  # (T, G) results index of the (last) detection matched to each GT, -1 for none
    dt_kept: np.ndarray  # (N,) within the first maxDets[-1] of its unit by score (evaluated at all)


@dataclass
class _DetectionOrder:
    """What an evaluation makes of the detections' units and scores alone (`CocoEvaluator._detection_order`)."""

    kept: np.ndarray  # (E,) results indices of the detections evaluated, unit by unit, by rank
    kept_unit: np.ndarray  # (E,)
    kept_rank: np.ndarray  # (E,)
    dt_count: np.ndarray  # (U,) detections evaluated per unit
    accumulation: np.ndarray  # (E,) positions into `kept` in COCOeval.accumulate's order


class CocoEvaluator:
    """A COCO ground truth prepared once for one iou type; evaluates detection arrays exactly as COCOeval.

    `gt` is a `GroundTruthArrays` (keypoints needed for "keypoints"). `sigmas` are the K keypoint sigmas of OKS
    (keypoints only). `settings` (EvalSettings; None for COCO's defaults of the iou type) sets thresholds, area
    ranges, maxDets and useCats.

    GT order (`gt_ann_ids` and every gt_* array): units in pycocotools' order (category, then image by id; images
    only with useCats=0), and within a unit annotation order (by category first with useCats=0).
    """

    def __init__(
        self, gt: GroundTruthArrays, iou_type: str = "keypoints", sigmas: np.ndarray | Sequence[float] | None = None,
        settings: EvalSettings | None = None,
    ) -> None:
        if iou_type not in ("keypoints", "bbox"):
            raise KpbenchError(f"iou type: must be keypoints or bbox, got {iou_type!r}")
        settings = settings or EvalSettings()
        self.ground_truth = gt
        self.iou_type = iou_type
        self.use_cats = settings.use_cats
        (self.iou_thresholds, self.recall_thresholds, areas, self.max_dets) = coco_parameters(iou_type, settings)
        self.area_labels = tuple(label for label, _, _ in areas)
        self.area_ranges = np.array([[lo, hi] for _, lo, hi in areas], dtype=np.float64).reshape(-1, 2)
        self.area_all = self.area_labels.index("all") if "all" in self.area_labels else 0
        self.image_ids = gt.image_ids
        self.category_ids = gt.category_ids if self.use_cats else np.asarray([-1], dtype=np.int64)
        self._num_images = len(gt.image_ids)
        self._num_units = len(self.category_ids) * self._num_images

        unit = gt.ann_category * self._num_images + gt.ann_image if self.use_cats else gt.ann_image
        order = np.lexsort((np.arange(len(gt)), gt.ann_category, unit))
        self._gt_rows = order  # GT file-order row of each position
        self.gt_ann_ids = gt.ann_ids[order]
        self.gt_unit = unit[order]
        self.gt_image_index = gt.ann_image[order]
        self.gt_category_index = gt.ann_category[order]
        self.gt_boxes = gt.boxes[order]
        self.gt_areas = gt.areas[order]
        self.gt_iscrowd = gt.iscrowd[order]
        self._gt_crowd = gt.crowd[order]
        self.gt_ignore = self.gt_iscrowd.copy()  # pycocotools' _prepare
        if iou_type == "keypoints":
            if gt.keypoints is None:
                raise KpbenchError(f"{gt.source}: keypoint evaluation needs the annotations' keypoints")
            self.gt_ignore |= gt.no_keypoints[order]
        self._gt_id_zero = self.gt_ann_ids == 0
        self._gt_count = np.bincount(self.gt_unit, minlength=self._num_units)
        self._gt_start = _starts(self._gt_count)
        lo, hi = self.area_ranges[:, :1], self.area_ranges[:, 1:]
        self._gt_out_of_range = (self.gt_areas[None] < lo) | (self.gt_areas[None] > hi)  # (A, G), as evaluateImg

        if iou_type == "keypoints":
            if sigmas is None:
                raise KpbenchError("keypoint evaluation needs the keypoint sigmas")
            self.sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            self.num_keypoints = k = len(self.sigmas)
            if gt.keypoints is not None and gt.keypoints.shape[1] != k:  # type: ignore[union-attr]
                raise KpbenchError(f"{gt.source}: every annotation needs {3 * k} keypoint values ({k} sigmas)")
            self.variances = (self.sigmas * 2) ** 2
            self.gt_keypoints = gt.keypoints[order]  # type: ignore[index]
            # OKS terms per GT: the labelled keypoints' columns first (in order), how many terms OKS averages over.
            labelled = self.gt_keypoints[:, :, 2] > 0
            self._gt_labelled_count = labelled.sum(axis=1)
            columns = np.argsort(~labelled, axis=1, kind="stable")
            # Per GT, its OKS terms first: the labelled keypoints' coordinates and variances, in keypoint order, and
            # their offsets in a detection's flat (K * 3) keypoints.
            self._gt_term_x = np.take_along_axis(self.gt_keypoints[:, :, 0], columns, axis=1)
            self._gt_term_y = np.take_along_axis(self.gt_keypoints[:, :, 1], columns, axis=1)
            self._gt_term_variances = self.variances[columns]
            self._gt_term_offsets = columns * 3
            self._gt_denominator = self.gt_areas + _EPS
            x, y, w, h = self.gt_boxes.T
            # GTs without labelled keypoints: the box enlarged by its size on every side (pycocotools' bounds).
            self._gt_bounds = np.stack([x - w, x + w * 2, y - h, y + h * 2], axis=1)
            # Where OKS measures from: the labelled keypoints' extent, or those bounds (x0, x1, y0, y1).
            with np.errstate(invalid="ignore"):
                spread = np.stack([np.where(labelled, self.gt_keypoints[:, :, 0], np.inf).min(axis=1),
                                   np.where(labelled, self.gt_keypoints[:, :, 0], -np.inf).max(axis=1),
                                   np.where(labelled, self.gt_keypoints[:, :, 1], np.inf).min(axis=1),
                                   np.where(labelled, self.gt_keypoints[:, :, 1], -np.inf).max(axis=1)], axis=1)
            self._gt_reach = np.where((self._gt_labelled_count > 0)[:, None], spread, self._gt_bounds)
        else:
            self.sigmas = None
            self.num_keypoints = 0

    # --- similarity ------------------------------------------------------------------------------------------

    def _pair_similarity(self, dt_geometry: np.ndarray, det: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """OKS (keypoints) or IoU (boxes) of the pairs (dt_geometry[det[p]], GT gt[p])."""
        if self.iou_type == "keypoints":
            return self._pair_oks(dt_geometry, det, gt)
        return self._pair_iou(dt_geometry, det, gt)

    def _pair_iou(self, dt_boxes: np.ndarray, det: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """pycocotools' bbIou (maskApi.c) per pair, its double operations in its order: w = min(dx + dw, gx + gw)
        - max(dx, gx) and h alike, 0 unless both are > 0; i = w * h over u = da (a crowd GT) or da + ga - i."""
        d, g = dt_boxes[det], self.gt_boxes[gt]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
            h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
            inter = w * h
            da = d[:, 2] * d[:, 3]
            ga = g[:, 2] * g[:, 3]
            union = np.where(self._gt_crowd[gt], da, da + ga - inter)
            return np.where((w > 0) & (h > 0), inter / union, 0.0)

    def _pair_oks(self, dt_keypoints: np.ndarray, det: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """OKS of the pairs (dt_keypoints[det[p]], GT gt[p]), pycocotools' operations in its order.

        Pairs are grouped by the GT's number n of OKS terms, and each term is computed as computeOks computes it,
        for the labelled keypoints only (its `e[vg > 0]`: the others never reach the sum), gathered into a
        contiguous (M, n) array, so that np.sum adds exactly the terms pycocotools adds, in the same pairwise
        order. GTs without labelled keypoints measure all K keypoints from their enlarged box. Blocks of a few
        thousand pairs keep the temporaries in the CPU's cache.
        """
        out = np.empty(len(det), dtype=np.float64)
        if len(det) == 0:
            return out
        k = self.num_keypoints
        flat = np.ascontiguousarray(dt_keypoints, dtype=np.float64).reshape(-1)
        terms = self._gt_labelled_count[gt]  # 0: the box distance over all K
        order = np.argsort(terms, kind="stable")
        bounds = np.searchsorted(terms[order], np.arange(k + 2))
        all_offsets = np.arange(k) * 3
        zero = np.zeros(())

        def block(piece: tuple[int, np.ndarray]) -> None:
            n, sel = piece
            d, g = det[sel], gt[sel]
            base = (d * (3 * k))[:, None]
            # Far-off keypoints square to inf (similarity 0, as in pycocotools), area -eps divides by zero: quiet
            # (numpy's error state belongs to each thread, so it is set here).
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                if n > 0:
                    offsets = self._gt_term_offsets[g, :n]
                    dx = flat[base + offsets] - self._gt_term_x[g, :n]
                    dy = flat[base + offsets + 1] - self._gt_term_y[g, :n]
                    variances = self._gt_term_variances[g, :n]
                else:
                    xd, yd = flat[base + all_offsets], flat[base + all_offsets + 1]
                    x0, x1, y0, y1 = (self._gt_bounds[g, j][:, None] for j in range(4))
                    dx = np.maximum(zero, x0 - xd) + np.maximum(zero, xd - x1)
                    dy = np.maximum(zero, y0 - yd) + np.maximum(zero, yd - y1)
                    variances = self.variances
                e = (dx**2 + dy**2) / variances / self._gt_denominator[g][:, None] / 2
                out[sel] = np.sum(np.exp(-e), axis=1) / (n or k)

        # Blocks write disjoint rows of `out`: they run on a few threads (numpy releases the GIL in its loops).
        parallel_map(block, [(n, order[lo:min(lo + _OKS_BLOCK, bounds[n + 1])])
                             for n in range(k + 1) for lo in range(bounds[n], bounds[n + 1], _OKS_BLOCK)])
        return out

    def _within_reach(self, dt_extents: np.ndarray, det: np.ndarray, gt: np.ndarray, lowest: float) -> np.ndarray:
        """(P,) False for the pairs whose OKS is surely below `lowest` (> 0), so that it need not be computed.

        OKS is a mean of terms exp(-d_i**2 / (2 * var_i * (area + eps))), so reaching `lowest` needs one term at
        least that large: d_i**2 <= -ln(lowest) * 2 * var_i * (area + eps). Every d_i is at least the gap between
        the detection's keypoint extent and where the GT measures from (`_gt_reach`); a pair whose gap passes that
        bound with the largest variance, and a margin of 0.1% (the rounding of the real computation is some 1e-15),
        cannot reach `lowest`. A NaN anywhere leaves the pair to the computation.
        """
        out = np.empty(len(det), dtype=bool)
        factor = -np.log(lowest) * 2.0 * float(self.variances.max()) * 1.001
        # Blocks of pairs: temporaries that stay in the cache (whole-length ones cost more in fresh pages).
        with np.errstate(invalid="ignore", over="ignore"):
            for lo in range(0, len(det), _REACH_BLOCK):
                g, d = gt[lo:lo + _REACH_BLOCK], det[lo:lo + _REACH_BLOCK]
                reach, extent = self._gt_reach[g], dt_extents[d]
                gap_x = np.maximum(np.maximum(reach[:, 0] - extent[:, 1], extent[:, 0] - reach[:, 1]), 0.0)
                gap_y = np.maximum(np.maximum(reach[:, 2] - extent[:, 3], extent[:, 2] - reach[:, 3]), 0.0)
                out[lo:lo + _REACH_BLOCK] = ~(gap_x**2 + gap_y**2 > factor * self._gt_denominator[g])
        return out

    # --- evaluation ------------------------------------------------------------------------------------------

    def evaluate(
        self, image_ids: np.ndarray, category_ids: np.ndarray | None, scores: np.ndarray,
        geometry: np.ndarray, areas: np.ndarray | None = None, gt_ignore: np.ndarray | None = None,
    ) -> VectorizedResult:
        """Evaluate N detections given in results order: image_ids (N,), category_ids (N,) (None: every detection of
        the GT's only category), scores (N,), and keypoints (N, K, 3) in COCO's result layout or boxes (N, 4)
        xywh. `areas` (N,) overrides the detections' areas, which otherwise are a box's w * h or the keypoints'
        extent, as pycocotools' loadRes sets them (see `loadres_areas` for keypoint results it reads as boxes).
        `gt_ignore` (G, in the GT's file order) marks more GTs ignored (OR-ed into COCOeval's flag: they no longer
        count as missed, and a detection matched to one is ignored; in pycocotools the same is num_keypoints 0 on
        those keypoint GTs). Detections of a category the GT does not list are not evaluated, as in COCOeval."""
        image_ids = np.asarray(image_ids).reshape(-1)
        num = len(image_ids)
        geometry = np.asarray(geometry, dtype=np.float64)
        shape = (num, self.num_keypoints, 3) if self.iou_type == "keypoints" else (num, 4)
        if geometry.size == 0 and num == 0:
            geometry = geometry.reshape(shape)
        if geometry.shape != shape:
            what = "keypoints" if self.iou_type == "keypoints" else "boxes"
            raise KpbenchError(f"{what}: expected shape {shape}, got {geometry.shape}")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape != (num,):
            raise KpbenchError(f"scores: expected {num} values, got {scores.shape[0]}")
        if np.isnan(scores).any():
            raise KpbenchError("scores: NaN cannot be ranked")
        extents = keypoint_extents(geometry) if self.iou_type == "keypoints" else None
        if areas is None:
            dt_areas = keypoint_extent_areas(geometry, extents) if extents is not None else box_areas(geometry)
        else:
            dt_areas = np.asarray(areas, dtype=np.float64).reshape(-1)
            if dt_areas.shape != (num,):
                raise KpbenchError(f"areas: expected {num} values, got {dt_areas.shape[0]}")
        ignore = self.gt_ignore
        if gt_ignore is not None:
            extra = np.asarray(gt_ignore, dtype=bool).reshape(-1)
            if extra.shape != (len(self.gt_ann_ids),):
                raise KpbenchError(f"gt_ignore: expected {len(self.gt_ann_ids)} flags (one per GT annotation), "
                                   f"got {extra.shape[0]}")
            ignore = ignore | extra[self._gt_rows]
        img = self.ground_truth.image_index(image_ids)
        if category_ids is None:
            if len(self.ground_truth.category_ids) != 1:
                raise KpbenchError("detections need their category ids: the ground truth has several categories")
            cat = np.zeros(num, dtype=np.int64)
        else:
            cat = self.ground_truth.category_index(np.asarray(category_ids).reshape(-1))
            if len(cat) != num:
                raise KpbenchError(f"category ids: expected {num} values, got {len(cat)}")
        listed = cat >= 0
        unit = cat * self._num_images + img if self.use_cats else img
        return self._evaluate(unit, np.where(listed, cat, 0), listed, scores, geometry, dt_areas, ignore, extents)

    def _detection_order(
        self, unit: np.ndarray, cat: np.ndarray, listed: np.ndarray, scores: np.ndarray,
    ) -> _DetectionOrder:
        """Step 1 (see the module docstring) and the order of the accumulation: they depend on the detections'
        units and scores alone, not on their geometry nor the GTs'."""
        # Per unit by descending score (stable: category, then results order), the first maxDets[-1] kept.
        max_det = self.max_dets[-1]
        candidates = np.flatnonzero(listed)
        order = candidates[np.lexsort((candidates, cat[candidates], -scores[candidates], unit[candidates]))]
        dt_count_all = np.bincount(unit[order], minlength=self._num_units)
        rank_sorted = np.arange(len(order)) - _starts(dt_count_all)[unit[order]]
        keep = rank_sorted < max_det
        kept = order[keep]  # results indices, unit by unit, by rank
        kept_unit, kept_rank = unit[kept], rank_sorted[keep]
        # COCOeval.accumulate's order: per category, images in id order, each by rank, then a stable sort by
        # descending score: (category, score, image, rank); every maxDet's subset keeps it.
        kept_image = kept_unit % self._num_images if self._num_images else kept_unit
        kept_cat = kept_unit // self._num_images if self._num_images else kept_unit
        accumulation = np.lexsort((kept_rank, kept_image, -scores[kept], kept_cat))
        return _DetectionOrder(kept, kept_unit, kept_rank, np.minimum(dt_count_all, max_det), accumulation)

    def _evaluate(
        self, unit: np.ndarray, cat: np.ndarray, listed: np.ndarray, scores: np.ndarray, geometry: np.ndarray,
        dt_areas: np.ndarray, ignore: np.ndarray, dt_extents: np.ndarray | None = None,
        order: _DetectionOrder | None = None,
    ) -> VectorizedResult:
        """`evaluate` on validated inputs. `order`: `_detection_order` of these units and scores, when an
        evaluator with the same images, categories and maxDets[-1] made it already (parts of one evaluation)."""
        num = len(unit)
        area_count, thr_count = len(self.area_ranges), len(self.iou_thresholds)
        combos = area_count * thr_count  # matching state is indexed by c = area * T + threshold

        # 1. Per unit by descending score, the first maxDets[-1] kept.
        if order is None:
            order = self._detection_order(unit, cat, listed, scores)
        kept, kept_unit, kept_rank, dt_count = order.kept, order.kept_unit, order.kept_rank, order.dt_count
        dt_start = _starts(dt_count)
        num_gt = len(self.gt_ann_ids)

        # 2. Matching. The similarity of every detection-GT pair of each unit; then COCOeval's greedy matching: its
        # own loop compiled (`_match_compiled`), or numpy's closed forms and padded buckets (`_match_arrays`).
        gt_ignored = ignore[None] | self._gt_out_of_range  # (A, G)
        thresholds = np.minimum(self.iou_thresholds, 1 - 1e-10)
        # int32: positions and results indices (below 2**31); half the memory traffic of the (C, D) state.
        kept_match = np.full((combos, len(kept)), -1, dtype=np.int32)  # GT position
        kept_dt_ignore = np.zeros((combos, len(kept)), dtype=bool)
        gt_match = np.full((combos, num_gt), -1, dtype=np.int32)  # results index
        active = np.flatnonzero((dt_count > 0) & (self._gt_count > 0))
        pair_count = dt_count[active] * self._gt_count[active]
        pair_start = _starts(pair_count)
        pair_det, pair_gt = _unit_pairs(dt_start[active], dt_count[active], self._gt_start[active],
                                        self._gt_count[active], pair_count, pair_start)
        kept_geometry = geometry[kept]
        lowest = float(thresholds.min()) if thr_count else 0.0
        if dt_extents is not None and lowest > 0:
            # Only pairs that may reach the lowest threshold need their OKS; the others never qualify (0 here).
            near = self._within_reach(dt_extents[kept], pair_det, pair_gt, lowest)
            pair_sim = np.zeros(len(pair_det))
            pair_sim[near] = self._pair_oks(kept_geometry, pair_det[near], pair_gt[near])
            nan = np.isnan(pair_sim)
            if nan.any():
                # After a NaN, pycocotools lets every later GT replace the match whatever its OKS (`<` passes NaN),
                # so in a unit holding one the exact small values decide: the far pairs are computed there too.
                pair_unit = np.repeat(np.arange(len(active)), pair_count)
                with_nan = np.zeros(len(active), dtype=bool)
                with_nan[pair_unit[nan]] = True
                far = ~near & with_nan[pair_unit]
                pair_sim[far] = self._pair_oks(kept_geometry, pair_det[far], pair_gt[far])
        else:
            pair_sim = self._pair_similarity(kept_geometry, pair_det, pair_gt)
        if _match_units is not None:  # pycocotools' own loop, compiled (`_matching.c`)
            self._match_compiled(pair_sim, pair_start, dt_start[active], dt_count[active], active, gt_ignored,
                                 thresholds, kept, kept_match, kept_dt_ignore, gt_match)
        else:
            self._match_arrays(pair_sim, pair_det, pair_gt, pair_count, pair_start, active, dt_start, dt_count,
                               gt_ignored, thresholds, kept, kept_match, kept_dt_ignore, gt_match)

        # A match to GT id 0 is none for COCOeval (dtMatches holds ids and 0 reads as unmatched).
        counted = kept_match >= 0
        if self._gt_id_zero.any():
            counted[counted] = ~self._gt_id_zero[kept_match[counted]]
        kept_areas = dt_areas[kept]
        dt_out = (kept_areas[None] < self.area_ranges[:, :1]) | (kept_areas[None] > self.area_ranges[:, 1:])
        kept_dt_ignore |= ~counted & np.repeat(dt_out, thr_count, axis=0)

        # 3. Accumulation.
        kept_cat = kept_unit // self._num_images if self._num_images else kept_unit
        gt_cat = self.gt_unit // self._num_images if self._num_images else self.gt_unit
        precision, recall, score_at = self._accumulate(
            scores[kept], kept_cat, kept_rank, counted, kept_dt_ignore, gt_ignored, gt_cat, order.accumulation,
        )
        stats = summarize(precision, recall, self.iou_thresholds, self.area_labels, self.max_dets, self.iou_type)

        table = MatchTable(
            num_results=num, image_ids=self.image_ids, category_ids=self.category_ids, area_labels=self.area_labels,
            iou_thresholds=self.iou_thresholds, dt_index=kept, dt_unit=kept_unit, dt_rank=kept_rank,
            dt_scores=scores[kept], dt_gt=kept_match.reshape(area_count, thr_count, -1),
            dt_ignore=kept_dt_ignore.reshape(area_count, thr_count, -1), gt_ids=self.gt_ann_ids,
            gt_unit=self.gt_unit, gt_ignore=gt_ignored, gt_dt=gt_match.reshape(area_count, thr_count, -1),
        )
        rows = slice(self.area_all * thr_count, (self.area_all + 1) * thr_count)
        dt_matches = np.full((thr_count, num), -1, dtype=np.int64)
        dt_matches[:, kept] = kept_match[rows]
        dt_ignore = np.ones((thr_count, num), dtype=bool)
        dt_ignore[:, kept] = kept_dt_ignore[rows]
        dt_kept = np.zeros(num, dtype=bool)
        dt_kept[kept] = True
        return VectorizedResult(
            stats=stats, precision=precision, recall=recall, scores=score_at, matches=table,
            iou_thresholds=self.iou_thresholds.copy(), area_labels=self.area_labels, max_dets=self.max_dets,
            dt_matches=dt_matches, dt_ignore=dt_ignore, gt_matches=gt_match[rows].copy(), dt_kept=dt_kept,
        )

    def _match_compiled(
        self, pair_sim: np.ndarray, pair_start: np.ndarray, unit_dt_start: np.ndarray, unit_dt_count: np.ndarray,
        active: np.ndarray, gt_ignored: np.ndarray, thresholds: np.ndarray, kept: np.ndarray, kept_match: np.ndarray,
        kept_dt_ignore: np.ndarray, gt_match: np.ndarray,
    ) -> None:
        """Step 2's matching by `_matching.match_units` (COCOeval's loop in C, the GIL released), the units in a
        share per thread."""
        as_int = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
        pair_sim, pair_start = np.ascontiguousarray(pair_sim, dtype=np.float64), as_int(pair_start)
        unit_dt_start, unit_dt_count = as_int(unit_dt_start), as_int(unit_dt_count)
        unit_gt_start, unit_gt_count = as_int(self._gt_start[active]), as_int(self._gt_count[active])
        ignored = np.ascontiguousarray(gt_ignored, dtype=bool).view(np.uint8)
        crowd = np.ascontiguousarray(self._gt_crowd, dtype=bool).view(np.uint8)
        thresholds, kept = np.ascontiguousarray(thresholds, dtype=np.float64), as_int(kept)
        dt_ignore = kept_dt_ignore.view(np.uint8)

        def match(part: slice) -> None:
            _match_units(pair_sim, pair_start[part], unit_dt_start[part], unit_dt_count[part], unit_gt_start[part],
                         unit_gt_count[part], ignored, len(gt_ignored), crowd, thresholds, kept, kept_match, dt_ignore,
                         gt_match)

        parallel_map(match, shares(len(unit_dt_start), _MIN_MATCH_SHARE))

    def _match_arrays(
        self, pair_sim: np.ndarray, pair_det: np.ndarray, pair_gt: np.ndarray, pair_count: np.ndarray,
        pair_start: np.ndarray, active: np.ndarray, dt_start: np.ndarray, dt_count: np.ndarray,
        gt_ignored: np.ndarray, thresholds: np.ndarray, kept: np.ndarray, kept_match: np.ndarray,
        kept_dt_ignore: np.ndarray, gt_match: np.ndarray,
    ) -> None:
        """Step 2's matching with numpy (where `_matching` was not built): in closed form for the units where no
        detection qualifies for two GTs (`_match_one_candidate`), and for the others per bucket of units with the
        same padded GT count, all areas and thresholds at once."""
        area_count, thr_count = len(self.area_ranges), len(self.iou_thresholds)
        threshold_c = np.tile(thresholds, area_count)
        qualifies = pair_sim >= thresholds.min() if thr_count else np.zeros(len(pair_sim), dtype=bool)
        pair_unit = np.repeat(np.arange(len(active)), pair_count)  # into `active`
        scanned = _units_to_scan(pair_sim, qualifies, pair_det, pair_unit, len(active), len(kept))
        one = qualifies & ~scanned[pair_unit]
        self._match_one_candidate(pair_det[one], pair_gt[one], pair_sim[one], thresholds, kept, gt_ignored,
                                  kept_match, kept_dt_ignore, gt_match)
        scanned_active = np.flatnonzero(scanned)
        for size, members in _bucket_by_size(self._gt_count[active[scanned_active]]):
            which = scanned_active[members]
            which = which[np.argsort(-dt_count[active[which]], kind="stable")]  # most detections first
            units = active[which]
            dmax = int(dt_count[units[0]])
            valid = ((np.arange(dmax)[None, :, None] < dt_count[units][:, None, None])
                     & (np.arange(size)[None, None, :] < self._gt_count[units][:, None, None]))
            sim = np.full(valid.shape, -np.inf)
            # Pairs are listed unit by unit, detection-major: the order in which `valid` lists its cells.
            sim[valid] = pair_sim[_concatenated_ranges(pair_start[which], pair_count[which])]
            gt_slots = self._gt_start[units][:, None] + np.arange(size)[None]  # (n, size), may run past G
            slot_valid = np.arange(size)[None] < self._gt_count[units][:, None]
            gt_slots = np.where(slot_valid, gt_slots, 0)
            area_ign = gt_ignored[:, gt_slots].transpose(1, 0, 2)  # (n, A, size)
            crowd = self._gt_crowd[gt_slots] & slot_valid
            nan_units = np.isnan(sim).any(axis=(1, 2))
            if nan_units.any():  # NaN passes pycocotools' `<` test: its exact scan, unit by unit
                ign = np.repeat(area_ign, thr_count, axis=1)  # (n, C, size)
                dtm, dtig, gtm = _match_sequential(sim[nan_units], dt_count[units][nan_units],
                                                   self._gt_count[units][nan_units], ign[nan_units],
                                                   crowd[nan_units], threshold_c)
                rest = ~nan_units
                dtm2, dtig2, gtm2 = _match_padded_by_area(sim[rest], dt_count[units][rest], slot_valid[rest],
                                                          area_ign[rest], crowd[rest], thresholds)
                dtm = _merge(nan_units, dtm, dtm2)
                dtig = _merge(nan_units, dtig, dtig2)
                gtm = _merge(nan_units, gtm, gtm2)
            else:
                dtm, dtig, gtm = _match_padded_by_area(sim, dt_count[units], slot_valid, area_ign, crowd, thresholds)
            # Back to kept-detection and GT positions, written in ascending position: each row of the (C, .)
            # outputs is then written front to back (in bucket order, five times slower at 100,000 detections).
            p, r = np.nonzero(_any_last_axis(valid))
            pos = dt_start[units][p] + r
            ascending = np.argsort(pos)
            p, r, pos = p[ascending], r[ascending], pos[ascending]
            matched = dtm[p, :, r]  # (pairs, C) slot in the unit, -1 for none: made GT positions in place (int32,
            # as kept_match: a cast or fresh temporaries at this size cost more than the rest of the scatter)
            np.add(matched, self._gt_start[units][p].astype(np.int32)[:, None], out=matched, where=matched >= 0)
            kept_match[:, pos] = matched.T
            kept_dt_ignore[:, pos] = dtig[p, :, r].T
            p, s = np.nonzero(slot_valid)
            gt_pos = self._gt_start[units][p] + s
            ascending = np.argsort(gt_pos)
            p, s, gt_pos = p[ascending], s[ascending], gt_pos[ascending]
            rank = gtm[p, :, s]  # (slots, C)
            det_of = kept[np.clip(dt_start[units][p][:, None] + rank, 0, max(len(kept) - 1, 0))]
            gt_match[:, gt_pos] = np.where(rank >= 0, det_of, -1).T

    def _match_one_candidate(
        self, det: np.ndarray, gt: np.ndarray, sim: np.ndarray, thresholds: np.ndarray, kept: np.ndarray,
        gt_ignored: np.ndarray, kept_match: np.ndarray, kept_dt_ignore: np.ndarray, gt_match: np.ndarray,
    ) -> None:
        """COCOeval's greedy matching where each detection qualifies for one GT at most, written into the (C, .)
        outputs: the qualifying pairs (kept position `det`, GT position `gt`, similarity `sim`, not NaN) of units in
        which no detection qualifies for two GTs at the lowest of `thresholds` (T,), hence at none.

        A detection's only candidate is then its GT, so the order of preference (non-ignored first, largest
        similarity) never has a choice to make, and the area range (which only changes what is ignored) changes
        nothing: at threshold t a GT goes to the first detection, by rank, whose similarity is >= t; a crowd region
        goes to every such detection and keeps the last one, as pycocotools' scan leaves them.
        """
        if len(det) == 0:
            return
        order = np.lexsort((det, gt))  # by GT, then by rank (kept positions are in rank order within a unit)
        det, gt, sim = det[order], gt[order], sim[order]
        count = len(det)
        starts = np.flatnonzero(np.concatenate(([True], gt[1:] != gt[:-1])))
        group_gt = gt[starts]
        group_crowd = self._gt_crowd[group_gt]
        passes = sim[None, :] >= thresholds[:, None]  # (T, Q)
        index = np.arange(count)
        first = np.minimum.reduceat(np.where(passes, index, count), starts, axis=1)  # (T, groups); count: none
        last = np.maximum.reduceat(np.where(passes, index, -1), starts, axis=1)
        found = first < count
        taken = passes & self._gt_crowd[gt][None]
        t, g = np.nonzero(found & ~group_crowd[None])
        taken[t, first[t, g]] = True
        t_pair, pair = np.nonzero(taken)
        matched_det, matched_gt = det[pair], gt[pair]
        final = np.where(group_crowd[None], last, np.where(found, first, -1))  # the (last) pair matched to each GT
        t_gt, g = np.nonzero(final >= 0)
        final_gt, final_det = group_gt[g], kept[det[final[t_gt, g]]]
        thr_count = len(thresholds)
        for a in range(len(gt_ignored)):
            kept_match[a * thr_count + t_pair, matched_det] = matched_gt
            kept_dt_ignore[a * thr_count + t_pair, matched_det] = gt_ignored[a, matched_gt]
            gt_match[a * thr_count + t_gt, final_gt] = final_det

    def _accumulate(
        self, scores: np.ndarray, cat: np.ndarray, rank: np.ndarray, counted: np.ndarray, dt_ignore: np.ndarray,
        gt_ignored: np.ndarray, gt_cat: np.ndarray, order: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """COCOeval.accumulate over the kept detections (scores (D,), their category and rank, matches and ignore
        flags (C, D)), with the GT ignore flags per area range (A, G) and the GTs' categories (G,); `order` (D,):
        the detections in accumulation order (`_detection_order`)."""
        thr_count, rec_count = len(self.iou_thresholds), len(self.recall_thresholds)
        area_count, m_count = len(self.area_ranges), len(self.max_dets)
        cat_count = len(self.category_ids)
        precision = -np.ones((thr_count, rec_count, cat_count, area_count, m_count))
        recall = -np.ones((thr_count, cat_count, area_count, m_count))
        score_at = -np.ones((thr_count, rec_count, cat_count, area_count, m_count))
        bounds = np.searchsorted(cat[order], np.arange(cat_count + 1))
        # COCOeval's npig per (category, area range): the GTs it counts.
        npig = np.zeros((cat_count, area_count), dtype=np.int64)
        for a in range(area_count):
            npig[:, a] = np.bincount(gt_cat[~gt_ignored[a]], minlength=cat_count)
        rows_npig = np.repeat(np.arange(area_count), thr_count)
        for k in np.flatnonzero((npig > 0).any(axis=1)).tolist():
            segment = order[bounds[k]:bounds[k + 1]]
            live = np.flatnonzero(npig[k, rows_npig] > 0).tolist()
            # The category's detections in accumulation order, gathered once for every maxDet.
            segment_rank = rank[segment]
            # np.take keeps the (C, D) blocks C-contiguous (`x[:, index]` does not, and cumsum along a strided
            # axis costs ten times as much).
            segment_not_ignored = ~np.take(dt_ignore, segment, axis=1)
            segment_tp = np.take(counted, segment, axis=1) & segment_not_ignored
            for m, max_det in enumerate(self.max_dets):
                if len(segment_rank) == 0 or segment_rank.max() < max_det:
                    idx, not_ignored, tp_mask = segment, segment_not_ignored, segment_tp
                else:
                    within = np.flatnonzero(segment_rank < max_det)
                    idx = segment[within]
                    not_ignored = np.take(segment_not_ignored, within, axis=1)
                    tp_mask = np.take(segment_tp, within, axis=1)
                nd = len(idx)
                sorted_scores = scores[idx]
                for c in live:
                    a, t = divmod(c, thr_count)
                    # The TPs among the detections not ignored: their positions, and TP + FP up to each (its rank
                    # among those, plus one). No (C, D) cumulative sum: its fresh pages cost more than the sum.
                    counted_positions = np.flatnonzero(not_ignored[c])
                    tp_among = np.flatnonzero(tp_mask[c][counted_positions])
                    q, ss, rc_last = _precision_at_recalls(
                        counted_positions[tp_among], tp_among + 1, int(npig[k, a]), nd, sorted_scores,
                        self.recall_thresholds,
                    )
                    recall[t, k, a, m] = rc_last
                    precision[t, :, k, a, m] = q
                    score_at[t, :, k, a, m] = ss
        return precision, recall, score_at


class KeypointEvaluator(CocoEvaluator):
    """One keypoint category of a parsed COCO GT dict, prepared for `evaluate(image_ids, keypoints, scores)`.

    `gt` is a parsed COCO GT dict (images, annotations, categories). Its keypoint category is the only category,
    the only one with a 'keypoints' list, or `category_id`. `sigmas` are the K keypoint sigmas of OKS. `settings`
    (None for COCO's keypoint defaults) sets thresholds, area ranges and maxDets; useCats=0 is not supported (one
    category). GT order (`gt_ann_ids`): images by ascending id, and within an image the annotations in file order.
    """

    def __init__(
        self, gt: dict[str, Any] | GroundTruthArrays, sigmas: np.ndarray | Sequence[float],
        settings: EvalSettings | None = None, category_id: int | None = None,
    ) -> None:
        settings = settings or EvalSettings()
        if not settings.use_cats:
            raise KpbenchError("the vectorized keypoint evaluator scores one category: useCats=0 is not supported")
        k = len(np.asarray(sigmas).reshape(-1))
        if isinstance(gt, GroundTruthArrays):
            arrays = gt
            if category_id is None:
                if len(arrays.category_ids) != 1:
                    raise KpbenchError(f"the ground truth has {len(arrays.category_ids)} categories: name the keypoint "
                                       "category (category_id)")
                category_id = int(arrays.category_ids[0])
            self.category_id = category_id
        else:
            self.category_id = _keypoint_category(gt, category_id)
            arrays = ground_truth_arrays(gt, "ground truth", k)
        super().__init__(arrays.only_categories([self.category_id]), "keypoints", sigmas, settings)

    def image_gt_indices(self, image_id: Any) -> np.ndarray:
        """The GT indices (into gt_ann_ids) of one image, in its annotation order."""
        i = int(self.ground_truth.image_index(np.asarray([image_id]))[0])
        return np.arange(self._gt_start[i], self._gt_start[i] + self._gt_count[i])

    def oks(self, image_id: Any, keypoints: np.ndarray) -> np.ndarray:
        """OKS (D, G) of D detections (D, K, 3) with the image's GTs (columns: `image_gt_indices`), bit for bit
        pycocotools' computeOks values."""
        kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, self.num_keypoints, 3)
        gts = self.image_gt_indices(image_id)
        det, gt = np.repeat(np.arange(len(kps)), len(gts)), np.tile(gts, len(kps))
        return self._pair_oks(kps, det, gt).reshape(len(kps), len(gts))

    def evaluate(  # type: ignore[override]
        self, image_ids: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, gt_ignore: np.ndarray | None = None,
        areas: np.ndarray | None = None,
    ) -> VectorizedResult:
        """Evaluate N detections of this category in results order: image_ids (N,), keypoints (N, K, 3) in COCO's
        result layout (x, y, score), scores (N,). `gt_ignore` (G,) in the evaluator's GT order (`gt_ann_ids`) marks
        more GTs ignored; `areas` (N,) overrides the keypoint-extent areas (see `CocoEvaluator.evaluate`)."""
        if gt_ignore is not None:
            extra = np.asarray(gt_ignore, dtype=bool).reshape(-1)
            if extra.shape != (len(self.gt_ann_ids),):
                raise KpbenchError(f"gt_ignore: expected {len(self.gt_ann_ids)} flags (one per GT annotation), "
                                   f"got {extra.shape[0]}")
            in_file_order = np.empty_like(extra)
            in_file_order[self._gt_rows] = extra
            gt_ignore = in_file_order
        return super().evaluate(image_ids, None, scores, keypoints, areas=areas, gt_ignore=gt_ignore)


def evaluated_detections(image_ids: np.ndarray, scores: np.ndarray, max_det: int) -> np.ndarray:
    """The results indices (ascending) of the detections COCOeval evaluates of one category: each image's first
    `max_det` by descending score, equal scores in results order (its stable sort). The others never count, in any
    evaluation of these detections with that maxDets[-1], whatever their keypoints: evaluating only these, in
    results order, gives the same ranks, matches and arrays."""
    image_ids = np.asarray(image_ids).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != image_ids.shape:
        raise KpbenchError(f"scores: expected {len(image_ids)} values, got {scores.shape[0]}")
    if np.isnan(scores).any():
        raise KpbenchError("scores: NaN cannot be ranked")
    num = len(image_ids)
    if num == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(num), -scores, image_ids))
    sorted_images = image_ids[order]
    new_image = np.concatenate(([True], sorted_images[1:] != sorted_images[:-1]))
    starts = np.flatnonzero(new_image)
    rank = np.arange(num) - np.repeat(starts, np.diff(np.append(starts, num)))
    return np.sort(order[rank < max_det])


class KeypointPartEvaluator:
    """COCOeval's keypoint evaluation of one set of detections on parts of the keypoints (a group, one keypoint),
    each as if the GT and the detections held only the part's keypoints, with their sigmas, and each GT's
    num_keypoints recounted as its labelled (v > 0) keypoints in the part (`kpbench.analysis.keypoint_ap`).

    What every part shares is prepared once: the GT arrays (`gt`: a parsed COCO GT dict or `GroundTruthArrays`;
    `category_id` its keypoint category), and the detections COCOeval evaluates (`evaluated_detections`: each
    image's top maxDets by score, the same for every part). `image_ids` (N,), `keypoints` (N, K, 3), `scores` (N,)
    in results order; `areas` (N,) each detection's area in the whole evaluation (default: its keypoints' extent),
    which a part keeps (a single keypoint has no extent). `sigmas` (K,) and `settings` as `KeypointEvaluator`'s.
    """

    def __init__(
        self, gt: dict[str, Any] | GroundTruthArrays, sigmas: np.ndarray | Sequence[float],
        settings: EvalSettings | None, category_id: int | None, image_ids: np.ndarray, keypoints: np.ndarray,
        scores: np.ndarray, areas: np.ndarray | None = None,
    ) -> None:
        self.settings = settings or EvalSettings()
        self.sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        self.whole = KeypointEvaluator(gt, self.sigmas, self.settings, category_id=category_id)
        self.category_id = self.whole.category_id
        k = len(self.sigmas)
        image_ids = np.asarray(image_ids).reshape(-1)
        num = len(image_ids)
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if keypoints.size == 0 and num == 0:
            keypoints = keypoints.reshape(0, k, 3)
        if keypoints.shape != (num, k, 3):
            raise KpbenchError(f"keypoints: expected shape {(num, k, 3)}, got {keypoints.shape}")
        if areas is not None:
            areas = np.asarray(areas, dtype=np.float64).reshape(-1)
            if areas.shape != (num,):
                raise KpbenchError(f"areas: expected {num} values, got {areas.shape[0]}")
        kept = evaluated_detections(image_ids, scores, self.whole.max_dets[-1])
        self.image_ids = image_ids[kept]
        self.keypoints = keypoints[kept]
        self.scores = np.asarray(scores, dtype=np.float64).reshape(-1)[kept]
        self.areas = keypoint_extent_areas(self.keypoints) if areas is None else areas[kept]
        # What the evaluation of every part makes of the detections' images and scores: made once.
        self._unit = self.whole.ground_truth.image_index(self.image_ids)  # one category: a unit is an image
        self._listed = np.ones(len(kept), dtype=bool)
        self._order = self.whole._detection_order(self._unit, np.zeros(len(kept), dtype=np.int64), self._listed,
                                                  self.scores)
        gt_arrays = self.whole.ground_truth
        assert gt_arrays.keypoints is not None  # a keypoint evaluator's GT has keypoints
        self._gt_keypoints = gt_arrays.keypoints

    def part_ground_truth(self, indices: Sequence[int]) -> GroundTruthArrays:
        """The GT arrays cut down to the keypoints `indices`, num_keypoints recounted in them."""
        sliced = self._gt_keypoints[:, list(indices), :]
        return replace(self.whole.ground_truth, keypoints=sliced, no_keypoints=~(sliced[:, :, 2] > 0).any(axis=1))

    def num_counted(self, indices: Sequence[int] | None) -> int:
        """GTs COCOeval counts in the first area range of part `indices` (None: the whole set, the GT's own
        num_keypoints): not crowd, a labelled keypoint in the part, the area in the range."""
        gt = self.whole.ground_truth if indices is None else self.part_ground_truth(indices)
        lo, hi = self.whole.area_ranges[0]
        return int(np.count_nonzero(~gt.iscrowd & ~gt.no_keypoints & (gt.areas >= lo) & (gt.areas <= hi)))

    def evaluate_part(self, indices: Sequence[int] | None) -> VectorizedResult:
        """The evaluation of part `indices` (0-based keypoints, in the order given; None: the whole set with the
        GT's own num_keypoints). Its matches are indexed by the evaluated detections (see `evaluated_detections`)."""
        if indices is None:
            evaluator, keypoints = self.whole, self.keypoints
        else:
            columns = list(indices)
            evaluator = KeypointEvaluator(self.part_ground_truth(columns), self.sigmas[columns], self.settings,
                                          category_id=self.category_id)
            keypoints = np.ascontiguousarray(self.keypoints[:, columns, :])
        return evaluator._evaluate(self._unit, np.zeros(len(self._unit), dtype=np.int64), self._listed, self.scores,
                                   keypoints, self.areas, evaluator.gt_ignore, keypoint_extents(keypoints),
                                   self._order)


def _precision_at_recalls(
    tp_positions: np.ndarray, counted_at_tp: np.ndarray, npig: int, nd: int, sorted_scores: np.ndarray,
    recall_thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One row of COCOeval.accumulate from its true positives alone: the precision and the score at each recall
    threshold, and the final recall; the same doubles as pycocotools' full-length arrays.

    pycocotools forms, over the nd detections in score order, tp and fp cumulative counts (floats), recall
    rc = tp / npig and precision pr = tp / (fp + tp + eps), makes pr non-increasing from the right, and reads it at
    i = searchsorted(rc, x, 'left') for each recall threshold x (0 past the end). Here, with T the TP positions and
    n(i) the detections not ignored up to i (`counted_at_tp`: n(T[j-1]) for each TP j):
    - at the j-th TP (j = 1, 2, ...), tp = j and fp = n(T[j-1]) - j, so rc and pr there are computed exactly as
      pycocotools computes them;
    - rc rises only at a TP, so the first i with rc[i] >= x is T[c-1] for the smallest count c whose c / npig
      (the same division) is >= x, or 0 when c = 0;
    - pr falls at a false positive (a larger denominator) and stays at an ignored detection, so its maximum over
      the detections from a TP on is its maximum over the TPs from there on; from detection 0 with c = 0 it is
      that maximum over every TP (0 without one).
    """
    rec_count = len(recall_thresholds)
    q = np.zeros(rec_count)
    ss = np.zeros(rec_count)
    if nd == 0:
        return q, ss, 0.0
    ntp = len(tp_positions)
    tp = np.arange(1, ntp + 1, dtype=np.float64)
    fp = (counted_at_tp - np.arange(1, ntp + 1)).astype(np.float64)
    pr = tp / (fp + tp + _EPS)
    best_from = np.maximum.accumulate(pr[::-1])[::-1] if ntp else pr  # suffix maxima over the TPs
    # The smallest count c with c / npig >= x: within a few of ceil(x * npig), found by the division itself.
    base = np.ceil(recall_thresholds * npig).astype(np.int64)
    candidates = base[:, None] + np.arange(-2, 2)
    reaches = (candidates >= 0) & (candidates.astype(np.float64) / npig >= recall_thresholds[:, None])
    counts = candidates[np.arange(rec_count), np.argmax(reaches, axis=1)]
    inside = counts <= ntp
    at_tp = inside & (counts > 0)
    q[at_tp] = best_from[counts[at_tp] - 1]
    ss[at_tp] = sorted_scores[tp_positions[counts[at_tp] - 1]]
    at_start = inside & (counts == 0)
    q[at_start] = best_from[0] if ntp else 0.0
    ss[at_start] = sorted_scores[0]
    return q, ss, float(ntp) / npig if ntp else 0.0


# --- matching --------------------------------------------------------------------------------------------------


def _starts(counts: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive groups of the given sizes."""
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


def _units_to_scan(
    sim: np.ndarray, qualifies: np.ndarray, det: np.ndarray, unit: np.ndarray, num_units: int, num_dets: int,
) -> np.ndarray:
    """(U,) the units that need COCOeval's scan: one of their detections qualifies (`qualifies`: similarity at least
    the lowest threshold) for two GTs, so that the order of preference may choose, or a similarity is NaN (which
    pycocotools' scan treats apart). The others are matched in closed form (`_match_one_candidate`). Pairs: `sim`,
    `det` (kept position) and `unit` (index of the unit) of each."""
    candidates = np.bincount(det[qualifies], minlength=num_dets)
    scanned = np.zeros(num_units, dtype=bool)
    scanned[unit[np.isnan(sim) | (candidates[det] >= 2)]] = True
    return scanned


def _concatenated_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]), without the Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total) + np.repeat(starts - _starts(counts), counts)


def _unit_pairs(
    dt_start: np.ndarray, dt_count: np.ndarray, gt_start: np.ndarray, gt_count: np.ndarray, pair_count: np.ndarray,
    pair_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, GT) position pair of each unit (its detections dt_start..+dt_count, its GTs alike), unit by
    unit, detection-major: pair_count = dt_count * gt_count of them from pair_start."""
    total = int(pair_count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    within = np.arange(total) - np.repeat(pair_start, pair_count)
    per_row = np.repeat(gt_count, pair_count)
    rank, slot = np.divmod(within, per_row)
    return np.repeat(dt_start, pair_count) + rank, np.repeat(gt_start, pair_count) + slot


def _bucket_by_size(gt_counts: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Groups of positions by GT count rounded up to a power of two: (padded size, positions)."""
    if len(gt_counts) == 0:
        return []
    sizes = 1 << np.ceil(np.log2(np.maximum(gt_counts, 1))).astype(np.int64)
    return [(int(s), np.flatnonzero(sizes == s)) for s in sorted_unique(sizes).tolist()]


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _any_last_axis(mask: np.ndarray) -> np.ndarray:
    """mask.any(axis=-1) for a boolean array; where the last axis has 1, 2, 4 or 8 contiguous flags (a padded GT
    count), read as one integer each, which is 100 times faster than numpy's reduction over a short axis. A bool
    is one byte, 0 or 1, so the word is nonzero exactly when a flag is set."""
    word = _WORDS.get(mask.shape[-1])
    if word is None or mask.dtype != np.bool_ or not mask.flags.c_contiguous:
        return mask.any(axis=-1)
    return mask.view(word)[..., 0] != 0


def _match_padded(
    sim: np.ndarray, dt_count: np.ndarray, slot_valid: np.ndarray, ign: np.ndarray, crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's greedy matching of n units at once (no NaN similarity), units sorted by descending detection count.

    sim (n, D, S) detection rank x GT slot; slot_valid (n, S); ign (n, C, S) GT ignore per combination c of area
    range and threshold; crowd (n, S); thresholds (C,). Returns the matched slot per detection (n, C, D) or -1,
    its dtIgnore (n, C, D), and the rank of the last detection matched per slot (n, C, S) or -1.

    pycocotools scans the GTs with ignored ones last and keeps a running best, taking a GT whose similarity is not
    below it; so it ends on the LAST GT of largest similarity among the qualifying non-ignored ones, and looks at
    ignored ones only when no non-ignored one qualifies (its `break`). Order among non-ignored (and among ignored)
    GTs is annotation order, so the slots need no reordering: the last slot of largest similarity is the one.
    """
    n, dmax, size = sim.shape
    combos = len(thresholds)
    free = np.broadcast_to(slot_valid[:, None, :], (n, combos, size)).copy()
    counted_gt = ~ign
    dtm = np.full((n, combos, dmax), -1, dtype=np.int32)
    dtig = np.zeros((n, combos, dmax), dtype=bool)
    gtm = np.full((n, combos, size), -1, dtype=np.int32)
    # A detection with no GT at the lowest threshold matches nothing at any: only the others are scanned.
    candidate = _any_last_axis(sim >= thresholds.min()) if combos else np.zeros((n, dmax), dtype=bool)  # (n, D)
    for r in range(dmax):
        k = int(np.searchsorted(-dt_count, -r, side="left"))  # dt_count > r for the first k units
        units = np.flatnonzero(candidate[:k, r])
        if len(units) == 0:
            continue
        o = sim[units, r][:, None, :]  # (u, 1, S)
        qualifies = (o >= thresholds[None, :, None]) & free[units]
        preferred = qualifies & counted_gt[units]
        has_preferred = _any_last_axis(preferred)[:, :, None]
        pool = np.where(has_preferred, preferred, qualifies)
        q, c = np.nonzero(_any_last_axis(pool))
        p = units[q]
        value = np.where(pool[q, c], sim[p, r], -np.inf)  # (found, S)
        s = size - 1 - np.argmax(value[:, ::-1], axis=1)  # the last slot of largest similarity
        free[p, c, s] = crowd[p, s]  # crowd regions stay free
        dtm[p, c, r] = s
        dtig[p, c, r] = ign[p, c, s]
        gtm[p, c, s] = r
    return dtm, dtig, gtm


def _match_padded_by_area(
    sim: np.ndarray, dt_count: np.ndarray, slot_valid: np.ndarray, area_ign: np.ndarray, crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_match_padded` for every area range and threshold, with the GT ignore flags per area range: area_ign
    (n, A, S), thresholds (T,); the outputs are indexed by c = area * T + threshold, as `_match_padded`'s.

    The flags of its GTs are all that an area range changes in a unit's matching, so a range whose flags (over the
    unit's GTs) are an earlier range's has that range's matches: each unit is matched once per distinct set of
    flags (a unit whose persons are all large matches the same in "all" and "large"), a third less work with COCO's
    three keypoint ranges."""
    n, area_count, size = area_ign.shape
    thr_count = len(thresholds)
    flags = area_ign & slot_valid[:, None, :]
    same_as = np.tile(np.arange(area_count), (n, 1))  # (n, A) the first range with the same flags
    for a in range(1, area_count):
        for b in range(a):
            equal = ~_any_last_axis(flags[:, a] != flags[:, b]) & (same_as[:, a] == a)
            same_as[equal, a] = b
    job_unit, job_area = np.nonzero(same_as == np.arange(area_count))  # unit-major: detection counts stay sorted
    job_index = np.zeros((n, area_count), dtype=np.int64)
    job_index[job_unit, job_area] = np.arange(len(job_unit))
    dtm, dtig, gtm = _match_padded(
        sim[job_unit], dt_count[job_unit], slot_valid[job_unit],
        np.repeat(area_ign[job_unit, job_area][:, None, :], thr_count, axis=1), crowd[job_unit], thresholds)
    source = job_index[np.arange(n)[:, None], same_as]  # (n, A) the job that matched each range
    combos = area_count * thr_count
    dmax = sim.shape[1]
    return (dtm[source].reshape(n, combos, dmax), dtig[source].reshape(n, combos, dmax),
            gtm[source].reshape(n, combos, size))


def _match_sequential(
    sim: np.ndarray, dt_count: np.ndarray, gt_count: np.ndarray, ign: np.ndarray, crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_match_padded`'s contract by COCOeval's scan itself, for the rare units whose similarity holds NaN (which
    passes pycocotools' `ious < iou` test and then lets every later GT replace it)."""
    n, dmax, size = sim.shape
    combos = len(thresholds)
    dtm = np.full((n, combos, dmax), -1, dtype=np.int64)
    dtig = np.zeros((n, combos, dmax), dtype=bool)
    gtm = np.full((n, combos, size), -1, dtype=np.int64)
    for i in range(n):
        num_gt = int(gt_count[i])
        for c in range(combos):
            flags = ign[i, c, :num_gt]
            slots = np.argsort(flags, kind="stable")  # non-ignored first
            taken = np.zeros(num_gt, dtype=bool)
            for r in range(int(dt_count[i])):
                best, m = min(thresholds[c], 1 - 1e-10), -1
                for s in slots:
                    if taken[s] and not crowd[i, s]:
                        continue
                    if m > -1 and not flags[m] and flags[s]:
                        break
                    if sim[i, r, s] < best:
                        continue
                    best, m = sim[i, r, s], s
                if m == -1:
                    continue
                taken[m] = True
                dtm[i, c, r], dtig[i, c, r], gtm[i, c, m] = m, flags[m], r
    return dtm, dtig, gtm


def _merge(first: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows a where `first`, rows b elsewhere (b's padding may be narrower)."""
    out = np.full((len(first), *a.shape[1:]), -1 if a.dtype != bool else False, dtype=a.dtype)
    out[first] = a
    out[~first, :, : b.shape[2]] = b
    return out


# --- inputs ----------------------------------------------------------------------------------------------------


def _keypoint_category(gt: dict[str, Any], category_id: int | None) -> Any:
    """The category evaluated: `category_id`, the only category, or the only one with keypoint names."""
    categories = gt.get("categories") or []
    ids = [c.get("id") for c in categories if isinstance(c, dict)]
    if category_id is not None:
        if category_id not in ids:
            raise KpbenchError(f"category {category_id!r} is not a category of the ground truth (ids: {ids})")
        return category_id
    if len(ids) == 1:
        return ids[0]
    with_keypoints = [c["id"] for c in categories if isinstance(c, dict) and c.get("keypoints")]
    if len(with_keypoints) == 1:
        return with_keypoints[0]
    raise KpbenchError(f"the ground truth has {len(ids)} categories: name the keypoint category (category_id)")


def results_to_arrays(
    results: list[dict[str, Any]], num_keypoints: int, category_id: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_ids (N,), keypoints (N, K, 3) float64, scores (N,)) of COCO keypoint results, in results order;
    with `category_id`, only that category's results (their order kept)."""
    if category_id is not None:
        results = [r for r in results if r.get("category_id") == category_id]
    try:
        flat = [r["keypoints"] for r in results]
        if any(len(kps) != 3 * num_keypoints for kps in flat):
            raise KpbenchError(f"results: every keypoints list needs {3 * num_keypoints} values")
        keypoints = np.asarray(flat, dtype=np.float64).reshape(len(results), num_keypoints, 3)
        image_ids = np.asarray([r["image_id"] for r in results]).reshape(-1)
        scores = np.asarray([r["score"] for r in results], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise KpbenchError(f"results: not COCO keypoint results (image_id, keypoints, score): {exc!r}") from None
    return image_ids, keypoints, scores
