"""A deployable person-score threshold: the LRP-optimal threshold on OKS, and the best-F1 one beside it.

LRP, "Localisation Recall Precision" (Oksuz et al., ECCV 2018; "One Metric to Measure them All: Localisation
Recall Precision (LRP) for Evaluating Visual Detection Tasks", TPAMI 2021), as the vernier evaluation library
defines it for keypoints (vernier-core `lrp/tau_search.rs`, `lrp/decompose.rs` and its numpy oracle
`tests/python/oracle/lrp/oracle.py`; ADR-0043/0044/0045 there). For the detections kept at a score threshold s
(score >= s), matched at OKS >= tau (tau = 0.5):

    LRP(s) = (sum_TP (1 - OKS_i) / (1 - tau) + N_FP + N_FN) / (N_TP + N_FP + N_FN)

oLRP = min_s LRP(s) over a grid of thresholds: vernier's default, 0.00, 0.01, ..., 1.00 (i / 100), or any list,
or every distinct detection score (`thresholds="scores"`, the exact minimum over all cut-offs). The
LRP-optimal threshold s* is the argmin; on equal LRP (the same double) the LARGER threshold wins, vernier's rule
(fewer detections kept for the same error: the conservative operating point). Its components at s* (TPAMI eq. 10):

    oLRP_loc = (sum_TP (1 - OKS_i) / N_TP) / (1 - tau)    (the mean OKS of the TPs is 1 - (1 - tau) * oLRP_loc)
    oLRP_FP  = N_FP / (N_TP + N_FP)                        (1 - precision)
    oLRP_FN  = N_FN / (N_TP + N_FN)                        (1 - recall)

Degenerate cases, as vernier reports them: without a GT that counts, LRP is undefined and every value is None;
with GTs but no TP at s* (no detection, or none that matches) oLRP is 1, s* and oLRP_loc are None, oLRP_FN is 1
and oLRP_FP is 0 when nothing is kept, else None.

Matching is COCOeval's (pycocotools' evaluateImg), as for every kpbench number, at the single OKS threshold tau,
area "all", each image's top 20 by score (vernier runs a matcher of its own that ignores crowd regions only): a
crowd GT or one without labelled keypoints is ignored (not a miss), a detection matched to one is ignored, neither
TP nor FP, and detections past an image's 20th are not evaluated. COCOeval matches greedily in descending score order, so dropping the detections
below s leaves the matches above s as they were: one matching gives every threshold exactly, by cumulative sums
over the evaluated detections sorted by score. The matching and each TP's OKS are
`kpbench.evaluation.vectorized.KeypointEvaluator`'s, equal to pycocotools' bit for bit.

The best-F1 threshold (`best_f1_threshold`) is `kpbench thresholds`' starred row: the highest F1 at OKS 0.50 from
`kpbench.analysis.thresholds.sweep_person_thresholds`, the LOWEST threshold among equals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.analysis.sensitivity import prepared_inputs
from kpbench.analysis.thresholds import sweep_person_thresholds
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema
from kpbench.evaluation.cocoeval import EvalResult
from kpbench.evaluation.cocofiles import GroundTruth, Results
from kpbench.evaluation.settings import EvalSettings

DEFAULT_TAU = 0.5
# vernier's default_tau_grid: i / 100 for i in 0..100 (exactly these doubles, so 0.07 is 7 / 100).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(101))
SCORE_THRESHOLDS = "scores"  # every distinct detection score
CURVE_COLUMNS: tuple[str, ...] = ("threshold", "lrp", "loc", "fp", "fn", "n_tp", "n_fp", "n_fn", "f1")
_AREA_ALL = (("all", 0.0**2, 1e5**2),)  # COCOeval's area range "all"


@dataclass(frozen=True)
class LRPResult:
    """oLRP, the LRP-optimal person-score threshold and the components there (see the module docstring)."""

    threshold: float | None  # s*: keep detections with score >= s*; None without a TP at the optimum
    olrp: float | None  # min LRP; None without a GT that counts
    loc: float | None  # oLRP_loc, in [0, 1]
    fp: float | None  # oLRP_FP
    fn: float | None  # oLRP_FN
    n_tp: int
    n_fp: int
    n_fn: int
    tau: float  # the OKS threshold of a TP
    num_gt: int  # GTs that count (N_TP + N_FN)

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict (None as JSON null)."""
        return asdict(self)


@dataclass
class _Matched:
    """The evaluated detections in descending score order, what each is, and the GT count."""

    scores: np.ndarray  # (D,) descending
    is_tp: np.ndarray  # (D,) bool
    loc_error: np.ndarray  # (D,) 1 - OKS for a TP, 0 for an FP
    num_gt: int
    all_scores: np.ndarray  # (N,) every result's score (for thresholds="scores")


