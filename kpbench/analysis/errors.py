"""Why AP is lost: keypoint localisation errors, scoring errors and background errors, and what each one costs.

The error diagnosis of Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation"
(ICCV 2017; their tool is coco-analyze), written here from the paper and the definitions below.

**Matching.** Detections are matched to the GT persons by COCOeval's own greedy matching (pycocotools'
evaluateImg) at OKS 0.1, area "all", maxDets 20: only each image's top 20 detections by score (COCOeval's stable
order) are analysed, and everything below, the corrections and the re-evaluations included, works on them alone.

**Localisation errors.** For each detection matched to a counted GT g (not crowd, with labelled keypoints) and
each keypoint j labelled in g (v > 0), the keypoint similarity ks = exp(-e), e = d² / ((2σ_j)² · 2 · (area + eps))
(the OKS term, `kpbench.evaluation.oks`), is computed against four references: (a) g's keypoint j; (b) g flipped,
g's keypoint flip(j) (the schema's flip pairs; a keypoint without a partner, such as the nose, is its own);
(c) every other annotation g' of the image, keypoint j, with g''s own area and visibility (an unlabelled reference
keypoint gives ks 0); (d) every other annotation flipped. The best reference (highest ks; a tie goes to (a), then
(b), then the others) labels the keypoint:

    good       best is (a), ks >= 0.85          jitter  best is (a), 0.5 <= ks < 0.85
    inversion  best is (b), ks >= 0.5           swap    best is (c) or (d), ks >= 0.5
    miss       best ks < 0.5

Flipped references use keypoint j's sigma (left/right partners share their sigma in every built-in schema). A
schema without flip pairs has no inversions: references (b) and (d) are not formed, the counts and the gains
have no inversion column or row, and a note says so.

**Corrections** (on copies of the detections; keypoint scores untouched; only keypoints labelled in the matched
GT): a jitter is moved along the line towards g_j until ks = 0.85, a miss until ks = 0.5; an inversion and a swap
are moved onto g_j (ks = 1). Score errors: each analysed detection's score becomes its maximum OKS with the GT
persons of its image that COCOeval counts (not crowd, with labelled keypoints; OKS with a crowd region or an
unlabelled person is a box test, not a pose similarity); a detection without one gets 0. Background errors: the
false positives (detections not matched at OKS 0.1) are removed, and the false negatives (counted GT persons that
no detection matched at OKS 0.1) become ignored. The classification and the background sets come from the
original detections. Each correction is scored alone and cumulatively (miss, + swap, + inversion, + jitter,
+ score, + background FP, + background FN); the score fix of the cumulative sequence rescores the corrected
keypoints. AP, AP50 and AP75 are reported per area range, and the gain over the uncorrected detections.

**coco-analyze mode** (`coco_analyze=True`): coco-analyze's own procedure, taken from its code (matteorr/
coco-analyze, pycocotools/cocoanalyze.py and analysisAPI/errorsAPImpact.py), which differs from the above:

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

Re-evaluation goes through one internal interface, `_Scorer`, which scores arrays of detections against the GT:
by default `kpbench.evaluation.vectorized.KeypointEvaluator` (pycocotools' numbers and matches bit for bit, on
arrays), or pycocotools itself (`evaluator="pycocotools"`, the reference: kpbench.evaluate on in-memory records;
a GT is made ignored by setting its num_keypoints to 0 on a copy, which pycocotools' _prepare turns into ignore
without changing any OKS, while it overwrites any 'ignore' key with iscrowd). Detection areas are what
pycocotools' loadRes sets: the box's w·h when the original results are read as boxes (the first has a 'bbox'),
else the extent of the corrected keypoints (coco-analyze mode: of the original ones). coco-analyze's background
step edits COCOeval's dtIgnore and gtIgnore after the matching and accumulates again; `_accumulate_flagged` is
that accumulation (COCOeval.accumulate's operations, so the same floats), on the scorer's matches.

Hooks: other analyses add JSON-ready sections to `ErrorAnalysis.extra` (name -> data); analyze.json carries them
under their names. A section with a "rows" list (and optional "title", "note", "columns") is a table: it is
written as NAME.csv/.md/.json and printed by `kpbench analyze` (`kpbench.analysis.diagnose` adds the sensitivity
and score-threshold tables this way).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema
from kpbench.evaluation.oks import paired_keypoint_similarity
from kpbench.evaluation.settings import EvalSettings

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.evaluation.cocofiles import GroundTruth, Results

# --- definitions -------------------------------------------------------------------------------------------------

MATCH_OKS = 0.1
GOOD_KS = 0.85  # jitter's upper bound and its correction target
CORRECT_KS = 0.5  # the lowest ks a keypoint is localised at (miss below it); a miss's correction target

GOOD, JITTER, INVERSION, SWAP, MISS, UNCLASSIFIED = range(6)
NOT_LABELLED = -1  # keypoints the matched GT does not label: never classified, never corrected
ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
_LABEL_OF = {name: code for code, name in enumerate(ERROR_TYPES)}

LOCALISATION_FIXES: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")  # coco-analyze's order
CORRECTIONS: tuple[str, ...] = (*LOCALISATION_FIXES, "score", "background_fp", "background_fn")
COCO_ANALYZE_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
COCO_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
AREA_LABELS: tuple[str, ...] = ("all", "medium", "large")
# coco-analyze's OKS thresholds, its Params.oksThrs literals (COCOeval's are np.linspace(0.5, 0.95, 10)).
COCO_ANALYZE_OKS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SOFT_NMS_SIGMA = 0.5  # coco-analyze's soft-NMS: a score is multiplied by exp(-OKS² / 0.5)
# The OKS thresholds of each AP column, among COCOeval's ten (None: all ten, COCO's AP).
AP_COLUMNS: tuple[tuple[str, float | None], ...] = (("AP", None), ("AP50", 0.5), ("AP75", 0.75))
PR_PANELS: tuple[tuple[str, float | None], ...] = (("OKS 0.50", 0.5), ("OKS 0.75", 0.75), ("mean OKS 0.50:0.95", None))

KEYPOINTS_STEM = "errors_keypoints"
GAIN_STEM = "errors_ap_gain"
PR_FILE = "errors_pr_curves.png"
REPORT_FILE = "analyze.json"


@dataclass(frozen=True)
class ErrorMode:
    """kpbench's definitions (the default) or coco-analyze's procedure (`coco_analyze=True`, module docstring)."""

    coco_analyze: bool = False

    @property
    def name(self) -> str:
        """"kpbench" or "coco-analyze" (what the files and notes call the mode)."""
        return "coco-analyze" if self.coco_analyze else "kpbench"

    @property
    def area_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """(label, lo, hi) of all, medium and large."""
        return COCO_ANALYZE_AREAS if self.coco_analyze else COCO_AREAS

    @property
    def eval_settings(self) -> EvalSettings:
        """COCOeval's parameters of the re-evaluations (None: COCO's own, so that stats are pycocotools')."""
        if self.coco_analyze:
            return EvalSettings(area_ranges=COCO_ANALYZE_AREAS, iou_thresholds=COCO_ANALYZE_OKS)
        return EvalSettings()

    def analysis_sigmas(self, sigmas: np.ndarray) -> np.ndarray:
        """The sigmas of ks, the corrections and soft-NMS: the schema's, or in coco-analyze mode each written as
        a short decimal (15 significant digits), as coco-analyze's Params writes COCO's (.026 where pycocotools
        computes .26/10, one ulp apart). The re-evaluations keep the schema's."""
        sigmas = np.asarray(sigmas, dtype=np.float64)
        return np.asarray([float(f"{s:.15g}") for s in sigmas.tolist()]) if self.coco_analyze else sigmas

    def to_json(self) -> dict[str, Any]:
        """The definitions in force, as analyze.json records them."""
        if not self.coco_analyze:
            return {
                "mode": self.name, "match_oks": MATCH_OKS, "max_dets": KEYPOINT_MAX_DETS,
                "area_ranges": [list(r) for r in self.area_ranges], "good": "ks >= 0.85", "jitter": "0.5 <= ks < 0.85",
                "correction_targets": {"jitter": GOOD_KS, "miss": CORRECT_KS, "swap": 1.0, "inversion": 1.0},
                "score": "best OKS with the counted persons of the image",
                "background": f"unmatched at OKS {MATCH_OKS}",
            }
        return {
            "mode": self.name, "match_oks": MATCH_OKS, "max_dets": KEYPOINT_MAX_DETS,
            "area_ranges": [list(r) for r in self.area_ranges], "oks_thresholds": list(COCO_ANALYZE_OKS),
            "good": "ks > 0.85", "jitter": "0.5 <= ks < 0.85",
            "correction_targets": {"jitter": GOOD_KS**0.25, "miss": CORRECT_KS**0.25,
                                   "swap": "ks^(1/4)", "inversion": "ks^(1/4)"},
            "score": "best OKS with the persons counted in the area range, then soft-NMS (exp(-OKS^2/0.5))",
            "background": "unmatched at each OKS threshold, after the corrections before it",
        }


