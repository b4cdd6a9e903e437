"""A vectorised, in-memory keypoint COCOeval that gives pycocotools' numbers bit for bit, many times faster.

The algorithm is COCOeval's for iouType 'keypoints' (Lin et al., "Microsoft COCO: Common Objects in Context",
ECCV 2014; the evaluation protocol of cocodataset.org/#keypoints-eval), restated over arrays:

1. Per image, detections are ordered by descending score (a stable sort: equal scores keep results order) and
   the first maxDets[-1] kept; OKS (Ronchi & Perona, ICCV 2017) is computed between those and the image's GTs.
2. Per area range, a GT is ignored when it is a crowd region, has no labelled keypoint (num_keypoints == 0),
   lies outside the range, or the caller marks it. Per threshold t, detections in score order each take, among
   the GTs still free (crowd regions never stop being free) with OKS >= min(t, 1 - 1e-10), the one of largest
   OKS, ties going to the later GT in the order "non-ignored first"; an ignored GT is taken only when no
   non-ignored one qualifies. A detection matched to an ignored GT is ignored, and so is an unmatched one whose
   area (of its keypoints' extent, or its `bbox` when pycocotools' loadRes would read one) is outside the range.
3. Per area range and maxDet, the images' first maxDet detections are pooled and stably sorted by descending
   score; cumulative TP/FP counts give recall and precision, precision is made non-increasing from the right,
   and both are read at the 101 recall thresholds (np.searchsorted, side 'left'); -1 where no GT counts.

Step 2 runs for all images, area ranges and thresholds at once: images are bucketed by their GT count (padded to
a power of two) and the greedy matching advances one detection rank at a time. The floating-point operations
are pycocotools' own, in its order, so the OKS values are identical, not merely close: in particular numpy's
np.sum adds 8 or more terms pairwise (8 accumulators), so each OKS is summed over exactly its labelled terms, as
a contiguous row of that length (a zero-padded row would round differently). A pycocotools quirk is kept on
purpose: a match to a GT whose annotation id is 0 counts as no match in the accumulation (its id is falsy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.evaluation.settings import EvalSettings, summarize

# COCOeval's keypoint defaults (pycocotools' Params.setKpParams), built the way it builds them.
_DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_DEFAULT_AREAS = (("all", 0.0**2, 1e5**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e5**2))
_DEFAULT_MAX_DETS = (20,)
_EPS = np.spacing(1)


@dataclass
class VectorizedResult:
    """One evaluation: COCOeval's accumulated arrays (one category) and the area-"all" matches, by index."""

    stats: dict[str, float]  # the names and values of kpbench's evaluate() for keypoints
    precision: np.ndarray  # (T, R, 1, A, M), COCOeval.eval['precision']
    recall: np.ndarray  # (T, 1, A, M)
    scores: np.ndarray  # (T, R, 1, A, M)
    # Area range "all" (the label "all", else the first range), at maxDets[-1]:
    dt_matches: np.ndarray  # (T, N) index into gt_ann_ids of each detection's GT, -1 for none or cut by maxDets
    dt_ignore: np.ndarray  # (T, N) COCOeval's dtIgnore; True for detections cut by maxDets (they never count)
    gt_matches: np.ndarray  # (T, G) results index of the (last) detection matched to each GT, -1 for none
    dt_kept: np.ndarray  # (N,) within the first maxDets[-1] of its image by score (evaluated at all)
    iou_thresholds: np.ndarray  # (T,)
    area_labels: tuple[str, ...]  # (A,)
    max_dets: tuple[int, ...]  # (M,)