def check_tau(tau: float) -> float:
    """An OKS threshold in [0, 1): LRP divides by 1 - tau."""
    tau = float(tau)
    if not math.isfinite(tau) or not 0.0 <= tau < 1.0:
        raise KpbenchError(f"tau: the OKS threshold of a true positive must be in [0, 1), got {tau}")
    return tau


def _thresholds(thresholds: Sequence[float] | str | None, all_scores: np.ndarray) -> np.ndarray:
    """The candidate thresholds, ascending and distinct."""
    if thresholds is None:
        return np.asarray(DEFAULT_THRESHOLDS, dtype=np.float64)
    if isinstance(thresholds, str):
        if thresholds != SCORE_THRESHOLDS:
            raise KpbenchError(f"thresholds: a list of numbers, None (0.00, 0.01, ..., 1.00) or {SCORE_THRESHOLDS!r}, "
                               f"got {thresholds!r}")
        # No detection: no score to cut at; LRP is then the same at every threshold, so one candidate does.
        return np.unique(all_scores) if len(all_scores) else np.asarray([0.0])
    values = np.asarray([float(t) for t in thresholds], dtype=np.float64)
    if values.size == 0:
        raise KpbenchError("thresholds: empty list; give at least one score threshold")
    if not np.isfinite(values).all():
        raise KpbenchError("thresholds: every threshold must be a finite number")
    return np.unique(values)


def _match(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None,
    tau: float,
) -> _Matched:
    """COCOeval's matching at OKS tau (area all, maxDets 20), and the OKS of every TP pair."""
    settings = EvalSettings(max_dets=(KEYPOINT_MAX_DETS,), area_ranges=_AREA_ALL, iou_thresholds=(tau,))
    evaluator, (image_ids, keypoints, scores, areas) = prepared_inputs(gt, results, schema, settings)
    r = evaluator.evaluate(image_ids, keypoints, scores, areas=areas)
    matched = r.dt_matches[0]
    evaluated = r.dt_kept & ~r.dt_ignore[0]
    # A match to GT id 0 counts as none in COCOeval; the GT checks renumber id 0, so this only guards.
    is_tp = evaluated & (matched >= 0)
    is_tp[is_tp] = evaluator.gt_ann_ids[matched[is_tp]] != 0
    loc_error = np.zeros(len(scores))
    tp = np.flatnonzero(is_tp)
    # Each TP's OKS exactly as COCOeval computed it for the match, one image at a time (rows: its TPs).
    tp_images = image_ids[tp]
    for image_id in np.unique(tp_images):
        rows = tp[tp_images == image_id]
        columns = matched[rows] - evaluator.image_gt_indices(image_id)[0]
        oks = evaluator.oks(image_id, keypoints[rows])[np.arange(len(rows)), columns]
        loc_error[rows] = 1.0 - oks
    lo, hi = evaluator.area_ranges[0]
    num_gt = int(np.count_nonzero(~evaluator.gt_ignore & (evaluator.gt_areas >= lo) & (evaluator.gt_areas <= hi)))
    keep = np.flatnonzero(evaluated)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    return _Matched(scores[order], is_tp[order], loc_error[order], num_gt, scores)


@dataclass
class _Curve:
    thresholds: np.ndarray
    n_tp: np.ndarray
    n_fp: np.ndarray
    n_fn: np.ndarray
    loc_sum: np.ndarray
    lrp: np.ndarray  # NaN where undefined (no GT counts)


def _curve(m: _Matched, thresholds: np.ndarray, tau: float) -> _Curve:
    """TP/FP/FN counts, the summed 1 - OKS and LRP at each threshold, from cumulative sums (a prefix per
    threshold: the detections with score >= s)."""
    kept = np.searchsorted(-m.scores, -thresholds, side="right")  # how many scores are >= each threshold
    cum_tp = np.concatenate([[0], np.cumsum(m.is_tp)])
    cum_loc = np.concatenate([[0.0], np.cumsum(m.loc_error)])
    n_tp = cum_tp[kept]
    n_fp = kept - n_tp
    n_fn = m.num_gt - n_tp
    loc_sum = cum_loc[kept]
    total = n_tp + n_fp + n_fn
    with np.errstate(invalid="ignore", divide="ignore"):
        lrp = np.where(total > 0, (loc_sum / (1.0 - tau) + (n_fp + n_fn)) / total, np.nan)
    if m.num_gt == 0:
        lrp[:] = np.nan  # LRP needs a GT (vernier: undefined)
    return _Curve(thresholds, n_tp, n_fp, n_fn, loc_sum, lrp)


def _components(n_tp: int, n_fp: int, n_fn: int, loc_sum: float, tau: float
                ) -> tuple[float | None, float | None, float | None]:
    """oLRP_loc, oLRP_FP, oLRP_FN at one threshold (None where undefined, as vernier reports them)."""
    if n_tp > 0:
        return (loc_sum / n_tp) / (1.0 - tau), n_fp / (n_tp + n_fp), n_fn / (n_tp + n_fn)
    return None, (None if n_fp else 0.0), (1.0 if n_fn else None)