# --- GT and detections as arrays ---------------------------------------------------------------------------------


@dataclass
class _Data:
    """The validated inputs as arrays: GT persons (G) and the analysed detections (N, each image's top 20)."""

    gt: GroundTruth
    schema: KeypointSchema
    gt_ids: np.ndarray  # (G,)
    gt_image: np.ndarray  # (G,)
    gt_keypoints: np.ndarray  # (G, K, 3)
    gt_boxes: np.ndarray  # (G, 4)
    gt_areas: np.ndarray  # (G,)
    gt_counted: np.ndarray  # (G,) not crowd and num_keypoints > 0: what COCOeval does not ignore by itself
    gt_labelled: np.ndarray  # (G,) num_keypoints != 0 (coco-analyze analyses a match only to such a person)
    records: list[dict[str, Any]]  # (N,) the analysed result records (`_prepare`'s order)
    dt_image: np.ndarray  # (N,)
    dt_keypoints: np.ndarray  # (N, K, 3)
    dt_scores: np.ndarray  # (N,)
    # Each analysed detection's area as pycocotools' loadRes sets it when it reads the results as boxes (the
    # first result has a 'bbox'), else None: areas then come from the (corrected) keypoints' extent.
    box_areas: np.ndarray | None
    dt_result: np.ndarray  # (N,) each analysed detection's position in the results
    num_results: int
    crowded_images: int  # images with more than maxDets detections


def _top_detections(image: np.ndarray, scores: np.ndarray, max_dets: int) -> np.ndarray:
    """Positions (ascending) of each image's top `max_dets` detections in COCOeval's order: by descending score,
    equal scores in results order (its stable mergesort on -score)."""
    order = np.lexsort((-scores, image))  # lexsort is stable: equal keys keep results order
    sorted_image = image[order]
    first = np.searchsorted(sorted_image, sorted_image, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < max_dets])


def _prepare(gt: GroundTruth, res: Results, coco_analyze_order: bool = False) -> _Data:
    """The inputs as arrays, each image's top 20 detections in results order, or with `coco_analyze_order` in
    the order coco-analyze's run_analysis.py hands them to loadRes: images by first appearance, each image's
    detections by descending score (stable). The order within an image breaks ties between equal corrected
    scores; the first record decides whether loadRes reads the results as boxes."""
    from kpbench.evaluation.cocofiles import loadres_takes_box

    schema = gt.schema
    if schema is None:  # load_ground_truth for keypoints always sets one
        raise KpbenchError(f"{gt.source}: no keypoint schema")
    if schema.protocol != "coco":
        raise KpbenchError(f"the {schema.name} schema's own protocol ({schema.protocol}) is not COCOeval's: the "
                           "error analysis follows COCOeval's keypoint matching only")
    categories = gt.dataset["categories"]
    if len(categories) != 1:
        raise KpbenchError(f"{gt.source}: {len(categories)} categories; the error analysis scores one keypoint "
                           "category (evaluate each category's GT on its own)")
    k = schema.num_keypoints
    anns = gt.dataset["annotations"]
    gt_keypoints = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), k, 3)
    records = res.results
    scores = np.asarray([r["score"] for r in records], dtype=np.float64)
    image = np.asarray([r["image_id"] for r in records], dtype=np.int64)
    kept = _top_detections(image, scores, KEYPOINT_MAX_DETS)
    counts = np.bincount(np.unique(image, return_inverse=True)[1]) if len(image) else np.zeros(0, np.int64)
    if coco_analyze_order and len(kept):
        images, first_seen = np.unique(image, return_index=True)
        first = first_seen[np.searchsorted(images, image[kept])]
        kept = kept[np.lexsort((kept, -scores[kept], first))]
    kept_records = [records[i] for i in kept.tolist()]
    return _Data(
        gt=gt,
        schema=schema,
        gt_ids=np.asarray([a["id"] for a in anns], dtype=np.int64),
        gt_image=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        gt_keypoints=gt_keypoints,
        gt_boxes=np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4),
        gt_areas=np.asarray([a["area"] for a in anns], dtype=np.float64),
        # pycocotools' _prepare: ignore = iscrowd, then for keypoints num_keypoints == 0 or ignore.
        gt_counted=np.asarray([not a["iscrowd"] and a["num_keypoints"] != 0 for a in anns], dtype=bool),
        gt_labelled=np.asarray([a["num_keypoints"] != 0 for a in anns], dtype=bool),
        records=kept_records,
        dt_image=image[kept],
        dt_keypoints=np.asarray([r["keypoints"] for r in kept_records], dtype=np.float64).reshape(len(kept), k, 3),
        dt_scores=scores[kept],
        box_areas=(np.asarray([float(r["bbox"][2]) * float(r["bbox"][3]) for r in kept_records], dtype=np.float64)
                   if records and loadres_takes_box((kept_records if coco_analyze_order else records)[0]) else None),
        dt_result=kept,
        num_results=len(records),
        crowded_images=int((counts > KEYPOINT_MAX_DETS).sum()),
    )


class _ImageIndex:
    """Each image's GT persons (a subset of them, by mask), as slots: slot s of a query is the s-th GT of its
    image, so that a loop over slots (at most the largest number of persons per image) is vectorised over all
    queries and keypoints."""

    def __init__(self, gt_image: np.ndarray, mask: np.ndarray | None = None) -> None:
        members = np.flatnonzero(mask) if mask is not None else np.arange(len(gt_image))
        self.order = members[np.argsort(gt_image[members], kind="stable")]
        self.sorted_image = gt_image[self.order]

    def slots(self, query_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) into `order` for each query's image."""
        start = np.searchsorted(self.sorted_image, query_image, side="left")
        end = np.searchsorted(self.sorted_image, query_image, side="right")
        return start, end - start


def _flip_index(schema: KeypointSchema) -> np.ndarray | None:
    """flip(j) for every keypoint (a keypoint without a partner is its own), or None without flip pairs."""
    if not schema.flip_pairs:
        return None
    flip = np.arange(schema.num_keypoints)
    for a, b in schema.flip_pairs:
        flip[a], flip[b] = b, a
    return flip


def _labelled_similarity(ref: np.ndarray, boxes: np.ndarray, areas: np.ndarray, dt: np.ndarray,
                         sigmas: np.ndarray) -> np.ndarray:
    """ks (P, K) of detections against aligned reference persons; 0 where the reference keypoint is unlabelled."""
    ks, _ = paired_keypoint_similarity(ref, boxes, areas, dt, sigmas)
    return np.where(ref[..., 2] > 0, ks, 0.0)


# --- classification ----------------------------------------------------------------------------------------------


@dataclass
class KeypointLabels:
    """The class of every keypoint of every matched pair, and the similarities it was decided by."""

    labels: np.ndarray  # (P, K) int8: GOOD ... MISS, UNCLASSIFIED, NOT_LABELLED
    ks_matched: np.ndarray  # (P, K) ks to the matched GT's own keypoint (reference a)
    ks_best: np.ndarray  # (P, K) ks to the best reference
    best_reference: np.ndarray  # (P, K) 0: matched (a), 1: matched flipped (b), 2: another person (c or d)


