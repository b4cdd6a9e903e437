"""Score-threshold sweeps from one COCO evaluation: what each person-score and keypoint-score threshold costs.

Person-score thresholds. Dropping every detection with score < t before COCOeval removes a suffix of each
image's score-sorted detections. COCOeval matches greedily in score order and keeps each image's top maxDet by
score, so the detections that remain keep exactly the matches they had. Merged over images and sorted by score
(a stable sort), they also form a prefix of the full run's merged list. So one evaluation pass gives every
threshold: we re-accumulate COCOeval's precision/recall from the per-image matches on the prefix of scores >= t.
The float operations are the ones COCOeval does, in the same order, so the 10 (or 12) stats equal a full
pycocotools run on the filtered results bit for bit (tests/test_thresholds.py checks it).

Keypoint-score thresholds. For the persons matched at OKS >= 0.5 with a confident person score, each keypoint
counts as shown when its predicted logit is > t and as correct when its own similarity
exp(-d^2 / (2 s^2 k^2)) is >= 0.5. Keypoint logits exist only in a run directory's detections cache.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.config import ThresholdSettings
from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.io import atomic_write_files, to_csv, to_markdown, to_text_table
from kpbench.core.schema import stat_names
from kpbench.evaluation.cocoeval import (
    EvalResult,
    ImageEval,
    MatchedPairs,
    evaluate,
    iou_threshold_index,
    matched_pairs,
    require_image_evals,
    with_matches,
)
from kpbench.evaluation.cocofiles import GroundTruth, Results, check_iou_type, load_ground_truth
from kpbench.evaluation.oks import paired_keypoint_similarity
from kpbench.evaluation.settings import same_as_coco, summarize

if TYPE_CHECKING:
    from kpbench.core.arrays import DetectionArrays

PERSON_STEM = "thresholds_person"
KEYPOINT_STEM = "thresholds_keypoint"
CURVES_FILE = "threshold_curves.png"
# The two operating points reported per person-score threshold: (column suffix, OKS/IoU threshold).
OPERATING_POINTS: tuple[tuple[str, float], ...] = (("50", 0.5), ("75", 0.75))
# A keypoint counts as correct when its own similarity reaches this (the loosest COCO OKS threshold).
KEYPOINT_CORRECT_SIMILARITY = 0.5
# Persons whose keypoints are analysed are matched at this OKS threshold.
KEYPOINT_MATCH_OKS = 0.5
NEEDS_RUN_DIR = (
    "keypoint-score thresholds need a run directory: keypoint scores (logits) exist only in its detections "
    "cache, not in a COCO results file"
)


def person_columns(iou_type: str, names: Sequence[str] | None = None) -> list[str]:
    """Column order of the person-score rows (`names`: the evaluation's stat names, COCO's by default)."""
    ops = [f"{name}_{suffix}" for suffix, _ in OPERATING_POINTS
           for name in ("tp", "fp", "fn", "precision", "recall", "f1")]
    return ["threshold", *(stat_names(iou_type) if names is None else names), "kept", "kept_per_image", *ops,
            "best_f1"]


KEYPOINT_COLUMNS = ["threshold", "keypoint", "visible", "shown", "correct", "precision", "recall"]


# --------------------------------------------------------------------------------------------------------------
# Input checks


def check_person_thresholds(values: Sequence[float], option: str = "thresholds") -> list[float]:
    """Sorted, de-duplicated person-score thresholds; empty, non-finite or outside [0, 1] is a KpbenchError."""
    values = [float(v) for v in values]
    if not values:
        raise KpbenchError(f"{option}: empty list; give at least one threshold, e.g. 0.5,0.7,0.9")
    for v in values:
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise KpbenchError(f"{option}: {v} is outside [0, 1] (person scores are probabilities)")
    return sorted(set(values))


def check_keypoint_thresholds(values: Sequence[float], option: str = "kp_thresholds") -> list[float]:
    """Sorted, de-duplicated keypoint-score thresholds (logits, any finite value)."""
    values = [float(v) for v in values]
    if not values:
        raise KpbenchError(f"{option}: empty list; give at least one logit threshold, e.g. 0,2,4")
    for v in values:
        if not math.isfinite(v):
            raise KpbenchError(f"{option}: {v} is not a finite number")
    return sorted(set(values))


def check_person_thresh(value: float, option: str = "person_thresh") -> float:
    """A person-score threshold in [0, 1]."""
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise KpbenchError(f"{option}: {value} is outside [0, 1] (person scores are probabilities)")
    return value


SWEEP = "a threshold sweep"


def _area_all(result: EvalResult) -> int:
    return result.params.area_labels.index("all")


# --------------------------------------------------------------------------------------------------------------
# Person-score thresholds: COCOeval's accumulate and summarize on score prefixes


@dataclass
class _Slice:
    """One (category, area range, maxDet) cell of COCOeval's accumulation, merged over images once.

    Every array is over the merged detections in COCOeval's order: descending score, ties in image order
    then in each image's order (a stable mergesort). A threshold keeps the prefix of scores >= t.
    """

    k: int
    a: int
    m: int
    neg_scores: np.ndarray  # (N,) ascending (scores negated), for searchsorted
    tp_count: np.ndarray  # (T, N) cumulative matched-and-not-ignored count
    fp_count: np.ndarray  # (T, N) cumulative unmatched-and-not-ignored count
    recall: np.ndarray  # (T, N) tp / npig, as COCOeval computes it
    precision: np.ndarray  # (T, N) tp / (tp + fp + eps), before COCOeval makes it monotone
    recall_index: np.ndarray  # (T, R) where each recall threshold falls in the full `recall` row
    num_gt: int  # non-ignored GT (COCOeval's npig)

    def kept(self, threshold: float) -> int:
        """How many of the merged detections have score >= threshold (a prefix)."""
        return int(np.searchsorted(self.neg_scores, -threshold, side="right"))


def _slice(k: int, a: int, m: int, scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, npig: int,
           recall_thresholds: np.ndarray) -> _Slice:
    """One cell from its detections in evalImgs order: scores (N,), matched and ignored (T, N)."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tps = np.logical_and(matched, np.logical_not(ignored))
    fps = np.logical_and(np.logical_not(matched), np.logical_not(ignored))
    tp_count = np.cumsum(tps, axis=1)
    fp_count = np.cumsum(fps, axis=1)
    # Same dtype and operation order as COCOeval, so that every value is the same double.
    tp_sum = tp_count.astype(dtype=float)
    fp_sum = fp_count.astype(dtype=float)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    recall_index = np.stack([np.searchsorted(row, recall_thresholds, side="left") for row in rc])
    return _Slice(k, a, m, -scores[order], tp_count, fp_count, rc, pr, recall_index, npig)


