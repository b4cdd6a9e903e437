"""kpbench's procedure of the error analysis (the default), written from Ronchi & Perona's paper.

**Matching.** Detections are matched to the GT persons by COCOeval's own greedy matching (pycocotools'
evaluateImg) at OKS 0.1, area "all", maxDets 20: only each image's top 20 detections by score (COCOeval's stable
order) are analysed, and everything below, the corrections and the re-evaluations included, works on them alone.
Each keypoint of a detection matched to a counted GT (not crowd, with labelled keypoints) is classified
(`kpbench.analysis.errors.classify`).

**Corrections** (on copies of the detections; `kpbench.analysis.errors.corrections`): a jitter is moved along
the line towards g_j until ks = 0.85, a miss until ks = 0.5; an inversion and a swap are moved onto g_j (ks = 1).
Score errors: each analysed detection's score becomes its maximum OKS with the GT persons of its image that
COCOeval counts (not crowd, with labelled keypoints; OKS with a crowd region or an unlabelled person is a box test,
not a pose similarity); a detection without one gets 0. Background errors: the false positives (detections not
matched at OKS 0.1) are removed, and the false negatives (counted GT persons that no detection matched at OKS
0.1) become ignored. The classification and the background sets come from the original detections. Each
correction is scored alone and cumulatively (miss, + swap, + inversion, + jitter, + score, + background FP,
+ background FN); the score fix of the cumulative sequence rescores the corrected keypoints. AP, AP50 and AP75 are
reported per area range, and the gain over the uncorrected detections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from kpbench.analysis.errors.classify import classify_matches
from kpbench.analysis.errors.corrections import corrected_detections, optimal_scores
from kpbench.analysis.errors.definitions import COCO_AREAS, LABEL_OF, MATCH_OKS, localisation_fixes
from kpbench.analysis.errors.inputs import ErrorInputs
from kpbench.analysis.errors.result import ErrorAnalysis, Step, build_analysis
from kpbench.analysis.errors.scoring import Scored, Scorer


def analyze_kpbench(data: ErrorInputs, scorer: Scorer, flip: np.ndarray | None) -> ErrorAnalysis:
    """kpbench's definitions (module docstring): the steps evaluated, before `analyze_errors` adds notes and the
    summary."""
    sigmas = data.schema.sigma_array
    kps0, scores0 = data.dt_keypoints, data.dt_scores
    thresholds = np.asarray(scorer.settings.iou_thresholds or np.linspace(0.5, 0.95, 10), dtype=np.float64)

    matches = scorer.match(kps0, scores0, dataclasses.replace(scorer.settings, iou_thresholds=(MATCH_OKS,)))
    counted = data.gt_counted
    matched = (matches.dt_gt[0] >= 0) & ~matches.dt_ignore[0]  # a match to an ignored GT sets dtIgnore
    pair_dt = np.flatnonzero(matched)
    pair_gt = matches.dt_gt[0, pair_dt]
    # Unmatched and counted (an unmatched detection outside the area range is ignored in every range anyway).
    background_fp = (matches.dt_gt[0] < 0) & ~matches.dt_ignore[0]
    area_all = next(r for r in (scorer.settings.area_ranges or COCO_AREAS) if r[0] == "all")
    background_fn = data.counted_in(area_all) & ~matches.gt_matched[0]
    labels = classify_matches(data, pair_dt, pair_gt, sigmas, flip)

    def corrected(fixes: Sequence[str]) -> np.ndarray:
        return corrected_detections(data, pair_dt, pair_gt, labels, sigmas, fixes)

    def rescored(keypoints: np.ndarray) -> np.ndarray:
        return optimal_scores(keypoints, data.dt_image, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                              data.gt_image, counted, sigmas)

    fixes = localisation_fixes(flip)
    present = {f: bool((labels.labels == LABEL_OF[f]).any()) for f in fixes}
    cache: dict[tuple[Any, ...], Scored] = {}

    def step(how: str, name: str, key: tuple[Any, ...], keypoints: np.ndarray, scores: np.ndarray,
             keep: np.ndarray | None = None, ignore: np.ndarray | None = None) -> Step:
        # The same detections give the same evaluation: a correction that changes nothing is not re-run.
        if key not in cache:
            cache[key] = scorer.score(keypoints, scores, keep, ignore)
        return Step(how, name, cache[key], thresholds)

    no_fix: tuple[str, ...] = ()
    steps = [step("baseline", "none", (no_fix, False, False, False), kps0, scores0)]
    for f in fixes:
        steps.append(step("alone", f, ((f,) if present[f] else no_fix, False, False, False), corrected([f]), scores0))
    scores_alone = rescored(kps0)
    steps.append(step("alone", "score", (no_fix, True, False, False), kps0, scores_alone))
    steps.append(step("alone", "background_fp", (no_fix, False, bool(background_fp.any()), False), kps0, scores0,
                      keep=~background_fp))
    steps.append(step("alone", "background_fn", (no_fix, False, False, bool(background_fn.any())), kps0, scores0,
                      ignore=background_fn))
    done: list[str] = []
    for f in fixes:
        if present[f]:
            done.append(f)
        steps.append(step("cumulative", f, (tuple(done), False, False, False), corrected(done), scores0))
    kps_all = corrected(done)
    scores_all = rescored(kps_all)
    steps.append(step("cumulative", "score", (tuple(done), True, False, False), kps_all, scores_all))
    fp_key = bool(background_fp.any())
    steps.append(step("cumulative", "background_fp", (tuple(done), True, fp_key, False), kps_all, scores_all,
                      keep=~background_fp))
    steps.append(step("cumulative", "background_fn", (tuple(done), True, fp_key, bool(background_fn.any())), kps_all,
                      scores_all, keep=~background_fp, ignore=background_fn))
    return build_analysis(data, steps, thresholds, labels, pair_dt, pair_gt, int(background_fp.sum()),
                          int(background_fn.sum()), {("alone", "all"): (background_fp[None], background_fn[None])},
                          (MATCH_OKS,), {("alone", "all"): scores_alone, ("cumulative", "all"): scores_all})
