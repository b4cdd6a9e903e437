"""The error analysis' coco-analyze mode (`coco_analyze=True`): coco-analyze's own procedure, taken from its code
(matteorr/coco-analyze, pycocotools/cocoanalyze.py and analysisAPI/errorsAPImpact.py), which differs from kpbench's
(`kpbench.analysis.errors.kpbench_mode`):

- Area ranges: "all" is [32², 1e10] (small persons are ignored, as COCOeval ignores a GT outside the range), medium
  [32², 96²], large [96², 1e10]; OKS thresholds are its literals 0.5, 0.55, ..., 0.95. Each area range is analysed
  on its own: its own matching at OKS 0.1 (a detection matched to a person the range ignores is analysed too, a
  person without labelled keypoints is not), its own classes, corrections, scores and background sets; the
  counts are those of area "all".
- Classes: good is ks > 0.85, jitter ks < 0.85 (ks exactly 0.85 is in no class: "unclassified", left
  uncorrected); a tie between references goes to the matched person, then to another person unflipped, then to
  the matched person flipped, then to another person flipped (its argmax order). ks, the corrections and soft-NMS
  use its sigmas as the decimal literals .026, .025, ... (one ulp from pycocotools' .26/10 for five of COCO's 17).
- Corrections move the keypoint to (g_x + r, g_y), r = sqrt(-ln(k) · 2 · area · σ²) with the matched person's area
  (σ² where ks has (2σ)²): k = 0.85 for a jitter, 0.5 for a miss, and for an inversion or a swap the ks it had
  with its best (wrong) reference; so a jitter lands at ks 0.85^(1/4) = 0.960, a miss at 0.5^(1/4) = 0.841, a
  swap or inversion at its old ks to the fourth root, each to the right of the GT keypoint.
- Score: each detection's best OKS with the persons its area range counts (not crowd, labelled, inside the
  range), computed on the detections with the keypoint corrections of that range when they precede it; then
  coco-analyze's soft-NMS per image (Bodla et al., ICCV 2017, Gaussian, σ = 0.5 on OKS²): repeatedly the highest
  (ties: the earlier in the image's list, first ordered by the original score) is kept and every other detection
  of the image has its score multiplied by exp(-OKS²/0.5), OKS between the two detections' keypoints (all K,
  (2σ)², the mean of their keypoint-extent areas). The soft-NMS of every area range uses the keypoints corrected
  for the last range (large), as coco-analyze's loop leaves them.
- Background, per OKS threshold t of the evaluation: the false positives are the detections unmatched at t after
  the corrections before them (they are ignored at t), the false negatives the persons no detection matched at
  t; a person missed at t is ignored at t and at every higher threshold (its FN loop never resets), after the
  matching. Removing false negatives is scored only on top of removing false positives: the "alone" background_fn
  row removes both, and its gain is measured from the background_fp row (errorsAPImpact's false_neg).
- "alone" is errorsAPImpact's: one error type corrected (miss, swap, inversion, jitter), the score alone (original
  keypoints), the background alone; "cumulative" is COCOanalyze.summarize()'s: miss, + swap, + inversion,
  + jitter, + score (its OKS on the corrected keypoints), + background FP, + background FN.
- Detection areas (which decide whether an unmatched detection is ignored in a range) stay those of the original
  results: pycocotools' loadRes sets them once. The analysed detections are in the order its run_analysis.py
  hands them to loadRes (images by first appearance, each image's top 20 by descending score): that order
  breaks ties between equal corrected scores (`ErrorAnalysis.detections` maps them back to the results).
- Named deviations: coco-analyze stores the false-negative step's precision in ascending OKS order but labels it
  in descending order (its _summarize_bckgd_errors against _summarize), so its per-threshold numbers of that
  step read reversed; here each is labelled at its own threshold. The per-threshold "AP" of coco-analyze is kept
  in analyze.json's ap_by_oks; the AP column is COCOeval's mean over thresholds and recall points.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from kpbench.analysis.errors.classify import KeypointLabels, classify_matches
from kpbench.analysis.errors.corrections import corrected_detections, soft_nms_scores
from kpbench.analysis.errors.definitions import (
    AREA_LABELS,
    COCO_ANALYZE_AREAS,
    COCO_ANALYZE_OKS,
    MATCH_OKS,
    ErrorMode,
    localisation_fixes,
)
from kpbench.analysis.errors.inputs import ErrorInputs
from kpbench.analysis.errors.result import ErrorAnalysis, Step, build_analysis
from kpbench.analysis.errors.scoring import Scored, Scorer, accumulate_flagged, single_area_settings


def analyze_coco_analyze(data: ErrorInputs, scorer: Scorer, flip: np.ndarray | None) -> ErrorAnalysis:
    """coco-analyze's procedure (module docstring): what errorsAPImpact.py ("alone") and COCOanalyze.summarize()
    ("cumulative") evaluate, area range by area range."""
    schema = data.schema
    sigmas = ErrorMode(coco_analyze=True).analysis_sigmas(schema.sigma_array)
    kps0, scores0 = data.dt_keypoints, data.dt_scores
    thresholds = np.asarray(COCO_ANALYZE_OKS, dtype=np.float64)
    areas = COCO_ANALYZE_AREAS
    fixes = localisation_fixes(flip)

    # Per area range: the matching at OKS 0.1, the classes of every matched detection's keypoints.
    located: dict[str, tuple[np.ndarray, np.ndarray, KeypointLabels]] = {}
    for area in areas:
        matches = scorer.match(kps0, scores0, single_area_settings(area, (MATCH_OKS,)))
        pair_dt = np.flatnonzero(matches.dt_gt[0] >= 0)
        pair_gt = matches.dt_gt[0, pair_dt]
        usable = data.gt_labelled[pair_gt]  # "if the gt match has no keypoint annotations": not analysed
        pair_dt, pair_gt = pair_dt[usable], pair_gt[usable]
        located[area[0]] = (pair_dt, pair_gt,
                            classify_matches(data, pair_dt, pair_gt, sigmas, flip, coco_analyze=True))

    def corrected(label: str, done: Sequence[str]) -> np.ndarray:
        pair_dt, pair_gt, labels = located[label]
        return corrected_detections(data, pair_dt, pair_gt, labels, sigmas, done, ErrorMode(coco_analyze=True))

    # An area range's COCOeval numbers do not depend on the other ranges evaluated with it: one evaluation of
    # every range serves each range whose detections (keypoints and scores) are these.
    cache: dict[tuple[bytes, bytes], Scored] = {}

    def evaluated(area: tuple[str, float, float], keypoints: np.ndarray, scores: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        key = (hashlib.sha1(keypoints.tobytes()).digest(), hashlib.sha1(scores.tobytes()).digest())
        if key not in cache:
            cache[key] = scorer.score(keypoints, scores)
        a = [label for label, _, _ in areas].index(area[0])
        return cache[key].precision[:, :, a], cache[key].recall[:, a]

    def step(how: str, name: str, per_area: list[tuple[np.ndarray, np.ndarray]],
             reference: Step | None = None) -> Step:
        scored = Scored(precision=np.stack([p for p, _ in per_area], axis=2),
                         recall=np.stack([r for _, r in per_area], axis=1))
        return Step(how, name, scored, thresholds, reference)

    def rescored(keypoints_by_area: dict[str, np.ndarray], nms_keypoints: np.ndarray) -> dict[str, np.ndarray]:
        best: dict[str, np.ndarray] = {}
        for area in areas:  # ranges with the same keypoints share the OKS
            same = [a for a in areas if a[0] not in best
                    and np.array_equal(keypoints_by_area[a[0]], keypoints_by_area[area[0]])]
            if same:
                best.update(zip([a[0] for a in same],
                                scorer.max_oks(keypoints_by_area[area[0]], [data.counted_in(a) for a in same])))
        final = soft_nms_scores(data.dt_image, scores0, np.stack([best[a[0]] for a in areas]), nms_keypoints, sigmas)
        return {area[0]: final[a] for a, area in enumerate(areas)}

    def background(area: tuple[str, float, float], keypoints: np.ndarray, scores: np.ndarray
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
        matches = scorer.match(keypoints, scores, single_area_settings(area, COCO_ANALYZE_OKS))
        fp = matches.dt_gt < 0  # unmatched at each threshold (a match to a person the range ignores is one)
        fn = ~matches.gt_matched
        ignored = ~data.counted_in(area)
        none = np.zeros_like(fn)
        removed = accumulate_flagged(matches, scores, data.dt_image, ignored, fp, none)
        # Its loop over the thresholds (ascending) never resets gtIgnore: a person missed at t stays ignored above.
        both = accumulate_flagged(matches, scores, data.dt_image, ignored, fp, np.logical_or.accumulate(fn, axis=0))
        return removed, both, fp, fn

    base = scorer.score(kps0, scores0)  # every range at once, as its _summarize_baseline
    cache[hashlib.sha1(kps0.tobytes()).digest(), hashlib.sha1(scores0.tobytes()).digest()] = base
    steps = [Step("baseline", "none", base, thresholds)]
    # errorsAPImpact.py: each correction alone.
    for f in fixes:
        steps.append(step("alone", f, [evaluated(area, corrected(area[0], [f]), scores0) for area in areas]))
    scores_alone = rescored(dict.fromkeys(AREA_LABELS, kps0), kps0)
    steps.append(step("alone", "score", [evaluated(area, kps0, scores_alone[area[0]]) for area in areas]))
    results = [background(area, kps0, scores0) for area in areas]
    fp_alone = step("alone", "background_fp", [r[0] for r in results])
    steps += [fp_alone, step("alone", "background_fn", [r[1] for r in results], reference=fp_alone)]
    sets = {("alone", area[0]): (r[2], r[3]) for area, r in zip(areas, results)}
    # COCOanalyze.summarize(): everything, cumulatively.
    done: list[str] = []
    for f in fixes:
        done.append(f)
        steps.append(step("cumulative", f, [evaluated(area, corrected(area[0], done), scores0) for area in areas]))
    kps_all = {area[0]: corrected(area[0], done) for area in areas}
    # Its soft-NMS reads the keypoints its loop over the ranges left corrected: the last range's.
    scores_all = rescored(kps_all, kps_all[areas[-1][0]])
    steps.append(step("cumulative", "score", [evaluated(area, kps_all[area[0]], scores_all[area[0]])
                                              for area in areas]))
    results = [background(area, kps_all[area[0]], scores_all[area[0]]) for area in areas]
    steps += [step("cumulative", "background_fp", [r[0] for r in results]),
              step("cumulative", "background_fn", [r[1] for r in results])]
    sets.update({("cumulative", area[0]): (r[2], r[3]) for area, r in zip(areas, results)})

    pair_dt, pair_gt, labels = located["all"]
    fp_all, fn_all = sets["alone", "all"]
    return build_analysis(data, steps, thresholds, labels, pair_dt, pair_gt, int(fp_all[0].sum()),
                          int((fn_all[0] & data.counted_in(areas[0])).sum()), sets, COCO_ANALYZE_OKS,
                          {**{("alone", a): v for a, v in scores_alone.items()},
                           **{("cumulative", a): v for a, v in scores_all.items()}})