def _build_slices(result: EvalResult) -> list[_Slice]:
    """Merge the per-image matches once per (category, area, maxDet), as COCOeval's accumulate does: from the
    vectorized backend's match arrays when the result has them, else from its evalImgs entries."""
    p = result.params
    table = result.table_matches()
    slices = []
    if table is not None:
        counted = table.counted()
        num_images = max(len(table.image_ids), 1)
        dt_cat, gt_cat = table.dt_unit // num_images, table.gt_unit // num_images
        for k in range(len(table.category_ids)):
            dets = np.flatnonzero(dt_cat == k)  # evalImgs order: image, then rank
            gts = gt_cat == k
            for a in range(len(p.area_labels)):
                npig = int(np.count_nonzero(~table.gt_ignore[a, gts]))
                if npig == 0:
                    continue  # COCOeval leaves -1 here, at every threshold
                for m, max_det in enumerate(p.max_dets):
                    sel = dets[table.dt_rank[dets] < max_det]
                    slices.append(_slice(k, a, m, table.dt_scores[sel], counted[a][:, sel], table.dt_ignore[a][:, sel],
                                         npig, p.recall_thresholds))
        return slices
    image_evals = require_image_evals(result, SWEEP)
    groups: dict[tuple[int, int], list[ImageEval]] = {}
    for e in image_evals:  # evalImgs order: category, area, image; keeping it keeps COCOeval's tie order
        groups.setdefault((e.category_id, e.area_index), []).append(e)
    for (category_id, a), evals in groups.items():
        k = p.category_ids.index(category_id)
        gt_ignore = np.concatenate([e.gt_ignore for e in evals])
        npig = int(np.count_nonzero(gt_ignore == 0))
        if npig == 0:
            continue  # COCOeval leaves -1 here, at every threshold
        for m, max_det in enumerate(p.max_dets):
            scores = np.concatenate([e.dt_scores[:max_det] for e in evals])
            matched = np.concatenate([e.dt_matches[:, :max_det] for e in evals], axis=1) != 0
            ignored = np.concatenate([e.dt_ignore[:, :max_det] for e in evals], axis=1)
            slices.append(_slice(k, a, m, scores, matched, ignored, npig, p.recall_thresholds))
    return slices