def _curve_rows(m: _Matched, c: _Curve, tau: float) -> list[dict[str, Any]]:
    rows = []
    for j, t in enumerate(c.thresholds.tolist()):
        n_tp, n_fp, n_fn = int(c.n_tp[j]), int(c.n_fp[j]), int(c.n_fn[j])
        loc, fp, fn = _components(n_tp, n_fp, n_fn, float(c.loc_sum[j]), tau) if m.num_gt else (None, None, None)
        f1_den = 2 * n_tp + n_fp + n_fn
        rows.append({"threshold": t, "lrp": None if math.isnan(c.lrp[j]) else float(c.lrp[j]), "loc": loc,
                     "fp": fp, "fn": fn, "n_tp": n_tp, "n_fp": n_fp, "n_fn": n_fn,
                     "f1": 2 * n_tp / f1_den if f1_den else None})
    return rows


def _optimum(m: _Matched, c: _Curve, tau: float) -> LRPResult:
    if m.num_gt == 0:
        n_fp = int(c.n_fp[0])  # the lowest threshold: every evaluated detection is a false positive
        return LRPResult(None, None, None, None, None, 0, n_fp, 0, tau, 0)
    star = len(c.lrp) - 1 - int(np.argmin(c.lrp[::-1]))  # the last (largest) threshold of the minimum
    n_tp, n_fp, n_fn = int(c.n_tp[star]), int(c.n_fp[star]), int(c.n_fn[star])
    loc, fp, fn = _components(n_tp, n_fp, n_fn, float(c.loc_sum[star]), tau)
    threshold = float(c.thresholds[star]) if n_tp > 0 else None
    return LRPResult(threshold, float(c.lrp[star]), loc, fp, fn, n_tp, n_fp, n_fn, tau, m.num_gt)


def lrp_analysis(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None = None,
    tau: float = DEFAULT_TAU,
    thresholds: Sequence[float] | str | None = None,
) -> tuple[LRPResult, list[dict[str, Any]]]:
    """`lrp_optimal` and `lrp_curve` (same arguments) from one matching."""
    tau = check_tau(tau)
    m = _match(gt, results, schema, tau)
    c = _curve(m, _thresholds(thresholds, m.all_scores), tau)
    return _optimum(m, c, tau), _curve_rows(m, c, tau)


def lrp_curve(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None = None,
    tau: float = DEFAULT_TAU,
    thresholds: Sequence[float] | str | None = None,
) -> list[dict[str, Any]]:
    """LRP at every candidate threshold (ascending): rows {threshold, lrp, loc, fp, fn, n_tp, n_fp, n_fn, f1}.

    loc/fp/fn are LRP's components at that threshold, f1 = 2 TP / (2 TP + FP + FN) on the same counts (the f1_50
    of `kpbench thresholds` when tau is 0.5); None where undefined. `thresholds`: None for 0.00, 0.01, ..., 1.00,
    "scores" for every distinct detection score, or a list."""
    return lrp_analysis(gt, results, schema, tau, thresholds)[1]


def lrp_optimal(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None = None,
    tau: float = DEFAULT_TAU,
    thresholds: Sequence[float] | str | None = None,
) -> LRPResult:
    """oLRP and the LRP-optimal person-score threshold (vernier's definition; see the module docstring).

    `gt`/`results`: paths or parsed data, checked as `kpbench.evaluate` checks them; `schema` as there (None: the
    one the GT names). `tau`: the OKS a TP needs. `thresholds`: None for vernier's grid 0.00, 0.01, ..., 1.00,
    "scores" for every distinct detection score, or a list of numbers. Ties go to the larger threshold.
    """
    return lrp_analysis(gt, results, schema, tau, thresholds)[0]


def best_f1_threshold(
    result: EvalResult, thresholds: Sequence[float] | None = None
) -> dict[str, Any] | None:
    """The best-F1 person-score threshold of `kpbench thresholds`: the row of
    `kpbench.analysis.thresholds.sweep_person_thresholds` marked best_f1 (highest f1_50, the lowest threshold among
    equals), or None when no F1 is above 0. `result`: an evaluation with per-image matches (the default backend's).
    `thresholds`: by default LRP's grid 0.00, 0.01, ..., 1.00, so that the two thresholds are read on the same
    candidates; `ThresholdSettings().thresholds` gives `kpbench thresholds`' own list.

    The row as the sweep gives it: threshold, the COCO stats at that threshold, kept, tp_50, fp_50, fn_50,
    precision_50, recall_50, f1_50, ... (see `kpbench.analysis.thresholds.person_columns`).
    """
    rows = sweep_person_thresholds(result, list(DEFAULT_THRESHOLDS) if thresholds is None else thresholds)
    return next((r for r in rows if r["best_f1"]), None)