class KeypointEvaluator:
    """Prepared GT of one keypoint category; evaluates detection arrays exactly as pycocotools' COCOeval.

    `gt` is a parsed COCO GT dict (images, annotations, categories). Its keypoint category is the only category,
    the only one with a 'keypoints' list, or `category_id`. `sigmas` are the K keypoint sigmas of OKS. `settings`
    (kpbench.evaluation.settings.EvalSettings; None for COCO's keypoint defaults: OKS .50:.05:.95, areas all,
    medium, large, maxDets 20) sets thresholds, area ranges and maxDets; useCats=0 is not supported.

    GT index order (`gt_ann_ids` and every gt_* array): images by ascending id, and within an image the
    annotations in file order (pycocotools' own order within an image).
    """

    def __init__(
        self, gt: dict[str, Any], sigmas: np.ndarray | Sequence[float], settings: EvalSettings | None = None,
        category_id: int | None = None,
    ) -> None:
        settings = settings or EvalSettings()
        if not settings.use_cats:
            raise KpbenchError("the vectorized keypoint evaluator scores one category: useCats=0 is not supported")
        self.sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        self.num_keypoints = k = len(self.sigmas)
        self.variances = (self.sigmas * 2) ** 2
        self.iou_thresholds = (np.asarray(settings.iou_thresholds, dtype=np.float64)
                               if settings.iou_thresholds is not None else _DEFAULT_IOU_THRESHOLDS.copy())
        self.recall_thresholds = _RECALL_THRESHOLDS.copy()
        areas = settings.area_ranges if settings.area_ranges is not None else _DEFAULT_AREAS
        self.area_labels = tuple(label for label, _, _ in areas)
        self.area_ranges = np.array([[lo, hi] for _, lo, hi in areas], dtype=np.float64).reshape(-1, 2)
        self.max_dets = tuple(sorted(int(m) for m in (settings.max_dets or _DEFAULT_MAX_DETS)))
        self.area_all = self.area_labels.index("all") if "all" in self.area_labels else 0
        self.category_id = _keypoint_category(gt, category_id)

        try:
            self.image_ids = np.unique(np.asarray([img["id"] for img in gt["images"]]))
            known = set(self.image_ids.tolist())
            anns = [a for a in gt["annotations"] if a["category_id"] == self.category_id and a["image_id"] in known]
        except (KeyError, TypeError) as exc:
            raise KpbenchError(f"ground truth: not a COCO GT dict (images, annotations, categories): {exc!r}") from None
        ann_image = np.searchsorted(self.image_ids, np.asarray([a["image_id"] for a in anns]).reshape(-1))
        order = np.argsort(ann_image, kind="stable")  # grouped by image, file order kept within an image
        anns = [anns[i] for i in order]
        num_gt = len(anns)
        try:
            self.gt_ann_ids = np.asarray([a["id"] for a in anns]).reshape(-1)
            keypoints = [a["keypoints"] for a in anns]
            if any(len(kps) != 3 * k for kps in keypoints):
                raise KpbenchError(f"ground truth: every annotation needs {3 * k} keypoint values ({k} sigmas)")
            self.gt_keypoints = np.asarray(keypoints, dtype=np.float64).reshape(num_gt, k, 3)
            self.gt_boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(num_gt, 4)
            self.gt_areas = np.asarray([a["area"] for a in anns], dtype=np.float64).reshape(num_gt)
            # pycocotools reads iscrowd twice: truthy for the ignore flag, int() for repeated matching.
            self.gt_iscrowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool).reshape(num_gt)
            self._gt_crowd = np.asarray([int(a["iscrowd"]) != 0 for a in anns], dtype=bool).reshape(num_gt)
            no_keypoints = np.asarray([a["num_keypoints"] == 0 for a in anns], dtype=bool).reshape(num_gt)
        except (KeyError, TypeError, ValueError) as exc:
            raise KpbenchError(f"ground truth: a keypoint annotation lacks a usable field: {exc!r}") from None
        if len(np.unique(self.gt_ann_ids)) != num_gt:
            raise KpbenchError("ground truth: annotation ids must be unique (pycocotools indexes annotations by id)")
        self.gt_image_index = ann_image[order].astype(np.int64)
        self.gt_ignore = self.gt_iscrowd | no_keypoints  # pycocotools' _prepare: crowd, or no labelled keypoint
        self._gt_id_zero = self.gt_ann_ids == 0
        num_images = len(self.image_ids)
        self._gt_count = np.bincount(self.gt_image_index, minlength=num_images)
        self._gt_start = np.concatenate([[0], np.cumsum(self._gt_count)[:-1]]).astype(np.int64)
        # Area range tests of the GTs (A, G), as evaluateImg writes them.
        lo, hi = self.area_ranges[:, :1], self.area_ranges[:, 1:]
        self._gt_out_of_range = (self.gt_areas[None] < lo) | (self.gt_areas[None] > hi)

        # OKS terms per GT: the labelled keypoints' columns first (in order), how many terms OKS averages over.
        labelled = self.gt_keypoints[:, :, 2] > 0
        self._gt_labelled_count = labelled.sum(axis=1)
        self._gt_term_count = np.where(self._gt_labelled_count > 0, self._gt_labelled_count, k)
        self._gt_term_columns = np.argsort(~labelled, axis=1, kind="stable")
        self._gt_denominator = self.gt_areas + _EPS
        x, y, w, h = self.gt_boxes.T
        # GTs without labelled keypoints: the box enlarged by its size on every side (pycocotools' bounds).
        self._gt_bounds = np.stack([x - w, x + w * 2, y - h, y + h * 2], axis=1)

    # --- OKS -------------------------------------------------------------------------------------------------

    def image_gt_indices(self, image_id: Any) -> np.ndarray:
        """The GT indices (into gt_ann_ids) of one image, in its annotation order."""
        i = self._image_index(np.asarray([image_id]))[0]
        return np.arange(self._gt_start[i], self._gt_start[i] + self._gt_count[i])

    def oks(self, image_id: Any, keypoints: np.ndarray) -> np.ndarray:
        """OKS (D, G) of D detections (D, K, 3) with the image's GTs (columns: `image_gt_indices`), bit for bit
        pycocotools' computeOks values."""
        kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, self.num_keypoints, 3)
        gts = self.image_gt_indices(image_id)
        det, gt = np.repeat(np.arange(len(kps)), len(gts)), np.tile(gts, len(kps))
        return self._pair_oks(kps, det, gt).reshape(len(kps), len(gts))

    def _pair_oks(self, dt_keypoints: np.ndarray, det: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """OKS of the pairs (dt_keypoints[det[p]], GT gt[p]), pycocotools' operations in its order.

        Pairs are grouped by the GT's number n of OKS terms and each group's terms gathered into a contiguous
        (M, n) array, so that np.sum adds exactly the terms pycocotools adds, in the same pairwise order.
        """
        out = np.empty(len(det), dtype=np.float64)
        if len(det) == 0:
            return out
        labelled = self._gt_labelled_count[gt] > 0
        terms = np.where(labelled, self._gt_labelled_count[gt], 0)  # 0: the box distance over all K
        order = np.argsort(terms, kind="stable")
        bounds = np.searchsorted(terms[order], np.arange(self.num_keypoints + 2))
        # Far-off keypoints square to inf (similarity 0, as in pycocotools), area -eps divides by zero: quiet.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            for n in range(self.num_keypoints + 1):
                sel = order[bounds[n]:bounds[n + 1]]
                if len(sel) == 0:
                    continue
                d, g = det[sel], gt[sel]
                if n > 0:
                    cols = self._gt_term_columns[g, :n]  # (M, n)
                    dx = dt_keypoints[d[:, None], cols, 0] - self.gt_keypoints[g[:, None], cols, 0]
                    dy = dt_keypoints[d[:, None], cols, 1] - self.gt_keypoints[g[:, None], cols, 1]
                    variances = self.variances[cols]
                    count = n
                else:
                    xd, yd = dt_keypoints[d, :, 0], dt_keypoints[d, :, 1]
                    x0, x1, y0, y1 = (self._gt_bounds[g, j][:, None] for j in range(4))
                    zero = np.zeros(())
                    dx = np.maximum(zero, x0 - xd) + np.maximum(zero, xd - x1)
                    dy = np.maximum(zero, y0 - yd) + np.maximum(zero, yd - y1)
                    variances = self.variances
                    count = self.num_keypoints
                e = (dx**2 + dy**2) / variances / self._gt_denominator[g][:, None] / 2
                similarity = np.ascontiguousarray(np.exp(-e))
                out[sel] = np.sum(similarity, axis=1) / count
        return out

    # --- evaluation ------------------------------------------------------------------------------------------

    def _image_index(self, image_ids: np.ndarray) -> np.ndarray:
        if len(self.image_ids) == 0:
            if len(image_ids):
                raise KpbenchError("detections refer to images, but the ground truth has none")
            return np.zeros(0, dtype=np.int64)
        index = np.searchsorted(self.image_ids, image_ids).clip(0, len(self.image_ids) - 1)
        unknown = self.image_ids[index] != image_ids
        if unknown.any():
            raise KpbenchError(f"detection image id {image_ids[unknown][0]!r} is not an image of the ground truth "
                               "(pycocotools' loadRes refuses such results)")
        return index.astype(np.int64)

    def evaluate(
        self, image_ids: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, gt_ignore: np.ndarray | None = None,
        areas: np.ndarray | None = None,
    ) -> VectorizedResult:
        """Evaluate N detections given in results order: image_ids (N,), keypoints (N, K, 3) in COCO's result
        layout (x, y, score), scores (N,). `gt_ignore` (G,) marks more GTs ignored (OR-ed into COCOeval's flag:
        they no longer count as missed, and a detection matched to one is ignored; in pycocotools, whose _prepare
        overwrites an 'ignore' key, the same is num_keypoints 0 on those GTs). `areas` (N,) overrides the
        detections' areas, which otherwise are their keypoints' extent, as pycocotools' loadRes sets them for
        keypoint results without a `bbox` (see `loadres_areas` for results with one)."""
        image_ids = np.asarray(image_ids).reshape(-1)
        num = len(image_ids)
        kps = np.asarray(keypoints, dtype=np.float64)
        if kps.size == 0 and num == 0:
            kps = kps.reshape(0, self.num_keypoints, 3)
        if kps.shape != (num, self.num_keypoints, 3):
            raise KpbenchError(f"keypoints: expected shape ({num}, {self.num_keypoints}, 3), got {kps.shape}")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape != (num,):
            raise KpbenchError(f"scores: expected {num} values, got {scores.shape[0]}")
        if np.isnan(scores).any():
            raise KpbenchError("scores: NaN cannot be ranked")
        num_gt = len(self.gt_ann_ids)
        ignore = self.gt_ignore
        if gt_ignore is not None:
            extra = np.asarray(gt_ignore, dtype=bool).reshape(-1)
            if extra.shape != (num_gt,):
                raise KpbenchError(f"gt_ignore: expected {num_gt} flags (one per GT annotation), got {extra.shape[0]}")
            ignore = ignore | extra
        if areas is None:
            with np.errstate(invalid="ignore"):
                dt_areas = ((kps[:, :, 0].max(axis=1) - kps[:, :, 0].min(axis=1))
                            * (kps[:, :, 1].max(axis=1) - kps[:, :, 1].min(axis=1))) if num else np.zeros(0)
        else:
            dt_areas = np.asarray(areas, dtype=np.float64).reshape(-1)
            if dt_areas.shape != (num,):
                raise KpbenchError(f"areas: expected {num} values, got {dt_areas.shape[0]}")
        img = self._image_index(image_ids)
        num_images = len(self.image_ids)
        area_count, thr_count = len(self.area_ranges), len(self.iou_thresholds)
        combos = area_count * thr_count  # matching state is indexed by c = area * T + threshold

        # 1. Per image by descending score (stable), the first maxDets[-1] kept.
        by_image = np.lexsort((np.arange(num), -scores, img))
        dt_count_all = np.bincount(img, minlength=num_images)
        start_all = np.concatenate([[0], np.cumsum(dt_count_all)[:-1]]).astype(np.int64)
        rank_sorted = np.arange(num) - start_all[img[by_image]]
        keep = rank_sorted < self.max_dets[-1]
        kept = by_image[keep]  # results indices, grouped by image, by rank
        kept_img, kept_rank = img[kept], rank_sorted[keep]
        dt_count = np.minimum(dt_count_all, self.max_dets[-1])
        dt_start = np.concatenate([[0], np.cumsum(dt_count)[:-1]]).astype(np.int64)

        # 2. Matching, per bucket of images with the same padded GT count, all areas and thresholds at once.
        gt_ignored = ignore[None] | self._gt_out_of_range  # (A, G)
        thresholds = np.minimum(self.iou_thresholds, 1 - 1e-10)
        threshold_c = np.tile(thresholds, area_count)
        kept_match = np.full((combos, len(kept)), -1, dtype=np.int64)  # GT index
        kept_dt_ignore = np.zeros((combos, len(kept)), dtype=bool)
        gt_match = np.full((combos, num_gt), -1, dtype=np.int64)  # results index
        active = np.flatnonzero((dt_count > 0) & (self._gt_count > 0))
        buckets = _bucket_by_size(self._gt_count[active])
        grids = []
        for size, members in buckets:
            images = active[members]
            images = images[np.argsort(-dt_count[images], kind="stable")]  # most detections first
            dmax = int(dt_count[images[0]])
            ranks = np.arange(dmax)
            slots = np.arange(size)
            valid = ((ranks[None, :, None] < dt_count[images][:, None, None])
                     & (slots[None, None, :] < self._gt_count[images][:, None, None]))
            p, r, s = np.nonzero(valid)
            grids.append((size, images, valid, dt_start[images][p] + r, self._gt_start[images][p] + s))
        pair_det = np.concatenate([g[3] for g in grids]) if grids else np.zeros(0, dtype=np.int64)
        pair_gt = np.concatenate([g[4] for g in grids]) if grids else np.zeros(0, dtype=np.int64)
        pair_oks = self._pair_oks(kps[kept], pair_det, pair_gt)
        offset = 0
        for size, images, valid, det_pos, _ in grids:
            oks = np.full(valid.shape, -np.inf)
            oks[valid] = pair_oks[offset:offset + len(det_pos)]
            offset += len(det_pos)
            gt_slots = self._gt_start[images][:, None] + np.arange(size)[None]  # (n, size), may run past G
            slot_valid = np.arange(size)[None] < self._gt_count[images][:, None]
            gt_slots = np.where(slot_valid, gt_slots, 0)
            ign = np.repeat(gt_ignored[:, gt_slots].transpose(1, 0, 2), thr_count, axis=1)  # (n, C, size)
            crowd = self._gt_crowd[gt_slots] & slot_valid
            nan_images = np.isnan(oks).any(axis=(1, 2))
            if nan_images.any():  # NaN OKS passes pycocotools' `<` test: its exact scan, image by image
                dtm, dtig, gtm = _match_sequential(oks[nan_images], dt_count[images][nan_images],
                                                   self._gt_count[images][nan_images], ign[nan_images],
                                                   crowd[nan_images], threshold_c)
                rest = ~nan_images
                dtm2, dtig2, gtm2 = _match_padded(oks[rest], dt_count[images][rest], slot_valid[rest], ign[rest],
                                                  crowd[rest], threshold_c)
                dtm = _merge(nan_images, dtm, dtm2)
                dtig = _merge(nan_images, dtig, dtig2)
                gtm = _merge(nan_images, gtm, gtm2)
            else:
                dtm, dtig, gtm = _match_padded(oks, dt_count[images], slot_valid, ign, crowd, threshold_c)
            # Back to kept-detection and GT indices.
            p, r = np.nonzero(valid.any(axis=2))
            pos = dt_start[images][p] + r
            local = dtm[p, :, r]  # (pairs, C)
            kept_match[:, pos] = np.where(local >= 0, self._gt_start[images][p][:, None] + local, -1).T
            kept_dt_ignore[:, pos] = dtig[p, :, r].T
            p, s = np.nonzero(slot_valid)
            rank = gtm[p, :, s]  # (slots, C)
            det_of = kept[np.clip(dt_start[images][p][:, None] + rank, 0, max(len(kept) - 1, 0))]
            gt_match[:, self._gt_start[images][p] + s] = np.where(rank >= 0, det_of, -1).T

        # A match to GT id 0 is none for COCOeval (dtMatches holds ids and 0 reads as unmatched).
        counted = kept_match >= 0
        counted[counted] = ~self._gt_id_zero[kept_match[counted]]
        dt_out = (dt_areas[kept][None] < self.area_ranges[:, :1]) | (dt_areas[kept][None] > self.area_ranges[:, 1:])
        kept_dt_ignore |= ~counted & np.repeat(dt_out, thr_count, axis=0)

        # 3. Accumulation.
        precision, recall, score_at = self._accumulate(
            scores[kept], kept_img, kept_rank, counted, kept_dt_ignore, gt_ignored,
            has_input=bool(num_gt or num),
        )
        stats = summarize(precision, recall, self.iou_thresholds, self.area_labels, self.max_dets, "keypoints")

        rows = slice(self.area_all * thr_count, (self.area_all + 1) * thr_count)
        dt_matches = np.full((thr_count, num), -1, dtype=np.int64)
        dt_matches[:, kept] = kept_match[rows]
        dt_ignore = np.ones((thr_count, num), dtype=bool)
        dt_ignore[:, kept] = kept_dt_ignore[rows]
        dt_kept = np.zeros(num, dtype=bool)
        dt_kept[kept] = True
        return VectorizedResult(
            stats=stats, precision=precision, recall=recall, scores=score_at, dt_matches=dt_matches,
            dt_ignore=dt_ignore, gt_matches=gt_match[rows].copy(), dt_kept=dt_kept,
            iou_thresholds=self.iou_thresholds.copy(), area_labels=self.area_labels, max_dets=self.max_dets,
        )

    def _accumulate(
        self, scores: np.ndarray, image: np.ndarray, rank: np.ndarray, counted: np.ndarray, dt_ignore: np.ndarray,
        gt_ignored: np.ndarray, has_input: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """COCOeval.accumulate over the kept detections (scores (D,), their image index and rank, matches and
        ignore flags (C, D)), with the GT ignore flags per area range (A, G)."""
        thr_count, rec_count = len(self.iou_thresholds), len(self.recall_thresholds)
        area_count, m_count = len(self.area_ranges), len(self.max_dets)
        precision = -np.ones((thr_count, rec_count, 1, area_count, m_count))
        recall = -np.ones((thr_count, 1, area_count, m_count))
        score_at = -np.ones((thr_count, rec_count, 1, area_count, m_count))
        if not has_input:  # every evalImgs entry is None
            return precision, recall, score_at
        # Images in id order, each by rank, then a stable sort by descending score: the order is (score, image,
        # rank), and every maxDet's subset keeps it.
        order = np.lexsort((rank, image, -scores))
        npig = np.count_nonzero(~gt_ignored, axis=1)  # (A,)
        for m, max_det in enumerate(self.max_dets):
            idx = order[rank[order] < max_det]
            nd = len(idx)
            sorted_scores = scores[idx]
            not_ignored = ~dt_ignore[:, idx]
            hit = counted[:, idx]
            tp_sum = np.cumsum(hit & not_ignored, axis=1).astype(float)
            fp_sum = np.cumsum(~hit & not_ignored, axis=1).astype(float)
            for a in range(area_count):
                if npig[a] == 0:
                    continue
                for t in range(thr_count):
                    tp, fp = tp_sum[a * thr_count + t], fp_sum[a * thr_count + t]
                    rc = tp / npig[a]
                    pr = tp / (fp + tp + _EPS)
                    recall[t, 0, a, m] = rc[-1] if nd else 0
                    envelope = np.maximum.accumulate(pr[::-1])[::-1]  # non-increasing from the right
                    inds = np.searchsorted(rc, self.recall_thresholds, side="left")
                    inside = inds < nd
                    q = np.zeros(rec_count)
                    ss = np.zeros(rec_count)
                    q[inside] = envelope[inds[inside]]
                    ss[inside] = sorted_scores[inds[inside]]
                    precision[t, :, 0, a, m] = q
                    score_at[t, :, 0, a, m] = ss
        return precision, recall, score_at


# --- matching --------------------------------------------------------------------------------------------------


def _bucket_by_size(gt_counts: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Groups of positions by GT count rounded up to a power of two: (padded size, positions)."""
    if len(gt_counts) == 0:
        return []
    sizes = 1 << np.ceil(np.log2(np.maximum(gt_counts, 1))).astype(np.int64)
    return [(int(s), np.flatnonzero(sizes == s)) for s in np.unique(sizes)]


def _match_padded(
    oks: np.ndarray, dt_count: np.ndarray, slot_valid: np.ndarray, ign: np.ndarray, crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's greedy matching of n images at once (no NaN OKS), images sorted by descending detection count.

    oks (n, D, S) detection rank x GT slot; slot_valid (n, S); ign (n, C, S) GT ignore per combination c of area
    range and threshold; crowd (n, S); thresholds (C,). Returns the matched slot per detection (n, C, D) or -1,
    its dtIgnore (n, C, D), and the rank of the last detection matched per slot (n, C, S) or -1.

    pycocotools scans the GTs with ignored ones last and keeps a running best, taking a GT whose OKS is not
    below it; so it ends on the LAST GT of largest OKS among the qualifying non-ignored ones, and looks at ignored
    ones only when no non-ignored one qualifies (its `break`). Order among non-ignored (and among ignored) GTs is
    file order, so the slots need no reordering: the last slot of largest OKS is the one.
    """
    n, dmax, size = oks.shape
    combos = len(thresholds)
    free = np.broadcast_to(slot_valid[:, None, :], (n, combos, size)).copy()
    counted_gt = ~ign
    dtm = np.full((n, combos, dmax), -1, dtype=np.int64)
    dtig = np.zeros((n, combos, dmax), dtype=bool)
    gtm = np.full((n, combos, size), -1, dtype=np.int64)
    for r in range(dmax):
        k = int(np.searchsorted(-dt_count, -r, side="left"))  # dt_count > r for the first k images
        o = oks[:k, r][:, None, :]  # (k, 1, S)
        qualifies = (o >= thresholds[None, :, None]) & free[:k]
        preferred = qualifies & counted_gt[:k]
        has_preferred = preferred.any(axis=2, keepdims=True)
        pool = np.where(has_preferred, preferred, qualifies)
        p, c = np.nonzero(pool.any(axis=2))
        value = np.where(pool[p, c], oks[p, r], -np.inf)  # (found, S)
        s = size - 1 - np.argmax(value[:, ::-1], axis=1)  # the last slot of largest OKS
        free[p, c, s] = crowd[p, s]  # crowd regions stay free
        dtm[p, c, r] = s
        dtig[p, c, r] = ign[p, c, s]
        gtm[p, c, s] = r
    return dtm, dtig, gtm


def _match_sequential(
    oks: np.ndarray, dt_count: np.ndarray, gt_count: np.ndarray, ign: np.ndarray, crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_match_padded`'s contract by COCOeval's scan itself, for the rare images whose OKS holds NaN (which
    passes pycocotools' `ious < iou` test and then lets every later GT replace it)."""
    n, dmax, size = oks.shape
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
                    if oks[i, r, s] < best:
                        continue
                    best, m = oks[i, r, s], s
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


def loadres_areas(results: list[dict[str, Any]]) -> np.ndarray | None:
    """The detection areas pycocotools' loadRes assigns when it reads keypoint results as box results (its first
    record has a non-empty 'bbox': every area is then bbox w * h), else None (areas from the keypoints' extent,
    `KeypointEvaluator.evaluate`'s default). Pass it as `evaluate(..., areas=...)`."""
    if not results or "bbox" not in results[0] or results[0]["bbox"] == []:
        return None
    try:
        return np.asarray([float(r["bbox"][2]) * float(r["bbox"][3]) for r in results], dtype=np.float64)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise KpbenchError(f"results: the first result has a 'bbox', so every one needs one (as loadRes reads them): "
                           f"{exc!r}") from None