def _accumulate(slices: list[_Slice], result: EvalResult, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's precision (T, R, K, A, M) and recall (T, K, A, M) for the detections with score >= threshold."""
    p = result.params
    t_count, r_count = len(p.iou_thresholds), len(p.recall_thresholds)
    shape = (t_count, r_count, len(p.category_ids), len(p.area_ranges), len(p.max_dets))
    precision = -np.ones(shape)
    recall = -np.ones((t_count, *shape[2:]))
    for s in slices:
        n = s.kept(threshold)
        if n == 0:
            # COCOeval with no detections: recall 0, and precision stays at its zeros.
            precision[:, :, s.k, s.a, s.m] = 0.0
            recall[:, s.k, s.a, s.m] = 0.0
            continue
        # Precision made monotone from the right over the prefix only (the running max is exact: no arithmetic).
        envelope = np.maximum.accumulate(s.precision[:, :n][:, ::-1], axis=1)[:, ::-1]
        # searchsorted in the prefix equals the full row's index, capped at n; COCOeval leaves 0 past the end.
        inside = s.recall_index < n
        sampled = np.take_along_axis(envelope, np.where(inside, s.recall_index, 0), axis=1)
        precision[:, :, s.k, s.a, s.m] = np.where(inside, sampled, 0.0)
        recall[:, s.k, s.a, s.m] = s.recall[:, n - 1]
    return precision, recall


def _stat_specs(result: EvalResult) -> list[tuple[bool, float | None, str, int]]:
    """(is AP, IoU threshold or None, area label, maxDets) of each summary stat, in COCO's order."""
    if result.iou_type == "keypoints":
        md = 20  # pycocotools' summarize() hard-codes 20 for keypoints
        return [(True, None, "all", md), (True, 0.5, "all", md), (True, 0.75, "all", md), (True, None, "medium", md),
                (True, None, "large", md), (False, None, "all", md), (False, 0.5, "all", md),
                (False, 0.75, "all", md), (False, None, "medium", md), (False, None, "large", md)]
    m0, m1, m2 = result.params.max_dets[:3]
    return [(True, None, "all", m2), (True, 0.5, "all", m2), (True, 0.75, "all", m2), (True, None, "small", m2),
            (True, None, "medium", m2), (True, None, "large", m2), (False, None, "all", m0), (False, None, "all", m1),
            (False, None, "all", m2), (False, None, "small", m2), (False, None, "medium", m2),
            (False, None, "large", m2)]


def _summarize(precision: np.ndarray, recall: np.ndarray, result: EvalResult) -> list[float]:
    """COCOeval's summary stats from the arrays: the mean over the cells that are not -1 (same selection order).
    With other COCOeval parameters than COCO's, kpbench's own summary of them (`kpbench.evaluation.settings`)."""
    p = result.params
    if not same_as_coco(result.settings, result.iou_type):
        return list(summarize(precision, recall, p.iou_thresholds, p.area_labels, p.max_dets, result.iou_type).values())
    stats = []
    for is_ap, iou, area, max_det in _stat_specs(result):
        aind = [i for i, label in enumerate(p.area_labels) if label == area]
        mind = [i for i, m in enumerate(p.max_dets) if m == max_det]
        s = precision if is_ap else recall
        if iou is not None:
            s = s[np.where(iou == p.iou_thresholds)[0]]
        s = s[:, :, :, aind, mind] if is_ap else s[:, :, aind, mind]
        valid = s[s > -1]
        stats.append(float(np.mean(valid)) if len(valid) else -1.0)
    return stats


def box_area_thresholds(result: EvalResult, thresholds: Sequence[float]) -> list[float]:
    """The thresholds whose rows a pycocotools run on the filtered keypoint results would not reproduce.

    pycocotools' loadRes reads the whole results file by its first record: when that one carries a 'bbox', every
    detection's area comes from its box. In a file whose result 0 has no 'bbox' but later ones do, filtering can
    make a boxed result the first: pycocotools would then take the areas from the boxes (which moves the medium
    and large stats) or crash where a result has none. The sweep keeps the areas of the evaluation it re-accumulates.
    """
    has_bbox, scores = result.result_has_bbox, result.result_scores
    if has_bbox is None or scores is None or not has_bbox.any() or has_bbox[0]:
        return []
    boxed_first = []
    for t in thresholds:
        kept = np.flatnonzero(scores >= t)
        if len(kept) and has_bbox[kept[0]]:
            boxed_first.append(t)
    return boxed_first


def _warn_box_areas(result: EvalResult, thresholds: Sequence[float]) -> None:
    affected = box_area_thresholds(result, thresholds)
    if affected:
        msg = (
            f"person-score thresholds {', '.join(f'{t:g}' for t in affected)}: the first result kept carries a "
            "'bbox' that result 0 lacks, so pycocotools on the filtered file would take every area from the boxes "
            "(or crash); these rows keep the keypoint-extent areas of the full evaluation, and their medium/large "
            "stats can differ (drop 'bbox' from keypoint results, or give every result one)"
        )
        warnings.warn(msg, KpbenchWarning, stacklevel=3)


def _ratio(num: float, den: float) -> float | None:
    # An undefined ratio (0/0) is None: null in JSON, an empty cell in CSV, a gap in plots.
    return num / den if den else None


def sweep_person_thresholds(
    result: EvalResult, thresholds: Sequence[float] | None = None, scores: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """One row per person-score threshold t (ascending): the COCO stats exactly as if every detection with
    score < t had been removed before COCOeval, and operating points at OKS/IoU 0.50 and 0.75.

    `result` must carry the per-image matches (the vectorized and pycocotools backends do). `scores` are every
    result's score, for the `kept` count; by default `result.result_scores`.

    Columns (see `person_columns`): threshold; the stat names; `kept` (detections with score >= t, before COCO's
    per-image top-maxDet cut) and `kept_per_image`; per operating point X in (50, 75), over the kept detections
    that COCOeval evaluates (area "all", largest maxDet): `tp_X` (matched, not ignored), `fp_X` (unmatched, not
    ignored; matches to crowd or unlabelled GT are neither), `fn_X` (non-ignored GT minus TP), `precision_X`,
    `recall_X`, `f1_X` (None where 0/0); `best_f1`, True on the one row with the highest f1_50 (the lowest
    threshold among equals), and on no row when every f1_50 is 0 or undefined (no detection matched).
    """
    thresholds = check_person_thresholds(ThresholdSettings().thresholds if thresholds is None else thresholds)
    if scores is None and result.result_scores is None:
        raise KpbenchError("sweep_person_thresholds: pass `scores` (every result's score) to count kept detections")
    all_scores = np.asarray(result.result_scores if scores is None else scores, dtype=np.float64)
    slices = _build_slices(result)
    _warn_box_areas(result, thresholds)
    p = result.params
    names = list(result.stats) if result.schema is None or result.schema.protocol == "coco" \
        else stat_names(result.iou_type)
    area = _area_all(result)
    last_m = len(p.max_dets) - 1
    op_slices = [s for s in slices if s.a == area and s.m == last_m]
    op_index = [(suffix, iou_threshold_index(result, iou)) for suffix, iou in OPERATING_POINTS]
    num_gt = sum(s.num_gt for s in op_slices)
    sorted_scores = np.sort(all_scores)
    rows: list[dict[str, Any]] = []
    for t in thresholds:
        precision, recall = _accumulate(slices, result, t)
        row: dict[str, Any] = {"threshold": t, **dict(zip(names, _summarize(precision, recall, result)))}
        kept = len(sorted_scores) - int(np.searchsorted(sorted_scores, t, side="left"))
        row["kept"] = kept
        row["kept_per_image"] = kept / len(p.image_ids) if p.image_ids else 0.0
        for suffix, ti in op_index:
            tp = fp = 0
            for s in op_slices:
                n = s.kept(t)
                if n:
                    tp += int(s.tp_count[ti, n - 1])
                    fp += int(s.fp_count[ti, n - 1])
            fn = num_gt - tp
            row[f"tp_{suffix}"], row[f"fp_{suffix}"], row[f"fn_{suffix}"] = tp, fp, fn
            row[f"precision_{suffix}"] = _ratio(tp, tp + fp)
            row[f"recall_{suffix}"] = _ratio(tp, num_gt)
            row[f"f1_{suffix}"] = _ratio(2 * tp, 2 * tp + fp + fn)  # harmonic mean of precision and recall
        rows.append(row)
    f1s = [r["f1_50"] for r in rows]
    best = max((f for f in f1s if f is not None), default=None)
    for r in rows:
        r["best_f1"] = False
    if best:  # no row is "best" when every F1 is 0 (nothing matched) or undefined
        rows[f1s.index(best)]["best_f1"] = True
    columns = person_columns(result.iou_type, names)
    return [{c: r[c] for c in columns} for r in rows]


# --------------------------------------------------------------------------------------------------------------
# Keypoint-score thresholds


def sweep_keypoint_thresholds(
    result: EvalResult,
    gt: GroundTruth | dict[str, Any] | str | Path | None = None,
    results: Results | list[dict[str, Any]] | DetectionArrays | None = None,
    keypoint_scores: np.ndarray | Sequence[Sequence[float]] | None = None,
    thresholds: Sequence[float] | None = None,
    person_thresh: float = 0.9,
) -> list[dict[str, Any]]:
    """Rows (threshold, keypoint, visible, shown, correct, precision, recall) per keypoint-score threshold t,
    for each keypoint of the evaluation's schema and "all".

    Persons: the detections of the keypoints evaluation `result` matched at OKS >= 0.5 to a non-ignored GT
    (area "all", within COCO's top 20 per image) whose person score is > `person_thresh`. `gt` and `results` are
    what was evaluated (None: the inputs `result` kept) and `keypoint_scores` (N, K) the results' keypoint logits,
    row i for result i (None: the keypoint scores of the detections `result` kept, as a run's evaluation has them).
    Per keypoint of those persons: visible = GT labelled (v > 0); shown = visible and logit > t; correct = shown
    and similarity >= 0.5; precision = correct / shown; recall = correct / visible (None where 0/0). Keypoints
    the GT did not label cannot be judged and are left out of every column.
    """
    from kpbench.evaluation.arrays import detections_from_records, ground_truth_arrays

    if result.iou_type != "keypoints":
        raise KpbenchError("sweep_keypoint_thresholds: needs the keypoints (OKS) evaluation, not bbox")
    thresholds = check_keypoint_thresholds(ThresholdSettings().kp_thresholds if thresholds is None else thresholds)
    person_thresh = check_person_thresh(person_thresh)
    if gt is None:
        gt_arrays = result.ground_truth_arrays()
        schema = result.schema
    else:
        gt_data = load_ground_truth(gt, "keypoints", result.schema)
        schema = gt_data.schema
        gt_arrays = ground_truth_arrays(gt_data.dataset, gt_data.source, schema.num_keypoints)  # type: ignore[union-attr]
    assert schema is not None  # a keypoints evaluation always has one
    if results is None:
        detections = result.detection_arrays()
    elif isinstance(results, (Results, list)):
        records = results.results if isinstance(results, Results) else results
        detections = detections_from_records(records, "keypoints", schema.num_keypoints)
    else:
        detections = results
    if keypoint_scores is None:
        if detections.keypoint_scores is None:
            raise KpbenchError(NEEDS_RUN_DIR)
        keypoint_scores = detections.keypoint_scores
    kp_scores = np.asarray(keypoint_scores, dtype=np.float64).reshape(-1, schema.num_keypoints)
    if len(kp_scores) != len(detections):
        raise KpbenchError(
            f"keypoint scores: {len(kp_scores)} rows for {len(detections)} results; they must be aligned one to one"
        )
    pairs = _keypoint_persons(result, person_thresh)
    gt_order = np.argsort(gt_arrays.ann_ids, kind="stable")
    gts = gt_order[np.searchsorted(gt_arrays.ann_ids[gt_order], pairs.gt_ids)]
    dt_index = pairs.dt_ids - 1  # pycocotools numbers results from 1 in list order
    gt_kps = gt_arrays.keypoints[gts]  # type: ignore[index]
    similarity, _ = paired_keypoint_similarity(
        gt_kps, gt_arrays.boxes[gts], gt_arrays.areas[gts], detections.keypoints[dt_index],  # type: ignore[index]
        schema.sigma_array,
    )
    labelled = gt_kps[:, :, 2].reshape(-1, schema.num_keypoints) > 0
    logits = kp_scores[dt_index]
    close = similarity >= KEYPOINT_CORRECT_SIMILARITY
    visible = labelled.sum(axis=0)
    rows: list[dict[str, Any]] = []
    for t in thresholds:
        shown = labelled & (logits > t)
        correct = shown & close
        shown_n, correct_n = shown.sum(axis=0), correct.sum(axis=0)
        per_keypoint = [(name, int(visible[j]), int(shown_n[j]), int(correct_n[j])) for j, name in enumerate(schema.keypoint_names)]
        per_keypoint.append(("all", int(visible.sum()), int(shown_n.sum()), int(correct_n.sum())))
        for name, vis, sho, cor in per_keypoint:
            rows.append({"threshold": t, "keypoint": name, "visible": vis, "shown": sho, "correct": cor,
                         "precision": _ratio(cor, sho), "recall": _ratio(cor, vis)})
    return rows


def _keypoint_persons(result: EvalResult, person_thresh: float) -> MatchedPairs:
    """COCOeval's matches at OKS 0.5 whose person score is > person_thresh."""
    pairs = matched_pairs(result, KEYPOINT_MATCH_OKS, "a keypoint-score sweep")
    keep = pairs.scores > person_thresh
    return MatchedPairs(pairs.dt_ids[keep], pairs.gt_ids[keep], pairs.scores[keep])


def count_keypoint_persons(result: EvalResult, person_thresh: float) -> int:
    """How many persons the keypoint-score rows are about (matched at OKS 0.5, score > person_thresh)."""
    return len(_keypoint_persons(result, person_thresh).dt_ids)


# --------------------------------------------------------------------------------------------------------------
# Whole reports from files or a run directory


@dataclass
class ThresholdReport:
    """The two sweeps and what they were computed from."""

    iou_type: str
    person: list[dict[str, Any]]
    keypoint: list[dict[str, Any]]  # empty without a run directory
    settings: ThresholdSettings
    num_images: int
    num_gt: int
    num_results: int
    notes: list[str] = field(default_factory=list)
    keypoint_score_kind: str = "logit"  # the scale of the keypoint-score thresholds

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """{"person": [...], "keypoint": [...]}; undefined ratios are None (JSON null)."""
        return {"person": self.person, "keypoint": self.keypoint}


def _settings(settings: ThresholdSettings | None) -> ThresholdSettings:
    settings = settings or ThresholdSettings()
    check_iou_type(settings.iou_type, "iou_type")
    check_person_thresholds(settings.thresholds)
    check_keypoint_thresholds(settings.kp_thresholds)
    check_person_thresh(settings.person_thresh)
    return settings


def thresholds_for_files(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    settings: ThresholdSettings | None = None,
) -> ThresholdReport:
    """Person-score sweep of a GT file and a results file (one evaluation, with the default backend's per-image
    matches). The keypoint-score sweep needs a run directory, so its rows are empty and a note says so."""
    settings = _settings(settings)
    result = evaluate(gt, results, iou_type=settings.iou_type)
    person = sweep_person_thresholds(result, settings.thresholds)
    return ThresholdReport(
        iou_type=settings.iou_type, person=person, keypoint=[], settings=settings, num_images=result.num_images,
        num_gt=result.num_gt, num_results=result.num_results, notes=[*result.notes, NEEDS_RUN_DIR],
    )


# Keypoint-score thresholds for models whose keypoint scores are probabilities (YOLO-pose), not logits.
PROBABILITY_KP_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _thresholds_for_kind(settings: ThresholdSettings, kind: str) -> tuple[ThresholdSettings, list[str]]:
    """Keypoint-score thresholds on the scale of the run's keypoint scores: logits (Keypoint R-CNN) take any value;
    probabilities take [0, 1], and the default logit list becomes 0.1 ... 0.9."""
    import dataclasses

    if kind != "probability":
        return settings, []
    if settings.kp_thresholds == ThresholdSettings().kp_thresholds:
        return dataclasses.replace(settings, kp_thresholds=list(PROBABILITY_KP_THRESHOLDS)), [
            "keypoint scores are probabilities (the manifest's keypoint_score_kind): keypoint-score thresholds "
            "0.1 ... 0.9"
        ]
    outside = [t for t in settings.kp_thresholds if not 0.0 <= t <= 1.0]
    if outside:
        raise KpbenchError(f"--kp-thresholds: {outside[0]} is outside [0, 1]; this run's keypoint scores are "
                           "probabilities")
    return settings, []


def thresholds_for_run(
    run_dir: str | Path, settings: ThresholdSettings | None = None, results: Mapping[str, EvalResult] | None = None
) -> ThresholdReport:
    """Both sweeps for a run directory, from its detections store and ground_truth.json (no model needed).

    The run is evaluated as `kpbench evaluate RUN_DIR` evaluates it (results in the order `kpbench run` writes
    them, so that result i is store detection i and its keypoint logits are known), unless `results`
    ({iou_type: EvalResult}, as `evaluate_run` returns) hands over the run's own evaluations: then nothing is read
    again. An evaluation without per-image matches (hotcoco) is redone on the default backend, with a note. The
    keypoint-score sweep always uses the keypoints (OKS) evaluation.
    """
    from kpbench.runs.directory import run_dir_format

    settings = _settings(settings)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    kind = run_dir_format(run_dir).keypoint_score_kind
    settings, kind_notes = _thresholds_for_kind(settings, kind)
    if results is None or any(t not in results for t in ("keypoints", settings.iou_type)):
        from kpbench.evaluation.runeval import evaluate_run

        results = evaluate_run(run_dir, write=False)
    switched: list[str] = []

    def evaluation(iou_type: str) -> EvalResult:
        given, notes = with_matches(results[iou_type], "the threshold sweep")  # type: ignore[index]
        switched.extend(notes)
        return given

    kp_result = evaluation("keypoints")
    result = kp_result if settings.iou_type == "keypoints" else evaluation("bbox")
    person = sweep_person_thresholds(result, settings.thresholds)
    keypoint = sweep_keypoint_thresholds(kp_result, thresholds=settings.kp_thresholds,
                                         person_thresh=settings.person_thresh)
    persons = count_keypoint_persons(kp_result, settings.person_thresh)
    notes = [*result.notes, *switched, *kind_notes, f"keypoint-score rows: {persons} persons matched at OKS >= {KEYPOINT_MATCH_OKS} "
             f"with person score > {settings.person_thresh}"]
    return ThresholdReport(
        iou_type=settings.iou_type, person=person, keypoint=keypoint, settings=settings,
        num_images=result.num_images, num_gt=result.num_gt, num_results=result.num_results,
        notes=list(dict.fromkeys(notes)), keypoint_score_kind=kind,
    )


# --------------------------------------------------------------------------------------------------------------
# Files and plots




def write_threshold_files(
    out_dir: str | Path,
    person_rows: Sequence[dict[str, Any]],
    keypoint_rows: Sequence[dict[str, Any]] = (),
    plot: bool = True,
    keypoint_score_kind: str = "logit",
) -> list[Path]:
    """Write thresholds_person.csv/.md, thresholds_keypoint.csv/.md (when there are keypoint rows) and
    threshold_curves.png into out_dir, atomically; returns the paths. The CSV files hold the rows as they are
    (fractions at full precision); the .md files show the COCO stats, precision, recall and F1 in percent (see
    `person_markdown`, `keypoint_markdown`)."""
    out_dir = Path(out_dir)
    files = {out_dir / f"{PERSON_STEM}.csv": to_csv(person_rows), out_dir / f"{PERSON_STEM}.md": person_markdown(person_rows)}
    if keypoint_rows:
        files[out_dir / f"{KEYPOINT_STEM}.csv"] = to_csv(keypoint_rows, KEYPOINT_COLUMNS)
        files[out_dir / f"{KEYPOINT_STEM}.md"] = keypoint_markdown(keypoint_rows)
    paths = atomic_write_files(files)
    if plot and person_rows:
        from kpbench.report.figures import plot_threshold_curves

        paths.append(plot_threshold_curves(person_rows, out_dir / CURVES_FILE, keypoint_rows or None, KEYPOINT_MATCH_OKS,
                                           keypoint_score_kind))
    return paths


PERSON_TABLE_NOTE = (
    "COCO stats (AP ... AR), precision, recall and F1 in percent; n/a where COCO gives -1 or a ratio is 0/0"
)
KEYPOINT_TABLE_NOTE = "Precision and recall in percent; n/a where a ratio is 0/0 (nothing shown, or nothing visible)."
# The rates of the threshold rows, which tables for people show in percent as they show AP and AR (AR50 is a recall
# too); CSV and JSON keep the fractions.
RATE_PREFIXES: tuple[str, ...] = ("precision", "recall", "f1")


def _rate_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def stat_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The COCO stat columns (AP, AP50, ..., AR...) of person-score rows, in their order."""
    names = {*stat_names("keypoints"), *stat_names("bbox")}
    return [c for c in (rows[0] if rows else ()) if c in names]


def person_rows_in_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Person-score rows as tables for people show them: the COCO stats as percent strings with one decimal
    ("n/a" for COCO's -1), and precision, recall and F1 too ("n/a" where 0/0); thresholds and counts unchanged.
    CSV and JSON keep the rows as they are."""
    from kpbench.evaluation.cocoeval import percent

    columns = stat_columns(rows)
    rates = [c for c in (rows[0] if rows else ()) if c.startswith(RATE_PREFIXES)]
    return [{**r, **{c: percent(r[c]) for c in columns}, **{c: _rate_percent(r[c]) for c in rates}} for r in rows]


def keypoint_rows_in_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keypoint-score rows for people: precision and recall in percent with one decimal ("n/a" where 0/0)."""
    return [{**r, "precision": _rate_percent(r["precision"]), "recall": _rate_percent(r["recall"])} for r in rows]


def person_markdown(rows: Sequence[dict[str, Any]], heading: str | None = None) -> str:
    """thresholds_person.md (and `kpbench thresholds --format markdown`): the rows in percent, with a note."""
    text = f"### {heading}\n\n" if heading else ""
    return text + f"{PERSON_TABLE_NOTE}.\n\n" + to_markdown(person_rows_in_percent(rows))


def keypoint_markdown(rows: Sequence[dict[str, Any]], heading: str | None = None) -> str:
    """thresholds_keypoint.md (and the keypoint table of `kpbench thresholds --format markdown`): the rows with
    precision and recall in percent, with a note."""
    text = f"### {heading}\n\n" if heading else ""
    return text + f"{KEYPOINT_TABLE_NOTE}\n\n" + to_markdown(keypoint_rows_in_percent(rows), KEYPOINT_COLUMNS)


def keypoint_pivot(keypoint_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A compact view for the terminal: one row per keypoint, recall and precision per threshold as columns, in
    percent ("-" where the ratio is undefined: nothing visible, or nothing shown)."""
    out: dict[str, dict[str, Any]] = {}
    for r in keypoint_rows:
        row = out.setdefault(r["keypoint"], {"keypoint": r["keypoint"], "visible": r["visible"]})
        t = f"{r['threshold']:g}"
        row[f"R>{t}"] = "-" if r["recall"] is None else _rate_percent(r["recall"])
        row[f"P>{t}"] = "-" if r["precision"] is None else _rate_percent(r["precision"])
    return list(out.values())


# --------------------------------------------------------------------------------------------------------------
# `kpbench thresholds` output


def format_report(report: ThresholdReport, fmt: str, table: str | None = None) -> str:
    """What `kpbench thresholds --format FMT [--table TABLE]` prints: json (both tables), csv (one table, the
    person table unless `table` is "keypoint"), markdown or table (both, or the one `table` names)."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv_report(report, table or "person")
    if fmt == "markdown":
        return _markdown_report(report, table)
    return _text_report(report, table)


def _text_report(report: ThresholdReport, table: str | None = None) -> str:
    """The terminal view: a compact person table (COCO stats in percent, best F1 starred) and the keypoint table
    pivoted by threshold; `table` picks one of them."""
    names = ["AP", "AP50", "AP75", "AR"] if report.iou_type == "keypoints" else ["AP", "AP50", "AP75", "AR100"]
    columns = ["threshold", *names, "kept", "kept_per_image", "tp_50", "fp_50", "fn_50", "precision_50",
               "recall_50", "f1_50", "f1_75", "best"]
    rows = [{**r, "best": "*" if r["best_f1"] else ""} for r in person_rows_in_percent(report.person)]
    parts = []
    if table in (None, "person"):
        parts += [
            f"Person-score thresholds ({report.iou_type}; {report.num_results} detections, {report.num_gt} GT, "
            f"{report.num_images} images; TP/FP/FN at 0.50 over the detections COCOeval keeps per image; "
            f"* best F1 at 0.50; {PERSON_TABLE_NOTE})",
            to_text_table(rows, columns),
        ]
    if report.keypoint and table in (None, "keypoint"):
        parts += [
            f"Keypoint-score thresholds (persons matched at OKS >= 0.5 with score > {report.settings.person_thresh}; "
            "R = recall over GT-labelled, P = precision where GT is labelled; in percent)",
            to_text_table(keypoint_pivot(report.keypoint), precision=2),
        ]
    return "\n".join(parts)


def _csv_report(report: ThresholdReport, table: str) -> str:
    """One table as CSV (fractions at full precision): machine-readable, one header line."""
    return to_csv(report.person) if table == "person" else to_csv(report.keypoint, KEYPOINT_COLUMNS)


def _markdown_report(report: ThresholdReport, table: str | None) -> str:
    """The tables as Markdown under headings (the person table as thresholds_person.md shows it)."""
    parts = []
    if table in (None, "person"):
        parts.append(person_markdown(report.person, f"Person-score thresholds ({report.iou_type})"))
    if report.keypoint and table in (None, "keypoint"):
        parts.append(keypoint_markdown(report.keypoint, "Keypoint-score thresholds"))
    return "\n".join(parts)