def classify_keypoints(
    dt_keypoints: np.ndarray,
    matched: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_boxes: np.ndarray,
    gt_areas: np.ndarray,
    gt_image: np.ndarray,
    sigmas: np.ndarray,
    flip: np.ndarray | None,
    strict_good: bool = False,
    others_before_flip: bool = False,
) -> KeypointLabels:
    """Label each keypoint of P detections (P, K, 3), detection p matched to GT `matched[p]` (an index into the
    G GT arrays, all annotations of the images), as good, jitter, inversion, swap or miss (module docstring).

    `flip` is flip(j) per keypoint (None: no inversions). `strict_good` is coco-analyze's boundary: good is
    ks > 0.85, and ks exactly 0.85 is UNCLASSIFIED. Ties between references go to the matched person, then to
    its flip, then to the others; `others_before_flip` is coco-analyze's order: the matched person, the others
    unflipped, the matched person flipped, the others flipped.
    """
    matched = np.asarray(matched, dtype=np.int64)
    ref = gt_keypoints[matched]
    boxes, areas = gt_boxes[matched], gt_areas[matched]
    labelled = ref[..., 2] > 0
    ks_a = _labelled_similarity(ref, boxes, areas, dt_keypoints, sigmas)
    ks_b = (_labelled_similarity(ref[:, flip], boxes, areas, dt_keypoints, sigmas) if flip is not None
            else np.full(ks_a.shape, -np.inf))
    ks_c = np.full(ks_a.shape, -np.inf)  # the best other person, unflipped
    ks_d = np.full(ks_a.shape, -np.inf)  # ... flipped
    index = _ImageIndex(gt_image)
    image = gt_image[matched]
    start, count = index.slots(image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        others = index.order[start[rows] + s]
        rows, others = rows[others != matched[rows]], others[others != matched[rows]]
        if not len(rows):
            continue
        other_ref = gt_keypoints[others]
        ks = _labelled_similarity(other_ref, gt_boxes[others], gt_areas[others], dt_keypoints[rows], sigmas)
        ks_c[rows] = np.maximum(ks_c[rows], ks)
        if flip is not None:
            ks = _labelled_similarity(other_ref[:, flip], gt_boxes[others], gt_areas[others], dt_keypoints[rows],
                                      sigmas)
            ks_d[rows] = np.maximum(ks_d[rows], ks)
    ks_other = np.maximum(ks_c, ks_d)
    is_a = (ks_a >= ks_b) & (ks_a >= ks_other)  # ties to the matched person
    # Then coco-analyze's argmax order (the others unflipped before the matched person flipped) or kpbench's.
    flip_first = (ks_b > ks_c) & (ks_b >= ks_d) if others_before_flip else ks_b >= ks_other
    is_b = ~is_a & flip_first
    best = np.where(is_a, ks_a, np.where(is_b, ks_b, ks_other))
    reference = np.where(is_a, 0, np.where(is_b, 1, 2)).astype(np.int8)
    labels = np.full(ks_a.shape, SWAP, dtype=np.int8)
    labels[is_b] = INVERSION
    good = ks_a > GOOD_KS if strict_good else ks_a >= GOOD_KS
    labels[is_a & good] = GOOD
    labels[is_a & (ks_a < GOOD_KS)] = JITTER
    if strict_good:
        labels[is_a & (ks_a == GOOD_KS)] = UNCLASSIFIED
    labels[best < CORRECT_KS] = MISS
    labels[~labelled] = NOT_LABELLED
    return KeypointLabels(labels=labels, ks_matched=ks_a, ks_best=best, best_reference=reference)


# --- corrections --------------------------------------------------------------------------------------------------


def correct_keypoints(
    dt_keypoints: np.ndarray,
    labels: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_areas: np.ndarray,
    sigmas: np.ndarray,
    fixes: Sequence[str],
    mode: ErrorMode | None = None,
    ks_best: np.ndarray | None = None,
) -> np.ndarray:
    """A corrected copy of P matched detections (P, K, 3) for the error types in `fixes` ("miss", "swap",
    "inversion", "jitter"), against the matched GT persons aligned with them (gt_keypoints (P, K, 3), gt_areas
    (P,)). Keypoint scores (the third column) and unlisted keypoints are unchanged.

    kpbench's rule: a jitter (miss) keypoint moves along the line towards the GT keypoint to the distance r at
    which ks = exp(-r² / ((2σ)² · 2 · (area + eps))) = 0.85 (0.5); an inversion or a swap moves onto the GT
    keypoint. coco-analyze's rule (`mode.coco_analyze`): the keypoint moves to (g_x + r, g_y) with
    r = sqrt(-ln(k) · 2 · area · σ²), k = 0.85 (jitter), 0.5 (miss) or, for an inversion or a swap, its ks with
    its best reference (`ks_best` (P, K), `KeypointLabels.ks_best`), nudged off 0 and 1 by machine epsilon.
    """
    mode = mode or ErrorMode()
    unknown = set(fixes) - set(LOCALISATION_FIXES)
    if unknown:
        raise KpbenchError(f"unknown keypoint correction(s) {sorted(unknown)}; known: {', '.join(LOCALISATION_FIXES)}")
    out = np.array(dt_keypoints, dtype=np.float64, copy=True)
    target_xy = gt_keypoints[..., :2]
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if mode.coco_analyze:
        move = np.isin(labels, [_LABEL_OF[f] for f in fixes])
        if not move.any():
            return out
        if ks_best is None and any(f in ("swap", "inversion") for f in fixes):
            raise KpbenchError("coco-analyze's swap and inversion corrections need each keypoint's best ks (ks_best)")
        out[..., :2][move] = _coco_analyze_targets(labels, ks_best, gt_keypoints, gt_areas, sigmas)[move]
        return out
    onto = np.isin(labels, [_LABEL_OF[f] for f in fixes if f in ("swap", "inversion")])
    out[..., :2][onto] = target_xy[onto]
    variance = (sigmas * 2) ** 2
    for name, target in (("jitter", GOOD_KS), ("miss", CORRECT_KS)):
        if name not in fixes:
            continue
        move = labels == _LABEL_OF[name]
        if not move.any():
            continue
        # The radius at which ks reaches the target, per keypoint of each pair (the same eps as the OKS term).
        radius = np.sqrt(-math.log(target) * variance[None, :] * 2 * (gt_areas[:, None] + np.spacing(1)))
        delta = out[..., :2] - target_xy
        distance = np.hypot(delta[..., 0], delta[..., 1])
        # Only ever closer: a keypoint already within the radius (not possible for these labels) stays put.
        move &= distance > radius
        factor = np.divide(radius, distance, out=np.ones_like(distance), where=move)
        moved = target_xy + delta * factor[..., None]
        out[..., :2][move] = moved[move]
    return out


def _coco_analyze_targets(labels: np.ndarray, ks_best: np.ndarray | None, gt_keypoints: np.ndarray,
                          gt_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """coco-analyze's corrected position (P, K, 2) of every jitter, miss, inversion and swap keypoint (others: the
    GT keypoint), in its operations and their order (cocoanalyze.py, _find_kpt_errors)."""
    areas = np.asarray(gt_areas, dtype=np.float64)
    variance = sigmas**2
    radius = np.zeros(labels.shape)
    for code, target in ((JITTER, GOOD_KS), (MISS, CORRECT_KS)):
        r = np.sqrt((-np.log(target) * 2 * areas)[:, None] * variance)
        radius = np.where(labels == code, r, radius)
    onto = (labels == SWAP) | (labels == INVERSION)
    if ks_best is not None and onto.any():
        eps = np.spacing(1)
        best = np.where(ks_best == 0, eps, np.where(ks_best == 1, 1 - eps, np.clip(ks_best, 0.0, 1.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.sqrt(-np.log(best) * 2 * areas[:, None] * variance)
        radius = np.where(onto, r, radius)
    out = np.array(gt_keypoints[..., :2], dtype=np.float64, copy=True)
    out[..., 0] += radius
    return out


def optimal_scores(
    dt_keypoints: np.ndarray, dt_image: np.ndarray, gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
    gt_areas: np.ndarray, gt_image: np.ndarray, gt_counted: np.ndarray, sigmas: np.ndarray,
) -> np.ndarray:
    """Optimal rescoring: each detection's maximum OKS with the counted GT persons of its image (0 without one)."""
    best = np.zeros(len(dt_keypoints))
    index = _ImageIndex(gt_image, gt_counted)
    start, count = index.slots(dt_image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        gts = index.order[start[rows] + s]
        ks, terms = paired_keypoint_similarity(gt_keypoints[gts], gt_boxes[gts], gt_areas[gts], dt_keypoints[rows],
                                               sigmas)
        oks = np.where(terms, ks, 0.0).sum(axis=1) / terms.sum(axis=1)
        best[rows] = np.maximum(best[rows], oks)
    return best


def soft_nms_scores(
    dt_image: np.ndarray, list_scores: np.ndarray, scores: np.ndarray, dt_keypoints: np.ndarray, sigmas: np.ndarray,
) -> np.ndarray:
    """coco-analyze's soft-NMS of the optimal scores (cocoanalyze.py, _soft_nms), every image at once.

    In each image the detections form a list, first ordered by `list_scores` (descending, stable: the results'
    order as COCOeval holds them). Repeatedly the list is stably sorted by descending current score, its first
    detection M is taken out, and every detection d left has its score multiplied by exp(-OKS(M, d)² / 0.5), with
    OKS the mean over all K keypoints of exp(-|d - M|² / ((2σ)² · 2 · (mean of the two keypoint-extent areas +
    eps))). `scores` are the starting scores (the best OKS with a GT), (N,) or several sets (S, N) on the same
    keypoints; returns the final ones, in the same shape.
    """
    n = len(dt_image)
    start = np.asarray(scores, dtype=np.float64)
    out = np.array(start.reshape(-1, n), copy=True)
    if n == 0:
        return out.reshape(start.shape)
    order = np.lexsort((np.arange(n), -np.asarray(list_scores, dtype=np.float64), dt_image))
    image_sorted = dt_image[order]
    position = np.arange(n) - np.searchsorted(image_sorted, image_sorted, side="left")
    _, image_row = np.unique(image_sorted, return_inverse=True)
    rows, width = int(image_row.max()) + 1, int(position.max()) + 1
    member = np.full((rows, width), -1, dtype=np.int64)
    member[image_row, position] = order
    valid = member >= 0
    factor = _soft_nms_factors(member, valid, dt_keypoints, sigmas)  # (I, D, D), symmetric
    everything = np.arange(rows)
    for s in range(len(out)):
        alive = valid.copy()
        score = np.where(valid, out[s][np.where(valid, member, 0)], 0.0)
        key = np.broadcast_to(np.arange(width, dtype=np.float64), (rows, width)).copy()  # the list order
        for _ in range(width):
            busy = alive.any(axis=1)
            if not busy.any():
                break
            # The stable sort by descending score: equal scores keep the list order; the taken-out go last.
            ranked = np.lexsort((key, np.where(alive, -score, np.inf)), axis=1)
            key[everything[:, None], ranked] = np.arange(width, dtype=np.float64)[None, :]
            m = ranked[:, 0]
            alive[everything, m] &= ~busy
            update = alive & busy[:, None]
            score = np.where(update, score * factor[everything, m], score)
        out[s][member[valid]] = score[valid]
    return out.reshape(start.shape)


def _soft_nms_factors(member: np.ndarray, valid: np.ndarray, dt_keypoints: np.ndarray, sigmas: np.ndarray,
                      chunk: int = 256) -> np.ndarray:
    """exp(-OKS(a, b)² / 0.5) for every two detections a, b of an image (I, D, D), in coco-analyze's operations:
    OKS is a numpy sum of the K terms over K, and its square a numpy scalar's, which numpy takes from the C
    library's pow (not always x · x, numpy's square of arrays): math.pow is that pow. The same floats either way
    round: (d - m)² = (m - d)², and the mean of the two areas adds them either way."""
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    k = len(variances)
    rows, width = member.shape
    safe = np.where(valid, member, 0)
    xs, ys = dt_keypoints[safe, :, 0], dt_keypoints[safe, :, 1]  # (I, D, K)
    area = (xs.max(axis=2) - xs.min(axis=2)) * (ys.max(axis=2) - ys.min(axis=2))
    oks = np.zeros((rows, width, width))
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, rows, chunk):
            part = slice(lo, lo + chunk)
            dx = xs[part, None, :, :] - xs[part, :, None, :]  # [i, m, d] = d - m
            dy = ys[part, None, :, :] - ys[part, :, None, :]
            mean_area = (0.5 * (area[part, :, None] + area[part, None, :])) + np.spacing(1)
            e = (dx**2 + dy**2) / variances / mean_area[..., None] / 2
            oks[part] = np.sum(np.ascontiguousarray(np.exp(-e)), axis=3) / k
    pairs = valid[:, :, None] & valid[:, None, :]
    i, a, b = np.nonzero(pairs & (np.arange(width)[:, None] < np.arange(width)[None, :]))
    squared = np.fromiter((math.pow(v, 2) for v in oks[i, a, b].tolist()), dtype=np.float64, count=len(i))
    factor = np.ones((rows, width, width))
    factor[i, a, b] = factor[i, b, a] = np.exp(-(squared / SOFT_NMS_SIGMA))
    return factor


# --- re-evaluation ----------------------------------------------------------------------------------------------


@dataclass
class _Scored:
    """One evaluation of an array of detections: COCOeval's arrays at the largest maxDet (areas in the order of
    the settings), and its stats where it was one COCOeval run."""

    precision: np.ndarray  # (T, R, A)
    recall: np.ndarray  # (T, A)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class _Matches:
    """COCOeval's matching of the analysed detections in the first area range of an evaluation (its "all"), at
    each of its T thresholds, in the analysis' indices. A match to a GT whose id is 0 is none (COCOeval's ids)."""

    dt_gt: np.ndarray  # (T, N) GT index matched, -1 for none
    dt_ignore: np.ndarray  # (T, N) COCOeval's dtIgnore
    gt_matched: np.ndarray  # (T, G) matched by some detection


def _single_area(area: tuple[str, float, float], thresholds: Sequence[float]) -> EvalSettings:
    """Settings of one area range (labelled "all": the range an evaluation's matches are read in)."""
    return EvalSettings(area_ranges=(("all", area[1], area[2]),), iou_thresholds=tuple(thresholds))


class _Scorer:
    """Scores arrays of the analysed detections against the GT: the one re-evaluation function of the analysis.

    `score` gives COCOeval's arrays of the detections `keep` with the GTs `gt_ignore` made ignored; `match` gives
    COCOeval's matching; `max_oks` each detection's best OKS with some GTs. Two implementations:
    `_VectorizedScorer` (the default, `kpbench.evaluation.vectorized`, bit for bit pycocotools) and
    `_PycocotoolsScorer` (the reference). `dt_areas` fixes the detections' areas (what decides whether an
    unmatched detection is ignored in an area range); None: pycocotools' loadRes areas of each evaluation's
    records (their boxes' when the original results have them, else the evaluated keypoints' extent).
    """

    name = ""

    def __init__(self, data: _Data, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        self.data = data
        self.settings = settings
        self.dt_areas = dt_areas if dt_areas is not None else data.box_areas
        self.runs = 0
        self._oks: tuple[Any, np.ndarray] | None = None

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> _Scored:
        """COCOeval (`settings`, default the analysis') of the detections `keep` (all by default), `gt_ignore`
        GTs ignored."""
        raise NotImplementedError

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> _Matches:
        """COCOeval's matching at every threshold of `settings`, in its first area range."""
        raise NotImplementedError

    def max_oks(self, keypoints: np.ndarray, counted: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each mask of `counted` ((G,) each), each detection's best OKS (pycocotools' computeOks values, bit
        for bit) with those GTs of its image; 0 where its image has none."""
        from kpbench.evaluation.vectorized import KeypointEvaluator

        if self._oks is None:
            evaluator = KeypointEvaluator(self.data.gt.dataset, self.data.schema.sigma_array,
                                          category_id=self.data.schema.category_id)
            self._oks = (evaluator, _gt_positions(self.data, evaluator.gt_ann_ids))
        evaluator, to_ours = self._oks
        best = [np.zeros(len(keypoints)) for _ in counted]
        image = self.data.dt_image
        order = np.argsort(image, kind="stable")
        bounds = np.flatnonzero(np.diff(image[order])) + 1
        for rows in np.split(order, bounds) if len(order) else []:
            image_id = image[rows[0]]
            columns = to_ours[evaluator.image_gt_indices(image_id)]
            uses = [mask[columns] for mask in counted]
            if not any(use.any() for use in uses):
                continue
            oks = evaluator.oks(image_id, keypoints[rows])
            for out, use in zip(best, uses):
                if use.any():
                    out[rows] = oks[:, use].max(axis=1)
        return best


def _gt_positions(data: _Data, gt_ann_ids: np.ndarray) -> np.ndarray:
    """The analysis' GT index (file order) of each GT annotation id of an evaluator's order."""
    position = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}
    return np.asarray([position[int(g)] for g in gt_ann_ids], dtype=np.int64)


def _keypoint_boxes(keypoints: np.ndarray) -> np.ndarray:
    """[x0, y0, x1 - x0, y1 - y0] of each detection's keypoints (all K): the box whose w·h is pycocotools'
    loadRes area of keypoint results."""
    x, y = keypoints[..., 0], keypoints[..., 1]
    x0, y0 = x.min(axis=1), y.min(axis=1)
    return np.stack([x0, y0, x.max(axis=1) - x0, y.max(axis=1) - y0], axis=1)


class _PycocotoolsScorer(_Scorer):
    """pycocotools, through `kpbench.evaluate` on in-memory records (the reference)."""

    name = "pycocotools"

    def __init__(self, data: _Data, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        super().__init__(data, settings, dt_areas)
        self._gt_index = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}
        # Fixed areas without boxes in the results: each record gets its original keypoints' box, whose w·h
        # pycocotools' loadRes then reads as the area (the same product as the keypoints' extent).
        self._boxes = (_keypoint_boxes(data.dt_keypoints) if dt_areas is not None and data.box_areas is None
                       else None)

    def _records(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None) -> list[dict[str, Any]]:
        rows = range(len(scores)) if keep is None else np.flatnonzero(keep).tolist()
        flat = keypoints.reshape(len(keypoints), self.data.schema.result_length)
        out = []
        for i in rows:
            # The original record with new values; its 'bbox' (where pycocotools reads the detection's area
            # from) only when the original results were read that way, whichever record now comes first.
            record = {**self.data.records[i], "keypoints": flat[i].tolist(), "score": float(scores[i])}
            if self._boxes is not None:
                record["bbox"] = self._boxes[i].tolist()
            elif self.data.box_areas is None:
                record.pop("bbox", None)
            out.append(record)
        return out

    def _ground_truth(self, gt_ignore: np.ndarray | None) -> GroundTruth:
        from kpbench.evaluation.cocofiles import GroundTruth

        gt = self.data.gt
        if gt_ignore is None or not gt_ignore.any():
            return gt
        # pycocotools' _prepare overwrites an 'ignore' key with iscrowd, but reads num_keypoints == 0 as ignored;
        # OKS reads the keypoints' visibility, not num_keypoints, so nothing else changes.
        anns = [({**a, "num_keypoints": 0} if ignored else a)
                for a, ignored in zip(gt.dataset["annotations"], gt_ignore.tolist())]
        return GroundTruth(dataset={**gt.dataset, "annotations": anns}, source=gt.source, schema=gt.schema)

    def _evaluate(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None,
                  gt_ignore: np.ndarray | None, settings: EvalSettings) -> EvalResult:
        from kpbench.evaluation.cocoeval import evaluate
        from kpbench.evaluation.cocofiles import Results

        self.runs += 1
        results = Results(self._records(keypoints, scores, keep), source="corrected detections")
        return evaluate(self._ground_truth(gt_ignore), results, settings=settings, backend="pycocotools")

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> _Scored:
        r = self._evaluate(keypoints, scores, keep, gt_ignore, settings or self.settings)
        return _Scored(precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1], stats=dict(r.stats))

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> _Matches:
        r = self._evaluate(keypoints, scores, None, None, settings)
        assert r.image_evals is not None  # pycocotools exposes them
        thresholds = len(r.params.iou_thresholds)
        dt_gt = np.full((thresholds, len(scores)), -1, dtype=np.int64)
        dt_ignore = np.ones((thresholds, len(scores)), dtype=bool)  # a detection cut by maxDets never counts
        gt_matched = np.zeros((thresholds, len(self.data.gt_ids)), dtype=bool)
        area = r.params.area_labels.index("all") if "all" in r.params.area_labels else 0
        for e in r.image_evals:
            if e.area_index != area:
                continue
            rows = e.dt_ids - 1  # pycocotools' 1-based positions in the records, all of them here
            for t in range(thresholds):
                matched = e.dt_matches[t] != 0
                dt_gt[t, rows[matched]] = [self._gt_index[int(g)] for g in e.dt_matches[t][matched]]
                dt_ignore[t, rows] = e.dt_ignore[t]
                gt_matched[t, [self._gt_index[int(g)] for g in e.gt_ids[e.gt_matches[t] != 0]]] = True
        return _Matches(dt_gt=dt_gt, dt_ignore=dt_ignore, gt_matched=gt_matched)


class _VectorizedScorer(_Scorer):
    """`kpbench.evaluation.vectorized.KeypointEvaluator`: pycocotools' numbers and matches, bit for bit, on
    arrays (no records, no re-parsing)."""

    name = "vectorized"

    def __init__(self, data: _Data, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        super().__init__(data, settings, dt_areas)
        self._evaluators: dict[EvalSettings, Any] = {}
        # The evaluator's GT order (images by id, then file order) against ours (file order).
        self._to_ours = _gt_positions(data, self._for(settings).gt_ann_ids)
        self._zero_id = data.gt_ids == 0

    def _for(self, settings: EvalSettings) -> Any:
        from kpbench.evaluation.vectorized import KeypointEvaluator

        if settings not in self._evaluators:
            self._evaluators[settings] = KeypointEvaluator(self.data.gt.dataset, self.data.schema.sigma_array,
                                                           settings, category_id=self.data.schema.category_id)
        return self._evaluators[settings]

    def _run(self, evaluator: Any, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None,
             gt_ignore: np.ndarray | None) -> Any:
        self.runs += 1
        rows = slice(None) if keep is None else np.flatnonzero(keep)
        areas = None if self.dt_areas is None else self.dt_areas[rows]
        ignore = None if gt_ignore is None else gt_ignore[self._to_ours]
        return evaluator.evaluate(self.data.dt_image[rows], keypoints[rows], scores[rows], gt_ignore=ignore,
                                  areas=areas)

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> _Scored:
        r = self._run(self._for(settings or self.settings), keypoints, scores, keep, gt_ignore)
        return _Scored(precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1], stats=dict(r.stats))

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> _Matches:
        r = self._run(self._for(settings), keypoints, scores, None, None)
        local = r.dt_matches
        dt_gt = np.full(local.shape, -1, dtype=np.int64)
        hit = local >= 0
        dt_gt[hit] = self._to_ours[local[hit]]
        hit[hit] = self._zero_id[dt_gt[hit]]
        dt_gt[hit] = -1  # a match to GT id 0 reads as none in COCOeval's id arrays
        gt_matched = np.zeros((len(local), len(self.data.gt_ids)), dtype=bool)
        gt_matched[:, self._to_ours] = r.gt_matches >= 0
        return _Matches(dt_gt=dt_gt, dt_ignore=r.dt_ignore.copy(), gt_matched=gt_matched)


EVALUATORS: tuple[str, ...] = ("vectorized", "pycocotools")


def _scorer(name: str, data: _Data, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> _Scorer:
    if name == "vectorized":
        return _VectorizedScorer(data, settings, dt_areas)
    if name == "pycocotools":
        return _PycocotoolsScorer(data, settings, dt_areas)
    raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {name!r}")


def _accumulate_flagged(matches: _Matches, scores: np.ndarray, dt_image: np.ndarray, gt_ignored: np.ndarray,
                        dt_flagged: np.ndarray, gt_flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate of one area range (precision (T, R), recall (T,)) after its matching, with more
    detections (`dt_flagged` (T, N)) and GTs (`gt_flagged` (T, G)) set ignored per threshold after the matching,
    as coco-analyze's background step edits evalImgs' dtIgnore and gtIgnore and accumulates again.
    `gt_ignored` (G,) is the range's own GT ignore flag (crowd, unlabelled, outside the range)."""
    recall_thresholds = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    thresholds = matches.dt_gt.shape[0]
    precision = -np.ones((thresholds, len(recall_thresholds)))
    recall = -np.ones(thresholds)
    # Evaluated: within each image's first maxDets (the matching's dtIgnore marks the others, never matched).
    evaluated = _top_detections(dt_image, scores, KEYPOINT_MAX_DETS)
    if not len(evaluated) and not len(gt_ignored):
        return precision, recall
    # pycocotools' order: images by id, each by descending score, then a stable sort by descending score.
    order = evaluated[np.lexsort((evaluated, dt_image[evaluated], -scores[evaluated]))]
    matched = matches.dt_gt[:, order] >= 0
    ignored = (matches.dt_ignore | dt_flagged)[:, order]
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    nd = len(order)
    for t in range(thresholds):
        npig = int(np.count_nonzero(~(gt_ignored | gt_flagged[t])))
        if npig == 0:
            continue
        tp, fp = tp_sum[t], fp_sum[t]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if nd else 0
        envelope = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
        inds = np.searchsorted(rc, recall_thresholds, side="left")
        inside = inds < nd
        q = np.zeros(len(recall_thresholds))
        q[inside] = envelope[inds[inside]]
        precision[t] = q
    return precision, recall


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval summarize()'s mean over the entries that are not -1 (no GT), or -1 when none is."""
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def _area_aps(scored: _Scored, thresholds: np.ndarray) -> dict[str, dict[str, float]]:
    """{area: {"AP": ..., "AP50": ..., "AP75": ...}} from the precision array, as summarize() averages it."""
    out = {}
    for a, area in enumerate(AREA_LABELS):
        row = {}
        for name, t in AP_COLUMNS:
            s = scored.precision if t is None else scored.precision[np.where(t == thresholds)[0]]
            row[name] = _mean_valid(s[:, :, a])
        out[area] = row
    return out


def _pr_curves(scored: _Scored, thresholds: np.ndarray) -> dict[str, list[float]]:
    """Interpolated precision at each of COCO's 101 recall points, area "all": at OKS 0.5, 0.75, and the mean
    over the ten thresholds (whose mean over recall is AP). Empty where there is no GT."""
    precision = scored.precision[:, :, 0]
    if (precision < 0).all():
        return {label: [] for label, _ in PR_PANELS}
    return {label: (precision.mean(axis=0) if t is None else precision[int(np.flatnonzero(t == thresholds)[0])]).tolist()
            for label, t in PR_PANELS}


# --- the analysis ---------------------------------------------------------------------------------------------


@dataclass
class ErrorAnalysis:
    """What `analyze_errors` found: keypoint error counts, the AP each correction gains, PR curves, notes."""

    mode: ErrorMode
    schema: KeypointSchema
    counts: list[dict[str, Any]]  # one row per keypoint, then "all"
    ap_gain: list[dict[str, Any]]  # one row per (how, correction, area)
    pr_curves: dict[str, Any]  # {"recall": [...], "curves": {step: {panel: [...]}}}
    baseline: dict[str, float]  # the uncorrected stats (COCOeval's, with the mode's area ranges)
    summary: dict[str, Any]
    notes: list[str]
    labels: KeypointLabels
    pairs: np.ndarray  # (P, 2) analysed detection index, GT index (file order of the GT annotations)
    detections: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) results position of each
    # AP (COCOeval's mean over the recall points) and recall at each OKS threshold, per step and area range:
    # {"oks": [...], "rows": [{"how", "correction", "area", "AP": [...], "recall": [...]}]}.
    ap_by_oks: dict[str, Any] = field(default_factory=dict)
    # Background false positives and false negatives, counted per (how, area, OKS): rows for analyze.json.
    background: list[dict[str, Any]] = field(default_factory=list)
    # The sets behind them, {(how, area): (fp (T, N), fn (T, G))} over the analysed detections and the GT
    # annotations, and the corrected scores of the score steps, {(how, area): (N,)}.
    background_sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    optimal_scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    intervals: list[dict[str, Any]] | None = None  # bootstrap intervals on the plain evaluation's stats
    # Hooks for other analyses (sensitivity tables, the LRP-optimal threshold, ...): JSON-ready sections.
    extra: dict[str, Any] = field(default_factory=dict)
    # The validated inputs, for analyses that add sections.
    inputs: tuple[GroundTruth, Results] | None = field(default=None, repr=False)

    @property
    def error_types(self) -> tuple[str, ...]:
        """The error columns of this analysis (no inversion without flip pairs)."""
        return tuple(t for t in ERROR_TYPES if t != "inversion" or self.schema.flip_pairs)

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what analyze.json holds)."""
        return {
            "settings": {**self.mode.to_json(), "schema": self.schema.name, "error_types": list(self.error_types)},
            "mode": self.mode.name,
            "notes": list(self.notes),
            "summary": dict(self.summary),
            "baseline": dict(self.baseline),
            "intervals": self.intervals,
            "keypoints": self.counts,
            "ap_gain": self.ap_gain,
            "ap_by_oks": self.ap_by_oks,
            "background": self.background,
            "pr_curves": self.pr_curves,
            **self.extra,
        }


def _count_rows(labels: np.ndarray, schema: KeypointSchema, types: Sequence[str], unclassified: bool) -> list[dict[str, Any]]:
    columns = [*types, *(("unclassified",) if unclassified else ())]
    codes = [_LABEL_OF.get(t, UNCLASSIFIED) for t in columns]

    def row(name: str, values: np.ndarray) -> dict[str, Any]:
        n = int((values != NOT_LABELLED).sum())
        out: dict[str, Any] = {"keypoint": name, "n": n}
        for column, code in zip(columns, codes):
            out[column] = int((values == code).sum())
        for column in columns:
            out[f"frac_{column}"] = out[column] / n if n else None  # no such keypoint labelled
        return out

    rows = [row(name, labels[:, j]) for j, name in enumerate(schema.keypoint_names)]
    rows.append(row("all", labels))
    return rows


def _gain_rows(steps: Sequence[_Step], base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per step and area range: AP, AP50, AP75 and the gain over the baseline (or the step's own
    reference)."""
    rows = []
    for step in steps:
        reference = step.reference_aps or base
        for area in AREA_LABELS:
            row: dict[str, Any] = {"how": step.how, "correction": step.name, "area": area}
            for column, _ in AP_COLUMNS:
                value, before = step.aps[area][column], reference[area][column]
                row[column] = value
                row[f"gain_{column}"] = value - before if value > -1 and before > -1 else None
            rows.append(row)
    return rows


@dataclass
class _Step:
    """One evaluated correction: its precision (T, R, A) and recall (T, A) over AREA_LABELS."""

    how: str  # "baseline", "alone" or "cumulative"
    name: str
    scored: _Scored
    thresholds: np.ndarray
    reference: _Step | None = None  # the step its gain is measured from (None: the baseline)

    @property
    def aps(self) -> dict[str, dict[str, float]]:
        return _area_aps(self.scored, self.thresholds)

    @property
    def reference_aps(self) -> dict[str, dict[str, float]] | None:
        return None if self.reference is None else self.reference.aps


def _ap_by_oks(steps: Sequence[_Step], thresholds: np.ndarray) -> dict[str, Any]:
    """AP (the mean of the valid interpolated precisions) and recall at each threshold, per step and area."""
    rows = []
    for step in steps:
        for a, area in enumerate(AREA_LABELS):
            rows.append({"how": step.how, "correction": step.name, "area": area,
                         "AP": [_mean_valid(step.scored.precision[t, :, a]) for t in range(len(thresholds))],
                         "recall": [float(v) for v in step.scored.recall[:, a]]})
    return {"oks": [float(t) for t in thresholds], "rows": rows}


def _background_rows(sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                     thresholds: Sequence[float]) -> list[dict[str, Any]]:
    return [{"how": how, "area": area, "oks": float(t), "fp": int(fp[i].sum()), "fn": int(fn[i].sum())}
            for (how, area), (fp, fn) in sets.items() for i, t in enumerate(thresholds)]


def analyze_errors(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
    coco_analyze: bool = False,
    bootstrap: int | None = None,
    seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """The error diagnosis of keypoint results (module docstring): counts per error type and keypoint, and the
    AP gained by each correction alone and cumulatively, per area range, with the PR curves after each
    cumulative step.

    `gt` and `results` are paths, parsed data or validated objects; `schema`/`sigmas` as for `evaluate`.
    `coco_analyze` reproduces coco-analyze's numbers (its area ranges, strict 0.85 boundary and σ² corrections).
    `bootstrap` replicates (seeded) put percentile intervals on every stat of the plain evaluation
    (`kpbench.evaluate` with COCO's parameters, pycocotools). `evaluator` re-evaluates the corrected detections:
    "vectorized" (`kpbench.evaluation.vectorized`, the default) or "pycocotools" (the reference, much slower);
    both give the same numbers bit for bit.
    """
    import warnings

    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    if sigmas is not None and schema is not None:
        raise KpbenchError("give a schema or sigmas, not both (--schema / --sigmas)")
    if bootstrap is not None and bootstrap < 1:
        raise KpbenchError(f"--bootstrap: needs at least 1 replicate, got {bootstrap}")
    if evaluator not in EVALUATORS:
        raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    gt_data = load_ground_truth(gt, "keypoints", schema, sigmas)
    res = load_results(results, gt_data, "keypoints")
    mode = ErrorMode(coco_analyze)
    data = _prepare(gt_data, res, coco_analyze_order=coco_analyze)
    schema = data.schema
    # coco-analyze's detection areas are loadRes's, set once from the original results.
    scorer = _scorer(evaluator, data, mode.eval_settings, _original_areas(data) if mode.coco_analyze else None)
    # The analysis words the maxDets cut itself (with how many detections it keeps).
    from kpbench.evaluation.cocofiles import crowded_images_note

    crowded = crowded_images_note(data.crowded_images) if data.crowded_images else None
    notes = [*gt_data.notes, *(n for n in res.notes if n != crowded)]
    with warnings.catch_warnings():
        # The inputs were checked (and warned about) once above; the re-evaluations see the same records.
        warnings.simplefilter("ignore")
        analysis = _analyze(data, scorer, mode, notes)
        if bootstrap is not None:
            from kpbench.analysis.bootstrap import bootstrap_intervals
            from kpbench.evaluation.cocoeval import evaluate

            analysis.intervals = bootstrap_intervals(evaluate(gt_data, res), bootstrap, seed)
    analysis.inputs = (gt_data, res)
    return analysis


def _original_areas(data: _Data) -> np.ndarray:
    """The analysed detections' areas as pycocotools' loadRes sets them from the original results: their boxes'
    w·h when it reads them as boxes, else their keypoints' extent."""
    if data.box_areas is not None:
        return data.box_areas
    boxes = _keypoint_boxes(data.dt_keypoints)
    return boxes[:, 2] * boxes[:, 3]


def _analyze(data: _Data, scorer: _Scorer, mode: ErrorMode, notes: list[str]) -> ErrorAnalysis:
    flip = _flip_index(data.schema)
    analysis = (_analyze_coco_analyze if mode.coco_analyze else _analyze_kpbench)(data, scorer, flip)
    schema = data.schema
    labels = analysis.labels
    unclassified = int((labels.labels == UNCLASSIFIED).sum())
    if mode.coco_analyze:
        notes.append("coco-analyze mode: its procedure, from its code (README, 'coco-analyze differs'): area 'all' "
                     "is [32², 1e10] (small persons ignored), medium [32², 96²], large [96², 1e10], each analysed on "
                     "its own; good is ks > 0.85; corrections to (g_x + r, g_y) with σ² (jitter lands at ks "
                     f"{GOOD_KS**0.25:.3f}, miss at {CORRECT_KS**0.25:.3f}); scores rescored then soft-NMS; "
                     "background per OKS threshold; background_fn is scored on top of background_fp")
        if unclassified:
            notes.append(f"{unclassified} keypoint(s) with ks exactly 0.85 fall in no class (coco-analyze's strict "
                         "boundaries): counted as unclassified and left uncorrected")
        notes.append("background counts in the summary: area 'all' at OKS 0.5 on the uncorrected detections "
                     "(analyze.json's background: every range, threshold and step)")
    if flip is None:
        notes.append(f"the {schema.name} schema has no flip pairs: inversions are not measured (no inversion "
                     "column or correction)")
    if data.crowded_images:
        notes.append(f"{data.crowded_images} image(s) have more than {KEYPOINT_MAX_DETS} detections: only each "
                     f"image's top {KEYPOINT_MAX_DETS} by score are analysed ({len(data.dt_scores)} of "
                     f"{data.num_results})")
    if not mode.coco_analyze:
        notes.append("optimal rescoring: each detection's score becomes its maximum OKS with the counted GT persons "
                     "(not crowd, with labelled keypoints) of its image")
    what = ("one per distinct set of corrected detections, the matchings at OKS 0.1 and those of the background "
            "steps, per area range" if mode.coco_analyze else f"one per distinct correction, and the matching at OKS "
            f"{MATCH_OKS}")
    notes.append(f"{scorer.runs} COCOeval passes with the {scorer.name} evaluator ({what})")
    analysis.mode = mode
    analysis.notes = list(dict.fromkeys(notes))
    analysis.counts = _count_rows(labels.labels, schema, analysis.error_types, mode.coco_analyze)
    analysis.summary.update({
        "num_images": len(data.gt.dataset["images"]),
        "num_gt": int(data.gt_counted.sum()),
        "num_results": data.num_results,
        "num_analysed": len(data.dt_scores),
        "num_matched": len(analysis.pairs),
        "num_keypoints": int((labels.labels != NOT_LABELLED).sum()),
        "evaluator": scorer.name,
        "evaluations": scorer.runs,
    })
    return analysis


def _result(data: _Data, steps: list[_Step], thresholds: np.ndarray, labels: KeypointLabels, pair_dt: np.ndarray,
            pair_gt: np.ndarray, background_fp: int, background_fn: int,
            background_sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], background_oks: Sequence[float],
            optimal_scores: dict[tuple[str, str], np.ndarray]) -> ErrorAnalysis:
    """The analysis from its evaluated steps (the first is the baseline); `_analyze` fills in the rest."""
    base = steps[0]
    recall = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # COCOeval's recThrs
    curves = {"original": _pr_curves(base.scored, thresholds),
              **{s.name: _pr_curves(s.scored, thresholds) for s in steps if s.how == "cumulative"}}
    return ErrorAnalysis(
        mode=ErrorMode(), schema=data.schema, counts=[], ap_gain=_gain_rows(steps, base.aps),
        pr_curves={"recall": recall.tolist(), "panels": [p for p, _ in PR_PANELS], "curves": curves},
        baseline=dict(base.scored.stats), summary={"num_background_fp": background_fp,
                                                   "num_background_fn": background_fn},
        notes=[], labels=labels,
        pairs=np.stack([pair_dt, pair_gt], axis=1) if len(pair_dt) else np.zeros((0, 2), np.int64),
        ap_by_oks=_ap_by_oks(steps, thresholds), background=_background_rows(background_sets, background_oks),
        background_sets=background_sets, optimal_scores=optimal_scores, detections=data.dt_result,
    )


def _analyze_kpbench(data: _Data, scorer: _Scorer, flip: np.ndarray | None) -> ErrorAnalysis:
    """kpbench's definitions (module docstring)."""
    import dataclasses

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
    _, lo, hi = next(r for r in (scorer.settings.area_ranges or COCO_AREAS) if r[0] == "all")
    background_fn = counted & (data.gt_areas >= lo) & (data.gt_areas <= hi) & ~matches.gt_matched[0]
    labels = classify_keypoints(kps0[pair_dt], pair_gt, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                                data.gt_image, sigmas, flip)

    def corrected(fixes: Sequence[str]) -> np.ndarray:
        out = kps0.copy()
        out[pair_dt] = correct_keypoints(kps0[pair_dt], labels.labels, data.gt_keypoints[pair_gt],
                                         data.gt_areas[pair_gt], sigmas, fixes)
        return out

    def rescored(keypoints: np.ndarray) -> np.ndarray:
        return optimal_scores(keypoints, data.dt_image, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                              data.gt_image, counted, sigmas)

    fixes = [f for f in LOCALISATION_FIXES if f != "inversion" or flip is not None]
    present = {f: bool((labels.labels == _LABEL_OF[f]).any()) for f in fixes}
    cache: dict[tuple[Any, ...], _Scored] = {}

    def step(how: str, name: str, key: tuple[Any, ...], keypoints: np.ndarray, scores: np.ndarray,
             keep: np.ndarray | None = None, ignore: np.ndarray | None = None) -> _Step:
        # The same detections give the same evaluation: a correction that changes nothing is not re-run.
        if key not in cache:
            cache[key] = scorer.score(keypoints, scores, keep, ignore)
        return _Step(how, name, cache[key], thresholds)

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
    return _result(data, steps, thresholds, labels, pair_dt, pair_gt, int(background_fp.sum()),
                   int(background_fn.sum()), {("alone", "all"): (background_fp[None], background_fn[None])},
                   (MATCH_OKS,), {("alone", "all"): scores_alone, ("cumulative", "all"): scores_all})


def _analyze_coco_analyze(data: _Data, scorer: _Scorer, flip: np.ndarray | None) -> ErrorAnalysis:
    """coco-analyze's procedure (module docstring): what errorsAPImpact.py ("alone") and COCOanalyze.summarize()
    ("cumulative") evaluate, area range by area range."""
    schema = data.schema
    sigmas = ErrorMode(coco_analyze=True).analysis_sigmas(schema.sigma_array)
    kps0, scores0 = data.dt_keypoints, data.dt_scores
    thresholds = np.asarray(COCO_ANALYZE_OKS, dtype=np.float64)
    areas = COCO_ANALYZE_AREAS
    fixes = tuple(f for f in LOCALISATION_FIXES if f != "inversion" or flip is not None)

    # Per area range: the matching at OKS 0.1, the classes of every matched detection's keypoints.
    located: dict[str, tuple[np.ndarray, np.ndarray, KeypointLabels]] = {}
    for area in areas:
        matches = scorer.match(kps0, scores0, _single_area(area, (MATCH_OKS,)))
        pair_dt = np.flatnonzero(matches.dt_gt[0] >= 0)
        pair_gt = matches.dt_gt[0, pair_dt]
        usable = data.gt_labelled[pair_gt]  # "if the gt match has no keypoint annotations": not analysed
        pair_dt, pair_gt = pair_dt[usable], pair_gt[usable]
        located[area[0]] = (pair_dt, pair_gt, classify_keypoints(
            kps0[pair_dt], pair_gt, data.gt_keypoints, data.gt_boxes, data.gt_areas, data.gt_image, sigmas, flip,
            strict_good=True, others_before_flip=True))

    def corrected(label: str, done: Sequence[str]) -> np.ndarray:
        pair_dt, pair_gt, labels = located[label]
        out = kps0.copy()
        out[pair_dt] = correct_keypoints(kps0[pair_dt], labels.labels, data.gt_keypoints[pair_gt],
                                         data.gt_areas[pair_gt], sigmas, done, ErrorMode(coco_analyze=True),
                                         labels.ks_best)
        return out

    def counted_in(area: tuple[str, float, float]) -> np.ndarray:
        return data.gt_counted & (data.gt_areas >= area[1]) & (data.gt_areas <= area[2])

    # An area range's COCOeval numbers do not depend on the other ranges evaluated with it: one evaluation of
    # every range serves each range whose detections (keypoints and scores) are these.
    cache: dict[tuple[bytes, bytes], _Scored] = {}

    def evaluated(area: tuple[str, float, float], keypoints: np.ndarray, scores: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        key = (hashlib.sha1(keypoints.tobytes()).digest(), hashlib.sha1(scores.tobytes()).digest())
        if key not in cache:
            cache[key] = scorer.score(keypoints, scores)
        a = [label for label, _, _ in areas].index(area[0])
        return cache[key].precision[:, :, a], cache[key].recall[:, a]

    def step(how: str, name: str, per_area: list[tuple[np.ndarray, np.ndarray]],
             reference: _Step | None = None) -> _Step:
        scored = _Scored(precision=np.stack([p for p, _ in per_area], axis=2),
                         recall=np.stack([r for _, r in per_area], axis=1))
        return _Step(how, name, scored, thresholds, reference)

    def rescored(keypoints_by_area: dict[str, np.ndarray], nms_keypoints: np.ndarray) -> dict[str, np.ndarray]:
        best: dict[str, np.ndarray] = {}
        for area in areas:  # ranges with the same keypoints share the OKS
            same = [a for a in areas if a[0] not in best
                    and np.array_equal(keypoints_by_area[a[0]], keypoints_by_area[area[0]])]
            if same:
                best.update(zip([a[0] for a in same],
                                scorer.max_oks(keypoints_by_area[area[0]], [counted_in(a) for a in same])))
        final = soft_nms_scores(data.dt_image, scores0, np.stack([best[a[0]] for a in areas]), nms_keypoints, sigmas)
        return {area[0]: final[a] for a, area in enumerate(areas)}

    def background(area: tuple[str, float, float], keypoints: np.ndarray, scores: np.ndarray
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
        matches = scorer.match(keypoints, scores, _single_area(area, COCO_ANALYZE_OKS))
        fp = matches.dt_gt < 0  # unmatched at each threshold (a match to a person the range ignores is one)
        fn = ~matches.gt_matched
        ignored = ~counted_in(area)
        none = np.zeros_like(fn)
        removed = _accumulate_flagged(matches, scores, data.dt_image, ignored, fp, none)
        # Its loop over the thresholds (ascending) never resets gtIgnore: a person missed at t stays ignored above.
        both = _accumulate_flagged(matches, scores, data.dt_image, ignored, fp, np.logical_or.accumulate(fn, axis=0))
        return removed, both, fp, fn

    base = scorer.score(kps0, scores0)  # every range at once, as its _summarize_baseline
    cache[hashlib.sha1(kps0.tobytes()).digest(), hashlib.sha1(scores0.tobytes()).digest()] = base
    steps = [_Step("baseline", "none", base, thresholds)]
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
    return _result(data, steps, thresholds, labels, pair_dt, pair_gt, int(fp_all[0].sum()),
                   int((fn_all[0] & counted_in(areas[0])).sum()), sets, COCO_ANALYZE_OKS,
                   {**{("alone", a): v for a, v in scores_alone.items()},
                    **{("cumulative", a): v for a, v in scores_all.items()}})


def analyze_run_errors(
    run_dir: str | Path, coco_analyze: bool = False, bootstrap: int | None = None, seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """`analyze_errors` for a run directory: its results rebuilt from the detections cache (as `kpbench evaluate
    RUN_DIR` does), its ground_truth.json and the schema its manifest records."""
    from kpbench.evaluation.runeval import finished_run_detections, load_run_ground_truth, run_results
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)
    ordered = finished_run_detections(run_dir, manifest)
    gt = load_run_ground_truth(run_dir, ["keypoints"])
    results = run_results(run_dir, ordered, gt)["keypoints"]
    return analyze_errors(gt["keypoints"], results, coco_analyze=coco_analyze, bootstrap=bootstrap, seed=seed,
                          evaluator=evaluator)


# --- output ---------------------------------------------------------------------------------------------------

KEYPOINTS_NOTE = """\
Detections matched to a GT person by COCOeval at OKS 0.1 (area "all", top 20 per image); per keypoint labelled
in the matched GT, the class of its best reference (the matched person's keypoint, its left/right flip, or
another person's keypoint or flip), by the keypoint similarity ks:
good (matched, ks >= 0.85), jitter (matched, 0.5 <= ks < 0.85), inversion (flip, ks >= 0.5),
swap (another person, ks >= 0.5), miss (best ks < 0.5). The `all` row pools every keypoint.
"""

GAIN_NOTE = """\
AP, AP50 and AP75 per area range after each correction, alone and cumulatively (miss, + swap, + inversion,
+ jitter, + score, + background FP, + background FN), and the gain over the uncorrected detections (the
baseline row). Corrections: a jitter moved to ks 0.85, a miss to ks 0.5, an inversion or a swap onto the GT
keypoint; each score replaced by the detection's best OKS; background false positives removed and false
negatives ignored.
"""

COCO_ANALYZE_KEYPOINTS_NOTE = """\
coco-analyze's classification: detections matched to a GT person by COCOeval at OKS 0.1 in its area "all"
([32², 1e10], top 20 per image; a match to a person the range ignores counts), per keypoint labelled in the
matched GT the class of its best reference (ties: the matched person, the others, the matched person flipped,
the others flipped): good (matched, ks > 0.85), jitter (matched, 0.5 <= ks < 0.85), inversion, swap, miss (best
ks < 0.5); ks exactly 0.85 is in no class (unclassified). The `all` row pools every keypoint.
"""

COCO_ANALYZE_GAIN_NOTE = """\
coco-analyze's AP gains, each area range analysed on its own: each correction alone (errorsAPImpact) and
cumulatively (COCOanalyze.summarize: miss, + swap, + inversion, + jitter, + score, + background FP, + background
FN), and the gain over the baseline row; the alone background_fn row removes false positives too and its gain is
over the background_fp row. Corrections move a keypoint to (g_x + r, g_y), r = sqrt(-ln(k) · 2 · area · σ²):
k = 0.85 (jitter), 0.5 (miss), its ks with the wrong reference (swap, inversion); scores become the best OKS with
the range's persons, then soft-NMS; background errors are taken at each OKS threshold.
"""


def count_columns(analysis: ErrorAnalysis) -> list[str]:
    """The columns of the per-keypoint table."""
    types = [*analysis.error_types, *(("unclassified",) if analysis.mode.coco_analyze else ())]
    return ["keypoint", "n", *types, *(f"frac_{t}" for t in types)]


GAIN_COLUMNS: tuple[str, ...] = ("how", "correction", "area", "AP", "gain_AP", "AP50", "gain_AP50", "AP75",
                                 "gain_AP75")


def gain_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gain table for people: AP in percent with one decimal, n/a for COCO's -1 (no GT in the area range)."""
    from kpbench.evaluation.cocoeval import percent

    out = []
    for row in rows:
        shown = dict(row)
        for column, _ in AP_COLUMNS:
            shown[column] = percent(row[column])
            g = row[f"gain_{column}"]
            shown[f"gain_{column}"] = "n/a" if g is None else f"{100 * g:+.1f}"
        out.append(shown)
    return out


def count_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-keypoint counts for people: fractions in percent with one decimal."""
    return [{k: (v if not k.startswith("frac_") else "n/a" if v is None else f"{100 * v:.1f}") for k, v in row.items()}
            for row in rows]


def table_sections(analysis: ErrorAnalysis) -> dict[str, dict[str, Any]]:
    """The sections of `analysis.extra` that are tables: {"rows": [...]} with optional "title", "note" and
    "columns" (what other analyses add; see `kpbench.analysis.diagnose`)."""
    return {name: section for name, section in analysis.extra.items()
            if isinstance(section, dict) and isinstance(section.get("rows"), list)}


def section_rows_percent(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A table section's rows for people: its "percent" columns in percent with one decimal, n/a for COCO's -1."""
    from kpbench.evaluation.cocoeval import percent

    columns = section.get("percent") or []
    return [{k: (percent(v) if k in columns and v is not None else v) for k, v in row.items()} for row in section["rows"]]


def section_files(out: Path, analysis: ErrorAnalysis) -> dict[Path, str]:
    """NAME.csv, NAME.md and NAME.json for each table section of `analysis.extra`."""
    from kpbench.core.io import json_text, to_csv, to_markdown

    files: dict[Path, str] = {}
    for name, section in table_sections(analysis).items():
        rows, columns = section["rows"], section.get("columns")
        note = f"{section['note']}\n\n" if section.get("note") else ""
        files[out / f"{name}.csv"] = to_csv(rows, columns)
        shown = section_rows_percent(section)
        unit = "\nAP in percent; n/a where the bin has no GT.\n" if section.get("percent") else ""
        files[out / f"{name}.md"] = f"## {section.get('title', name)}\n\n{note}{to_markdown(shown, columns)}{unit}"
        files[out / f"{name}.json"] = json_text(section)
    return files


def write_error_files(out_dir: str | Path, analysis: ErrorAnalysis, plot: bool = True) -> list[Path]:
    """Write errors_keypoints.{csv,md,json}, errors_ap_gain.{csv,md,json}, NAME.{csv,md,json} for each table
    section of `analysis.extra`, errors_pr_curves.png and analyze.json into out_dir (the tables atomically, as one
    set); returns the paths."""
    from kpbench.core.io import atomic_write_files, json_text, to_csv, to_markdown

    out = Path(out_dir)
    coco = analysis.mode.coco_analyze
    columns = count_columns(analysis)
    notes = "".join(f"- {n}\n" for n in analysis.notes)
    payload = analysis.to_json()
    paths = atomic_write_files({
        out / f"{KEYPOINTS_STEM}.csv": to_csv(analysis.counts, columns),
        out / f"{KEYPOINTS_STEM}.md": (f"## Keypoint localisation errors ({analysis.mode.name} mode)\n\n"
                                       + (COCO_ANALYZE_KEYPOINTS_NOTE if coco else KEYPOINTS_NOTE) + "\n"
                                       + to_markdown(count_rows_percent(analysis.counts), columns)
                                       + "\nFractions in percent.\n"),
        out / f"{KEYPOINTS_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.counts}),
        out / f"{GAIN_STEM}.csv": to_csv(analysis.ap_gain, GAIN_COLUMNS),
        out / f"{GAIN_STEM}.md": (f"## AP gained by correcting each error ({analysis.mode.name} mode)\n\n"
                                  + (COCO_ANALYZE_GAIN_NOTE if coco else GAIN_NOTE)
                                  + "\n" + to_markdown(gain_rows_percent(analysis.ap_gain), GAIN_COLUMNS)
                                  + "\nAP in percent; n/a where the area range has no GT.\n"
                                  + (f"\nNotes:\n\n{notes}" if notes else "")),
        out / f"{GAIN_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.ap_gain}),
        **section_files(out, analysis),
        out / REPORT_FILE: json_text(payload),
    })
    if plot:
        from kpbench.report.figures import plot_error_pr_curves

        paths.append(plot_error_pr_curves(analysis.pr_curves, out / PR_FILE, analysis.mode.name))
    return paths
